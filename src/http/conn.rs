//! Everything below the router: the accept loop and each connection's life.
//!
//! This module owns the defences against clients that hold connections without using
//! them: a cap on open connections (over it the loop stops accepting and new clients wait
//! in the kernel's listen queue), a pause after accept errors such as running out of file
//! descriptors (instead of a hot loop), an idle timeout between requests, a timeout on
//! reading a request head, a timeout on a stalled request body, and an early 413 for a
//! declared `Content-Length` over the body limit, sent before any of the body is read.
//!
//! Hyper answers some malformed requests itself (400, 414, 431) with an empty body. The
//! connection's I/O wrapper ([`Guarded`]) recognises those answers (a response written
//! while no request has reached the router) and replaces them with the usual
//! `{error, details}` JSON body.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderValue, Request, Response, header};
use axum::response::IntoResponse;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::{Instant, Sleep};

use super::error::{ApiError, ErrorBody};
use crate::config::ServerConfig;

/// How long the accept loop pauses after an accept error (e.g. out of file descriptors).
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(250);

/// The per-connection limits, taken from `[server]`.
#[derive(Debug, Clone)]
pub struct ConnLimits {
    /// Time to receive a whole request head, from its first byte.
    pub header_read_timeout: Duration,
    /// Time a connection may sit between requests.
    pub idle_timeout: Duration,
    /// Longest pause while reading a request body.
    pub body_read_timeout: Duration,
    /// Most open connections.
    pub max_connections: usize,
    /// Largest request body, bytes.
    pub body_limit: usize,
}

impl ConnLimits {
    /// The limits of a server configuration (zero timeouts and caps are raised to one).
    pub fn from_config(c: &ServerConfig) -> Self {
        let secs = |s: u64| Duration::from_secs(s.max(1));
        ConnLimits {
            header_read_timeout: secs(c.header_read_timeout_secs),
            idle_timeout: secs(c.idle_timeout_secs),
            body_read_timeout: secs(c.body_read_timeout_secs),
            max_connections: c.max_connections.clamp(1, Semaphore::MAX_PERMITS),
            body_limit: c.body_limit_bytes,
        }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting, asks every
/// connection to finish its current request and close, and waits up to `grace` for them.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    let limits = Arc::new(limits);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (closing_tx, closing_rx) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut last_full_warning: Option<Instant> = None;
    loop {
        if slots.available_permits() == 0
            && last_full_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(10))
        {
            tracing::warn!(
                max_connections = limits.max_connections,
                "connection limit reached; new clients wait until a connection closes"
            );
            last_full_warning = Some(Instant::now());
        }
        let slot = tokio::select! {
            _ = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(s) => s,
                Err(_) => break,
            },
        };
        let stream = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    accept_error(&e).await;
                    continue;
                }
            },
        };
        let (app, limits, closing) = (app.clone(), limits.clone(), closing_rx.clone());
        tokio::spawn(async move {
            serve_connection(stream, app, &limits, closing).await;
            drop(slot);
        });
    }
    drop(listener);
    tracing::info!("shutting down: finishing in-flight requests");
    let _ = closing_tx.send(true);
    // Every connection holds a slot until it ends: having them all back means all are done.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    tokio::select! {
        _ = slots.acquire_many(all) => {}
        _ = tokio::time::sleep(grace) => {
            tracing::warn!(
                grace_secs = grace.as_secs(),
                "grace period over; closing the remaining connections"
            );
        }
    }
}

/// Logs an accept error and pauses: out of descriptors (EMFILE/ENFILE) or memory, retrying
/// at once would spin. Errors about one aborted connection need no pause.
async fn accept_error(e: &io::Error) {
    match e.kind() {
        io::ErrorKind::ConnectionAborted
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::Interrupted => {
            tracing::debug!(error = %e, "accept error on one connection");
        }
        _ => {
            tracing::warn!(
                error = %e,
                pause_ms = ACCEPT_ERROR_PAUSE.as_millis() as u64,
                "accept error (too many open files? lower server.max_connections or raise \
                 the open-file limit); pausing before accepting again"
            );
            tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
        }
    }
}

