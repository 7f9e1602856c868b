//! The console's page handlers and the views their templates render.
//!
//! Handlers turn service results into plain view structs of display strings (times
//! formatted, links percent-encoded) and render askama templates, which escape every
//! value. Errors become HTML pages through [`error_page`], the console's one mapping of
//! [`ApiError`] to a page.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use askama::Template;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::svg::{self, esc, pct};
use super::{AnySession, ConsoleForm, ConsoleState, Params, Refusal, Segment, Session, html};
use crate::http::error::ApiError;
use crate::model::{Feedback, HistoryVersion, Millis, ValidationStatus};
use crate::service::ListQuery;

/// Items on one page of the queue and of the item list.
const PAGE: usize = 25;
/// Manifest entries on one page of a batch.
const MANIFEST_PAGE: usize = 100;
/// Lineage roots per page, and most adapters drawn on one page.
const ROOTS_PER_PAGE: usize = 12;
const NODES_PER_PAGE: usize = 300;
/// Rows of a query result shown.
const QUERY_ROWS: usize = 500;
/// The reason an approval gets when the reviewer typed none.
pub const DEFAULT_APPROVE_REASON: &str = "approved in the review console";

type PageResult = Result<Response, Refusal>;

/// `YYYY-MM-DD HH:MM UTC` of a time in ms.
fn when(ms: Millis) -> String {
    let secs = ms / 1000;
    let (y, m, d) = svg::civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        (rem % 3600) / 60
    )
}

fn percent(r: f64) -> String {
    format!("{:.0}%", r * 100.0)
}

/// Whether `s` could be an item id (the id alphabet, at most 256 characters), so a link's
/// `done` parameter cannot carry sentences onto a page.
fn looks_like_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 256
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:@/+".contains(&b))
}

fn item_href(id: &str) -> String {
    format!("/console/items/{}", pct(id))
}

fn adapter_href(id: &str) -> String {
    format!("/console/adapters/{}", pct(id))
}

fn render(t: &impl Template) -> Result<String, ApiError> {
    t.render()
        .map_err(|e| ApiError::Internal(format!("rendering a console page: {e}")))
}

fn page(t: &impl Template) -> PageResult {
    Ok(html(StatusCode::OK, render(t)?))
}

/// What every signed-in page shows around its content: who is signed in, the navigation,
/// and the CSRF token for its forms.
#[derive(Debug, Clone)]
pub struct Chrome {
    user: String,
    org: String,
    role: &'static str,
    admin: bool,
    csrf: String,
    nav: &'static str,
}

impl Chrome {
    fn new(state: &ConsoleState, s: &Session, nav: &'static str) -> Chrome {
        Chrome {
            user: s.principal.user.clone(),
            org: s.principal.org.clone(),
            role: s.principal.role.map_or("none", |r| r.as_str()),
            admin: s.is_admin(),
            csrf: state.csrf_for(&s.token),
            nav,
        }
    }
}

/// A feedback item as the console shows it.
#[derive(Debug, Clone)]
pub struct ItemView {
    id: String,
    href: String,
    review_href: String,
    kind: &'static str,
    status: &'static str,
    created: String,
    updated: String,
    model: String,
    adapter: Option<(String, String)>,
    user: String,
    session: String,
    score: String,
    question: String,
    answer: String,
    correction: Option<String>,
    comment: Option<String>,
    reasons: Vec<String>,
    metadata: Option<String>,
    batch: u64,
    version: u64,
}

impl From<&Feedback> for ItemView {
    fn from(f: &Feedback) -> Self {
        ItemView {
            id: f.id.clone(),
            href: item_href(&f.id),
            review_href: format!("/console/review/{}", pct(&f.id)),
            kind: f.feedback_type.as_str(),
            status: f.validation_status.as_str(),
            created: when(f.created_at),
            updated: when(f.updated_at),
            model: f.model_version.clone().unwrap_or_else(|| "—".into()),
            adapter: f.adapter_id.as_deref().map(|a| {
                let label = match &f.adapter_version {
                    Some(v) => format!("{a} ({v})"),
                    None => a.to_owned(),
                };
                (adapter_href(a), label)
            }),
            user: f.user_id.clone().unwrap_or_else(|| "—".into()),
            session: f.session_id.clone().unwrap_or_else(|| "—".into()),
            score: f.score.map_or("—".into(), |s| s.to_string()),
            question: f.question.clone(),
            answer: f.answer.clone(),
            correction: f.correction.clone(),
            comment: f.comment.clone(),
            reasons: f
                .validation_reasons
                .iter()
                .map(|r| format!("{} ({}): {}", r.rule, r.status, r.message))
                .collect(),
            metadata: (!f.metadata.is_empty())
                .then(|| serde_json::to_string_pretty(&f.metadata).unwrap_or_default()),
            batch: f.training_batch_id,
            version: f.version,
        }
    }
}

