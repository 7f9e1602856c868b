//! Request extractors that turn every malformed input into an [`ApiError`] with the usual
//! `{error, details}` body: the caller (`Caller`), JSON bodies (`ApiJson`), query strings
//! (`QueryParams`) and path segments (`ApiPath`).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;

use super::AppState;
use super::auth::{Principal, Role};
use super::error::ApiError;
use crate::model::Actor;

/// The authenticated, rate-checked caller of a request.
#[derive(Debug, Clone)]
pub struct Caller(pub Principal);

impl Caller {
    /// The service-level actor (org and user).
    pub fn actor(&self) -> Actor {
        Actor::new(self.0.org.clone(), self.0.user.clone())
    }

    /// The caller's org.
    pub fn org(&self) -> &str {
        &self.0.org
    }

    /// Refuses (403) unless the caller has at least `role`.
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        match self.0.role {
            Some(r) if r >= role => Ok(()),
            Some(r) => Err(ApiError::Forbidden(format!(
                "this needs the '{}' role; the token grants '{}'",
                role.as_str(),
                r.as_str()
            ))),
            None => Err(ApiError::Forbidden(format!(
                "this needs the '{}' role; the token grants no known role",
                role.as_str()
            ))),
        }
    }
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let header = match parts.headers.get(header::AUTHORIZATION) {
            None => None,
            Some(v) => Some(v.to_str().map_err(|_| {
                ApiError::Unauthorized("Valid Bearer Token required: unreadable header".into())
            })?),
        };
        let principal = state
            .auth
            .verify_header(header)
            .map_err(|e| ApiError::Unauthorized(format!("Valid Bearer Token required: {e}")))?;
        // An org placed on another replica is refused before it costs anything more.
        if let Ok(service) = state.service() {
            service.placement().check(&principal.org)?;
        }
        state
            .limits
            .check(&principal.org, &principal.user)
            .inspect_err(|l| state.telemetry.rate_limited(&principal.org, l.scope))
            .map_err(|l| ApiError::TooManyRequests {
                details: format!(
                    "rate limit of {} exceeded; retry in {} s",
                    l.limit, l.retry_after_secs
                ),
                retry_after_secs: l.retry_after_secs,
            })?;
        Ok(Caller(principal))
    }
}

/// A JSON body whose problems become 400/413/415 with a precise message.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let headers = req.headers().clone();
        let RawBody(body) = RawBody::from_request(req, state).await?;
        parse_json(&headers, &body).map(ApiJson)
    }
}

/// Parses a buffered JSON body: 415 unless the content type is JSON, 400 naming the
/// problem otherwise. Every JSON body of the API goes through here, so messages agree.
pub fn parse_json<T: DeserializeOwned>(
    headers: &axum::http::HeaderMap,
    body: &[u8],
) -> Result<T, ApiError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|m| {
            let m = m.trim().to_ascii_lowercase();
            m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
        })
        .unwrap_or(false);
    if !is_json {
        return Err(ApiError::UnsupportedMediaType(
            "the body must be JSON with 'Content-Type: application/json'".into(),
        ));
    }
    // serde reads a struct from a JSON array too, field by field in declaration order
    // (`[]` is a struct whose fields all have defaults): every body of the API is an
    // object, so an array is refused before it can be read that way.
    if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return Err(ApiError::BadRequest(
            "the body must be a JSON object, not an array".into(),
        ));
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    let value = T::deserialize(&mut *de).map_err(|e| {
        if e.is_syntax() || e.is_eof() {
            ApiError::BadRequest(format!("malformed JSON: {e}"))
        } else {
            ApiError::BadRequest(format!("invalid request body: {e}"))
        }
    })?;
    de.end()
        .map_err(|e| ApiError::BadRequest(format!("malformed JSON: {e}")))?;
    Ok(value)
}

/// A caller with at least the trainer role (checked before the body is read).
#[derive(Debug, Clone)]
pub struct TrainerCaller(pub Caller);

/// A caller with the admin role (checked before the body is read).
#[derive(Debug, Clone)]
pub struct AdminCaller(pub Caller);

