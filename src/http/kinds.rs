//! Score configs (`/score-configs`, admin writes, every role reads) and the kind-aware
//! summary `GET /feedback/summary`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::AppState;
use super::auth::Role;
use super::error::{ApiError, ErrorBody};
use super::extract::{AdminCaller, ApiJson, ApiPath, Caller, QueryParams};
use crate::model::{HistoryEntry, HistoryVersion, ScoreConfig};
use crate::service::kinds::{ConfigOutcome, NewScoreConfig, Summary, SummaryQuery};

/// The body of `POST /score-configs`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ScoreConfigWritten {
    /// The config as stored now.
    config: ScoreConfig,
    /// `created`, `updated` (a new version) or `unchanged`.
    result: ConfigOutcome,
}

/// `POST /score-configs` (admin): create a score config, or write a new version of it.
/// 201 when created, 200 otherwise.
#[utoipa::path(
    post,
    path = "/api/v1/llm/score-configs",
    tag = "feedback",
    request_body = NewScoreConfig,
    responses(
        (status = 201, description = "Created (version 1)", body = ScoreConfigWritten),
        (status = 200, description = "A new version, or unchanged", body = ScoreConfigWritten),
        (status = 400, description = "A field is missing or invalid", body = ErrorBody),
    )
)]
pub async fn put_score_config(
    State(state): State<Arc<AppState>>,
    AdminCaller(caller): AdminCaller,
    ApiJson(req): ApiJson<NewScoreConfig>,
) -> Result<Response, ApiError> {
    let actor = caller.actor();
    let (config, result) = state.run(move |s| s.put_score_config(&actor, req)).await?;
    let status = match result {
        ConfigOutcome::Created => StatusCode::CREATED,
        _ => StatusCode::OK,
    };
    Ok((status, Json(ScoreConfigWritten { config, result })).into_response())
}

/// The body of `GET /score-configs`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ScoreConfigList {
    /// Every config of the org, by name.
    score_configs: Vec<ScoreConfig>,
    /// How many.
    count: usize,
}

/// `GET /score-configs`: the org's score configs.
#[utoipa::path(
    get,
    path = "/api/v1/llm/score-configs",
    tag = "feedback",
    responses((status = 200, description = "The org's score configs", body = ScoreConfigList))
)]
pub async fn list_score_configs(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<ScoreConfigList>, ApiError> {
    caller.require(Role::User)?;
    let org = caller.org().to_owned();
    let score_configs = state.run(move |s| s.score_configs(&org)).await?;
    Ok(Json(ScoreConfigList {
        count: score_configs.len(),
        score_configs,
    }))
}

/// `GET /score-configs/{name}`: one score config (its current version).
#[utoipa::path(
    get,
    path = "/api/v1/llm/score-configs/{name}",
    tag = "feedback",
    params(("name" = String, Path, description = "The config's name")),
    responses((status = 200, description = "The config", body = ScoreConfig))
)]
pub async fn get_score_config(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(name): ApiPath,
) -> Result<Json<ScoreConfig>, ApiError> {
    caller.require(Role::User)?;
    let org = caller.org().to_owned();
    Ok(Json(
        state.run(move |s| s.get_score_config(&org, &name)).await?,
    ))
}

/// `GET /score-configs/{name}/history`: every version, oldest first.
#[utoipa::path(
    get,
    path = "/api/v1/llm/score-configs/{name}/history",
    tag = "feedback",
    params(("name" = String, Path, description = "The config's name")),
    responses((status = 200, description = "Versions, oldest first", body = Vec<HistoryEntry>))
)]
pub async fn score_config_history(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(name): ApiPath,
) -> Result<Json<Vec<HistoryEntry>>, ApiError> {
    caller.require(Role::User)?;
    let org = caller.org().to_owned();
    let versions = state
        .run(move |s| s.score_config_history(&org, &name))
        .await?;
    Ok(Json(versions.iter().map(HistoryVersion::entry).collect()))
}

/// The longest `window_hours` of the summary: 100 years.
const MAX_WINDOW_HOURS: u64 = 876_000;

/// `GET /feedback/summary?window_hours&model&provider`: counts by kind and type, average
/// rating overall and per score config, label distribution, per model and per provider.
#[utoipa::path(
    get,
    path = "/api/v1/llm/feedback/summary",
    tag = "feedback",
    params(
        ("window_hours" = Option<u64>, Query, minimum = 0, maximum = 876000, description = "Only items created in the last N hours"),
        ("model" = Option<String>, Query, description = "Only this model version"),
        ("provider" = Option<String>, Query, description = "Only this provider"),
    ),
    responses((status = 200, description = "The summary", body = Summary))
)]
pub async fn summary(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    mut q: QueryParams,
) -> Result<Json<Summary>, ApiError> {
    caller.require(Role::User)?;
    let query = SummaryQuery {
        window_hours: q.parse("window_hours", "an integer from 0 to 876000", |v| {
            v.parse::<u64>().ok().filter(|h| *h <= MAX_WINDOW_HOURS)
        })?,
        model: q.take("model"),
        provider: q.take("provider"),
    };
    q.finish()?;
    let org = caller.org().to_owned();
    Ok(Json(state.run(move |s| s.summary(&org, &query)).await?))
}
