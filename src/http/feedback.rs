//! The seed's feedback endpoints under `/api/v1/llm/feedback`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::auth::Role;
use super::error::ApiError;
use super::extract::{
    AdminCaller, ApiJson, ApiPath, Caller, QueryParams, RawBody, TrainerCaller, parse_json,
};
use crate::model::{
    Feedback, FeedbackType, HistoryVersion, NewFeedback, ValidationReason, ValidationStatus,
};
use crate::service::{ByAdapterQuery, ListQuery, StatsQuery};
use crate::store::{IdempotencyKey, stable_hash};

/// The 201 body of a submit (the seed's shape, plus the reasons behind the status).
#[derive(Debug, Serialize)]
pub struct SubmitResponse {
    id: String,
    #[serde(rename = "type")]
    feedback_type: FeedbackType,
    question: String,
    answer: String,
    validation_status: ValidationStatus,
    validation_reasons: Vec<ValidationReason>,
    created_at: u64,
    message: &'static str,
}

impl From<Feedback> for SubmitResponse {
    fn from(f: Feedback) -> Self {
        SubmitResponse {
            id: f.id,
            feedback_type: f.feedback_type,
            question: f.question,
            answer: f.answer,
            validation_status: f.validation_status,
            validation_reasons: f.validation_reasons,
            created_at: f.created_at,
            message: "Feedback recorded successfully",
        }
    }
}

/// `POST /feedback`: validate and store one item; 201 once durable.
pub async fn submit(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    caller.require(Role::User)?;
    let new: NewFeedback = parse_json(&headers, &body)?;
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => Some(IdempotencyKey {
            key: v
                .to_str()
                .map_err(|_| {
                    ApiError::BadRequest("Idempotency-Key must be printable ASCII".into())
                })?
                .to_owned(),
            request_hash: stable_hash(&body),
        }),
    };
    let actor = caller.actor();
    // Not on the blocking pool: the sled writes take microseconds, and the wait for the
    // group commit is a future, so thousands of requests can wait on one fsync. If the
    // client goes away, this handler is dropped; `submit_durable` then still indexes a
    // write that reached sled once it is durable.
    let service = state.service()?;
    let (fb, replay) = service.submit_durable(&actor, new, key).await?;
    if !replay {
        state
            .telemetry
            .submit(&actor.org, fb.validation_status.as_str());
    }
    let mut response = (StatusCode::CREATED, Json(SubmitResponse::from(fb))).into_response();
    if replay {
        response.headers_mut().insert(
            "idempotent-replayed",
            axum::http::HeaderValue::from_static("true"),
        );
    }
    Ok(response)
}

/// `GET /feedback/{id}`.
pub async fn get(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(id): ApiPath,
) -> Result<Json<Feedback>, ApiError> {
    caller.require(Role::User)?;
    let org = caller.org().to_owned();
    let fb = state.run(move |s| s.get(&org, &id)).await?;
    Ok(Json(fb))
}

/// The body of `GET /feedback`.
#[derive(Debug, Serialize)]
pub struct ListResponse {
    feedback: Vec<Feedback>,
    count: usize,
    limit: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

fn limit_param(q: &mut QueryParams) -> Result<Option<usize>, ApiError> {
    q.parse("limit", "an integer from 1 to 1000", |v| {
        v.parse::<usize>()
            .ok()
            .filter(|n| (1..=crate::service::MAX_LIMIT).contains(n))
    })
}

/// `GET /feedback?limit&type&status&unused&model&adapter&session&cursor`.
pub async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    mut q: QueryParams,
) -> Result<Json<ListResponse>, ApiError> {
    caller.require(Role::User)?;
    let query = ListQuery {
        limit: limit_param(&mut q)?,
        feedback_type: q.parse("type", "positive or negative", |v| v.parse().ok())?,
        status: q.parse("status", "pending, approved, rejected or flagged", |v| {
            v.parse().ok()
        })?,
        unused: q.flag("unused")?,
        model: q.take("model"),
        adapter: q.take("adapter"),
        session: q.take("session"),
        cursor: q.take("cursor"),
    };
    q.finish()?;
    let org = caller.org().to_owned();
    let page = state.run(move |s| s.list(&org, &query)).await?;
    Ok(Json(ListResponse {
        count: page.items.len(),
        feedback: page.items,
        limit: page.limit,
        next_cursor: page.next_cursor,
    }))
}

/// `GET /feedback/stats?adapter&model&hours`.
pub async fn stats(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    mut q: QueryParams,
) -> Result<Json<crate::service::Stats>, ApiError> {
    caller.require(Role::User)?;
    let query = StatsQuery {
        adapter: q.take("adapter"),
        model: q.take("model"),
        window_hours: q.number("hours")?,
    };
    q.finish()?;
    let org = caller.org().to_owned();
    Ok(Json(state.run(move |s| s.stats(&org, &query)).await?))
}

/// The body of `POST /feedback/{id}/link`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkRequest {
    adapter_id: Option<String>,
    metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

