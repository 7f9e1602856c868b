//! Graph query endpoints: `POST /graph/query`, `GET /graph/queries`,
//! `POST /graph/queries/{name}`. Every query sees only the caller's org.
//!
//! Results are streamed. A query runs on the blocking pool and hands its rows over in
//! batches (`query.stream_batch_rows`, `query.stream_batch_bytes`); each batch is encoded
//! there, as JSON or as an Arrow IPC record batch (`Accept:
//! application/vnd.apache.arrow.stream`), and goes to the response body through a channel
//! of [`CHANNEL_BATCHES`] batches. A client that reads slowly makes the query wait on the
//! channel, so the server holds at most a few batches whatever the row count. Time limits:
//! `query.timeout_ms` until the first batch is sent and for the client to take each next
//! one; `query.stream_timeout_ms` for the whole answer once rows flow (its memory is bounded
//! and `query.max_work` bounds its graph work, so mostly answers too big to finish are cut;
//! the texts it reads from the store and the bytes it encodes are not counted as work).
//!
//! The JSON body is `{"columns": [...], "rows": [...], "stats": {...}, "complete": true}`,
//! written in that order as the rows arrive. An error before the first batch is sent is an
//! ordinary error response with its status. An error after it (a limit, a type error, the
//! timeout) ends the body with `"error": {"error", "details", "status"}` in place of
//! `stats` and `complete`: a body without `"complete": true` is not the whole result. An
//! Arrow stream that fails midway is cut short (the chunked body never ends), which every
//! HTTP client reports as an error.
//!
//! If the client hangs up, the response body is dropped: its [`CancelOnDrop`] raises the
//! query's cancel flag and the channel closes, so the query stops at its next batch or
//! within a few thousand units of work.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::AppState;
use super::auth::Role;
use super::error::ApiError;
use super::extract::{ApiJson, ApiPath, Caller};
use crate::cypher::arrow::{ArrowEncoder, MEDIA_TYPE as ARROW_MEDIA_TYPE};
use crate::cypher::{CypherError, Limit, NamedQuery, QueryStats, RowSink, Rows, StreamOptions};
use crate::service::ServiceError;

/// Encoded batches the channel between a query and its response body holds: with the
/// one being built and the one being written, what a streamed query holds in memory.
pub const CHANNEL_BATCHES: usize = 2;

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

/// The JSON answer to a query, as streamed (documentation of the body; it is written
/// piece by piece, never built whole).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct QueryResponse {
    /// Column names: aliases, or the expression as written.
    columns: Vec<String>,
    /// Rows, one value per column.
    rows: Vec<Vec<serde_json::Value>>,
    /// What the query cost; absent when it failed midway.
    stats: Option<QueryStats>,
    /// True when the rows are the whole result; absent when the query failed midway.
    complete: Option<bool>,
    /// Why the query stopped after some rows were sent; the rows before it stand.
    error: Option<StreamError>,
}

/// An error after part of a result was sent: what the error response would have said.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StreamError {
    /// Short category, e.g. `Query limit exceeded`.
    #[schema(value_type = String)]
    error: &'static str,
    /// What exactly went wrong.
    details: String,
    /// The status an error response would have had.
    status: u16,
}

/// The Arrow IPC stream answer (documentation only).
#[derive(Debug, utoipa::ToSchema)]
#[schema(value_type = String, format = Binary)]
pub struct ArrowStream(pub Vec<u8>);

/// Raises a query's cancel flag when dropped: when the response body is done (the query
/// is done by then) or dropped because the client went away, or when the handler's future
/// is dropped before the response starts.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// How the client wants the rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Arrow,
}

impl Format {
    /// Arrow when `Accept` names the Arrow stream type (without `q=0`), JSON otherwise.
    fn of(headers: &HeaderMap) -> Format {
        let arrow = headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|item| {
                let mut parts = item.split(';').map(str::trim);
                parts
                    .next()
                    .is_some_and(|m| m.eq_ignore_ascii_case(ARROW_MEDIA_TYPE))
                    && !parts.any(|p| {
                        p.strip_prefix("q=")
                            .and_then(|q| q.parse::<f32>().ok())
                            .is_some_and(|q| q <= 0.0)
                    })
            });
        if arrow { Format::Arrow } else { Format::Json }
    }

    fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Arrow => ARROW_MEDIA_TYPE,
        }
    }
}

/// One piece of a response body.
type Chunk = Result<Bytes, io::Error>;

/// Receives a query's batches on the blocking pool, encodes them and sends them to the
/// response body, waiting while the channel is full.
struct HttpSink {
    tx: mpsc::Sender<Bytes>,
    runtime: tokio::runtime::Handle,
    /// When the streamed query's time is up (`query.stream_timeout_ms`): waiting for the
    /// client counts.
    deadline: Instant,
    /// The longest the client may take to accept one batch (`query.timeout_ms`).
    batch_wait: Duration,
    stream_timeout_ms: u128,
    format: Format,
    columns: Vec<String>,
    arrow: Option<ArrowEncoder>,
    /// Whether anything was sent: from then on the status is 200 and errors go in the body.
    sent: bool,
    /// The batch sizes (`query.stream_batch_*`).
    options: StreamOptions,
    /// Set once the body's last bytes are in the channel: a channel that closes without it
    /// (a failed Arrow stream, a panic, a client too slow to take the end) cuts the body.
    complete: Arc<AtomicBool>,
    /// The length of the last JSON batch: the next one's buffer starts with room for
    /// about as much, instead of growing to it.
    json_len: usize,
}

