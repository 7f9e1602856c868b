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
//! **Errors.** Everything the console refuses (bad path or query, wrong method, wrong
//! media type, unknown page) is an HTML page with the headers above, never the API's
//! JSON; only a body over `server.body_limit_bytes` is refused earlier, by the connection
//! layer.
//!
//! **Size.** Every list is paged and every page answers from the graph snapshot through the
//! service (`Service::review_queue`, `lineage_forest`, `dashboard`, `batches_page`, `list`),
//! loading from the store only the records it shows; store reads run on the blocking pool.

pub mod link;
mod pages;
pub mod svg;

pub use pages::DEFAULT_APPROVE_REASON;

use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{MethodRouter, get, post};
use hmac::{Hmac, Mac};
use serde::de::DeserializeOwned;
use sha2::Sha256;

use super::AppState;
use super::auth::{Principal, Role};
use super::error::ApiError;
use super::extract::{ApiPath, QueryParams};
use super::metrics::RouteTag;
use crate::config::Config;

/// The name of the session cookie.
pub const COOKIE: &str = "fg_session";

/// Every console route, method and full path (axum syntax), in one place: for route
/// coverage checks that must treat these HTML pages apart from the JSON API. Each route's
/// responses carry its path here as their `route` label in `/metrics`.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/console"),
    ("GET", "/console/"),
    ("GET", "/console/login"),
    ("POST", "/console/login"),
    ("POST", "/console/logout"),
    ("GET", "/console/link/{code}"),
    ("POST", "/console/link"),
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
    /// One-time sign-in links (`feedgraph console-link`); `None` without an HS256 secret.
    links: Option<link::Links>,
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
        session_cookie_header(token, self.secure_cookie)
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

/// Adds the console to `app`: its pages under `/console`, and `/console/` (with the
/// slash) answering as `/console` does.
pub fn mount(
    app: Router<Arc<AppState>>,
    state: Arc<AppState>,
    config: &Config,
) -> Router<Arc<AppState>> {
    app.nest("/console", router(state, config))
        .route("/console/", tagged("/console/", get(pages::home)))
}

/// `routes` with every response labelled `path` (a full path of [`ROUTES`]) for the
/// request metrics.
fn tagged<S: Clone + Send + Sync + 'static>(
    path: &'static str,
    routes: MethodRouter<S>,
) -> MethodRouter<S> {
    routes.layer(tower::util::MapResponseLayer::new(
        move |mut response: Response| {
            response.extensions_mut().insert(RouteTag(path));
            response
        },
    ))
}

/// The console's routes, to be nested under `/console`.
fn router(app: Arc<AppState>, config: &Config) -> Router<Arc<AppState>> {
    let mut csrf_key = hmac::digest::Key::<Hmac<Sha256>>::default();
    {
        use rand::Rng;
        rand::rng().fill(&mut csrf_key[..]);
    }
    let state = Arc::new(ConsoleState {
        app,
        csrf_key,
        secure_cookie: config.console.secure_cookie,
        links: link::Links::new(config),
    });
    // `path` is the full path (as in ROUTES and the metrics); the router is nested under
    // `/console`, so it routes the rest.
    let at = |r: Router<Arc<ConsoleState>>, path: &'static str, m: MethodRouter<_>| {
        let inner = match path.strip_prefix("/console") {
            Some("") | None => "/",
            Some(rest) => rest,
        };
        r.route(inner, tagged(path, m))
    };
    let r = Router::new();
    let r = at(r, "/console", get(pages::home));
    let r = at(
        r,
        "/console/login",
        get(pages::login_form).post(pages::login),
    );
    let r = at(r, "/console/logout", post(pages::logout));
    let r = at(r, "/console/link/{code}", get(pages::link_form));
    let r = at(r, "/console/link", post(pages::link_login));
    let r = at(r, "/console/queue", get(pages::queue));
    let r = at(r, "/console/review/{id}", post(pages::review));
    let r = at(r, "/console/items", get(pages::items));
    let r = at(r, "/console/items/{id}", get(pages::item));
    let r = at(r, "/console/adapters", get(pages::adapters));
    let r = at(r, "/console/adapters/{id}", get(pages::adapter));
    let r = at(r, "/console/dashboard", get(pages::dashboard));
    let r = at(r, "/console/batches", get(pages::batches));
    let r = at(r, "/console/batches/{id}", get(pages::batch));
    let r = at(
        r,
        "/console/query",
        get(pages::query_form).post(pages::query_run),
    );
    let r = at(r, "/console/assets/{file}", get(asset));
    r.fallback(pages::not_found)
        .method_not_allowed_fallback(pages::method_not_allowed)
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
        /// Whether cookies are `Secure` (`console.secure_cookie`), so the clearing cookie
        /// carries the same attributes as the one it replaces.
        secure: bool,
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
            Refusal::SignIn { clear, secure } => {
                let mut r = Redirect::to("/console/login").into_response();
                if clear && let Ok(v) = HeaderValue::from_str(&session_cookie_header(None, secure))
                {
                    r.headers_mut().insert(header::SET_COOKIE, v);
                }
                r
            }
            Refusal::Error(e) => pages::error_page(e),
        }
    }
}

/// The `Set-Cookie` value that stores `token` (or, with `None`, clears the cookie).
fn session_cookie_header(token: Option<&str>, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    match token {
        Some(t) => format!("{COOKIE}={t}; Path=/console; HttpOnly; SameSite=Strict{secure}"),
        None => format!("{COOKIE}=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0{secure}"),
    }
}

/// A path segment of a console route; a bad one is an HTML error page.
#[derive(Debug)]
pub struct Segment(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Segment {
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let ApiPath(p) = ApiPath::from_request_parts(parts, state).await?;
        Ok(Segment(p))
    }
}

/// The query parameters of a console page; a malformed query string is an HTML error page.
#[derive(Debug)]
pub struct Params(pub QueryParams);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Ok(Params(QueryParams::from_request_parts(parts, state).await?))
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
        let session = Session::verified(parts, state)?;
        // An org placed on another replica gets the API's 421 naming the placement.
        check_placement(state, &session.principal.org)?;
        Ok(session)
    }
}

/// A signed-in console user whose org may be placed on another replica: only for
/// signing out, which must work wherever the cookie was set.
#[derive(Debug, Clone)]
pub struct AnySession(pub Session);

impl FromRequestParts<Arc<ConsoleState>> for AnySession {
    type Rejection = Refusal;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<ConsoleState>,
    ) -> Result<Self, Self::Rejection> {
        Ok(AnySession(Session::verified(parts, state)?))
    }
}

/// `Ok` when this replica serves `org` (or the service is still opening: the page
/// itself then answers 503), else the API's 421 naming the placement.
pub fn check_placement(state: &ConsoleState, org: &str) -> Result<(), ApiError> {
    if let Ok(service) = state.app.service() {
        service.placement().check(org).map_err(ApiError::from)?;
    }
    Ok(())
}

impl Session {
    /// The session of the request's cookie, verified and within the rate limits.
    fn verified(parts: &Parts, state: &ConsoleState) -> Result<Self, Refusal> {
        let secure = state.secure_cookie;
        let token = session_cookie(&parts.headers).ok_or(Refusal::SignIn {
            clear: false,
            secure,
        })?;
        let principal = state.app.auth.verify(token).map_err(|_| Refusal::SignIn {
            clear: true,
            secure,
        })?;
        if principal.role.is_none() {
            return Err(Refusal::SignIn {
                clear: true,
                secure,
            });
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
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| {
                v.trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            });
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
async fn asset(State(_): State<Arc<ConsoleState>>, Segment(file): Segment) -> Response {
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
