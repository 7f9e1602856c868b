//! The OpenAPI 3.1 document of the HTTP API, served at `/openapi.json`.
//!
//! It is generated from the code: each handler carries a `#[utoipa::path]` annotation
//! (method, path, parameters, bodies, success statuses), and every request and response
//! body is a Rust type deriving `ToSchema`, the same type the handler serialises. The error
//! statuses every operation can answer, all with the `{error, details}` body, are added
//! here once ([`ErrorResponses`]). `tests/openapi.rs` checks that the document describes
//! exactly the routes of [`super::route_list`], and the schemathesis run checks the
//! server's answers against it.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{self, RefOr, ResponseBuilder};

use super::error::ErrorBody;
use super::{batch, erasure, feedback, graph, kinds, metrics, training, webhooks};

/// The document's root: every operation and the schemas they use.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "feedgraph",
        description = "A graph-centric feedback store for LLM answers and the LoRA adapters \
                       behind them. Every `/api/v1/llm` operation needs a bearer JWT whose \
                       `org` is the tenant and whose `roles` grant `user`, `trainer` or \
                       `admin`. Every error has the body `{error, details}`; every response \
                       carries `x-request-id`."
    ),
    paths(
        super::healthz,
        super::readyz,
        metrics::metrics,
        document,
        feedback::submit,
        feedback::list,
        feedback::stats,
        feedback::by_adapter,
        feedback::mark_used,
        batch::submit_batch,
        kinds::summary,
        kinds::put_score_config,
        kinds::list_score_configs,
        kinds::get_score_config,
        kinds::score_config_history,
        feedback::get,
        feedback::review,
        feedback::link,
        feedback::history,
        feedback::impact,
        erasure::erase_item,
        erasure::erase,
        erasure::list,
        erasure::get,
        erasure::compact,
        training::create_adapter,
        training::get_adapter,
        training::lineage,
        training::descendants,
        training::claim,
        training::list_batches,
        training::get_batch,
        training::commit,
        training::abort,
        training::export,
        graph::query,
        graph::list,
        graph::run_named,
        webhooks::register,
        webhooks::list,
        webhooks::get,
        webhooks::update,
        webhooks::delete,
        webhooks::deliveries,
        webhooks::redeliver,
    ),
    components(schemas(ErrorBody)),
    modifiers(&ErrorResponses),
    security(("bearer" = [])),
    tags(
        (name = "feedback", description = "Submitting, reading, linking and reviewing feedback"),
        (name = "adapters", description = "Adapters and their DERIVED_FROM lineage"),
        (name = "training", description = "Training batches: claim, commit, abort, export"),
        (name = "graph", description = "Read-only openCypher over the caller's org graph"),
        (name = "webhooks", description = "Lifecycle events sent to your endpoints, signed (admin)"),
        (name = "operations", description = "Health, readiness, metrics and this document"),
    )
)]
pub struct ApiDoc;

/// Adds the bearer scheme, and to every operation the error statuses it can answer (each
/// with the `{error, details}` body) that its annotation does not list itself.
struct ErrorResponses;

/// Statuses any request can get before or around its handler: a malformed request or
/// parameter (400), a stalled head or body (408), a body over the limit (413), an
/// unexpected failure (500), the store still opening or refusing after a failed sync (503).
const ANY: &[(u16, &str)] = &[
    (
        400,
        "The request is malformed: a parameter, header or body is invalid",
    ),
    (408, "The request head or body stalled"),
    (413, "The body is larger than server.body_limit_bytes"),
    (
        500,
        "The server failed unexpectedly; the cause is in its log",
    ),
];

/// What every `/api/v1/llm` operation can answer besides [`ANY`].
const API: &[(u16, &str)] = &[
    (401, "No valid bearer token"),
    (403, "The token's role does not allow this"),
    (404, "No such record in the caller's org"),
    (415, "The body is not application/json"),
    (
        429,
        "Over a rate limit (or, for queries, the org's concurrent queries); see Retry-After",
    ),
    (
        503,
        "The store is opening, or refuses requests after a failed sync",
    ),
];

impl utoipa::Modify for ErrorResponses {
    fn modify(&self, doc: &mut openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        for (path, item) in doc.paths.paths.iter_mut() {
            let extra: &[(u16, &str)] = match path.as_str() {
                p if p.starts_with("/api/") => API,
                "/metrics" => &[
                    (401, "A scrape token is configured and was not given"),
                    (404, "Metrics are turned off (metrics.enabled)"),
                ],
                "/readyz" => &[(503, "Not ready: the store is opening or refuses writes")],
                _ => &[],
            };
            let operations = [
                item.get.as_mut(),
                item.post.as_mut(),
                item.patch.as_mut(),
                item.put.as_mut(),
                item.delete.as_mut(),
            ];
            for op in operations.into_iter().flatten() {
                for (status, description) in ANY.iter().chain(extra) {
                    let code = status.to_string();
                    if op.responses.responses.contains_key(&code) {
                        continue;
                    }
                    op.responses
                        .responses
                        .insert(code, RefOr::T(error_response(*status, description)));
                }
            }
        }
    }
}

/// An error response: the `{error, details}` body, and `Retry-After` with a 429.
fn error_response(status: u16, description: &str) -> openapi::Response {
    let mut r = ResponseBuilder::new().description(description).content(
        "application/json",
        openapi::ContentBuilder::new()
            .schema(Some(openapi::Ref::from_schema_name("ErrorBody")))
            .build(),
    );
    if status == 429 {
        r = r.header(
            "Retry-After",
            openapi::HeaderBuilder::new()
                .schema(Some(
                    openapi::ObjectBuilder::new().schema_type(openapi::Type::Integer),
                ))
                .description(Some("Seconds until a request would be allowed"))
                .build(),
        );
    }
    r.build()
}

/// The document as JSON text, built once.
fn rendered() -> &'static str {
    static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TEXT.get_or_init(|| {
        ApiDoc::openapi()
            .to_json()
            .unwrap_or_else(|e| format!("{{\"error\":\"rendering the document failed: {e}\"}}"))
    })
}

/// `GET /openapi.json`: this API's OpenAPI 3.1 document (no token needed).
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    security(()),
    responses((status = 200, description = "The OpenAPI 3.1 document", body = Object))
)]
pub async fn document() -> Response {
    let mut response = rendered().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The document as a value (for tests and tools).
pub fn document_json() -> Result<serde_json::Value, serde_json::Error> {
    serde_json::from_str(rendered())
}
