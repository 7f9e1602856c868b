//! `/metrics`: the Prometheus text exposition (format 0.0.4) of every instrument.
//!
//! Instruments are `prometheus-client` types, each owned by the layer that records it: the
//! store's syncer (group-commit batch sizes, sync times), the service (graph query times and
//! limits hit) and this layer (requests, submits, rate-limited requests, graph sizes). One
//! [`Registry`] here holds them all; the store's and the service's join it once the store is
//! open. Graph sizes are read from the index when a scrape comes in.
//!
//! Label values come from fixed sets (route templates, never raw paths; method; status;
//! outcome), so the number of series stays bounded. The only open-ended label, `org`, is
//! there only with `metrics.per_org_labels`. Recording a request costs one read-locked hash
//! lookup per family and allocates nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use super::AppState;
use super::error::ApiError;
use crate::config::MetricsConfig;
use crate::graph::GraphIndex;
use crate::service::Service;
use crate::service::metrics::{OrgLabel, Tag};

/// The content type of the Prometheus text format (version 0.0.4).
pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The route a response came from, put on it by the router (see `super::routes`); a
/// response without one matched no route.
#[derive(Debug, Clone, Copy)]
pub struct RouteTag(pub &'static str);

/// Labels of a request: the matched route template, the method and the status.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    method: &'static str,
    status: u16,
}

/// Labels of a request's latency: route template and method.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
    method: &'static str,
}

/// Request latencies from 0.1 ms to about 6.5 s.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_1, 2.0, 17))
}

/// Errors setting up the metrics endpoint.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The scrape token file cannot be read or is empty.
    #[error("metrics.bearer_token_file {path}: {problem}")]
    TokenFile {
        /// The file.
        path: String,
        /// What is wrong with it.
        problem: String,
    },
}

/// Every instrument of the server and the registry that renders them.
#[derive(Debug)]
pub struct Telemetry {
    enabled: bool,
    per_org: bool,
    token: Option<String>,
    /// Held only to register and to render, never across an await.
    registry: Mutex<Registry>,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    submits: Family<(Tag, OrgLabel), Counter>,
    rate_limited: Family<(Tag, OrgLabel), Counter>,
    graph_nodes: Family<(Tag, OrgLabel), Gauge>,
    graph_edges: Family<OrgLabel, Gauge>,
}

impl Telemetry {
    /// The instruments of this layer, registered; reads the scrape token if one is set.
    pub fn new(config: &MetricsConfig) -> Result<Self, MetricsError> {
        let token = match &config.bearer_token_file {
            None => None,
            Some(path) => {
                let fail = |problem: String| MetricsError::TokenFile {
                    path: path.display().to_string(),
                    problem,
                };
                let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
                let text = text.trim();
                if text.is_empty() {
                    return Err(fail("the file is empty".into()));
                }
                Some(text.to_owned())
            }
        };
        let t = Telemetry {
            enabled: config.enabled,
            per_org: config.per_org_labels,
            token,
            registry: Mutex::new(Registry::default()),
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            submits: Family::default(),
            rate_limited: Family::default(),
            graph_nodes: Family::default(),
            graph_edges: Family::default(),
        };
        {
            let mut r = t.registry.lock();
            r.register(
                "feedgraph_http_requests",
                "HTTP requests answered, by route template, method and status",
                t.requests.clone(),
            );
            r.register_with_unit(
                "feedgraph_http_request_duration",
                "Time to answer an HTTP request (until the response head), by route and method",
                Unit::Seconds,
                t.latency.clone(),
            );
            r.register(
                "feedgraph_submits",
                "Feedback items stored by POST /feedback, by validation status \
                 (replayed idempotent requests are not counted)",
                t.submits.clone(),
            );
            r.register(
                "feedgraph_rate_limited",
                "Requests refused by a rate limit (429), by the limit's scope (user or org)",
                t.rate_limited.clone(),
            );
            r.register(
                "feedgraph_graph_nodes",
                "Nodes in the graph index, by kind (feedback, adapter)",
                t.graph_nodes.clone(),
            );
            r.register(
                "feedgraph_graph_edges",
                "Edges in the graph index (FEEDBACK_FOR and DERIVED_FROM)",
                t.graph_edges.clone(),
            );
        }
        Ok(t)
    }

    /// Adds the service's and the store's instruments (once the store is open).
    pub fn register_service(&self, service: &Service) {
        service.register_metrics(&mut self.registry.lock());
    }