// ---------------------------------------------------------------- errors

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    status: u16,
    title: &'static str,
    details: String,
}

/// An [`ApiError`] as an HTML page with its status (internal causes are logged, not shown).
pub fn error_page(e: ApiError) -> Response {
    let status = e.status();
    let details = match &e {
        ApiError::Internal(m) => {
            tracing::error!(cause = %m, "internal error in the console");
            "The page could not be made; the cause is in the server log.".to_owned()
        }
        other => other.to_string(),
    };
    let title = status.canonical_reason().unwrap_or("Error");
    let body = ErrorPage {
        status: status.as_u16(),
        title,
        details: details.clone(),
    }
    .render()
    .unwrap_or_else(|_| format!("<!doctype html><title>{title}</title><p>{}", esc(&details)));
    let mut r = html(status, body);
    if let ApiError::TooManyRequests {
        retry_after_secs, ..
    } = e
        && let Ok(v) = HeaderValue::from_str(&retry_after_secs.to_string())
    {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

/// Unknown console paths: an HTML 404.
pub async fn not_found(uri: axum::http::Uri) -> Response {
    error_page(ApiError::NotFound(format!(
        "the console has no page {}",
        uri.path()
    )))
}

// ---------------------------------------------------------------- sign-in

/// A console path asked with a method it does not answer: an HTML 405.
pub async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    error_page(ApiError::MethodNotAllowed(format!(
        "{method} is not allowed on {}",
        uri.path()
    )))
}

/// `GET /console`: to the queue (which sends strangers to sign in).
pub async fn home() -> Redirect {
    Redirect::to("/console/queue")
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    error: Option<String>,
}

/// `GET /console/login`: the token form.
pub async fn login_form() -> PageResult {
    page(&LoginPage { error: None })
}

/// The sign-in form.
#[derive(Debug, Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    token: String,
}

/// `POST /console/login`: verifies the token as the API would and sets the session cookie.
pub async fn login(
    State(state): State<Arc<ConsoleState>>,
    ConsoleForm(form): ConsoleForm<LoginForm>,
) -> PageResult {
    let token = form.token.trim();
    let refuse = |status: StatusCode, message: String| -> PageResult {
        Ok(html(
            status,
            render(&LoginPage {
                error: Some(message),
            })?,
        ))
    };
    if token.is_empty() {
        return refuse(StatusCode::BAD_REQUEST, "Paste a token to sign in.".into());
    }
    let principal = match state.app.auth.verify(token) {
        Ok(p) => p,
        Err(e) => return refuse(StatusCode::UNAUTHORIZED, format!("Not signed in: {e}")),
    };
    if principal.role.is_none() {
        return refuse(
            StatusCode::FORBIDDEN,
            "Not signed in: the token grants no known role (user, trainer or admin).".into(),
        );
    }
    // A session for an org this replica does not serve would be refused on every page.
    super::check_placement(&state, &principal.org)?;
    let mut r = Redirect::to("/console/queue").into_response();
    let cookie = HeaderValue::from_str(&state.cookie(Some(token)))
        .map_err(|_| ApiError::BadRequest("the token holds characters a cookie cannot".into()))?;
    r.headers_mut().insert(header::SET_COOKIE, cookie);
    Ok(r)
}

#[derive(Template)]
#[template(path = "link.html")]
struct LinkPage {
    code: String,
    org: String,
    sub: String,
    roles: String,
    expires: String,
}

fn link_refused(e: super::link::LinkError) -> Refusal {
    use super::link::LinkError;
    match e {
        LinkError::Off => ApiError::NotFound(e.to_string()),
        LinkError::Auth(a) => ApiError::Internal(format!("console sign-in link: {a}")),
        other => ApiError::Unauthorized(other.to_string()),
    }
    .into()
}