impl HttpSink {
    fn send(&mut self, bytes: Vec<u8>) -> Result<(), CypherError> {
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        let over_deadline = remaining <= self.batch_wait;
        let remaining = remaining.min(self.batch_wait);
        let send = self.tx.send(Bytes::from(bytes));
        match self
            .runtime
            .block_on(async { tokio::time::timeout(remaining, send).await })
        {
            Ok(Ok(())) => {
                self.sent = true;
                Ok(())
            }
            // The body was dropped: the client went away.
            Ok(Err(_)) => Err(CypherError::Cancelled),
            Err(_) if over_deadline => Err(CypherError::limit(
                Limit::Timeout,
                format!(
                    "the query ran longer than {} ms, waiting for its client to read the rows (query.stream_timeout_ms)",
                    self.stream_timeout_ms
                ),
            )),
            Err(_) => Err(CypherError::limit(
                Limit::Timeout,
                format!(
                    "the client took longer than {} ms to read the next rows (query.timeout_ms)",
                    self.batch_wait.as_millis()
                ),
            )),
        }
    }

    /// The JSON text before the first row.
    fn json_head(&self) -> Vec<u8> {
        let mut out = b"{\"columns\":".to_vec();
        // A list of strings always serializes.
        let _ = serde_json::to_writer(&mut out, &self.columns);
        out.extend_from_slice(b",\"rows\":[");
        out
    }

    /// Sends what follows the last batch: the trailer, or the error after some rows. An
    /// error before anything was sent is handed back, for an ordinary error response.
    fn finish(mut self, result: Result<QueryStats, ServiceError>) -> Result<(), ServiceError> {
        match (self.format, result) {
            (_, Err(e)) if !self.sent => Err(e),
            (Format::Json, Ok(stats)) => {
                let mut out = if self.sent {
                    Vec::new()
                } else {
                    self.json_head()
                };
                out.extend_from_slice(b"],\"stats\":");
                let _ = serde_json::to_writer(&mut out, &stats);
                out.extend_from_slice(b",\"complete\":true}");
                self.send_last(out);
                Ok(())
            }
            (Format::Json, Err(e)) => {
                let e = ApiError::from(e);
                let (status, error) = e.parts();
                let mut out = b"],\"error\":".to_vec();
                let _ = serde_json::to_writer(
                    &mut out,
                    &StreamError {
                        error,
                        details: e.to_string(),
                        status: status.as_u16(),
                    },
                );
                out.push(b'}');
                self.send_last(out);
                Ok(())
            }
            (Format::Arrow, Ok(_)) => {
                let mut enc = self
                    .arrow
                    .take()
                    .unwrap_or_else(|| ArrowEncoder::new(&self.columns));
                match enc.finish() {
                    Ok(bytes) => {
                        self.send_last(bytes);
                        Ok(())
                    }
                    Err(e) if !self.sent => Err(ServiceError::Query(e)),
                    Err(e) => {
                        self.abort(&e.to_string());
                        Ok(())
                    }
                }
            }
            (Format::Arrow, Err(e)) => {
                self.abort(&e.to_string());
                Ok(())
            }
        }
    }

    /// Cuts an Arrow body short: the client sees the stream end with an error.
    fn abort(&mut self, why: &str) {
        tracing::info!(
            cause = why,
            "a streamed Arrow result failed midway; cutting the body short"
        );
        // The body sees the channel close without `complete`, and fails.
    }

    /// Sends the last bytes of a body that ends properly, then marks it complete.
    fn send_last(&mut self, bytes: Vec<u8>) {
        if self.send(bytes).is_ok() {
            self.complete.store(true, Ordering::Release);
        }
    }
}

impl RowSink for HttpSink {
    fn begin(&mut self, columns: &[String]) -> Result<(), CypherError> {
        self.columns = columns.to_vec();
        if self.format == Format::Arrow {
            self.arrow = Some(ArrowEncoder::new(columns));
        }
        Ok(())
    }

    fn options(&self) -> StreamOptions {
        self.options
    }

    fn batch(&mut self, rows: Rows) -> Result<(), CypherError> {
        let bytes = match (self.format, self.arrow.as_mut()) {
            (Format::Arrow, Some(enc)) => enc.batch(&rows)?,
            _ => {
                let mut out = if self.sent {
                    Vec::with_capacity(self.json_len.saturating_add(self.json_len / 8))
                } else {
                    self.json_head()
                };
                rows.write_json_rows(&mut out, !self.sent)
                    .map_err(|e| CypherError::Type {
                        message: format!("a row could not be written as JSON: {e}"),
                        position: None,
                    })?;
                self.json_len = out.len();
                out
            }
        };
        drop(rows);
        self.send(bytes)
    }
}

