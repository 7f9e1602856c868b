//! The erasure endpoints (admin): erase an item, a user's or a session's items, list the
//! receipts, and rewrite the store now (`POST /admin/compact`). The work is
//! `service::erasure`'s.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::extract::{AdminCaller, ApiJson, ApiPath, QueryParams};
use crate::service::erasure::{CompactOutcome, EraseRequest, ErasurePage, ErasureReceipt};
use crate::store::ErasureScope;

/// `POST /erasures {scope, value}` (admin): erases one item (`item`, value the id), or
/// every item of a `user` or `session` in the org; answers 201 with the receipt once
/// every item is erased and durable.
#[utoipa::path(
    post,
    path = "/api/v1/llm/erasures",
    tag = "feedback",
    request_body = EraseRequest,
    responses(
        (status = 201, description = "The receipt of the finished erasure", body = ErasureReceipt),
        (status = 404, description = "No such item (scope item)", body = ErrorBody),
    )
)]
pub async fn erase(
    State(state): State<Arc<AppState>>,
    AdminCaller(caller): AdminCaller,
    ApiJson(req): ApiJson<EraseRequest>,
) -> Result<Response, ApiError> {
    let actor = caller.actor();
    let receipt = state
        .run(move |s| {
            let record = s.erase(&actor, &req)?;
            s.receipt(record)
        })
        .await?;
    Ok((StatusCode::CREATED, Json(receipt)).into_response())
}

/// `POST /feedback/{id}/erase` (admin): `POST /erasures {scope: item, value: id}`.
#[utoipa::path(
    post,
    path = "/api/v1/llm/feedback/{id}/erase",
    tag = "feedback",
    params(("id" = String, Path, description = "The feedback id")),
    responses(
        (status = 201, description = "The receipt of the finished erasure", body = ErasureReceipt),
        (status = 404, description = "No such item", body = ErrorBody),
    )
)]
pub async fn erase_item(
    State(state): State<Arc<AppState>>,
    AdminCaller(caller): AdminCaller,
    ApiPath(id): ApiPath,
) -> Result<Response, ApiError> {
    let actor = caller.actor();
    let req = EraseRequest {
        scope: ErasureScope::Item,
        value: id,
    };
    let receipt = state
        .run(move |s| {
            let record = s.erase(&actor, &req)?;
            s.receipt(record)
        })
        .await?;
    Ok((StatusCode::CREATED, Json(receipt)).into_response())
}

/// `GET /erasures?limit&before` (admin): the org's erasure receipts, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/llm/erasures",
    tag = "feedback",
    params(
        ("limit" = Option<u64>, Query, description = "Receipts per page (1-1000, default 100)"),
        ("before" = Option<String>, Query, description = "Only receipts older than this erasure id (`next_before` of the previous page)"),
    ),
    responses((status = 200, description = "Receipts, newest first", body = ErasurePage))
)]
pub async fn list(
    State(state): State<Arc<AppState>>,
    AdminCaller(caller): AdminCaller,
    mut q: QueryParams,
) -> Result<Json<ErasurePage>, ApiError> {
    let limit = q.number("limit")?;
    let before = q.take("before");
    q.finish()?;
    let org = caller.org().to_owned();
    let limit = limit.map(|l| usize::try_from(l).unwrap_or(usize::MAX));
    Ok(Json(
        state
            .run(move |s| s.erasures(&org, before.as_deref(), limit))
            .await?,
    ))
}

/// `GET /erasures/{id}` (admin): one receipt.
#[utoipa::path(
    get,
    path = "/api/v1/llm/erasures/{id}",
    tag = "feedback",
    params(("id" = String, Path, description = "The erasure id")),
    responses((status = 200, description = "The receipt", body = ErasureReceipt))
)]
pub async fn get(
    State(state): State<Arc<AppState>>,
    AdminCaller(caller): AdminCaller,
    ApiPath(id): ApiPath,
) -> Result<Json<ErasureReceipt>, ApiError> {
    let org = caller.org().to_owned();
    Ok(Json(
        state
            .run(move |s| {
                let record = s.erasure(&org, &id)?;
                s.receipt(record)
            })
            .await?,
    ))
}

/// `POST /admin/compact` (admin): rewrites the store now so erased bytes leave the disk
/// (sled: the online rewrite, writes go on; PostgreSQL: a plain `VACUUM`), answering
/// once it is done. The server also does this by itself within
/// `erasure.rewrite_within_secs` of an erasure.
#[utoipa::path(
    post,
    path = "/api/v1/llm/admin/compact",
    tag = "feedback",
    responses((status = 200, description = "What the rewrite did", body = CompactOutcome))
)]
pub async fn compact(
    State(state): State<Arc<AppState>>,
    AdminCaller(_caller): AdminCaller,
) -> Result<Json<CompactOutcome>, ApiError> {
    Ok(Json(state.run(move |s| s.compact_now()).await?))
}
