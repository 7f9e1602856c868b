//! Webhook endpoints (admin): `/webhooks...`: register, list, get, change (enable,
//! disable, events, url), delete, the delivery log and manual redelivery. The target of a
//! new or changed URL is checked against the allow-list here, on the runtime (it resolves
//! the host name), before the service call stores it.

use std::sync::Arc;

use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::extract::{AdminCaller, ApiJson, ApiPath, QueryParams};
use crate::events::{self, DeliveryPage, EndpointChange, EndpointView, NewEndpoint};

/// The answer of `GET /webhooks`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EndpointList {
    /// The org's endpoints.
    webhooks: Vec<EndpointView>,
    /// How many.
    count: usize,
}

/// The answer of a redelivery request.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Redelivery {
    /// Always `queued`.
    #[schema(value_type = String)]
    status: &'static str,
}

/// Two path parameters: endpoint id and delivery id.
pub struct TwoIds(String, String);

impl<S: Send + Sync> FromRequestParts<S> for TwoIds {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path((a, b))| TwoIds(a, b))
            .map_err(|e| ApiError::BadRequest(format!("bad path: {}", e.body_text())))
    }
}

async fn check_target(state: &AppState, url: &str) -> Result<(), ApiError> {
    state
        .webhook_policy
        .check_target(url)
        .await
        .map(drop)
        .map_err(|e| ApiError::BadRequest(format!("webhook target refused: {e}")))
}

/// `POST /webhooks` (admin): register an endpoint. The answer carries the signing secret,
/// the only time it is shown.
#[utoipa::path(
    post,
    path = "/api/v1/llm/webhooks",
    tag = "webhooks",
    request_body = NewEndpoint,
    responses(
        (status = 201, description = "Registered; `secret` is shown only now", body = EndpointView),
        (status = 409, description = "The org has the most endpoints allowed", body = ErrorBody),
    )
)]
pub async fn register(
    State(state): State<Arc<AppState>>,
    AdminCaller(caller): AdminCaller,
    ApiJson(new): ApiJson<NewEndpoint>,
) -> Result<Response, ApiError> {
    check_target(&state, &new.url).await?;
    let actor = caller.actor();
    let view = state.run(move |s| events::register(s, &actor, new)).await?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// `GET /webhooks` (admin): the org's endpoints.
#[utoipa::path(
    get,
    path = "/api/v1/llm/webhooks",
    tag = "webhooks",
    responses((status = 200, description = "The org's endpoints", body = EndpointList))
)]
pub async fn list(
    State(state): State<Arc<AppState>>,
    AdminCaller(caller): AdminCaller,
) -> Result<Json<EndpointList>, ApiError> {
    let org = caller.org().to_owned();
    let webhooks = state.run(move |s| events::list(s, &org)).await?;
    Ok(Json(EndpointList {
        count: webhooks.len(),
        webhooks,
    }))
}

/// `GET /webhooks/{id}` (admin): one endpoint.
#[utoipa::path(
    get,
    path = "/api/v1/llm/webhooks/{id}",
    tag = "webhooks",
    params(("id" = String, Path, description = "The endpoint id")),
    responses((status = 200, description = "The endpoint", body = EndpointView))
)]
pub async fn get(
    State(state): State<Arc<AppState>>,
    AdminCaller(caller): AdminCaller,
    ApiPath(id): ApiPath,
) -> Result<Json<EndpointView>, ApiError> {
    let org = caller.org().to_owned();
    Ok(Json(state.run(move |s| events::get(s, &org, &id)).await?))
}

/// `PATCH /webhooks/{id}` (admin): enable, disable, or change events or url.
#[utoipa::path(
    patch,
    path = "/api/v1/llm/webhooks/{id}",
    tag = "webhooks",
    params(("id" = String, Path, description = "The endpoint id")),
    request_body = EndpointChange,
    responses((status = 200, description = "The endpoint after the change", body = EndpointView))
)]
pub async fn update(
    State(state): State<Arc<AppState>>,
    AdminCaller(caller): AdminCaller,
    ApiPath(id): ApiPath,
    ApiJson(change): ApiJson<EndpointChange>,
) -> Result<Json<EndpointView>, ApiError> {
    if let Some(url) = &change.url {
        check_target(&state, url).await?;
    }
    let org = caller.org().to_owned();
    Ok(Json(
        state
            .run(move |s| events::update(s, &org, &id, change))
            .await?,
    ))
}

/// `DELETE /webhooks/{id}` (admin): remove an endpoint, its queued events and its log.
#[utoipa::path(
    delete,
    path = "/api/v1/llm/webhooks/{id}",
    tag = "webhooks",
    params(("id" = String, Path, description = "The endpoint id")),
    responses((status = 204, description = "Removed"))
)]
pub async fn delete(
    State(state): State<Arc<AppState>>,
    AdminCaller(caller): AdminCaller,
    ApiPath(id): ApiPath,
) -> Result<StatusCode, ApiError> {
    let org = caller.org().to_owned();
    state.run(move |s| events::delete(s, &org, &id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /webhooks/{id}/deliveries?limit&before` (admin): the delivery log, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/llm/webhooks/{id}/deliveries",
    tag = "webhooks",
    params(
        ("id" = String, Path, description = "The endpoint id"),
        ("limit" = Option<u64>, Query, description = "Page size (default 100, at most 1000)", minimum = 1, maximum = 1000),
        ("before" = Option<String>, Query, description = "The `next_cursor` of the previous page"),
    ),
    responses((status = 200, description = "A page of the delivery log", body = DeliveryPage))
)]
pub async fn deliveries(
    State(state): State<Arc<AppState>>,
    AdminCaller(caller): AdminCaller,
    ApiPath(id): ApiPath,
    mut q: QueryParams,
) -> Result<Json<DeliveryPage>, ApiError> {
    let limit = q.number("limit")?;
    if limit.is_some_and(|l| !(1..=1000).contains(&l)) {
        return Err(ApiError::BadRequest(
            "limit must be between 1 and 1000".into(),
        ));
    }
    let limit = usize::try_from(limit.unwrap_or(100)).unwrap_or(100);
    let before = q.take("before");
    q.finish()?;
    let org = caller.org().to_owned();
    Ok(Json(
        state
            .run(move |s| events::deliveries(s, &org, &id, before.as_deref(), limit))
            .await?,
    ))
}

/// `POST /webhooks/{id}/deliveries/{delivery_id}/redeliver` (admin): send a logged event
/// again.
#[utoipa::path(
    post,
    path = "/api/v1/llm/webhooks/{id}/deliveries/{delivery_id}/redeliver",
    tag = "webhooks",
    params(
        ("id" = String, Path, description = "The endpoint id"),
        ("delivery_id" = String, Path, description = "A delivery id from the log"),
    ),
    responses((status = 202, description = "Queued for delivery", body = Redelivery))
)]
pub async fn redeliver(
    State(state): State<Arc<AppState>>,
    AdminCaller(caller): AdminCaller,
    TwoIds(id, delivery): TwoIds,
) -> Result<Response, ApiError> {
    let org = caller.org().to_owned();
    state
        .run(move |s| events::redeliver(s, &org, &id, &delivery))
        .await?;
    Ok((StatusCode::ACCEPTED, Json(Redelivery { status: "queued" })).into_response())
}
