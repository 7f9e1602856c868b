//! The review console: server-rendered HTML pages under `/console`, for people.
//!
//! Pages are askama templates compiled into the binary (HTML-escaped by default), pictures
//! are SVG drawn on the server ([`svg`]), and one small script of our own adds keyboard
//! shortcuts; the CSS and script are `include_str!`'d, so `cargo build` alone gives a
//! working console and nothing runs Node.
//!
//! **Sign-in.** The console takes the same JWTs as the API. `POST /console/login` verifies
//! the pasted token exactly as the API does and puts it in the `fg_session` cookie
//! (`HttpOnly`, `SameSite=Strict`, `Path=/console`, `Secure` when `console.secure_cookie`
//! is set); every page verifies it again, so expiry, roles and rate limits are the API's.
//! The token is never written into a page.
//!
//! **Cross-site requests.** Every `POST` is checked twice: the `Origin` (or
//! `Sec-Fetch-Site`) header must name this server, and, for signed-in forms, a CSRF field
//! must equal an HMAC-SHA256 of the session token under a key drawn at start-up. Together
//! with `SameSite=Strict` a page on another site can neither send the cookie nor forge a
//! form. Pages carry a Content-Security-Policy that allows only our own script and styles.
//!
//! **Roles.** A `user` sees every page; only an `admin` gets review forms, and the review
//! route checks the role again.
//!
//! **Size.** Every list is paged and every page answers from the graph snapshot through the
//! service (`Service::review_queue`, `lineage_forest`, `dashboard`, `batches_page`, `list`),
//! loading from the store only the records it shows; store reads run on the blocking pool.

mod pages;
pub mod svg;

pub use pages::DEFAULT_APPROVE_REASON;

use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use hmac::{Hmac, Mac};
use serde::de::DeserializeOwned;
use sha2::Sha256;

use super::AppState;
use super::auth::{Principal, Role};
use super::error::ApiError;
use crate::config::ConsoleConfig;

/// The name of the session cookie.
pub const COOKIE: &str = "fg_session";

/// Every console route, method and full path (axum syntax), in one place: for route
/// coverage checks that must treat these HTML pages apart from the JSON API.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/console"),
    ("GET", "/console/login"),
    ("POST", "/console/login"),
    ("POST", "/console/logout"),
    ("GET", "/console/queue"),
    ("POST", "/console/review/{id}"),
    ("GET", "/console/items"),
    ("GET", "/console/items/{id}"),
    ("GET", "/console/adapters"),
    ("GET", "/console/adapters/{id}"),
    ("GET", "/console/dashboard"),
    ("GET", "/console/batches"),
    ("GET", "/console/batches/{id}"),
    ("GET", "/console/query"),
    ("POST", "/console/query"),
    ("GET", "/console/assets/{file}"),
];

/// What the console's handlers share: the API's state, the CSRF key and cookie settings.
pub struct ConsoleState {
    app: Arc<AppState>,
    /// One HMAC block of key, drawn at start-up: restarting the server voids open forms.
    csrf_key: hmac::digest::Key<Hmac<Sha256>>,
    secure_cookie: bool,
}

impl std::fmt::Debug for ConsoleState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleState")
            .field("secure_cookie", &self.secure_cookie)
            .finish_non_exhaustive()
    }
}

impl ConsoleState {
    /// The CSRF token of a session: HMAC-SHA256 of its token under this server's key.
    fn csrf_for(&self, token: &str) -> String {
        let mut mac = self.mac();
        mac.update(token.as_bytes());
        hex(&mac.finalize().into_bytes())
    }

    fn mac(&self) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as hmac::digest::KeyInit>::new(&self.csrf_key);
        mac.update(b"feedgraph-console-csrf\0");
        mac
    }

    /// Checks a form's CSRF field against the session, in constant time.
    fn check_csrf(&self, session: &Session, sent: Option<&str>) -> Result<(), ApiError> {
        let refused = || {
            ApiError::Forbidden(
                "the form's CSRF token is missing or wrong: reload the page and try again".into(),
            )
        };
        let sent = sent.ok_or_else(refused)?;
        let bytes = unhex(sent).ok_or_else(refused)?;
        let mut mac = self.mac();
        mac.update(session.token.as_bytes());
        mac.verify_slice(&bytes).map_err(|_| refused())
    }

    /// The `Set-Cookie` value that stores `token` (or, with `None`, clears the cookie).
    fn cookie(&self, token: Option<&str>) -> String {
        let secure = if self.secure_cookie { "; Secure" } else { "" };
        match token {
            Some(t) => format!("{COOKIE}={t}; Path=/console; HttpOnly; SameSite=Strict{secure}"),
            None => {
                format!("{COOKIE}=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0{secure}")
            }
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The console's routes, to be nested under `/console`.
pub fn router(app: Arc<AppState>, config: &ConsoleConfig) -> Router<Arc<AppState>> {
    let mut csrf_key = hmac::digest::Key::<Hmac<Sha256>>::default();
    {
        use rand::Rng;
        rand::rng().fill(&mut csrf_key[..]);
    }
    let state = Arc::new(ConsoleState {
        app,
        csrf_key,
        secure_cookie: config.secure_cookie,
    });
    Router::new()
        .route("/", get(pages::home))
        .route("/login", get(pages::login_form).post(pages::login))
        .route("/logout", post(pages::logout))
        .route("/queue", get(pages::queue))
        .route("/review/{id}", post(pages::review))
        .route("/items", get(pages::items))
        .route("/items/{id}", get(pages::item))
        .route("/adapters", get(pages::adapters))
        .route("/adapters/{id}", get(pages::adapter))
        .route("/dashboard", get(pages::dashboard))
        .route("/batches", get(pages::batches))
        .route("/batches/{id}", get(pages::batch))
        .route("/query", get(pages::query_form).post(pages::query_run))
        .route("/assets/{file}", get(asset))
        .fallback(pages::not_found)
        .with_state(state)
}

/// A signed-in console user: the verified token and who it names.
#[derive(Debug, Clone)]
pub struct Session {
    token: String,
    principal: Principal,
}

impl Session {
    /// Whether the session may review.
    pub fn is_admin(&self) -> bool {
        self.principal.role == Some(Role::Admin)
    }
}

/// Why a console request was turned away before its handler ran.
#[derive(Debug)]
pub enum Refusal {
    /// No valid session: back to the sign-in page. `clear` drops a cookie that no longer
    /// verifies; without a cookie nothing is cleared, so a request that arrived without it
    /// (a cross-site post, say) cannot sign the user out.
    SignIn {
        /// Whether the request carried a session cookie that failed to verify.
        clear: bool,
    },
    /// Any other error, shown as an HTML page.
    Error(ApiError),
}

impl From<ApiError> for Refusal {
    fn from(e: ApiError) -> Self {
        Refusal::Error(e)
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::SignIn { clear } => {
                let mut r = Redirect::to("/console/login").into_response();
                if clear {
                    r.headers_mut().insert(
                        header::SET_COOKIE,
                        HeaderValue::from_static(
                            "fg_session=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0",
                        ),
                    );
                }
                r
            }
            Refusal::Error(e) => pages::error_page(e),
        }
    }
}

/// The session cookie's value, if the request has one.
fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim())
        .filter(|v| !v.is_empty())
}