/// The response of a link.
#[derive(Debug, Serialize)]
pub struct LinkResponse {
    feedback_id: String,
    adapter_id: String,
    source: &'static str,
    created_at: u64,
    metadata: crate::model::Metadata,
    created: bool,
    message: &'static str,
}

/// `POST /feedback/{id}/link {adapter_id, metadata}`: 201 when made, 200 when it existed.
pub async fn link(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(id): ApiPath,
    ApiJson(req): ApiJson<LinkRequest>,
) -> Result<Response, ApiError> {
    caller.require(Role::User)?;
    let actor = caller.actor();
    let outcome = state
        .run(move |s| s.link(&actor, &id, req.adapter_id, req.metadata))
        .await?;
    let status = if outcome.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let l = outcome.link;
    Ok((
        status,
        Json(LinkResponse {
            feedback_id: l.feedback_id,
            adapter_id: l.adapter_id,
            source: l.source.as_str(),
            created_at: l.created_at,
            metadata: l.metadata,
            created: outcome.created,
            message: if outcome.created {
                "Link created"
            } else {
                "Link already existed"
            },
        }),
    )
        .into_response())
}

/// The body of `GET /feedback/by-adapter/{adapter_id}`.
#[derive(Debug, Serialize)]
pub struct ByAdapterResponse {
    adapter_id: String,
    feedback: Vec<Feedback>,
    count: usize,
    total_linked: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

/// `GET /feedback/by-adapter/{adapter_id}?limit&unused&cursor`.
pub async fn by_adapter(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(adapter_id): ApiPath,
    mut q: QueryParams,
) -> Result<Json<ByAdapterResponse>, ApiError> {
    caller.require(Role::User)?;
    let query = ByAdapterQuery {
        limit: limit_param(&mut q)?,
        unused: q.flag("unused")?,
        cursor: q.take("cursor"),
        include_descendants: q.flag("include_descendants")?,
    };
    q.finish()?;
    let org = caller.org().to_owned();
    let r = state
        .run(move |s| s.by_adapter(&org, &adapter_id, &query))
        .await?;
    Ok(Json(ByAdapterResponse {
        adapter_id: r.adapter_id,
        count: r.count,
        feedback: r.feedback,
        total_linked: r.total_linked,
        next_cursor: r.next_cursor,
    }))
}

/// `GET /feedback/{id}/history`: every version, oldest first.
pub async fn history(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(id): ApiPath,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Role::User)?;
    let org = caller.org().to_owned();
    let fid = id.clone();
    let versions = state.run(move |s| s.history(&org, &fid)).await?;
    Ok(Json(serde_json::json!({
        "feedback_id": id,
        "count": versions.len(),
        "versions": versions.iter().map(HistoryVersion::to_json).collect::<Vec<_>>(),
    })))
}

/// `GET /feedback/{id}/impact`: the batches and adapters an item's training reached.
pub async fn impact(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(id): ApiPath,
) -> Result<Json<crate::service::training::Impact>, ApiError> {
    caller.require(Role::User)?;
    let org = caller.org().to_owned();
    Ok(Json(state.run(move |s| s.impact(&org, &id)).await?))
}

/// `PATCH /feedback/{id}` `{validation_status, reason}` (admin): review an item.
pub async fn review(
    State(state): State<Arc<AppState>>,
    AdminCaller(caller): AdminCaller,
    ApiPath(id): ApiPath,
    ApiJson(req): ApiJson<crate::service::training::ReviewRequest>,
) -> Result<Json<crate::service::training::Reviewed>, ApiError> {
    let actor = caller.actor();
    Ok(Json(state.run(move |s| s.review(&actor, &id, req)).await?))
}

/// The body of `POST /feedback/mark-used`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarkUsedRequest {
    ids: Vec<String>,
    /// Refused when present: batch ids come from the server (see [`mark_used`]).
    #[serde(default)]
    training_batch_id: Option<serde_json::Value>,
}

/// `POST /feedback/mark-used {ids}` (trainer): marks the items used as a new committed
/// batch and answers its `training_batch_id` with per-id results. Batch ids come from the
/// org's batch counter, which claims use too, so a client cannot name one: a request with
/// `training_batch_id` is a 400.
pub async fn mark_used(
    State(state): State<Arc<AppState>>,
    TrainerCaller(caller): TrainerCaller,
    ApiJson(req): ApiJson<MarkUsedRequest>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if req.training_batch_id.is_some() {
        return Err(ApiError::BadRequest(
            "'training_batch_id' is assigned by the server: omit it, and mark-used records \
             the items as a new committed batch and returns its id (to finish a claimed \
             batch, POST /training/batches/{id}/commit)"
                .into(),
        ));
    }
    let actor = caller.actor();
    let (batch, results) = state.run(move |s| s.mark_used(&actor, req.ids)).await?;
    let marked = results.iter().filter(|r| r.result == "marked").count();
    let conflicts = results.iter().filter(|r| r.status == 409).count();
    Ok(Json(serde_json::json!({
        "training_batch_id": batch,
        "marked": marked,
        "conflicts": conflicts,
        "results": results,
    })))
}
