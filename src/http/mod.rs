//! The HTTP layer: axum router, JWT auth, rate limits, request parsing, and the mapping of
//! every error to a status and the `{error, details}` body.
//!
//! The server binds first and opens the store in the background, so `/healthz` answers at
//! once and `/readyz` turns 200 when the store is open and the graph built; API calls get
//! 503 until then. Handlers run service calls on the blocking pool (they wait on fsync),
//! never holding a lock across an await.

pub mod auth;
pub mod batch;
pub mod conn;
pub mod console;
pub mod erasure;
pub mod error;
pub mod extract;
pub mod feedback;
pub mod graph;
pub mod kinds;
pub mod metrics;
pub mod openapi;
pub mod ratelimit;
pub mod render;
pub mod training;
pub mod webhooks;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::handler::Handler;
use axum::http::{Method, Uri};
use axum::routing::{MethodFilter, get, on};
use tokio::sync::{oneshot, watch};

use crate::config::Config;
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
    /// The metrics endpoint's settings are unusable.
    #[error(transparent)]
    Metrics(#[from] metrics::MetricsError),
    /// A background task died.
    #[error("server task failed: {0}")]
    Task(String),
    /// A setting is unusable (e.g. a bad `webhooks.allowed_cidrs` entry).
    #[error("configuration: {0}")]
    Config(String),
}

/// Shared state of all handlers.
#[derive(Debug)]
pub struct AppState {
    service: OnceLock<Arc<Service>>,
    auth: Authenticator,
    limits: RateLimits,
    telemetry: metrics::Telemetry,
    /// Most items of one `POST /feedback/batch` (`batch.max_items`).
    batch_max_items: usize,
    /// How graph query results are cut into batches (`query.stream_batch_*`).
    query_stream: crate::cypher::StreamOptions,
    /// Where webhooks may point (`[webhooks]`), checked when one is registered.
    webhook_policy: crate::events::allow::TargetPolicy,
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
        // The request's span goes along, so log lines on the blocking pool carry its id.
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || span.in_scope(|| f(&service)))
            .await
            .map_err(|e| ApiError::Internal(format!("service task failed: {e}")))?
            .map_err(ApiError::from)
    }
}

/// The answer of the health and readiness probes.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok` (healthz) or `ready` (readyz).
    #[schema(value_type = String)]
    status: &'static str,
    /// readyz of a replica over a shared store: how far behind the change log it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    replication: Option<crate::service::follow::ReplicationStatus>,
    /// readyz: the orgs this replica serves (`every org`, `orgs [...]`, `shard i/n`).
    #[serde(skip_serializing_if = "Option::is_none")]
    placement: Option<String>,
}

/// `GET /healthz`: the process is up.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    security(()),
    responses((status = 200, description = "The process is up", body = Health))
)]
async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok",
        replication: None,
        placement: None,
    })
}

/// `GET /readyz`: the store is open and the graph built.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    security(()),
    responses((status = 200, description = "Ready to serve the API", body = Health))
)]
async fn readyz(State(state): State<Arc<AppState>>) -> Result<Json<Health>, ApiError> {
    // Not ready either while opening or once the store refuses writes after a failed sync.
    // A database backend answers over the network: off the runtime's threads.
    let service = state.service()?;
    let (replication, placement) = (service.replication(), service.placement().to_string());
    let writable = tokio::task::spawn_blocking(move || service.store().check_writable())
        .await
        .map_err(|e| ApiError::Internal(format!("the readiness check failed: {e}")))?;
    if let Err(e) = writable {
        tracing::warn!("not ready: {e}");
        let why = match e {
            crate::store::StoreError::Unavailable(_) => error::STORE_DOWN,
            _ => error::STORE_REFUSING,
        };
        return Err(ApiError::Unavailable(why.to_owned()));
    }
    Ok(Json(Health {
        status: "ready",
        replication,
        placement: Some(placement),
    }))
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

/// A method of the API, as routes declare it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// GET
    Get,
    /// POST
    Post,
    /// PATCH
    Patch,
    /// DELETE
    Delete,
}

impl Verb {
    /// The method's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "GET",
            Verb::Post => "POST",
            Verb::Patch => "PATCH",
            Verb::Delete => "DELETE",
        }
    }

    fn filter(self) -> MethodFilter {
        match self {
            Verb::Get => MethodFilter::GET,
            Verb::Post => MethodFilter::POST,
            Verb::Patch => MethodFilter::PATCH,
            Verb::Delete => MethodFilter::DELETE,
        }
    }
}

