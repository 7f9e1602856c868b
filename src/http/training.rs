//! Adapter and training-batch endpoints: `/adapters...` and `/training/batches...`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::AppState;
use super::auth::Role;
use super::error::ApiError;
use super::error::ErrorBody;
use super::extract::{
    AdminCaller, ApiJson, ApiPath, Caller, QueryParams, RawBody, TrainerCaller, parse_json,
};
use crate::model::Adapter;
use crate::service::NewAdapter;
use crate::service::lineage::{AdapterSummary, LineageEntry};
use crate::service::training::{BatchView, ClaimRequest, Claimed, CommitRequest, ExportFormat};
use crate::store::AdapterOutcome;

/// The answer of `POST /adapters`: the adapter and what the request did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AdapterCreated {
    /// The adapter as stored.
    #[serde(flatten)]
    adapter: Adapter,
    /// `created`, `updated` (an auto-created adapter described now) or `unchanged`.
    #[schema(value_type = String, pattern = "^(created|updated|unchanged)$")]
    result: &'static str,
}

/// The answer of `GET /adapters/{id}/lineage`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LineageResponse {
    /// The adapter asked about.
    adapter_id: String,
    /// The last ancestor (the adapter itself when it has no parent).
    root: String,
    /// Number of ancestors.
    depth: usize,
    /// Ancestors, parent first.
    lineage: Vec<LineageEntry>,
}

/// The answer of `GET /adapters/{id}/descendants`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DescendantsResponse {
    /// The adapter asked about.
    adapter_id: String,
    /// Number of descendants.
    count: usize,
    /// Every adapter derived from it, breadth first, with its depth.
    descendants: Vec<LineageEntry>,
}

/// The answer of `POST /training/batches` when nothing was claimable.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NothingClaimed {
    /// Always null: no batch was made.
    batch_id: Option<u64>,
    /// Always 0.
    count: usize,
    /// Always empty.
    feedback: Vec<crate::model::Feedback>,
    /// Why nothing was claimed.
    #[schema(value_type = String)]
    message: &'static str,
}

/// One batch in `GET /training/batches`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BatchRow {
    /// The batch id.
    batch_id: u64,
    /// `leased`, `expired`, `committed` or `aborted`.
    #[schema(value_type = String)]
    state: &'static str,
    /// Items leased or trained on.
    count: usize,
    /// When it was claimed, ms since epoch.
    created_at: u64,
    /// Who claimed it.
    created_by: String,
    /// When the lease ends (or ended).
    lease_expires_at: u64,
    /// The adapter trained on it.
    trained_adapter_id: Option<String>,
    /// Its version.
    trained_adapter_version: Option<String>,
    /// When it was committed or aborted.
    finished_at: Option<u64>,
}

/// The answer of `GET /training/batches`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BatchList {
    /// Number of batches.
    count: usize,
    /// The batches, newest first, without their item lists.
    batches: Vec<BatchRow>,
}

/// `POST /adapters` (admin): create an adapter, optionally derived from a parent.
/// 201 when created, 200 when it existed (unchanged or filled in).
#[utoipa::path(
    post,
    path = "/api/v1/llm/adapters",
    tag = "adapters",
    request_body = NewAdapter,
    responses(
        (status = 201, description = "Created", body = AdapterCreated),
        (status = 200, description = "It existed: unchanged, or an auto-created adapter described now", body = AdapterCreated),
        (status = 409, description = "It exists with other values", body = ErrorBody),
    )
)]
pub async fn create_adapter(
    State(state): State<Arc<AppState>>,
    AdminCaller(caller): AdminCaller,
    ApiJson(req): ApiJson<NewAdapter>,
) -> Result<Response, ApiError> {
    let actor = caller.actor();
    let (adapter, outcome) = state.run(move |s| s.create_adapter(&actor, req)).await?;
    let (status, result) = match outcome {
        AdapterOutcome::Created => (StatusCode::CREATED, "created"),
        AdapterOutcome::Updated => (StatusCode::OK, "updated"),
        AdapterOutcome::Unchanged => (StatusCode::OK, "unchanged"),
    };
    Ok((status, Json(AdapterCreated { adapter, result })).into_response())
}

/// `GET /adapters/{id}`: the adapter, its feedback counters and children.
#[utoipa::path(
    get,
    path = "/api/v1/llm/adapters/{id}",
    tag = "adapters",
    params(("id" = String, Path, description = "The adapter id")),
    responses((status = 200, description = "The adapter with its counters and children", body = AdapterSummary))
)]
pub async fn get_adapter(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(id): ApiPath,
) -> Result<Json<AdapterSummary>, ApiError> {
    caller.require(Role::User)?;
    let org = caller.org().to_owned();
    Ok(Json(
        state.run(move |s| s.adapter_summary(&org, &id)).await?,
    ))
}

