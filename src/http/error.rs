//! The one error type of the HTTP layer and its mapping to status codes and the
//! `{error, details}` body every error response carries.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::service::ServiceError;
use crate::validate::ValidationError;

/// Every way a request can fail, as the client sees it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed or breaks a rule.
    #[error("{0}")]
    BadRequest(String),
    /// 401: no valid bearer token.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: the token's roles do not allow this.
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such record (in the caller's org) or route.
    #[error("{0}")]
    NotFound(String),
    /// 405: the route exists but not for this method.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// 409: the request contradicts stored state.
    #[error("{0}")]
    Conflict(String),
    /// 413: the body is over the configured limit.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 408: the request body stalled (nothing arrived within `server.body_read_timeout_secs`).
    #[error("{0}")]
    RequestTimeout(String),
    /// 415: the body is not JSON.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 400: a graph query went over a configured limit (rows, time, work, memory, depth).
    #[error("{0}")]
    LimitExceeded(String),
    /// 400: a graph query is malformed, ill-typed or not allowed (details give the position).
    #[error("{0}")]
    InvalidQuery(String),
    /// 429: over a rate limit; retry after this many seconds.
    #[error("{details}")]
    TooManyRequests {
        /// Explanation.
        details: String,
        /// Seconds until a request would be allowed.
        retry_after_secs: u64,
    },
    /// 503: the service is still starting (opening the store, building the graph), or its
    /// store refuses writes after a failed sync.
    #[error("{0}")]
    Unavailable(String),
    /// 503: a write reached the store but making it durable failed, so it may or may not
    /// have been stored. The cause is logged; the client is told how to find out.
    #[error("{0}")]
    OutcomeUnknown(String),
    /// 500: something broke on our side; details are logged, not sent.
    #[error("{0}")]
    Internal(String),
    /// 421: the org is not placed on this replica (the details name its placement).
    #[error("{0}")]
    Misdirected(String),
}

/// The body of every error response.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Short category, e.g. `Invalid request`.
    #[schema(value_type = String)]
    pub error: &'static str,
    /// What exactly is wrong.
    pub details: String,
}

impl ApiError {
    pub(crate) fn parts(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "Invalid request"),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "Unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "Forbidden"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "Not Found"),
            ApiError::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "Conflict"),
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "Payload Too Large"),
            ApiError::RequestTimeout(_) => (StatusCode::REQUEST_TIMEOUT, "Request Timeout"),
            ApiError::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "Unsupported Media Type")
            }
            ApiError::LimitExceeded(_) => (StatusCode::BAD_REQUEST, "Query limit exceeded"),
            ApiError::InvalidQuery(_) => (StatusCode::BAD_REQUEST, "Invalid query"),
            ApiError::TooManyRequests { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "Too Many Requests")
            }
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable"),
            ApiError::OutcomeUnknown(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "Write outcome unknown")
            }
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "Internal server error"),
            ApiError::Misdirected(_) => (StatusCode::MISDIRECTED_REQUEST, "Misdirected Request"),
        }
    }

    /// The HTTP status this error maps to.
    pub fn status(&self) -> StatusCode {
        self.parts().0
    }

    /// The short category of the `error` field (e.g. `Invalid request`).
    pub fn category(&self) -> &'static str {
        self.parts().1
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Invalid(ValidationError::TooLong { .. }) => {
                ApiError::BadRequest(e.to_string())
            }
            ServiceError::Invalid(v) => ApiError::BadRequest(v.to_string()),
            ServiceError::BadRequest(m) => ApiError::BadRequest(m),
            ServiceError::NotFound { kind, id } => {
                ApiError::NotFound(format!("{} '{id}' not found", capitalize(kind)))
            }
            ServiceError::Conflict(m) => ApiError::Conflict(m),
            ServiceError::Config(m) | ServiceError::Internal(m) => ApiError::Internal(m),
            ServiceError::Store(s) => ApiError::Internal(s.to_string()),
            ServiceError::Query(
                q @ crate::cypher::CypherError::LimitExceeded {
                    limit:
                        crate::cypher::Limit::MaxConcurrent
                        | crate::cypher::Limit::MaxConcurrentTotal
                        | crate::cypher::Limit::MaxMemoryTotal,
                    ..
                },
            ) => ApiError::TooManyRequests {
                details: q.to_string(),
                retry_after_secs: 1,
            },
            ServiceError::OutcomeUnknown(cause) => {
                tracing::error!(%cause, "a write's sync failed; its outcome is unknown");
                ApiError::OutcomeUnknown(OUTCOME_UNKNOWN.to_owned())
            }
            ServiceError::Unavailable(cause) => {
                tracing::error!(%cause, "request refused: the store failed a sync earlier");
                ApiError::Unavailable(STORE_REFUSING.to_owned())
            }
            ServiceError::Query(q @ crate::cypher::CypherError::LimitExceeded { .. }) => {
                ApiError::LimitExceeded(q.to_string())
            }
            ServiceError::Query(q) => ApiError::InvalidQuery(q.to_string()),
            ServiceError::Misplaced(m) => ApiError::Misdirected(m),
            ServiceError::StoreDown(cause) => {
                tracing::warn!(%cause, "request refused: the database cannot be reached");
                ApiError::Unavailable(STORE_DOWN.to_owned())
            }
        }
    }
}

/// What a client hears when its write's sync failed.
pub const OUTCOME_UNKNOWN: &str = "The write reached the store but making it durable failed, \
    so it may or may not have been stored. The server refuses writes until it is restarted \
    (see /readyz). Then retry with the same Idempotency-Key (a stored write is returned, not \
    repeated) or look the item up by id.";

/// What a client hears when the database cannot be reached (nothing was written).
pub const STORE_DOWN: &str = "The database cannot be reached now; nothing was written. \
    Retry shortly: service resumes on its own when the database is back (see /readyz).";

/// What a client hears when the store refuses requests after a failed sync.
pub const STORE_REFUSING: &str = "The store refuses requests after a failed sync; nothing was \
    written. The server needs a restart (see /readyz).";

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, error) = self.parts();
        let details = match &self {
            ApiError::Internal(m) => {
                // The cause goes to the log; the client gets a stable message.
                tracing::error!(cause = %m, "internal error");
                "The request could not be completed; the cause is in the server log".to_owned()
            }
            other => other.to_string(),
        };
        let retry = match &self {
            ApiError::TooManyRequests {
                retry_after_secs, ..
            } => Some(*retry_after_secs),
            _ => None,
        };
        let mut response = (status, Json(ErrorBody { error, details })).into_response();
        if let Some(secs) = retry
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        if status == StatusCode::REQUEST_TIMEOUT {
            // The rest of the body may still arrive: this connection cannot be reused.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
