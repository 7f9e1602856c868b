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
use super::error::ErrorBody;
use super::extract::{
    AdminCaller, ApiJson, ApiPath, Caller, QueryParams, RawBody, TrainerCaller, parse_json,
};
use super::render;
use crate::model::{
    Feedback, FeedbackKind, FeedbackType, HistoryEntry, HistoryVersion, LinkSource, NewFeedback,
    ValidationReason, ValidationStatus,
};
use crate::service::pages::RenderedPage;
use crate::service::training::MarkResult;
use crate::service::{ByAdapterQuery, ListQuery, StatsQuery};
use crate::store::{IdempotencyKey, stable_hash};

/// The 201 body of a submit (the seed's shape, plus the reasons behind the status).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SubmitResponse {
    /// The new item's id (or, for a replayed idempotent request, the stored one's).
    id: String,
    /// Thumbs up or down.
    #[serde(rename = "type")]
    feedback_type: FeedbackType,
    /// The question as stored.
    question: String,
    /// The answer as stored.
    answer: String,
    /// What validation decided.
    validation_status: ValidationStatus,
    /// The rules behind that status.
    validation_reasons: Vec<ValidationReason>,
    /// Creation time, ms since epoch.
    created_at: u64,
    /// `Feedback recorded successfully`.
    #[schema(value_type = String)]
    message: &'static str,
    /// The kind; left out for `thumbs`, so the seed's clients see the seed's body.
    #[serde(skip_serializing_if = "FeedbackKind::is_thumbs")]
    kind: FeedbackKind,
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
            kind: f.kind,
        }
    }
}

/// `POST /feedback`: validate and store one item; 201 once durable.
#[utoipa::path(
    post,
    path = "/api/v1/llm/feedback",
    tag = "feedback",
    request_body = NewFeedback,
    params((
        "Idempotency-Key" = Option<String>,
        Header,
        description = "Makes a retried submit happen once: a repeat with the same key and \
                       body answers the stored item (with `Idempotent-Replayed: true`)"
    )),
    responses(
        (status = 201, description = "Stored and durable", body = SubmitResponse,
         headers(("Idempotent-Replayed" = String, description = "`true` on a replay"))),
        (status = 409, description = "The Idempotency-Key was used with another body", body = ErrorBody),
    )
)]
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
#[utoipa::path(
    get,
    path = "/api/v1/llm/feedback/{id}",
    tag = "feedback",
    params(("id" = String, Path, description = "The feedback id")),
    responses((status = 200, description = "The item", body = Feedback))
)]
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
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ListResponse {
    /// The page, newest first.
    feedback: Vec<Feedback>,
    /// Items on this page.
    count: usize,
    /// The page size used.
    limit: usize,
    /// Pass as `cursor` for the next page; absent on the last page.
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

fn kind_param(q: &mut QueryParams) -> Result<Option<FeedbackKind>, ApiError> {
    q.parse("kind", "thumbs, rating, text, correction or label", |v| {
        v.parse().ok()
    })
}

/// `GET /feedback?limit&type&status&unused&model&adapter&session&kind&cursor`.
#[utoipa::path(
    get,
    path = "/api/v1/llm/feedback",
    tag = "feedback",
    params(
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "Page size (default 100)"),
        ("type" = Option<FeedbackType>, Query, description = "Only this type"),
        ("status" = Option<ValidationStatus>, Query, description = "Only this validation status"),
        ("unused" = Option<bool>, Query, description = "Only items not yet used for training"),
        ("model" = Option<String>, Query, description = "Only this model version"),
        ("adapter" = Option<String>, Query, description = "Only items linked to this adapter"),
        ("session" = Option<String>, Query, description = "Only this session"),
        ("kind" = Option<FeedbackKind>, Query, description = "Only this kind of feedback"),
        ("cursor" = Option<String>, Query, description = "The `next_cursor` of the previous page"),
    ),
    responses((status = 200, description = "One page, newest first", body = ListResponse))
)]
pub async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    mut q: QueryParams,
) -> Result<Response, ApiError> {
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
        kind: kind_param(&mut q)?,
        cursor: q.take("cursor"),
    };
    q.finish()?;
    let org = caller.org().to_owned();
    // The bytes of `ListResponse` serialised by serde_json, each item as `render` writes
    // it, kept between pages (see `service::pages`).
    let body = state
        .run(move |s| {
            let page = s.list_rendered(&org, &query, render::write_feedback)?;
            let mut b = items_body(b"", &page);
            b.extend_from_slice(b",\"count\":");
            render::write_u64(&mut b, page.items.len() as u64);
            b.extend_from_slice(b",\"limit\":");
            render::write_u64(&mut b, page.limit as u64);
            next_cursor_field(&mut b, page.next_cursor.as_deref());
            b.push(b'}');
            Ok(b)
        })
        .await?;
    Ok(json_body(body))
}