/// `GET /adapters/{id}/lineage`: ancestors, parent first, to the root.
#[utoipa::path(
    get,
    path = "/api/v1/llm/adapters/{id}/lineage",
    tag = "adapters",
    params(("id" = String, Path, description = "The adapter id")),
    responses((status = 200, description = "Ancestors, parent first", body = LineageResponse))
)]
pub async fn lineage(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(id): ApiPath,
) -> Result<Json<LineageResponse>, ApiError> {
    caller.require(Role::User)?;
    let org = caller.org().to_owned();
    let aid = id.clone();
    let lineage = state.run(move |s| s.lineage(&org, &aid)).await?;
    Ok(Json(LineageResponse {
        root: lineage.last().map_or_else(|| id.clone(), |e| e.id.clone()),
        adapter_id: id,
        depth: lineage.len(),
        lineage,
    }))
}

/// `GET /adapters/{id}/descendants`: every adapter derived from it, breadth first.
#[utoipa::path(
    get,
    path = "/api/v1/llm/adapters/{id}/descendants",
    tag = "adapters",
    params(("id" = String, Path, description = "The adapter id")),
    responses((status = 200, description = "Adapters derived from it, with depth", body = DescendantsResponse))
)]
pub async fn descendants(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(id): ApiPath,
) -> Result<Json<DescendantsResponse>, ApiError> {
    caller.require(Role::User)?;
    let org = caller.org().to_owned();
    let aid = id.clone();
    let d = state.run(move |s| s.descendants(&org, &aid)).await?;
    Ok(Json(DescendantsResponse {
        adapter_id: id,
        count: d.len(),
        descendants: d,
    }))
}

fn batch_id(raw: &str) -> Result<u64, ApiError> {
    raw.parse().map_err(|_| {
        ApiError::BadRequest(format!(
            "training batch id must be a positive integer, got '{raw}'"
        ))
    })
}

/// `POST /training/batches` (trainer): claim and lease up to `limit` items. 201 with the
/// batch and its items, or 200 with `count: 0` when nothing is claimable.
#[utoipa::path(
    post,
    path = "/api/v1/llm/training/batches",
    tag = "training",
    request_body = ClaimRequest,
    responses(
        (status = 201, description = "A batch was claimed", body = Claimed),
        (status = 200, description = "Nothing was claimable", body = NothingClaimed),
    )
)]
pub async fn claim(
    State(state): State<Arc<AppState>>,
    TrainerCaller(caller): TrainerCaller,
    ApiJson(req): ApiJson<ClaimRequest>,
) -> Result<Response, ApiError> {
    let actor = caller.actor();
    match state.run(move |s| s.claim(&actor, req)).await? {
        Some(claimed) => Ok((StatusCode::CREATED, Json(claimed)).into_response()),
        None => Ok((
            StatusCode::OK,
            Json(NothingClaimed {
                batch_id: None,
                count: 0,
                feedback: Vec::new(),
                message: "no approved, unused, unleased feedback matches",
            }),
        )
            .into_response()),
    }
}

/// `GET /training/batches?trained_adapter_id&state` (trainer): the org's batches, newest
/// first, without their item lists (see one batch for those).
#[utoipa::path(
    get,
    path = "/api/v1/llm/training/batches",
    tag = "training",
    params(
        ("trained_adapter_id" = Option<String>, Query, description = "Only batches that trained this adapter"),
        ("state" = Option<String>, Query, pattern = "^(leased|expired|committed|aborted)$", description = "Only batches in this state"),
    ),
    responses((status = 200, description = "The org's batches, newest first", body = BatchList))
)]
pub async fn list_batches(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    mut q: QueryParams,
) -> Result<Json<BatchList>, ApiError> {
    caller.require(Role::Trainer)?;
    let adapter = q.take("trained_adapter_id");
    let st = q.parse("state", "leased, expired, committed or aborted", |v| {
        ["leased", "expired", "committed", "aborted"]
            .contains(&v)
            .then(|| v.to_owned())
    })?;
    q.finish()?;
    let org = caller.org().to_owned();
    let batches = state
        .run(move |s| s.batches(&org, adapter.as_deref(), st.as_deref()))
        .await?;
    let rows: Vec<BatchRow> = batches
        .into_iter()
        .map(|v| BatchRow {
            batch_id: v.batch_id,
            state: v.state,
            count: v.count,
            created_at: v.batch.created_at,
            created_by: v.batch.created_by,
            lease_expires_at: v.batch.lease_expires_at,
            trained_adapter_id: v.batch.trained_adapter_id,
            trained_adapter_version: v.batch.trained_adapter_version,
            finished_at: v.batch.finished_at,
        })
        .collect();
    Ok(Json(BatchList {
        count: rows.len(),
        batches: rows,
    }))
}

/// `GET /training/batches/{id}` (trainer): state, counts, manifest.
#[utoipa::path(
    get,
    path = "/api/v1/llm/training/batches/{id}",
    tag = "training",
    params(("id" = u64, Path, description = "The training batch id")),
    responses((status = 200, description = "The batch", body = BatchView))
)]
pub async fn get_batch(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(id): ApiPath,
) -> Result<Json<BatchView>, ApiError> {
    caller.require(Role::Trainer)?;
    let id = batch_id(&id)?;
    let org = caller.org().to_owned();
    Ok(Json(state.run(move |s| s.batch(&org, id)).await?))
}

