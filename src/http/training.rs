//! Adapter and training-batch endpoints: `/adapters...` and `/training/batches...`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::auth::Role;
use super::error::ApiError;
use super::extract::{
    AdminCaller, ApiJson, ApiPath, Caller, QueryParams, RawBody, TrainerCaller, parse_json,
};
use crate::service::NewAdapter;
use crate::service::training::{ClaimRequest, CommitRequest, ExportFormat};
use crate::store::AdapterOutcome;

/// `POST /adapters` (admin): create an adapter, optionally derived from a parent.
/// 201 when created, 200 when it existed (unchanged or filled in).
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
    let mut body = serde_json::to_value(&adapter)
        .map_err(|e| ApiError::Internal(format!("rendering adapter: {e}")))?;
    body["result"] = result.into();
    Ok((status, Json(body)).into_response())
}

/// `GET /adapters/{id}`: the adapter, its feedback counters and children.
pub async fn get_adapter(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(id): ApiPath,
) -> Result<Json<crate::service::lineage::AdapterSummary>, ApiError> {
    caller.require(Role::User)?;
    let org = caller.org().to_owned();
    Ok(Json(
        state.run(move |s| s.adapter_summary(&org, &id)).await?,
    ))
}

/// `GET /adapters/{id}/lineage`: ancestors, parent first, to the root.
pub async fn lineage(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(id): ApiPath,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Role::User)?;
    let org = caller.org().to_owned();
    let aid = id.clone();
    let lineage = state.run(move |s| s.lineage(&org, &aid)).await?;
    Ok(Json(serde_json::json!({
        "adapter_id": id,
        "root": lineage.last().map_or(id.as_str(), |e| e.id.as_str()),
        "depth": lineage.len(),
        "lineage": lineage,
    })))
}

/// `GET /adapters/{id}/descendants`: every adapter derived from it, breadth first.
pub async fn descendants(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(id): ApiPath,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Role::User)?;
    let org = caller.org().to_owned();
    let aid = id.clone();
    let d = state.run(move |s| s.descendants(&org, &aid)).await?;
    Ok(Json(serde_json::json!({
        "adapter_id": id,
        "count": d.len(),
        "descendants": d,
    })))
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
            Json(serde_json::json!({
                "batch_id": null,
                "count": 0,
                "feedback": [],
                "message": "no approved, unused, unleased feedback matches"
            })),
        )
            .into_response()),
    }
}

/// `GET /training/batches?trained_adapter_id&state` (trainer): the org's batches, newest
/// first, without their item lists (see one batch for those).
pub async fn list_batches(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    mut q: QueryParams,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Role::Trainer)?;
    let adapter = q.take("trained_adapter_id");
    let st = q.take("state");
    q.finish()?;
    let org = caller.org().to_owned();
    let batches = state
        .run(move |s| s.batches(&org, adapter.as_deref(), st.as_deref()))
        .await?;
    let rows: Vec<serde_json::Value> = batches
        .into_iter()
        .map(|v| {
            serde_json::json!({
                "batch_id": v.batch_id,
                "state": v.state,
                "count": v.count,
                "created_at": v.batch.created_at,
                "created_by": v.batch.created_by,
                "lease_expires_at": v.batch.lease_expires_at,
                "trained_adapter_id": v.batch.trained_adapter_id,
                "trained_adapter_version": v.batch.trained_adapter_version,
                "finished_at": v.batch.finished_at,
            })
        })
        .collect();
    Ok(Json(
        serde_json::json!({ "count": rows.len(), "batches": rows }),
    ))
}

/// `GET /training/batches/{id}` (trainer): state, counts, manifest.
pub async fn get_batch(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(id): ApiPath,
) -> Result<Json<crate::service::training::BatchView>, ApiError> {
    caller.require(Role::Trainer)?;
    let id = batch_id(&id)?;
    let org = caller.org().to_owned();
    Ok(Json(state.run(move |s| s.batch(&org, id)).await?))
}

/// `POST /training/batches/{id}/commit` (trainer).
pub async fn commit(
    State(state): State<Arc<AppState>>,
    TrainerCaller(caller): TrainerCaller,
    ApiPath(id): ApiPath,
    headers: axum::http::HeaderMap,
    RawBody(body): RawBody,
) -> Result<Json<crate::service::training::BatchView>, ApiError> {
    let id = batch_id(&id)?;
    // The body is optional: an empty one commits without naming a trained adapter.
    let req: CommitRequest = if body.iter().all(u8::is_ascii_whitespace) {
        CommitRequest::default()
    } else {
        parse_json(&headers, &body)?
    };
    let actor = caller.actor();
    Ok(Json(state.run(move |s| s.commit(&actor, id, req)).await?))
}

/// `POST /training/batches/{id}/abort` (trainer): return the items to the pool.
pub async fn abort(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(id): ApiPath,
) -> Result<Json<crate::service::training::BatchView>, ApiError> {
    caller.require(Role::Trainer)?;
    let id = batch_id(&id)?;
    let actor = caller.actor();
    Ok(Json(state.run(move |s| s.abort(&actor, id)).await?))
}

/// `GET /training/batches/{id}/export?format=sft|dpo|openai-dpo|kto` (trainer): JSONL.
/// Counts are in `X-Feedgraph-Items` (items of the batch), `X-Feedgraph-Skipped` (items with
/// no line in this format, e.g. uncorrected negatives for DPO, or retracted ones),
/// `X-Feedgraph-Retracted` (rejected after training) and, for KTO, `X-KTO-Desirable` /
/// `X-KTO-Undesirable`.
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
                "missing query parameter 'format' (sft, dpo, openai-dpo, kto)".into(),
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