/// `{` + `head` + `"feedback":[` + the page's items + `]`: a page body up to the fields
/// after the items.
fn items_body(head: &[u8], page: &RenderedPage) -> Vec<u8> {
    let items: usize = page.items.iter().map(|i| i.len() + 1).sum();
    let mut b = Vec::with_capacity(items + head.len() + 128);
    b.push(b'{');
    b.extend_from_slice(head);
    b.extend_from_slice(b"\"feedback\":[");
    for (i, item) in page.items.iter().enumerate() {
        if i > 0 {
            b.push(b',');
        }
        b.extend_from_slice(item);
    }
    b.push(b']');
    b
}

/// Appends `,"next_cursor":"..."` when there is a next page (left out otherwise).
fn next_cursor_field(b: &mut Vec<u8>, cursor: Option<&str>) {
    if let Some(c) = cursor {
        b.extend_from_slice(b",\"next_cursor\":");
        render::write_str(b, c);
    }
}

/// A 200 with a JSON body written by hand, headed as `Json` heads its bodies.
fn json_body(body: Vec<u8>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// The longest `hours` window of the stats: 100 years.
const MAX_WINDOW_HOURS: u64 = 876_000;

/// `GET /feedback/stats?adapter&model&hours`.
#[utoipa::path(
    get,
    path = "/api/v1/llm/feedback/stats",
    tag = "feedback",
    params(
        ("adapter" = Option<String>, Query, description = "Only feedback linked to this adapter (404 if unknown)"),
        ("model" = Option<String>, Query, description = "Only this model version"),
        ("hours" = Option<u64>, Query, minimum = 0, maximum = 876000, description = "Only items created in the last N hours (at most 100 years)"),
    ),
    responses((status = 200, description = "Counters and positive_ratio", body = crate::service::Stats))
)]
pub async fn stats(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    mut q: QueryParams,
) -> Result<Json<crate::service::Stats>, ApiError> {
    caller.require(Role::User)?;
    let query = StatsQuery {
        adapter: q.take("adapter"),
        model: q.take("model"),
        window_hours: q.parse("hours", "an integer from 0 to 876000", |v| {
            v.parse::<u64>().ok().filter(|h| *h <= MAX_WINDOW_HOURS)
        })?,
    };
    q.finish()?;
    let org = caller.org().to_owned();
    Ok(Json(state.run(move |s| s.stats(&org, &query)).await?))
}

/// The body of `POST /feedback/{id}/link`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkRequest {
    /// The adapter to link to (created if unknown).
    #[schema(required = true, value_type = String)]
    adapter_id: Option<String>,
    /// Extra JSON context for the edge.
    metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

/// The response of a link.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LinkResponse {
    /// The feedback end.
    feedback_id: String,
    /// The adapter end.
    adapter_id: String,
    /// `auto` or `manual`.
    #[schema(value_type = LinkSource)]
    source: &'static str,
    /// When the edge was made, ms since epoch.
    created_at: u64,
    /// The edge's JSON context.
    #[schema(value_type = Object)]
    metadata: crate::model::Metadata,
    /// False when the edge existed already.
    created: bool,
    /// `Link created` or `Link already existed`.
    #[schema(value_type = String)]
    message: &'static str,
}