/// `GET /console/link/{code}`: who a one-time link signs in as, and a button to use it.
/// Opening the link does not use it (link previews and scanners fetch links too).
pub async fn link_form(
    State(state): State<Arc<ConsoleState>>,
    Segment(code): Segment,
) -> PageResult {
    let links = state
        .links
        .as_ref()
        .ok_or_else(|| link_refused(super::link::LinkError::Off))?;
    let claims = links.open(&code).map_err(link_refused)?;
    page(&LinkPage {
        code,
        org: claims.org,
        sub: claims.sub,
        roles: claims.roles.join(", "),
        expires: when(claims.exp.saturating_mul(1000)),
    })
}

/// The form of a sign-in link.
#[derive(Debug, Deserialize)]
pub struct LinkForm {
    #[serde(default)]
    code: String,
}

/// `POST /console/link`: uses a one-time link (once per server process) and sets the
/// session cookie to a token minted for it.
pub async fn link_login(
    State(state): State<Arc<ConsoleState>>,
    ConsoleForm(form): ConsoleForm<LinkForm>,
) -> PageResult {
    let links = state
        .links
        .as_ref()
        .ok_or_else(|| link_refused(super::link::LinkError::Off))?;
    // Checked before the link is used up, so it still works on the replica that serves it.
    let claims = links.open(form.code.trim()).map_err(link_refused)?;
    super::check_placement(&state, &claims.org)?;
    let token = links.redeem(form.code.trim()).map_err(link_refused)?;
    let mut r = Redirect::to("/console/queue").into_response();
    let cookie = HeaderValue::from_str(&state.cookie(Some(&token)))
        .map_err(|_| ApiError::Internal("a minted token is not a cookie value".into()))?;
    r.headers_mut().insert(header::SET_COOKIE, cookie);
    Ok(r)
}

/// A form that carries only the CSRF token.
#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    csrf: Option<String>,
}

/// `POST /console/logout`: clears the session cookie.
pub async fn logout(
    State(state): State<Arc<ConsoleState>>,
    AnySession(session): AnySession,
    ConsoleForm(form): ConsoleForm<CsrfForm>,
) -> PageResult {
    state.check_csrf(&session, form.csrf.as_deref())?;
    let mut r = Redirect::to("/console/login").into_response();
    if let Ok(v) = HeaderValue::from_str(&state.cookie(None)) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(r)
}

// ---------------------------------------------------------------- the review queue

#[derive(Template)]
#[template(path = "queue.html")]
struct QueuePage {
    chrome: Chrome,
    items: Vec<ItemView>,
    remaining: usize,
    after: String,
    next: Option<String>,
    done: Option<(String, String, String)>,
}

/// `GET /console/queue?after&done&status`: flagged and pending items, oldest first.
pub async fn queue(
    State(state): State<Arc<ConsoleState>>,
    session: Session,
    Params(mut q): Params,
) -> PageResult {
    let after = q.take("after");
    let done = q.take("done");
    let done_status = q.take("status");
    q.finish()?;
    let org = session.principal.org.clone();
    let cursor = after.clone();
    let page = state
        .app
        .run(move |s| s.review_queue(&org, cursor.as_deref(), Some(PAGE)))
        .await?;
    // The note after a review names the item and the decision only: a link cannot put
    // other words on the page.
    let done = done.filter(|id| looks_like_id(id)).map(|id| {
        let verb = match done_status.as_deref() {
            Some("approved") => "Approved",
            Some("rejected") => "Rejected",
            _ => "Reviewed",
        };
        (verb.to_owned(), item_href(&id), id)
    });
    page_of(&QueuePage {
        chrome: Chrome::new(&state, &session, "queue"),
        items: page.items.iter().map(ItemView::from).collect(),
        remaining: page.remaining,
        after: after.unwrap_or_default(),
        next: page
            .next_cursor
            .map(|c| format!("/console/queue?after={}", pct(&c))),
        done,
    })
}

fn page_of(t: &impl Template) -> PageResult {
    page(t)
}

/// The review form.
#[derive(Debug, Deserialize)]
pub struct ReviewForm {
    csrf: Option<String>,
    decision: Option<String>,
    #[serde(default)]
    reason: String,
    back: Option<String>,
    after: Option<String>,
}