/// A response body fed by a query's channel. Dropping it (the client went away, or the
/// body is done) cancels the query.
struct ResultBody {
    first: Option<Bytes>,
    rx: mpsc::Receiver<Bytes>,
    /// Set by the sink once the last bytes are sent.
    complete: Arc<AtomicBool>,
    /// The body failed: held back for one poll so the connection can flush what it has
    /// before the error cuts it off.
    failed: bool,
    _cancel: CancelOnDrop,
}

impl futures_core::Stream for ResultBody {
    type Item = Chunk;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Chunk>> {
        let this = self.get_mut();
        if let Some(first) = this.first.take() {
            return Poll::Ready(Some(Ok(first)));
        }
        if this.failed {
            return Poll::Ready(Some(Err(io::Error::other(
                "the query failed after part of its result was sent",
            ))));
        }
        match this.rx.poll_recv(cx) {
            Poll::Ready(None) if !this.complete.load(Ordering::Acquire) => {
                this.failed = true;
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Poll::Ready(other) => Poll::Ready(other.map(Ok)),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Which query to run: a text, or a named query resolved on the blocking pool.
enum Text {
    Query(String),
    Named(String),
}

/// Runs a query on the blocking pool and answers with its streamed result in `format`.
/// Errors before the first batch is sent are ordinary error responses.
async fn stream(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    text: Text,
    params: serde_json::Map<String, serde_json::Value>,
) -> Result<Response, ApiError> {
    let service = state.service()?;
    let format = Format::of(headers);
    let org = caller.org().to_owned();
    let cancel = Arc::new(AtomicBool::new(false));
    let guard = CancelOnDrop(Arc::clone(&cancel));
    let (tx, mut rx) = mpsc::channel(CHANNEL_BATCHES);
    let limits = service.query_limits();
    let (timeout, stream_timeout) = (limits.timeout, limits.stream_timeout.max(limits.timeout));
    let complete = Arc::new(AtomicBool::new(false));
    let mut sink = HttpSink {
        tx,
        runtime: tokio::runtime::Handle::current(),
        deadline: Instant::now() + stream_timeout,
        stream_timeout_ms: stream_timeout.as_millis(),
        batch_wait: timeout,
        format,
        columns: Vec::new(),
        arrow: None,
        sent: false,
        options: state.query_stream,
        complete: Arc::clone(&complete),
        json_len: 0,
    };
    let span = tracing::Span::current();
    let task = tokio::task::spawn_blocking(move || {
        span.in_scope(|| {
            let result = match &text {
                Text::Query(q) => service.query_stream(&org, q, &params, &cancel, &mut sink),
                Text::Named(name) => service
                    .named_query_text(name, &params)
                    .and_then(|q| service.query_stream(&org, q, &params, &cancel, &mut sink)),
            };
            sink.finish(result)
        })
    });
    let Some(first) = rx.recv().await else {
        // Nothing was sent: the query failed before its first batch.
        task.await
            .map_err(|e| ApiError::Internal(format!("query task failed: {e}")))??;
        return Err(ApiError::Internal(
            "the query ended without an answer".into(),
        ));
    };
    let body = ResultBody {
        first: Some(first),
        rx,
        complete,
        failed: false,
        _cancel: guard,
    };
    let mut response = Body::from_stream(body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    Ok(response)
}

/// `POST /graph/query {query, params}` -> `{columns, rows, stats, complete}`, streamed;
/// an Arrow IPC stream with `Accept: application/vnd.apache.arrow.stream`.
#[utoipa::path(
    post,
    path = "/api/v1/llm/graph/query",
    tag = "graph",
    request_body = QueryRequest,
    responses((status = 200, description = "Columns, rows and what the query cost, streamed as the rows are produced", content(
        (QueryResponse = "application/json"),
        (ArrowStream = "application/vnd.apache.arrow.stream")
    )))
)]
pub async fn query(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(req): ApiJson<QueryRequest>,
) -> Result<Response, ApiError> {
    caller.require(Role::User)?;
    let text = req
        .query
        .filter(|q| !q.trim().is_empty())
        .ok_or_else(|| ApiError::BadRequest("missing required field 'query'".into()))?;
    stream(&state, &caller, &headers, Text::Query(text), req.params).await
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

/// `POST /graph/queries/{name} {params}`: runs a named query, streamed like
/// `POST /graph/query`.
#[utoipa::path(
    post,
    path = "/api/v1/llm/graph/queries/{name}",
    tag = "graph",
    params(("name" = String, Path, description = "A name from GET /graph/queries")),
    request_body = NamedRequest,
    responses((status = 200, description = "Columns, rows and what the query cost, streamed as the rows are produced", content(
        (QueryResponse = "application/json"),
        (ArrowStream = "application/vnd.apache.arrow.stream")
    )))
)]
pub async fn run_named(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    headers: HeaderMap,
    ApiPath(name): ApiPath,
    ApiJson(req): ApiJson<NamedRequest>,
) -> Result<Response, ApiError> {
    caller.require(Role::User)?;
    stream(&state, &caller, &headers, Text::Named(name), req.params).await
}
