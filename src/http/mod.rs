//! The HTTP layer: axum router, JWT auth, rate limits, request parsing, and the mapping of
//! every error to a status and the `{error, details}` body.
//!
//! The server binds first and opens the store in the background, so `/healthz` answers at
//! once and `/readyz` turns 200 when the store is open and the graph built; API calls get
//! 503 until then. Handlers run service calls on the blocking pool (they wait on fsync),
//! never holding a lock across an await.

pub mod auth;
pub mod conn;
pub mod console;
pub mod error;
pub mod extract;
pub mod feedback;
pub mod graph;
pub mod ratelimit;
pub mod training;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{Method, Uri};
use axum::routing::{get, post};
use tokio::sync::{oneshot, watch};

use crate::config::{Config, ConsoleConfig, ServerConfig};
use crate::service::{Service, ServiceError};
use auth::Authenticator;
use error::ApiError;
use ratelimit::RateLimits;

/// Errors starting or running the server.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The auth setup is unusable.
    #[error(transparent)]
    Auth(#[from] auth::AuthError),
    /// Binding or serving failed.
    #[error("{context}: {source}")]
    Io {
        /// What we were doing.
        context: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// Opening the data directory failed.
    #[error("opening the data directory: {0}")]
    Open(#[from] ServiceError),
    /// A background task died.
    #[error("server task failed: {0}")]
    Task(String),
}

/// Shared state of all handlers.
#[derive(Debug)]
pub struct AppState {
    service: OnceLock<Arc<Service>>,
    auth: Authenticator,
    limits: RateLimits,
}

impl AppState {
    /// The service, or 503 while it is still opening.
    pub fn service(&self) -> Result<Arc<Service>, ApiError> {
        self.service.get().cloned().ok_or_else(|| {
            ApiError::Unavailable("the store is still opening; retry shortly (see /readyz)".into())
        })
    }

    /// Runs a blocking service call on the blocking pool.
    pub async fn run<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&Service) -> Result<T, ServiceError> + Send + 'static,
    {
        let service = self.service()?;
        tokio::task::spawn_blocking(move || f(&service))
            .await
            .map_err(|e| ApiError::Internal(format!("service task failed: {e}")))?
            .map_err(ApiError::from)
    }
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn readyz(State(state): State<Arc<AppState>>) -> Result<Json<serde_json::Value>, ApiError> {
    // Not ready either while opening or once the store refuses writes after a failed sync.
    if let Err(e) = state.service()?.store().check_writable() {
        tracing::warn!("not ready: {e}");
        return Err(ApiError::Unavailable(error::STORE_REFUSING.to_owned()));
    }
    Ok(Json(serde_json::json!({ "status": "ready" })))
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::NotFound(format!("no route for {method} {}", uri.path()))
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed(format!("{method} is not allowed on {}", uri.path()))
}

/// A route for tests only (`server.enable_test_routes`): proves that a panicking handler
/// gives a 500 with the usual body instead of a reset connection.
async fn test_panic() -> Json<serde_json::Value> {
    panic!("deliberate panic from the test-only route");
}

/// Turns a handler's panic into a 500 with the usual body; the panic is logged inside the
/// request's span, so the log line carries its request id.
fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> axum::response::Response {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned());
    axum::response::IntoResponse::into_response(ApiError::Internal(format!(
        "a request handler panicked: {message}"
    )))
}

/// The span of one request: method, path and request id (set by [`conn`]).
fn request_span(req: &axum::http::Request<axum::body::Body>) -> tracing::Span {
    let id = req
        .headers()
        .get(conn::REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
}

/// The application router.
pub fn router(state: Arc<AppState>, server: &ServerConfig, console: &ConsoleConfig) -> Router {
    let api = Router::new()
        .route("/feedback", post(feedback::submit).get(feedback::list))
        .route("/feedback/stats", get(feedback::stats))
        .route(
            "/feedback/by-adapter/{adapter_id}",
            get(feedback::by_adapter),
        )
        .route("/feedback/mark-used", post(feedback::mark_used))
        .route("/feedback/{id}", get(feedback::get).patch(feedback::review))
        .route("/feedback/{id}/link", post(feedback::link))
        .route("/feedback/{id}/history", get(feedback::history))
        .route("/feedback/{id}/impact", get(feedback::impact))
        .route("/adapters", post(training::create_adapter))
        .route("/adapters/{id}", get(training::get_adapter))
        .route("/adapters/{id}/lineage", get(training::lineage))
        .route("/adapters/{id}/descendants", get(training::descendants))
        .route(
            "/training/batches",
            post(training::claim).get(training::list_batches),
        )
        .route("/training/batches/{id}", get(training::get_batch))
        .route("/training/batches/{id}/commit", post(training::commit))
        .route("/training/batches/{id}/abort", post(training::abort))
        .route("/training/batches/{id}/export", get(training::export))
        .route("/graph/query", post(graph::query))
        .route("/graph/queries", get(graph::list))
        .route("/graph/queries/{name}", post(graph::run_named));
    let mut app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .nest("/api/v1/llm", api);
    if server.enable_test_routes {
        app = app.route("/__test/panic", get(test_panic));
    }
    if console.enabled {
        app = app.nest("/console", console::router(state.clone(), console));
    }
    app.fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(server.body_limit_bytes))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            panic_response,
        ))
        .layer(tower_http::trace::TraceLayer::new_for_http().make_span_with(request_span))
        .with_state(state)
}