/// `POST /console/review/{id}` (admin): approve or reject, then back to the queue (at the
/// same place) or to the item.
pub async fn review(
    State(state): State<Arc<ConsoleState>>,
    session: Session,
    Segment(id): Segment,
    ConsoleForm(form): ConsoleForm<ReviewForm>,
) -> PageResult {
    state.check_csrf(&session, form.csrf.as_deref())?;
    if !session.is_admin() {
        return Err(ApiError::Forbidden(
            "reviewing needs the 'admin' role; this session may only look".into(),
        )
        .into());
    }
    let decision = match form.decision.as_deref() {
        Some("approved") => ValidationStatus::Approved,
        Some("rejected") => ValidationStatus::Rejected,
        _ => {
            return Err(
                ApiError::BadRequest("the decision must be approved or rejected".into()).into(),
            );
        }
    };
    let mut reason = form.reason.trim().to_owned();
    if reason.is_empty() {
        if decision == ValidationStatus::Rejected {
            return Err(ApiError::BadRequest(
                "a rejection needs a reason: type one and press Reject again".into(),
            )
            .into());
        }
        reason = DEFAULT_APPROVE_REASON.to_owned();
    }
    let actor = crate::model::Actor::new(
        session.principal.org.clone(),
        session.principal.user.clone(),
    );
    let target = id.clone();
    let request = crate::service::training::ReviewRequest {
        validation_status: Some(decision.as_str().to_owned()),
        reason: Some(reason),
    };
    state
        .app
        .run(move |s| s.review(&actor, &target, request))
        .await?;
    let to = match form.back.as_deref() {
        Some("item") => format!("{}?done={}", item_href(&id), decision.as_str()),
        _ => {
            let mut to = format!(
                "/console/queue?done={}&status={}",
                pct(&id),
                decision.as_str()
            );
            if let Some(a) = form.after.as_deref().filter(|a| !a.is_empty()) {
                to.push_str("&after=");
                to.push_str(&pct(a));
            }
            to
        }
    };
    Ok(Redirect::to(&to).into_response())
}

// ---------------------------------------------------------------- items