async fn serve_connection(
    stream: TcpStream,
    app: Router,
    limits: &ConnLimits,
    mut closing: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let phase = Arc::new(AtomicU8::new(IDLE));
    let io = TokioIo::new(Guarded::new(stream, limits, phase.clone()));
    let (body_timeout, body_limit) = (limits.body_read_timeout, limits.body_limit);
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        phase.store(BUSY, Ordering::Release);
        let app = app.clone();
        async move { Ok::<_, Infallible>(handle_request(app, req, body_timeout, body_limit).await) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        // A backstop only: `Guarded` enforces the idle and head timeouts separately (hyper's
        // timer runs from when it starts waiting for a head, so it covers both).
        .header_read_timeout(limits.idle_timeout + limits.header_read_timeout)
        .keep_alive(true);
    let conn = builder.serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = async { closing.wait_for(|c| *c).await.map(|_| ()) } => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// Runs one request through the router, after the checks that need no handler: an early
/// 413 for a declared body over the limit, a request id (taken from the client when it
/// sends a short printable one, else a new ULID), and the stalled-body timeout.
async fn handle_request(
    app: Router,
    req: Request<Incoming>,
    body_timeout: Duration,
    body_limit: usize,
) -> Response<axum::body::Body> {
    let request_id = match req.headers().get(REQUEST_ID) {
        Some(id) if id.len() <= 128 && !id.is_empty() && id.to_str().is_ok() => id.clone(),
        _ => HeaderValue::from_str(&ulid::Ulid::new().to_string())
            .unwrap_or(HeaderValue::from_static("unknown")),
    };
    // Every log line of this request, on the runtime or on the blocking pool (see
    // `AppState::run`), is written inside this span and so carries the request id.
    let span = tracing::info_span!(
        "request",
        request_id = request_id.to_str().unwrap_or("unknown"),
        method = %req.method(),
        path = req.uri().path(),
    );
    let started = std::time::Instant::now();
    let mut response = tracing::Instrument::instrument(
        route_request(app, req, body_timeout, body_limit, request_id.clone()),
        span.clone(),
    )
    .await;
    span.in_scope(|| {
        tracing::debug!(
            status = response.status().as_u16(),
            elapsed_us = started.elapsed().as_micros() as u64,
            "answered"
        );
    });
    response.headers_mut().insert(REQUEST_ID, request_id);
    response
}

/// [`handle_request`] inside the request's span.
async fn route_request(
    app: Router,
    req: Request<Incoming>,
    body_timeout: Duration,
    body_limit: usize,
    request_id: HeaderValue,
) -> Response<axum::body::Body> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(n) = declared
        && n > body_limit as u64
    {
        tracing::debug!(
            declared = n,
            "refusing a body over the limit before reading it"
        );
        let mut response = ApiError::PayloadTooLarge(format!(
            "the declared request body of {n} bytes is larger than the limit of \
             {body_limit} bytes (server.body_limit_bytes)"
        ))
        .into_response();
        // The body is never read, so the connection cannot carry another request.
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return response;
    }
    let (mut parts, body) = req.into_parts();
    parts.headers.insert(REQUEST_ID, request_id);
    let body = axum::body::Body::new(tower_http::timeout::TimeoutBody::new(body_timeout, body));
    let req = Request::from_parts(parts, body);
    let mut app = app;
    match tower::Service::call(&mut app, req).await {
        Ok(r) => r,
        Err(never) => match never {},
    }
}

/// The request id header: taken from the client if it sends a short printable one (at most
/// 128 bytes), else made here; echoed on the response and carried by every log line of the
/// request (its span's `request_id`).
pub const REQUEST_ID: &str = "x-request-id";

/// Waiting for (or between) requests.
const IDLE: u8 = 0;
/// Reading a request head.
const HEAD: u8 = 1;
/// A request reached the router; its response has not started.
const BUSY: u8 = 2;

/// A connection's socket with the idle and head timeouts, and the rewriting of hyper's
/// own error answers into JSON ones.
struct Guarded {
    inner: TcpStream,
    /// Shared with the request service, which marks the start of each request.
    phase: Arc<AtomicU8>,
    /// When the current idle or head phase began.
    since: Instant,
    idle_timeout: Duration,
    header_timeout: Duration,
    timer: Pin<Box<Sleep>>,
    /// Bytes of an answer written in place of hyper's (sent before anything else).
    pending: Vec<u8>,
    /// After our own answer, everything else hyper writes is dropped.
    replaced: bool,
}

impl Guarded {
    fn new(inner: TcpStream, limits: &ConnLimits, phase: Arc<AtomicU8>) -> Self {
        let now = Instant::now();
        Guarded {
            inner,
            phase,
            since: now,
            idle_timeout: limits.idle_timeout,
            header_timeout: limits.header_read_timeout,
            timer: Box::pin(tokio::time::sleep_until(now + limits.idle_timeout)),
            pending: Vec::new(),
            replaced: false,
        }
    }

    /// The deadline of the current phase, if it has one.
    fn deadline(&self) -> Option<(u8, Instant)> {
        match self.phase.load(Ordering::Acquire) {
            IDLE => Some((IDLE, self.since + self.idle_timeout)),
            HEAD => Some((HEAD, self.since + self.header_timeout)),
            _ => None,
        }
    }

    /// Writes what is left of our own answer; `Ready(Ok)` once it is all out.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.pending.is_empty() {
            let n = match Pin::new(&mut self.inner).poll_write(cx, &self.pending) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            };
            self.pending.drain(..n);
        }
        Poll::Ready(Ok(()))
    }

    fn replace_with(&mut self, status: u16) {
        self.pending = error_response_bytes(status);
        self.replaced = true;
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.replaced {
            // Our answer ends the connection: read nothing more.
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before && this.phase.load(Ordering::Acquire) == IDLE {
                    this.phase.store(HEAD, Ordering::Release);
                    this.since = Instant::now();
                }
                return Poll::Ready(Ok(()));
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => {}
        }
        let Some((phase, deadline)) = this.deadline() else {
            return Poll::Pending;
        };
        if this.timer.deadline() != deadline {
            this.timer.as_mut().reset(deadline);
        }
        if this.timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        if phase == IDLE {
            // An idle connection simply ends, as if the client had closed it.
            tracing::debug!("closing an idle connection");
            return Poll::Ready(Ok(()));
        }
        tracing::debug!("request head not received in time; answering 408");
        this.replace_with(408);
        // Best effort: the answer is small and the socket buffer empty, so this normally
        // completes at once; the connection ends either way.
        let _ = this.poll_pending(cx);
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "request head not received in time",
        )))
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.replaced {
            return match this.poll_pending(cx) {
                Poll::Ready(Ok(())) => Poll::Ready(Ok(buf.len())),
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            };
        }
        match this.phase.load(Ordering::Acquire) {
            HEAD => {
                if let Some(status) = hyper_error_status(buf) {
                    // No request reached the router: this is hyper refusing a malformed
                    // request with an empty body. Answer with ours instead.
                    this.replace_with(status);
                    return match this.poll_pending(cx) {
                        Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                        _ => Poll::Ready(Ok(buf.len())),
                    };
                }
            }
            // An interim `100 Continue` is not the response: the body is still to come.
            BUSY if buf.starts_with(b"HTTP/1.1 100 ") => {}
            BUSY => {
                // The response has started: the connection is between requests again.
                this.since = Instant::now();
                this.phase.store(IDLE, Ordering::Release);
            }
            _ => this.since = Instant::now(),
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.poll_pending(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.inner).poll_flush(cx),
            other => other,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.poll_pending(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.inner).poll_shutdown(cx),
            other => other,
        }
    }
}

