//! Graph query endpoints: `POST /graph/query`, `GET /graph/queries`,
//! `POST /graph/queries/{name}`. Every query sees only the caller's org.
//!
//! A query runs on the blocking pool. If its client hangs up, the handler's future is
//! dropped; its [`CancelOnDrop`] guard then raises the query's cancel flag, and the query
//! stops within a few thousand units of work instead of running to its limits.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};

use super::AppState;
use super::auth::Role;
use super::error::ApiError;
use super::extract::{ApiJson, ApiPath, Caller};
use crate::cypher::{NamedQuery, QueryResult};

/// The body of `POST /graph/query`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryRequest {
    /// A read-only openCypher query.
    #[schema(required = true, value_type = String, pattern = "\\S")]
    query: Option<String>,
    /// Values of the query's `$parameters`, by name.
    #[serde(default)]
    params: serde_json::Map<String, serde_json::Value>,
}

/// The body of `POST /graph/queries/{name}`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NamedRequest {
    /// Values of the query's `$parameters`, by name.
    #[serde(default)]
    params: serde_json::Map<String, serde_json::Value>,
}

/// The answer of `GET /graph/queries`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NamedQueries {
    /// Number of named queries.
    count: usize,
    /// The queries.
    queries: Vec<NamedQuery>,
}

/// Raises a query's cancel flag when dropped: when the handler finishes (the query is done
/// by then) or when its future is dropped because the client went away.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// `POST /graph/query {query, params}` -> `{columns, rows, stats}`.
#[utoipa::path(
    post,
    path = "/api/v1/llm/graph/query",
    tag = "graph",
    request_body = QueryRequest,
    responses((status = 200, description = "Columns, rows and what the query cost", body = QueryResult))
)]
pub async fn query(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiJson(req): ApiJson<QueryRequest>,
) -> Result<Json<QueryResult>, ApiError> {
    caller.require(Role::User)?;
    let text = req
        .query
        .filter(|q| !q.trim().is_empty())
        .ok_or_else(|| ApiError::BadRequest("missing required field 'query'".into()))?;
    let org = caller.org().to_owned();
    let cancel = Arc::new(AtomicBool::new(false));
    let _guard = CancelOnDrop(Arc::clone(&cancel));
    Ok(Json(
        state
            .run(move |s| s.query_cancellable(&org, &text, &req.params, &cancel))
            .await?,
    ))
}

/// `GET /graph/queries`: the named queries shipped in `queries/`.
#[utoipa::path(
    get,
    path = "/api/v1/llm/graph/queries",
    tag = "graph",
    responses((status = 200, description = "The named queries", body = NamedQueries))
)]
pub async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<NamedQueries>, ApiError> {
    caller.require(Role::User)?;
    let queries = state.service()?.named_queries();
    Ok(Json(NamedQueries {
        count: queries.len(),
        queries,
    }))
}

/// `POST /graph/queries/{name} {params}`: runs a named query.
#[utoipa::path(
    post,
    path = "/api/v1/llm/graph/queries/{name}",
    tag = "graph",
    params(("name" = String, Path, description = "A name from GET /graph/queries")),
    request_body = NamedRequest,
    responses((status = 200, description = "Columns, rows and what the query cost", body = QueryResult))
)]
pub async fn run_named(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiPath(name): ApiPath,
    ApiJson(req): ApiJson<NamedRequest>,
) -> Result<Json<QueryResult>, ApiError> {
    caller.require(Role::User)?;
    let org = caller.org().to_owned();
    let cancel = Arc::new(AtomicBool::new(false));
    let _guard = CancelOnDrop(Arc::clone(&cancel));
    Ok(Json(
        state
            .run(move |s| s.named_query_cancellable(&org, &name, &req.params, &cancel))
            .await?,
    ))
}