/// A started server.
#[derive(Debug)]
pub struct RunningServer {
    /// The address it listens on (the real port when bound to port 0).
    pub addr: SocketAddr,
    /// Whether the signing secret file was created by this start.
    pub created_secret: bool,
    state: Arc<AppState>,
    shutdown: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), HttpError>>,
    ready: watch::Receiver<Option<Result<(), String>>>,
}

impl RunningServer {
    /// Waits until the store is open (or failed to open).
    pub async fn ready(&mut self) -> Result<(), HttpError> {
        loop {
            if let Some(r) = self.ready.borrow().clone() {
                return r.map_err(HttpError::Task);
            }
            if self.ready.changed().await.is_err() {
                return Err(HttpError::Task("the opening task ended".into()));
            }
        }
    }

    /// Asks for a graceful shutdown: stop accepting, finish in-flight requests, flush.
    pub fn shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Waits for the server to stop; then makes every acknowledged write durable.
    pub async fn wait(self) -> Result<(), HttpError> {
        let served = self
            .task
            .await
            .map_err(|e| HttpError::Task(e.to_string()))?;
        if let Some(service) = self.state.service.get().cloned() {
            tokio::task::spawn_blocking(move || service.store().make_durable())
                .await
                .map_err(|e| HttpError::Task(e.to_string()))?
                .map_err(|e| HttpError::Open(e.into()))?;
        }
        served
    }
}

/// Binds the listener, starts serving (503 until ready) and opens the store in the
/// background. `stop` is an extra shutdown trigger (e.g. SIGTERM).
pub async fn start(
    config: Config,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<RunningServer, HttpError> {
    let secret_existed = auth::secret_path(&config).exists();
    let auth = Authenticator::from_config(&config)?;
    let created_secret = config.auth.hs256 && config.auth.secret.is_none() && !secret_existed;
    let listener = tokio::net::TcpListener::bind(&config.server.bind)
        .await
        .map_err(|source| HttpError::Io {
            context: format!("binding {}", config.server.bind),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| HttpError::Io {
        context: "reading the bound address".into(),
        source,
    })?;
    let state = Arc::new(AppState {
        service: OnceLock::new(),
        auth,
        limits: RateLimits::new(&config.rate_limit),
    });

    let (ready_tx, ready_rx) = watch::channel(None);
    {
        let state = state.clone();
        let config = config.clone();
        tokio::spawn(async move {
            let opened = tokio::task::spawn_blocking(move || Service::open(&config)).await;
            let result = match opened {
                Ok(Ok(service)) => {
                    let _ = state.service.set(Arc::new(service));
                    tracing::info!("store open and graph built; ready");
                    Ok(())
                }
                Ok(Err(e)) => Err(e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = &result {
                tracing::error!(error = %e, "cannot open the data directory");
            }
            let _ = ready_tx.send(Some(result));
        });
    }
    {
        // A weak handle: the sweeper must not keep the service (and sled's lock) alive
        // after the server stops.
        let state = Arc::downgrade(&state);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(30));
            loop {
                tick.tick().await;
                match state.upgrade() {
                    Some(s) => s.limits.sweep(),
                    None => break,
                }
            }
        });
    }

    let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
    let app = router(state.clone(), &config.server, &config.console);
    let grace = Duration::from_secs(config.server.shutdown_grace_secs);
    let limits = conn::ConnLimits::from_config(&config.server);
    let task = tokio::spawn(async move {
        let stop = async move {
            tokio::select! {
                _ = shutdown_rx => {}
                _ = stop => {}
            }
        };
        // A client that never finishes its request must not hold the process forever:
        // after `grace` the remaining connections are dropped.
        conn::serve(listener, app, limits, stop, grace).await;
        Ok(())
    });
    Ok(RunningServer {
        addr,
        created_secret,
        state,
        shutdown: Some(shutdown_tx),
        task,
        ready: ready_rx,
    })
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