#[derive(Template)]
#[template(path = "items.html")]
struct ItemsPage {
    chrome: Chrome,
    items: Vec<ItemView>,
    status: String,
    kind: String,
    status_options: Vec<(&'static str, bool)>,
    kind_options: Vec<(&'static str, bool)>,
    next: Option<String>,
}

/// `GET /console/items?status&type&cursor`: the org's items, newest first.
pub async fn items(
    State(state): State<Arc<ConsoleState>>,
    session: Session,
    Params(mut q): Params,
) -> PageResult {
    let status_text = q.take("status").unwrap_or_default();
    let kind_text = q.take("type").unwrap_or_default();
    let cursor = q.take("cursor");
    q.finish()?;
    let status = match status_text.as_str() {
        "" => None,
        s => Some(
            s.parse::<ValidationStatus>()
                .map_err(|e| ApiError::BadRequest(format!("invalid status filter: {e}")))?,
        ),
    };
    let feedback_type = match kind_text.as_str() {
        "" => None,
        k => Some(
            k.parse()
                .map_err(|e| ApiError::BadRequest(format!("invalid type filter: {e}")))?,
        ),
    };
    let query = ListQuery {
        limit: Some(PAGE),
        status,
        feedback_type,
        cursor,
        ..Default::default()
    };
    let org = session.principal.org.clone();
    let p = state.app.run(move |s| s.list(&org, &query)).await?;
    let next = p.next_cursor.map(|c| {
        format!(
            "/console/items?status={}&type={}&cursor={}",
            pct(&status_text),
            pct(&kind_text),
            pct(&c)
        )
    });
    page(&ItemsPage {
        chrome: Chrome::new(&state, &session, "items"),
        items: p.items.iter().map(ItemView::from).collect(),
        status_options: ["flagged", "pending", "approved", "rejected"]
            .into_iter()
            .map(|o| (o, o == status_text))
            .collect(),
        kind_options: ["positive", "negative"]
            .into_iter()
            .map(|o| (o, o == kind_text))
            .collect(),
        status: status_text,
        kind: kind_text,
        next,
    })
}

/// One version of an item's history, for the timeline.
#[derive(Debug, Clone)]
pub struct Moment {
    version: u64,
    at: String,
    actor: String,
    action: String,
    changes: Vec<(String, String, String)>,
}

impl From<&HistoryVersion> for Moment {
    fn from(v: &HistoryVersion) -> Self {
        let show = |s: &Option<String>| s.clone().unwrap_or_else(|| "—".into());
        Moment {
            version: v.version,
            at: when(v.at),
            actor: v.actor.clone(),
            action: serde_json::to_value(v.action)
                .ok()
                .and_then(|a| a.as_str().map(str::to_owned))
                .unwrap_or_default(),
            changes: v
                .changes
                .iter()
                .map(|c| (c.field.clone(), show(&c.old), show(&c.new)))
                .collect(),
        }
    }
}

#[derive(Template)]
#[template(path = "item.html")]
struct ItemPage {
    chrome: Chrome,
    item: ItemView,
    history: Vec<Moment>,
    links: Vec<(String, String, String)>,
    impact: crate::service::training::Impact,
    impact_batches: Vec<(String, String, String)>,
    done: Option<String>,
}

/// `GET /console/items/{id}`: the item, its history as a timeline, its links and where its
/// training went.
pub async fn item(
    State(state): State<Arc<ConsoleState>>,
    session: Session,
    Segment(id): Segment,
    Params(mut q): Params,
) -> PageResult {
    let done = q
        .take("done")
        .filter(|d| d == "approved" || d == "rejected");
    q.finish()?;
    let org = session.principal.org.clone();
    let (f, history, links, impact) = state
        .app
        .run(move |s| {
            let f = s.get(&org, &id)?;
            let history = s.history(&org, &id)?;
            let links = s.links_of(&org, &id)?;
            let impact = s.impact(&org, &id)?;
            Ok((f, history, links, impact))
        })
        .await?;
    let impact_batches = impact
        .batches
        .iter()
        .map(|b| {
            (
                format!("/console/batches/{}", b.batch_id),
                format!("batch {} ({})", b.batch_id, b.state),
                b.trained_adapter_id
                    .as_deref()
                    .map(|a| format!("trained {a}"))
                    .unwrap_or_default(),
            )
        })
        .collect();
    page(&ItemPage {
        chrome: Chrome::new(&state, &session, "items"),
        item: ItemView::from(&f),
        history: history.iter().rev().map(Moment::from).collect(),
        links: links
            .iter()
            .map(|l| {
                (
                    adapter_href(&l.adapter_id),
                    l.adapter_id.clone(),
                    format!("{} link, {}", l.source.as_str(), when(l.created_at)),
                )
            })
            .collect(),
        impact,
        impact_batches,
        done,
    })
}

// ---------------------------------------------------------------- adapters

#[derive(Template)]
#[template(path = "adapters.html")]
struct AdaptersPage {
    chrome: Chrome,
    picture: String,
    roots_total: usize,
    adapters_total: usize,
    drawn: usize,
    prev: Option<String>,
    next: Option<String>,
}

/// `GET /console/adapters?page`: the lineage forest, a page of roots at a time, as SVG.
pub async fn adapters(
    State(state): State<Arc<ConsoleState>>,
    session: Session,
    Params(mut q): Params,
) -> PageResult {
    let page_no = q.number("page")?.unwrap_or(0) as usize;
    q.finish()?;
    let org = session.principal.org.clone();
    let first = page_no.saturating_mul(ROOTS_PER_PAGE);
    let forest = state
        .app
        .run(move |s| s.lineage_forest(&org, first, ROOTS_PER_PAGE, NODES_PER_PAGE))
        .await?;
    page(&AdaptersPage {
        chrome: Chrome::new(&state, &session, "adapters"),
        picture: svg::lineage(&forest.nodes),
        roots_total: forest.roots_total,
        adapters_total: forest.adapters_total,
        drawn: forest.nodes.len(),
        prev: (page_no > 0).then(|| format!("/console/adapters?page={}", page_no - 1)),
        next: forest
            .more
            .then(|| format!("/console/adapters?page={}", page_no + 1)),
    })
}

#[derive(Template)]
#[template(path = "adapter.html")]
struct AdapterPage {
    chrome: Chrome,
    id: String,
    version: String,
    base_model: String,
    source: &'static str,
    created: String,
    stats: crate::service::Stats,
    ratio: String,
    lineage: Vec<(String, String)>,
    children: Vec<(String, String)>,
    items: Vec<ItemView>,
    total_linked: usize,
    next: Option<String>,
}

/// `GET /console/adapters/{id}?cursor`: an adapter's counters, ancestors, children and the
/// feedback linked to it (a page at a time).
pub async fn adapter(
    State(state): State<Arc<ConsoleState>>,
    session: Session,
    Segment(id): Segment,
    Params(mut q): Params,
) -> PageResult {
    let cursor = q.take("cursor");
    q.finish()?;
    let org = session.principal.org.clone();
    let target = id.clone();
    let (summary, lineage, linked) = state
        .app
        .run(move |s| {
            let summary = s.adapter_summary(&org, &target)?;
            let lineage = s.lineage(&org, &target)?;
            let linked = s.by_adapter(
                &org,
                &target,
                &crate::service::ByAdapterQuery {
                    limit: Some(PAGE),
                    cursor,
                    ..Default::default()
                },
            )?;
            Ok((summary, lineage, linked))
        })
        .await?;
    let a = &summary.adapter;
    page(&AdapterPage {
        chrome: Chrome::new(&state, &session, "adapters"),
        id: a.id.clone(),
        version: a.version.clone().unwrap_or_else(|| "—".into()),
        base_model: a.base_model.clone().unwrap_or_else(|| "—".into()),
        source: a.source.as_str(),
        created: when(a.created_at),
        ratio: percent(summary.feedback.positive_ratio),
        stats: summary.feedback.clone(),
        lineage: lineage
            .iter()
            .map(|l| (adapter_href(&l.id), l.id.clone()))
            .collect(),
        children: summary
            .children
            .iter()
            .map(|c| (adapter_href(c), c.clone()))
            .collect(),
        items: linked.feedback.iter().map(ItemView::from).collect(),
        total_linked: linked.total_linked,
        next: linked
            .next_cursor
            .map(|c| format!("{}?cursor={}", adapter_href(&id), pct(&c))),
    })
}

// ---------------------------------------------------------------- dashboard

/// A legend entry: colour and name.
type Legend = Vec<(&'static str, String)>;

#[derive(Template)]
#[template(path = "dashboard.html")]
struct DashboardPage {
    chrome: Chrome,
    days: u32,
    from: String,
    to: String,
    totals: crate::service::Stats,
    ratio: String,
    submits: String,
    adapter_chart: String,
    adapter_legend: Legend,
    model_chart: String,
    model_legend: Legend,
}

fn legend(series: &[crate::service::overview::Series]) -> Legend {
    series
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let ratio = {
                let (c, p): (u64, u64) = (s.count.iter().sum(), s.positive.iter().sum());
                if c == 0 {
                    "—".to_owned()
                } else {
                    percent(p as f64 / c as f64)
                }
            };
            (
                svg::PALETTE[i % svg::PALETTE.len()],
                format!("{} ({} items, {ratio} positive)", s.name, s.total()),
            )
        })
        .collect()
}

/// `GET /console/dashboard?days`: submits per day and positive ratio per adapter and per
/// model over the last `days` days of data (default 30).
pub async fn dashboard(
    State(state): State<Arc<ConsoleState>>,
    session: Session,
    Params(mut q): Params,
) -> PageResult {
    let days = q.number("days")?.unwrap_or(30).min(u64::from(u32::MAX)) as u32;
    q.finish()?;
    let org = session.principal.org.clone();
    let d = state.app.run(move |s| s.dashboard(&org, days, 6)).await?;
    page(&DashboardPage {
        chrome: Chrome::new(&state, &session, "dashboard"),
        days,
        from: d
            .days
            .first()
            .map(|&t| svg::day_label(t))
            .unwrap_or_default(),
        to: d
            .days
            .last()
            .map(|&t| svg::day_label(t))
            .unwrap_or_default(),
        ratio: percent(d.totals.positive_ratio),
        submits: svg::bars(&d.days, &d.all, "Feedback per day"),
        adapter_chart: svg::ratio_lines(&d.days, &d.adapters, "Positive ratio per adapter"),
        adapter_legend: legend(&d.adapters),
        model_chart: svg::ratio_lines(&d.days, &d.models, "Positive ratio per model"),
        model_legend: legend(&d.models),
        totals: d.totals,
    })
}

// ---------------------------------------------------------------- training batches

/// A batch row.
#[derive(Debug, Clone)]
pub struct BatchRow {
    href: String,
    id: u64,
    state: &'static str,
    count: usize,
    created: String,
    created_by: String,
    trained: String,
    finished: String,
}

impl From<&crate::service::training::BatchView> for BatchRow {
    fn from(v: &crate::service::training::BatchView) -> Self {
        let b = &v.batch;
        BatchRow {
            href: format!("/console/batches/{}", v.batch_id),
            id: v.batch_id,
            state: v.state,
            count: v.count,
            created: when(b.created_at),
            created_by: b.created_by.clone(),
            trained: match (&b.trained_adapter_id, &b.trained_adapter_version) {
                (Some(a), Some(v)) => format!("{a} ({v})"),
                (Some(a), None) => a.clone(),
                _ => "—".into(),
            },
            finished: b.finished_at.map_or("—".into(), when),
        }
    }
}

#[derive(Template)]
#[template(path = "batches.html")]
struct BatchesPage {
    chrome: Chrome,
    batches: Vec<BatchRow>,
    next: Option<String>,
}

/// `GET /console/batches?before`: the org's batches, newest first.
pub async fn batches(
    State(state): State<Arc<ConsoleState>>,
    session: Session,
    Params(mut q): Params,
) -> PageResult {
    let before = q.number("before")?;
    q.finish()?;
    let org = session.principal.org.clone();
    let (list, more) = state
        .app
        .run(move |s| s.batches_page(&org, before, PAGE))
        .await?;
    let next = if more {
        list.last()
            .map(|b| format!("/console/batches?before={}", b.batch_id))
    } else {
        None
    };
    page(&BatchesPage {
        chrome: Chrome::new(&state, &session, "batches"),
        batches: list.iter().map(BatchRow::from).collect(),
        next,
    })
}

#[derive(Template)]
#[template(path = "batch.html")]
struct BatchPage {
    chrome: Chrome,
    row: BatchRow,
    filter: String,
    lease_ends: String,
    entries: Vec<(String, String, String)>,
    total: usize,
    from: usize,
    prev: Option<String>,
    next: Option<String>,
}

/// `GET /console/batches/{id}?from`: a batch's state and its manifest (or, before commit,
/// its leased items), a hundred entries at a time.
pub async fn batch(
    State(state): State<Arc<ConsoleState>>,
    session: Session,
    Segment(id): Segment,
    Params(mut q): Params,
) -> PageResult {
    let from = q.number("from")?.unwrap_or(0) as usize;
    q.finish()?;
    let id: u64 = id
        .parse()
        .map_err(|_| ApiError::NotFound(format!("Training batch '{id}' not found")))?;
    let org = session.principal.org.clone();
    let v = state.app.run(move |s| s.batch(&org, id)).await?;
    let b = &v.batch;
    let entries: Vec<(String, String, String)> = if b.manifest.is_empty() {
        b.items
            .iter()
            .skip(from)
            .take(MANIFEST_PAGE)
            .map(|i| (item_href(i), i.clone(), "leased".to_owned()))
            .collect()
    } else {
        b.manifest
            .iter()
            .skip(from)
            .take(MANIFEST_PAGE)
            .map(|m| {
                (
                    item_href(&m.feedback_id),
                    m.feedback_id.clone(),
                    m.content_hash.clone(),
                )
            })
            .collect()
    };
    let total = if b.manifest.is_empty() {
        b.items.len()
    } else {
        b.manifest.len()
    };
    let filter = [
        b.adapter_id.as_deref().map(|a| {
            format!(
                "adapter {a}{}",
                if b.include_descendants {
                    " and descendants"
                } else {
                    ""
                }
            )
        }),
        b.model.as_deref().map(|m| format!("model {m}")),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(", ");
    page(&BatchPage {
        chrome: Chrome::new(&state, &session, "batches"),
        filter: if filter.is_empty() {
            "any approved item".into()
        } else {
            filter
        },
        lease_ends: when(b.lease_expires_at),
        total,
        from,
        prev: (from > 0).then(|| {
            format!(
                "/console/batches/{id}?from={}",
                from.saturating_sub(MANIFEST_PAGE)
            )
        }),
        next: (from + MANIFEST_PAGE < total)
            .then(|| format!("/console/batches/{id}?from={}", from + MANIFEST_PAGE)),
        entries,
        row: BatchRow::from(&v),
    })
}

// ---------------------------------------------------------------- Cypher

/// A named query as the form lists it.
#[derive(Debug, Clone)]
pub struct NamedView {
    name: &'static str,
    description: &'static str,
    params: String,
    href: String,
}

#[derive(Template)]
#[template(path = "query.html")]
struct QueryPage {
    chrome: Chrome,
    named: Vec<NamedView>,
    query: String,
    params: String,
    error: Option<String>,
    columns: Vec<String>,
    rows: Vec<Vec<String>>,
    shown: usize,
    total: usize,
    ran: bool,
}

fn named_views(state: &ConsoleState) -> Result<Vec<NamedView>, ApiError> {
    Ok(state
        .app
        .service()?
        .named_queries()
        .into_iter()
        .map(|n| NamedView {
            name: n.name,
            description: n.description,
            params: n.params.join(", "),
            href: format!("/console/query?named={}", pct(n.name)),
        })
        .collect())
}

/// `GET /console/query?named`: the Cypher box, optionally filled with a named query.
pub async fn query_form(
    State(state): State<Arc<ConsoleState>>,
    session: Session,
    Params(mut q): Params,
) -> PageResult {
    let named = q.take("named");
    q.finish()?;
    let list = named_views(&state)?;
    let service = state.app.service()?;
    let (query, params) = match named {
        None => (
            "MATCH (a:Adapter) RETURN a.id, a.version ORDER BY a.id LIMIT 25".to_owned(),
            "{}".to_owned(),
        ),
        Some(name) => {
            let n = service
                .named_queries()
                .into_iter()
                .find(|n| n.name == name)
                .ok_or_else(|| ApiError::NotFound(format!("no named query '{name}'")))?;
            let params: serde_json::Map<String, serde_json::Value> = n
                .params
                .iter()
                .map(|p| ((*p).to_owned(), serde_json::Value::String(String::new())))
                .collect();
            (
                n.query.to_owned(),
                serde_json::to_string(&params).unwrap_or_else(|_| "{}".into()),
            )
        }
    };
    page(&QueryPage {
        chrome: Chrome::new(&state, &session, "query"),
        named: list,
        query,
        params,
        error: None,
        columns: Vec::new(),
        rows: Vec::new(),
        shown: 0,
        total: 0,
        ran: false,
    })
}

/// The Cypher form.
#[derive(Debug, Deserialize)]
pub struct QueryForm {
    csrf: Option<String>,
    #[serde(default)]
    query: String,
    #[serde(default)]
    params: String,
}

/// Raises a query's cancel flag when the handler ends or is dropped (client gone).
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn cell(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "null".into(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `POST /console/query`: runs the query (read-only, within the API's limits) and shows
/// the result as a table; errors (with their position) are shown above the box.
pub async fn query_run(
    State(state): State<Arc<ConsoleState>>,
    session: Session,
    ConsoleForm(form): ConsoleForm<QueryForm>,
) -> PageResult {
    state.check_csrf(&session, form.csrf.as_deref())?;
    let mut out = QueryPage {
        chrome: Chrome::new(&state, &session, "query"),
        named: named_views(&state)?,
        query: form.query.clone(),
        params: if form.params.trim().is_empty() {
            "{}".into()
        } else {
            form.params.clone()
        },
        error: None,
        columns: Vec::new(),
        rows: Vec::new(),
        shown: 0,
        total: 0,
        ran: true,
    };
    let params: serde_json::Map<String, serde_json::Value> = match serde_json::from_str(&out.params)
    {
        Ok(p) => p,
        Err(e) => {
            out.error = Some(format!("Parameters must be a JSON object: {e}"));
            return Ok(html(StatusCode::BAD_REQUEST, render(&out)?));
        }
    };
    if form.query.trim().is_empty() {
        out.error = Some("Type a query.".into());
        return Ok(html(StatusCode::BAD_REQUEST, render(&out)?));
    }
    let org = session.principal.org.clone();
    let cancel = Arc::new(AtomicBool::new(false));
    let _guard = CancelOnDrop(Arc::clone(&cancel));
    let text = form.query;
    match state
        .app
        .run(move |s| s.query_cancellable(&org, &text, &params, &cancel))
        .await
    {
        Ok(result) => {
            out.columns = result.columns.clone();
            out.total = result.rows.len();
            out.rows = (0..result.rows.len().min(QUERY_ROWS))
                .filter_map(|i| result.rows.row(i))
                .map(|r| r.iter().map(cell).collect())
                .collect();
            out.shown = out.rows.len();
            page(&out)
        }
        Err(
            e @ (ApiError::InvalidQuery(_) | ApiError::LimitExceeded(_) | ApiError::BadRequest(_)),
        ) => {
            let status = e.status();
            out.error = Some(e.to_string());
            Ok(html(status, render(&out)?))
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::when;

    #[test]
    fn times_are_shown_in_utc() {
        assert_eq!(when(0), "1970-01-01 00:00 UTC");
        assert_eq!(when(1_790_063_117_318), "2026-09-22 07:45 UTC");
    }
}