/// `POST /feedback/{id}/link {adapter_id, metadata}`: 201 when made, 200 when it existed.
#[utoipa::path(
    post,
    path = "/api/v1/llm/feedback/{id}/link",
    tag = "feedback",
    params(("id" = String, Path, description = "The feedback id")),
    request_body = LinkRequest,
    responses(
        (status = 201, description = "The edge was made", body = LinkResponse),
        (status = 200, description = "The edge existed already", body = LinkResponse),
    )
)]
pub async fn link(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(id): ApiPath,
    ApiJson(req): ApiJson<LinkRequest>,
) -> Result<Response, ApiError> {
    caller.require(Role::User)?;
    let actor = caller.actor();
    // Not on the blocking pool, as for submits: the sled writes take microseconds, and the
    // wait for the group commit (shared with the submits) is a future. If the client goes
    // away, `link_durable` still indexes an edge that reached the store once durable.
    let service = state.service()?;
    let outcome = service
        .link_durable(&actor, &id, req.adapter_id, req.metadata)
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
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ByAdapterResponse {
    /// The adapter asked for.
    adapter_id: String,
    /// The page, newest first.
    feedback: Vec<Feedback>,
    /// Items on this page.
    count: usize,
    /// Every FEEDBACK_FOR edge into the adapter, whatever the filters.
    total_linked: usize,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

/// `GET /feedback/by-adapter/{adapter_id}?limit&unused&cursor&include_descendants`.
#[utoipa::path(
    get,
    path = "/api/v1/llm/feedback/by-adapter/{adapter_id}",
    tag = "feedback",
    params(
        ("adapter_id" = String, Path, description = "The adapter"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "Page size (default 100)"),
        ("unused" = Option<bool>, Query, description = "Only items not yet used for training"),
        ("cursor" = Option<String>, Query, description = "The `next_cursor` of the previous page"),
        ("include_descendants" = Option<bool>, Query, description = "Also feedback of adapters derived from it"),
        ("kind" = Option<FeedbackKind>, Query, description = "Only this kind of feedback"),
    ),
    responses((status = 200, description = "Feedback linked to the adapter", body = ByAdapterResponse))
)]
pub async fn by_adapter(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(adapter_id): ApiPath,
    mut q: QueryParams,
) -> Result<Response, ApiError> {
    caller.require(Role::User)?;
    let query = ByAdapterQuery {
        limit: limit_param(&mut q)?,
        unused: q.flag("unused")?,
        cursor: q.take("cursor"),
        include_descendants: q.flag("include_descendants")?,
        kind: kind_param(&mut q)?,
    };
    q.finish()?;
    let org = caller.org().to_owned();
    // The bytes of `ByAdapterResponse` serialised by serde_json, each item as `render`
    // writes it (see `service::pages`): first from the rendered items kept between pages,
    // right here, if every item is held and the page is short; else on the blocking pool,
    // which reads the items not held from the store and keeps them.
    let service = state.service()?;
    if let Some(page) = service.by_adapter_cached_now(&org, &adapter_id, &query)? {
        return Ok(json_body(by_adapter_body(&adapter_id, &page)));
    }
    let (page, adapter_id) = state
        .run(move |s| {
            let page = s.by_adapter_rendered(&org, &adapter_id, &query, render::write_feedback)?;
            Ok((page, adapter_id))
        })
        .await?;
    Ok(json_body(by_adapter_body(&adapter_id, &page)))
}