/// `POST /training/batches/{id}/commit` (trainer).
#[utoipa::path(
    post,
    path = "/api/v1/llm/training/batches/{id}/commit",
    tag = "training",
    params(("id" = u64, Path, description = "The training batch id")),
    request_body(content = Option<CommitRequest>, description = "Optional: the adapter trained on the batch"),
    responses(
        (status = 200, description = "The committed batch", body = BatchView),
        (status = 409, description = "The batch cannot commit (aborted, or its lease lost items)", body = ErrorBody),
    )
)]
pub async fn commit(
    State(state): State<Arc<AppState>>,
    TrainerCaller(caller): TrainerCaller,
    ApiPath(id): ApiPath,
    headers: axum::http::HeaderMap,
    RawBody(body): RawBody,
) -> Result<Json<BatchView>, ApiError> {
    let id = batch_id(&id)?;
    // The body is optional: an empty one (or JSON `null`) commits without naming a
    // trained adapter.
    let req: CommitRequest = if body.iter().all(u8::is_ascii_whitespace) {
        CommitRequest::default()
    } else {
        parse_json::<Option<CommitRequest>>(&headers, &body)?.unwrap_or_default()
    };
    let actor = caller.actor();
    Ok(Json(state.run(move |s| s.commit(&actor, id, req)).await?))
}

/// `POST /training/batches/{id}/abort` (trainer): return the items to the pool.
#[utoipa::path(
    post,
    path = "/api/v1/llm/training/batches/{id}/abort",
    tag = "training",
    params(("id" = u64, Path, description = "The training batch id")),
    responses(
        (status = 200, description = "The aborted batch", body = BatchView),
        (status = 409, description = "The batch is committed", body = ErrorBody),
    )
)]
pub async fn abort(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(id): ApiPath,
) -> Result<Json<BatchView>, ApiError> {
    caller.require(Role::Trainer)?;
    let id = batch_id(&id)?;
    let actor = caller.actor();
    Ok(Json(state.run(move |s| s.abort(&actor, id)).await?))
}

/// `GET /training/batches/{id}/export?format=sft|dpo|openai-dpo|kto|preference|labels`
/// (trainer): JSONL.
/// Counts are in `X-Feedgraph-Items` (items of the batch), `X-Feedgraph-Skipped` (items with
/// no line in this format, e.g. uncorrected negatives for DPO, or retracted ones),
/// `X-Feedgraph-Retracted` (rejected after training) and, for KTO, `X-KTO-Desirable` /
/// `X-KTO-Undesirable`.
#[utoipa::path(
    get,
    path = "/api/v1/llm/training/batches/{id}/export",
    tag = "training",
    params(
        ("id" = u64, Path, description = "The training batch id"),
        ("format" = String, Query, pattern = "^(sft|dpo|openai-dpo|kto|preference|labels)$", description = "sft, dpo, openai-dpo, kto, preference (rated pairs with a margin) or labels"),
    ),
    responses((
        status = 200,
        description = "One JSON object per line",
        body = String,
        content_type = "application/x-ndjson",
        headers(
            ("X-Feedgraph-Items" = u64, description = "Items of the batch"),
            ("X-Feedgraph-Skipped" = u64, description = "Items with no line in this format"),
            ("X-Feedgraph-Retracted" = u64, description = "Items rejected after training, left out"),
            ("X-KTO-Desirable" = u64, description = "KTO only: thumbs up"),
            ("X-KTO-Undesirable" = u64, description = "KTO only: thumbs down"),
        )
    ))
)]
pub async fn export(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(id): ApiPath,
    mut q: QueryParams,
) -> Result<Response, ApiError> {
    caller.require(Role::Trainer)?;
    let id = batch_id(&id)?;
    let format: ExportFormat = q
        .take("format")
        .ok_or_else(|| {
            ApiError::BadRequest(
                "missing query parameter 'format' (sft, dpo, openai-dpo, kto, preference, labels)"
                    .into(),
            )
        })?
        .parse()?;
    q.finish()?;
    let org = caller.org().to_owned();
    let e = state.run(move |s| s.export(&org, id, format)).await?;
    let mut body = e.lines.join("\n");
    if !body.is_empty() {
        body.push('\n');
    }
    let mut response = (StatusCode::OK, body).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    let mut set = |name: &'static str, v: usize| {
        if let Ok(v) = HeaderValue::from_str(&v.to_string()) {
            h.insert(name, v);
        }
    };
    set("x-feedgraph-items", e.items);
    set("x-feedgraph-skipped", e.skipped);
    set("x-feedgraph-retracted", e.retracted);
    if format == ExportFormat::Kto {
        set("x-kto-desirable", e.desirable);
        set("x-kto-undesirable", e.undesirable);
    }
    Ok(response)
}