impl FromRequestParts<Arc<ConsoleState>> for Session {
    type Rejection = Refusal;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<ConsoleState>,
    ) -> Result<Self, Self::Rejection> {
        let token = session_cookie(&parts.headers).ok_or(Refusal::SignIn { clear: false })?;
        let principal = state
            .app
            .auth
            .verify(token)
            .map_err(|_| Refusal::SignIn { clear: true })?;
        if principal.role.is_none() {
            return Err(Refusal::SignIn { clear: true });
        }
        state
            .app
            .limits
            .check(&principal.org, &principal.user)
            .map_err(|l| ApiError::TooManyRequests {
                details: format!(
                    "rate limit of {} exceeded; retry in {} s",
                    l.limit, l.retry_after_secs
                ),
                retry_after_secs: l.retry_after_secs,
            })?;
        Ok(Session {
            token: token.to_owned(),
            principal,
        })
    }
}

/// Refuses a state change that a browser says came from another site: the `Origin`
/// header, when sent, must be this server (`Host`); `Sec-Fetch-Site`, when sent, must be
/// `same-origin` (or `none`, typed by the user). Clients that send neither (curl) still
/// need the session's CSRF token.
pub fn check_origin(headers: &HeaderMap) -> Result<(), ApiError> {
    let cross = || {
        ApiError::Forbidden(
            "cross-site request refused: console forms must be sent from the console's own pages"
                .into(),
        )
    };
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = site.to_str().map_err(|_| cross())?;
        if site != "same-origin" && site != "none" {
            return Err(cross());
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().map_err(|_| cross())?;
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .ok_or_else(cross)?;
        let origin_host = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .ok_or_else(cross)?;
        if !origin_host.eq_ignore_ascii_case(host) {
            return Err(cross());
        }
    }
    Ok(())
}

/// A URL-encoded form body, size-limited like every body, errors as HTML pages.
#[derive(Debug)]
pub struct ConsoleForm<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ConsoleForm<T> {
    type Rejection = Refusal;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        check_origin(req.headers())?;
        let is_form = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        if !is_form {
            return Err(ApiError::UnsupportedMediaType(
                "console forms are sent as application/x-www-form-urlencoded".into(),
            )
            .into());
        }
        let axum::extract::Form(form) = axum::extract::Form::<T>::from_request(req, state)
            .await
            .map_err(|e| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge(
                        "the form is larger than the configured limit (server.body_limit_bytes)"
                            .into(),
                    )
                } else {
                    ApiError::BadRequest(format!("bad form: {}", e.body_text()))
                }
            })?;
        Ok(ConsoleForm(form))
    }
}

/// The built-in assets: name, content type, bytes.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "console.css",
        "text/css; charset=utf-8",
        include_str!("assets/console.css"),
    ),
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/console.js"),
    ),
];

/// `GET /console/assets/{file}`: the stylesheet and the script, from the binary.
async fn asset(
    State(_): State<Arc<ConsoleState>>,
    axum::extract::Path(file): axum::extract::Path<String>,
) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, mime, body)) => (
            [
                (header::CONTENT_TYPE, *mime),
                (header::CACHE_CONTROL, "public, max-age=300"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            *body,
        )
            .into_response(),
        None => pages::error_page(ApiError::NotFound(format!("no console asset '{file}'"))),
    }
}

/// Headers every console page carries: no caching (pages hold CSRF tokens), no framing,
/// no referrer to other sites, and a policy that runs only our own script and styles.
fn page_headers(response: &mut Response) {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Not `no-referrer`: under it browsers send `Origin: null` even on same-origin form
    // posts, which the origin check must refuse.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
}

/// An HTML page with the console's headers.
fn html(status: StatusCode, body: String) -> Response {
    let mut r = (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response();
    page_headers(&mut r);
    r
}