/// The body of a by-adapter page: the fields of `ByAdapterResponse` in their order.
fn by_adapter_body(adapter_id: &str, page: &RenderedPage) -> Vec<u8> {
    let mut head = b"\"adapter_id\":".to_vec();
    render::write_str(&mut head, adapter_id);
    head.push(b',');
    let mut b = items_body(&head, page);
    b.extend_from_slice(b",\"count\":");
    render::write_u64(&mut b, page.items.len() as u64);
    b.extend_from_slice(b",\"total_linked\":");
    render::write_u64(&mut b, page.total_linked as u64);
    next_cursor_field(&mut b, page.next_cursor.as_deref());
    b.push(b'}');
    b
}

/// The body of `GET /feedback/{id}/history`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HistoryResponse {
    /// The item.
    feedback_id: String,
    /// Number of versions.
    count: usize,
    /// Every version, oldest first.
    versions: Vec<HistoryEntry>,
}

/// `GET /feedback/{id}/history`: every version, oldest first.
#[utoipa::path(
    get,
    path = "/api/v1/llm/feedback/{id}/history",
    tag = "feedback",
    params(("id" = String, Path, description = "The feedback id")),
    responses((status = 200, description = "The item's versions", body = HistoryResponse))
)]
pub async fn history(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(id): ApiPath,
) -> Result<Json<HistoryResponse>, ApiError> {
    caller.require(Role::User)?;
    let org = caller.org().to_owned();
    let fid = id.clone();
    let versions = state.run(move |s| s.history(&org, &fid)).await?;
    Ok(Json(HistoryResponse {
        feedback_id: id,
        count: versions.len(),
        versions: versions.iter().map(HistoryVersion::entry).collect(),
    }))
}

/// `GET /feedback/{id}/impact`: the batches and adapters an item's training reached.
#[utoipa::path(
    get,
    path = "/api/v1/llm/feedback/{id}/impact",
    tag = "feedback",
    params(("id" = String, Path, description = "The feedback id")),
    responses((status = 200, description = "Batches and adapters the item reached", body = crate::service::training::Impact))
)]
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
#[utoipa::path(
    patch,
    path = "/api/v1/llm/feedback/{id}",
    tag = "feedback",
    params(("id" = String, Path, description = "The feedback id")),
    request_body = crate::service::training::ReviewRequest,
    responses(
        (status = 200, description = "The item after review", body = crate::service::training::Reviewed),
        (status = 409, description = "The item cannot take that status now", body = ErrorBody),
    )
)]
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
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MarkUsedRequest {
    /// The items to mark used.
    #[schema(min_items = 1, max_items = 10000)]
    ids: Vec<String>,
    /// Refused when present: batch ids come from the server (see [`mark_used`]).
    #[serde(default)]
    #[schema(ignore)]
    training_batch_id: Option<serde_json::Value>,
}

/// The answer of `POST /feedback/mark-used`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MarkUsedResponse {
    /// The new committed batch the items now belong to; null when none was marked.
    training_batch_id: Option<u64>,
    /// Items marked by this call.
    marked: usize,
    /// Items another batch holds or leases.
    conflicts: usize,
    /// One result per id, in request order.
    results: Vec<MarkResult>,
}

/// `POST /feedback/mark-used {ids}` (trainer): marks the items used as a new committed
/// batch and answers its `training_batch_id` with per-id results. Batch ids come from the
/// org's batch counter, which claims use too, so a client cannot name one: a request with
/// `training_batch_id` is a 400.
#[utoipa::path(
    post,
    path = "/api/v1/llm/feedback/mark-used",
    tag = "training",
    request_body = MarkUsedRequest,
    responses((status = 200, description = "Per-id results and the new batch", body = MarkUsedResponse))
)]
pub async fn mark_used(
    State(state): State<Arc<AppState>>,
    TrainerCaller(caller): TrainerCaller,
    ApiJson(req): ApiJson<MarkUsedRequest>,
) -> Result<Json<MarkUsedResponse>, ApiError> {
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
    Ok(Json(MarkUsedResponse {
        training_batch_id: batch,
        marked,
        conflicts,
        results,
    }))
}