    /// Records one answered request.
    pub fn request(&self, route: &'static str, method: &Method, status: u16, took: Duration) {
        let method = method_label(method);
        self.requests
            .get_or_create(&RequestLabels {
                route,
                method,
                status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels { route, method })
            .observe(took.as_secs_f64());
    }

    /// Records one stored submit with its validation status.
    pub fn submit(&self, org: &str, status: &'static str) {
        self.submits
            .get_or_create(&(Tag("status", status), OrgLabel::new(self.per_org, org)))
            .inc();
    }

    /// Records one request refused by the `scope` (user or org) rate limit.
    pub fn rate_limited(&self, org: &str, scope: &'static str) {
        self.rate_limited
            .get_or_create(&(Tag("scope", scope), OrgLabel::new(self.per_org, org)))
            .inc();
    }

    /// Whether a request may read the metrics: always when no scrape token is set.
    fn allows(&self, authorization: Option<&HeaderValue>) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let given = authorization
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .unwrap_or("");
        constant_time_eq(given.as_bytes(), token.as_bytes())
    }

    /// Reads the graph sizes from the index into their gauges.
    fn read_graph(&self, graph: &GraphIndex) {
        let (mut feedback, mut adapters, mut edges) = (0i64, 0i64, 0i64);
        for org in graph.orgs() {
            let Some(g) = graph.org(&org) else { continue };
            let f = i64::try_from(g.feedback().len()).unwrap_or(i64::MAX);
            let a = i64::try_from(g.adapters().len()).unwrap_or(i64::MAX);
            let e = i64::try_from(g.edge_count()).unwrap_or(i64::MAX);
            if self.per_org {
                let label = OrgLabel::new(true, &org);
                self.graph_nodes
                    .get_or_create(&(Tag("kind", "feedback"), label.clone()))
                    .set(f);
                self.graph_nodes
                    .get_or_create(&(Tag("kind", "adapter"), label.clone()))
                    .set(a);
                self.graph_edges.get_or_create(&label).set(e);
            } else {
                feedback = feedback.saturating_add(f);
                adapters = adapters.saturating_add(a);
                edges = edges.saturating_add(e);
            }
        }
        if !self.per_org {
            let none = OrgLabel::default();
            self.graph_nodes
                .get_or_create(&(Tag("kind", "feedback"), none.clone()))
                .set(feedback);
            self.graph_nodes
                .get_or_create(&(Tag("kind", "adapter"), none.clone()))
                .set(adapters);
            self.graph_edges.get_or_create(&none).set(edges);
        }
    }

    /// The text exposition of every instrument.
    pub fn render(&self, graph: Option<&GraphIndex>) -> Result<String, std::fmt::Error> {
        if let Some(graph) = graph {
            self.read_graph(graph);
        }
        let mut out = String::with_capacity(16 * 1024);
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry.lock())?;
        Ok(out)
    }
}

/// Compares two byte strings in time that depends on their lengths only.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The method as a label value from a fixed set.
fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PATCH => "PATCH",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Middleware recording every request the router answers, by the route that answered.
pub async fn track(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let response = next.run(req).await;
    let route = response
        .extensions()
        .get::<RouteTag>()
        .map_or("unmatched", |t| t.0);
    state.telemetry.request(
        route,
        &method,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// `GET /metrics`: the Prometheus text exposition. No token unless
/// `metrics.bearer_token_file` is set; 404 when `metrics.enabled` is false.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    security((), ("bearer" = [])),
    responses((
        status = 200,
        description = "Prometheus text format 0.0.4",
        body = String,
        content_type = "text/plain"
    ))
)]
pub async fn metrics(
    State(state): State<Arc<AppState>>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    let t = &state.telemetry;
    if !t.enabled {
        return Err(ApiError::NotFound(
            "the metrics endpoint is turned off (metrics.enabled)".into(),
        ));
    }
    if !t.allows(headers.get(header::AUTHORIZATION)) {
        return Err(ApiError::Unauthorized(
            "the metrics endpoint needs its scrape token (metrics.bearer_token_file)".into(),
        ));
    }
    let service = state.service.get().cloned();
    let text = t
        .render(service.as_deref().map(Service::graph))
        .map_err(|e| ApiError::Internal(format!("rendering metrics: {e}")))?;
    let mut response = text.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