impl FromRequestParts<Arc<AppState>> for TrainerCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let c = Caller::from_request_parts(parts, state).await?;
        c.require(Role::Trainer)?;
        Ok(TrainerCaller(c))
    }
}

impl FromRequestParts<Arc<AppState>> for AdminCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let c = Caller::from_request_parts(parts, state).await?;
        c.require(Role::Admin)?;
        Ok(AdminCaller(c))
    }
}

/// Query parameters as a name -> value map; unknown names are refused by the handlers
/// through [`QueryParams::take`] and [`QueryParams::finish`].
#[derive(Debug, Default)]
pub struct QueryParams(BTreeMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for QueryParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Query(pairs) =
            axum::extract::Query::<Vec<(String, String)>>::from_request_parts(parts, state)
                .await
                .map_err(|e| {
                    ApiError::BadRequest(format!("bad query string: {}", e.body_text()))
                })?;
        let mut map = BTreeMap::new();
        for (k, v) in pairs {
            if map.insert(k.clone(), v).is_some() {
                return Err(ApiError::BadRequest(format!(
                    "query parameter '{k}' is given more than once"
                )));
            }
        }
        Ok(QueryParams(map))
    }
}

impl QueryParams {
    /// Removes and returns a text parameter (an empty value counts as absent: an empty
    /// filter selects nothing out).
    pub fn take(&mut self, name: &str) -> Option<String> {
        self.0.remove(name).filter(|v| !v.is_empty())
    }

    /// Removes and parses a typed parameter with `parse`, naming it in the error. An empty
    /// value is no number, flag or state: it is refused like any other value that does not
    /// parse, as the OpenAPI document says.
    pub fn parse<T>(
        &mut self,
        name: &str,
        expected: &str,
        parse: impl FnOnce(&str) -> Option<T>,
    ) -> Result<Option<T>, ApiError> {
        match self.0.remove(name) {
            None => Ok(None),
            Some(v) => parse(&v).map(Some).ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "invalid value '{v}' for query parameter '{name}': expected {expected}"
                ))
            }),
        }
    }

    /// A `true`/`false` parameter.
    pub fn flag(&mut self, name: &str) -> Result<bool, ApiError> {
        Ok(self
            .parse(name, "true or false", |v| match v {
                "true" | "1" => Some(true),
                "false" | "0" => Some(false),
                _ => None,
            })?
            .unwrap_or(false))
    }

    /// A non-negative integer parameter.
    pub fn number(&mut self, name: &str) -> Result<Option<u64>, ApiError> {
        self.parse(name, "a non-negative integer", |v| v.parse().ok())
    }

    /// Refuses any parameter not taken yet.
    pub fn finish(self) -> Result<(), ApiError> {
        match self.0.into_keys().next() {
            None => Ok(()),
            Some(k) => Err(ApiError::BadRequest(format!(
                "unknown query parameter '{k}'"
            ))),
        }
    }
}

/// The raw request body (kept as bytes so it can be hashed for idempotency), with the
/// size limit turned into a 413 with the usual body.
#[derive(Debug)]
pub struct RawBody(pub axum::body::Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        axum::body::Bytes::from_request(req, state)
            .await
            .map(RawBody)
            .map_err(|e| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge(
                        "the request body is larger than the configured limit \
                         (server.body_limit_bytes)"
                            .into(),
                    )
                } else if is_body_timeout(&e) {
                    ApiError::RequestTimeout(
                        "the request body stopped arriving (server.body_read_timeout_secs)".into(),
                    )
                } else {
                    ApiError::BadRequest(format!("cannot read the request body: {}", e.body_text()))
                }
            })
    }
}

/// Whether a body error comes from the stalled-body timeout set up in [`super::conn`].
fn is_body_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if c.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        cause = c.source();
    }
    false
}

/// One path segment, with a bad segment reported in the usual body.
#[derive(Debug)]
pub struct ApiPath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for ApiPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(p)| ApiPath(p))
            .map_err(|e| ApiError::BadRequest(format!("bad path: {}", e.body_text())))
    }
}