/// The status of a bodiless 4xx response head, which is what hyper writes when it refuses
/// a request it could not parse.
fn hyper_error_status(buf: &[u8]) -> Option<u16> {
    let rest = buf
        .strip_prefix(b"HTTP/1.1 ")
        .or_else(|| buf.strip_prefix(b"HTTP/1.0 "))?;
    let code = std::str::from_utf8(rest.get(..3)?)
        .ok()?
        .parse::<u16>()
        .ok()?;
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = buf[..head_end].to_ascii_lowercase();
    let empty = head.windows(19).any(|w| w == b"\r\ncontent-length: 0");
    ((400..500).contains(&code) && empty).then_some(code)
}

/// A whole HTTP/1.1 response with the `{error, details}` body for an error answered below
/// the router. The connection closes after it.
fn error_response_bytes(status: u16) -> Vec<u8> {
    let (reason, error, details) = match status {
        408 => (
            "Request Timeout",
            "Request Timeout",
            "the request head was not received in time (server.header_read_timeout_secs)",
        ),
        414 => (
            "URI Too Long",
            "URI Too Long",
            "the request target (path and query) is longer than the server accepts",
        ),
        431 => (
            "Request Header Fields Too Large",
            "Request Header Fields Too Large",
            "the request headers are too large or too many; send fewer or shorter headers",
        ),
        _ => (
            "Bad Request",
            "Invalid request",
            "the request is not valid HTTP/1.1: check the request line and the headers \
             (no control characters, at most one Content-Length, a valid method and path)",
        ),
    };
    let status = if matches!(status, 408 | 414 | 431) {
        status
    } else {
        400
    };
    let body = serde_json::to_vec(&ErrorBody {
        error,
        details: details.to_owned(),
    })
    .unwrap_or_default();
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_hyper_error_heads_only() {
        let hyper_431 =
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        assert_eq!(hyper_error_status(hyper_431), Some(431));
        let ours = b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 40\r\n\r\n{}";
        assert_eq!(hyper_error_status(ours), None);
        assert_eq!(hyper_error_status(b"{\"HTTP/1.1 400"), None);
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(hyper_error_status(ok), None);
    }

    #[test]
    fn replacement_answers_are_complete_json_responses() {
        for status in [400, 408, 414, 431, 418] {
            let bytes = error_response_bytes(status);
            let text = String::from_utf8(bytes).unwrap();
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            let v: serde_json::Value = serde_json::from_str(body).unwrap();
            assert!(v["error"].is_string() && v["details"].is_string(), "{text}");
            assert!(head.contains(&format!("content-length: {}", body.len())));
            assert!(head.contains("connection: close"));
        }
    }
}