/// The router under construction and the list of what it serves: every route goes
/// through [`Routes::add`], so the list is the router's own (the OpenAPI test compares
/// it with the document).
struct Routes {
    router: Router<Arc<AppState>>,
    list: Vec<(Verb, &'static str)>,
}

impl Routes {
    /// Serves `handler` for `verb` on the path template `path`; its responses carry the
    /// template for the request metrics.
    fn add<H, T>(mut self, verb: Verb, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, Arc<AppState>>,
        T: 'static,
    {
        // A synchronous map of the response: no boxed future per request.
        let tagged = on(verb.filter(), handler).layer(tower::util::MapResponseLayer::new(
            move |mut response: axum::response::Response| {
                response.extensions_mut().insert(metrics::RouteTag(path));
                response
            },
        ));
        self.router = self.router.route(path, tagged);
        self.list.push((verb, path));
        self
    }
}

/// Every route of the server, with its handler.
fn routes() -> Routes {
    use Verb::{Delete, Get, Patch, Post};
    let r = Routes {
        router: Router::new(),
        list: Vec::new(),
    };
    r.add(Get, "/healthz", healthz)
        .add(Get, "/readyz", readyz)
        .add(Get, "/metrics", metrics::metrics)
        .add(Get, "/openapi.json", openapi::document)
        .add(Post, "/api/v1/llm/feedback", feedback::submit)
        .add(Get, "/api/v1/llm/feedback", feedback::list)
        .add(Get, "/api/v1/llm/feedback/stats", feedback::stats)
        .add(
            Get,
            "/api/v1/llm/feedback/by-adapter/{adapter_id}",
            feedback::by_adapter,
        )
        .add(Post, "/api/v1/llm/feedback/mark-used", feedback::mark_used)
        .add(Post, "/api/v1/llm/feedback/batch", batch::submit_batch)
        .add(Get, "/api/v1/llm/feedback/summary", kinds::summary)
        .add(Post, "/api/v1/llm/score-configs", kinds::put_score_config)
        .add(Get, "/api/v1/llm/score-configs", kinds::list_score_configs)
        .add(
            Get,
            "/api/v1/llm/score-configs/{name}",
            kinds::get_score_config,
        )
        .add(
            Get,
            "/api/v1/llm/score-configs/{name}/history",
            kinds::score_config_history,
        )
        .add(Get, "/api/v1/llm/feedback/{id}", feedback::get)
        .add(Patch, "/api/v1/llm/feedback/{id}", feedback::review)
        .add(Post, "/api/v1/llm/feedback/{id}/link", feedback::link)
        .add(Get, "/api/v1/llm/feedback/{id}/history", feedback::history)
        .add(Get, "/api/v1/llm/feedback/{id}/impact", feedback::impact)
        .add(Post, "/api/v1/llm/feedback/{id}/erase", erasure::erase_item)
        .add(Post, "/api/v1/llm/erasures", erasure::erase)
        .add(Get, "/api/v1/llm/erasures", erasure::list)
        .add(Get, "/api/v1/llm/erasures/{id}", erasure::get)
        .add(Post, "/api/v1/llm/admin/compact", erasure::compact)
        .add(Post, "/api/v1/llm/adapters", training::create_adapter)
        .add(Get, "/api/v1/llm/adapters/{id}", training::get_adapter)
        .add(Get, "/api/v1/llm/adapters/{id}/lineage", training::lineage)
        .add(
            Get,
            "/api/v1/llm/adapters/{id}/descendants",
            training::descendants,
        )
        .add(Post, "/api/v1/llm/training/batches", training::claim)
        .add(Get, "/api/v1/llm/training/batches", training::list_batches)
        .add(
            Get,
            "/api/v1/llm/training/batches/{id}",
            training::get_batch,
        )
        .add(
            Post,
            "/api/v1/llm/training/batches/{id}/commit",
            training::commit,
        )
        .add(
            Post,
            "/api/v1/llm/training/batches/{id}/abort",
            training::abort,
        )
        .add(
            Get,
            "/api/v1/llm/training/batches/{id}/export",
            training::export,
        )
        .add(Post, "/api/v1/llm/graph/query", graph::query)
        .add(Get, "/api/v1/llm/graph/queries", graph::list)
        .add(Post, "/api/v1/llm/graph/queries/{name}", graph::run_named)
        .add(Post, "/api/v1/llm/webhooks", webhooks::register)
        .add(Get, "/api/v1/llm/webhooks", webhooks::list)
        .add(Get, "/api/v1/llm/webhooks/{id}", webhooks::get)
        .add(Patch, "/api/v1/llm/webhooks/{id}", webhooks::update)
        .add(Delete, "/api/v1/llm/webhooks/{id}", webhooks::delete)
        .add(
            Get,
            "/api/v1/llm/webhooks/{id}/deliveries",
            webhooks::deliveries,
        )
        .add(
            Post,
            "/api/v1/llm/webhooks/{id}/deliveries/{delivery_id}/redeliver",
            webhooks::redeliver,
        )
}

/// Applies the retention policies every `retention.interval_secs` on a thread of its own
/// (erasures block on the disk); it holds the service weakly and ends with the server.
fn spawn_retention(service: &Arc<Service>) {
    let Some(every) = service.retention_interval() else {
        return;
    };
    let weak = Arc::downgrade(service);
    let spawned = std::thread::Builder::new()
        .name("feedgraph-retention".into())
        .spawn(move || {
            loop {
                // Sleep in short steps so a stopped server is noticed soon.
                let until = std::time::Instant::now() + every;
                while std::time::Instant::now() < until {
                    std::thread::sleep(every.min(Duration::from_millis(200)));
                    if weak.strong_count() == 0 {
                        return;
                    }
                }
                let Some(service) = weak.upgrade() else {
                    return;
                };
                for org in service.retention_orgs() {
                    let now = crate::model::now_millis();
                    match service.apply_retention(&org, now, &mut |_, _| {}) {
                        Ok(Some(r)) => tracing::info!(org, erasure = %r.id, items = r.items, "retention erased old items"),
                        Ok(None) => {}
                        Err(e) => tracing::error!(org, error = %e, "retention failed"),
                    }
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the retention thread");
    }
}

/// The method and path template of every route the router serves (test-only routes
/// aside), in the order they were added.
pub fn route_list() -> Vec<(Verb, &'static str)> {
    routes().list
}

/// The application router.
pub fn router(state: Arc<AppState>, config: &Config) -> Router {
    let server = &config.server;
    let mut app = routes().router;
    if server.enable_test_routes {
        app = app.route("/__test/panic", get(test_panic));
    }
    if config.console.enabled {
        app = console::mount(app, state.clone(), config);
    }
    app.fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(server.body_limit_bytes))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            panic_response,
        ))
        // Outside the catch-panic layer, so a handler's panic is counted as its 500.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
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

    /// Waits for the server to stop; then makes every acknowledged write durable and, on
    /// sled, writes the graph checkpoint (`storage.graph_checkpoint`).
    pub async fn wait(self) -> Result<(), HttpError> {
        let served = self
            .task
            .await
            .map_err(|e| HttpError::Task(e.to_string()))?;
        if let Some(service) = self.state.service.get().cloned() {
            tokio::task::spawn_blocking(move || {
                service.store().flush()?;
                // Last: the store refuses writes from here on (see `Service::checkpoint_graph`).
                service.checkpoint_graph();
                Ok::<(), crate::store::StoreError>(())
            })
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
        telemetry: metrics::Telemetry::new(&config.metrics)?,
        batch_max_items: config.batch.max_items,
        query_stream: crate::cypher::StreamOptions {
            batch_rows: config.query.stream_batch_rows.max(1),
            batch_bytes: config.query.stream_batch_bytes,
        },
        webhook_policy: config.webhooks.policy().map_err(HttpError::Config)?,
    });

    let (ready_tx, ready_rx) = watch::channel(None);
    {
        let state = state.clone();
        let config = config.clone();
        tokio::spawn(async move {
            let webhooks = config.webhooks.clone();
            let opened = tokio::task::spawn_blocking(move || Service::open(&config)).await;
            let result = match opened {
                Ok(Ok(service)) => {
                    state.telemetry.register_service(&service);
                    let service = Arc::new(service);
                    service.start_following();
                    if webhooks.enabled {
                        // Holds the service weakly: it ends with the server.
                        if let Err(e) =
                            crate::events::delivery::spawn(Arc::downgrade(&service), webhooks)
                        {
                            tracing::error!(error = %e, "webhook delivery not started");
                        }
                    }
                    spawn_retention(&service);
                    crate::service::erasure::spawn_rewriter(&service);
                    crate::service::runs::spawn_builder(&service, render::write_feedback);
                    let _ = state.service.set(service);
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
    let app = router(state.clone(), &config);
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
