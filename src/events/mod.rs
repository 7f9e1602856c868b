//! Lifecycle events delivered to other systems as signed webhooks.
//!
//! The store writes each event into its outbox in the same durable write as the change
//! (`store::outbox`); this module owns the rest: the admin operations on endpoints
//! (register, list, get, update, delete, delivery log, manual redelivery), the allow-list
//! of targets ([`allow`]), request signing ([`sign`]) and the background worker that
//! delivers, retries with backoff and disables failing endpoints ([`delivery`]).

pub mod allow;
pub mod delivery;
pub mod sign;

use serde::{Deserialize, Serialize};

use crate::model::{Actor, Millis, now_millis};
use crate::service::{Service, ServiceError};
use crate::store::outbox::{Delivery, Endpoint, EventType, KIND_REDELIVERY, OutboxEntry, Subject};
use allow::{Cidr, TargetPolicy};

/// Most endpoints one org may register.
pub const MAX_ENDPOINTS_PER_ORG: usize = 32;
/// Longest endpoint URL accepted.
pub const MAX_URL_CHARS: usize = 2048;

/// Webhook settings (`[webhooks]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Run the delivery worker (default true). Off, events still queue in the outbox.
    pub enabled: bool,
    /// Allow targets on internal addresses (loopback, private, link-local, unique-local,
    /// metadata). Default false.
    pub allow_private: bool,
    /// Networks allowed even though internal, e.g. `["10.20.0.0/16"]`. Default none.
    pub allowed_cidrs: Vec<String>,
    /// Allow `http://` targets (default false: https only).
    pub allow_http: bool,
    /// How often (ms) the worker looks for due events when idle. Default 500.
    pub poll_ms: u64,
    /// Timeout (ms) of one delivery request. Default 10000.
    pub timeout_ms: u64,
    /// First retry delay (ms); it doubles with every failed attempt. Default 1000.
    pub retry_base_ms: u64,
    /// Longest retry delay (ms). Default 3600000 (an hour).
    pub retry_max_ms: u64,
    /// Random part of each delay, in percent (the delay is shortened by up to this much).
    /// Default 20.
    pub retry_jitter_pct: u8,
    /// Disable an endpoint after this many failed attempts in a row (0: never by count).
    /// Default 100.
    pub disable_after_failures: u32,
    /// Disable an endpoint whose attempts have failed for this long (seconds; 0: never by
    /// time). Default 259200 (three days).
    pub disable_after_secs: u64,
    /// Delivery log entries kept per endpoint (oldest dropped first). Default 1000.
    pub log_keep: usize,
    /// Endpoints delivered to at once (each endpoint has at most one request in flight,
    /// so its per-item order holds). Default 16.
    pub concurrency: usize,
    /// How long (ms) a worker's claim on an endpoint lasts unless renewed (it is renewed
    /// every third of this while delivering). Another replica takes an endpoint over at
    /// most this long after its worker died. Default 30000; at least 300.
    pub lease_ms: u64,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            enabled: true,
            allow_private: false,
            allowed_cidrs: Vec::new(),
            allow_http: false,
            poll_ms: 500,
            timeout_ms: 10_000,
            retry_base_ms: 1000,
            retry_max_ms: 3_600_000,
            retry_jitter_pct: 20,
            disable_after_failures: 100,
            disable_after_secs: 3 * 24 * 3600,
            log_keep: 1000,
            concurrency: 16,
            lease_ms: 30_000,
        }
    }
}

impl WebhooksConfig {
    /// The allow-list these settings describe; an unparsable CIDR is an error.
    pub fn policy(&self) -> Result<TargetPolicy, String> {
        let allowed = self
            .allowed_cidrs
            .iter()
            .map(|c| {
                Cidr::parse(c).ok_or_else(|| format!("webhooks.allowed_cidrs: bad CIDR '{c}'"))
            })
            .collect::<Result<_, _>>()?;
        Ok(TargetPolicy {
            allow_private: self.allow_private,
            allow_http: self.allow_http,
            allowed,
        })
    }
}

/// The body of `POST /webhooks`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEndpoint {
    /// Where to POST events (https unless `webhooks.allow_http`).
    pub url: String,
    /// The events to receive (at least one), e.g. `["feedback.submitted"]`.
    pub events: Vec<EventType>,
    /// The signing secret (16 to 256 characters); generated when absent.
    #[serde(default)]
    pub secret: Option<String>,
    /// A free description.
    #[serde(default)]
    pub description: Option<String>,
}

/// The body of `PATCH /webhooks/{id}`: what to change.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointChange {
    /// Turn deliveries on (clears a failure streak) or off.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// A new event list.
    #[serde(default)]
    pub events: Option<Vec<EventType>>,
    /// A new target (checked like a new one).
    #[serde(default)]
    pub url: Option<String>,
}

/// An endpoint as the API shows it (never its secret, except once at registration).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EndpointView {
    /// `wh-<ULID>`.
    pub id: String,
    /// Target.
    pub url: String,
    /// Subscribed events.
    pub events: Vec<EventType>,
    /// Whether deliveries are on.
    pub enabled: bool,
    /// Why the server disabled it, if it did.
    pub disabled_reason: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Registered at (ms).
    pub created_at: Millis,
    /// Registered by.
    pub created_by: String,
    /// Failed attempts in a row.
    pub failure_streak: u32,
    /// Since when attempts have been failing (ms).
    pub failing_since: Option<Millis>,
    /// Events waiting for delivery.
    pub pending: usize,
    /// The signing secret: only in the answer to the registration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// One entry of an endpoint's delivery log as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DeliveryView {
    /// `dlv-<ULID>`.
    pub id: String,
    /// The event.
    pub event_id: String,
    /// Its type.
    pub event: EventType,
    /// Attempt number of this event (1 = first).
    pub attempt: u32,
    /// When (ms).
    pub at: Millis,
    /// The receiver's status, if it answered.
    pub status: Option<u16>,
    /// Delivered (2xx).
    pub ok: bool,
    /// What went wrong.
    pub error: Option<String>,
    /// Asked for by an admin.
    pub manual: bool,
    /// The event body sent.
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
}

impl From<Delivery> for DeliveryView {
    fn from(d: Delivery) -> Self {
        DeliveryView {
            payload: serde_json::from_str(&d.body).unwrap_or(serde_json::Value::Null),
            id: d.id,
            event_id: d.event_id,
            event: d.event,
            attempt: d.attempt,
            at: d.at,
            status: d.status,
            ok: d.ok,
            error: d.error,
            manual: d.manual,
        }
    }
}

/// One page of a delivery log, newest first.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DeliveryPage {
    /// The entries.
    pub deliveries: Vec<DeliveryView>,
    /// Pass as `before` for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

fn view(service: &Service, ep: Endpoint) -> Result<EndpointView, ServiceError> {
    let pending = service.store().events().pending_count(&ep.org_id, &ep.id)?;
    Ok(EndpointView {
        id: ep.id,
        url: ep.url,
        events: ep.events,
        enabled: ep.enabled,
        disabled_reason: ep.disabled_reason,
        description: ep.description,
        created_at: ep.created_at,
        created_by: ep.created_by,
        failure_streak: ep.failure_streak,
        failing_since: ep.failing_since,
        pending,
        secret: None,
    })
}

fn check_events(events: &[EventType]) -> Result<Vec<EventType>, ServiceError> {
    if events.is_empty() {
        return Err(ServiceError::BadRequest(
            "events must name at least one event type".into(),
        ));
    }
    let mut v = events.to_vec();
    v.sort();
    v.dedup();
    Ok(v)
}

fn check_url_len(url: &str) -> Result<(), ServiceError> {
    if url.chars().count() > MAX_URL_CHARS {
        return Err(ServiceError::BadRequest(format!(
            "url is longer than {MAX_URL_CHARS} characters"
        )));
    }
    Ok(())
}

fn endpoint_of(service: &Service, org: &str, id: &str) -> Result<Endpoint, ServiceError> {
    service
        .store()
        .events()
        .get_endpoint(org, id)?
        .ok_or_else(|| ServiceError::NotFound {
            kind: "webhook",
            id: id.to_owned(),
        })
}

/// Registers an endpoint. `url` must already have passed [`TargetPolicy::check_target`]
/// (it resolves names, so the HTTP layer runs it on the runtime before this call).
pub fn register(
    service: &Service,
    actor: &Actor,
    new: NewEndpoint,
) -> Result<EndpointView, ServiceError> {
    crate::service::check_org(&actor.org)?;
    check_url_len(&new.url)?;
    let events = check_events(&new.events)?;
    let secret = match new.secret {
        Some(s) if (16..=256).contains(&s.chars().count()) => s,
        Some(_) => {
            return Err(ServiceError::BadRequest(
                "secret must be 16 to 256 characters".into(),
            ));
        }
        None => sign::new_secret(),
    };
    let store = service.store().events();
    if store.endpoints(Some(&actor.org))?.len() >= MAX_ENDPOINTS_PER_ORG {
        return Err(ServiceError::Conflict(format!(
            "an org may register at most {MAX_ENDPOINTS_PER_ORG} webhook endpoints"
        )));
    }
    let ep = Endpoint {
        id: format!("wh-{}", ulid::Ulid::new()),
        org_id: actor.org.clone(),
        url: new.url,
        events,
        secret: secret.clone(),
        enabled: true,
        disabled_reason: None,
        created_at: now_millis(),
        created_by: actor.user.clone(),
        failure_streak: 0,
        failing_since: None,
        description: new.description,
    };
    store.put_endpoint(&ep)?;
    let mut v = view(service, ep)?;
    v.secret = Some(secret);
    Ok(v)
}

/// Every endpoint of the org.
pub fn list(service: &Service, org: &str) -> Result<Vec<EndpointView>, ServiceError> {
    service
        .store()
        .events()
        .endpoints(Some(org))?
        .into_iter()
        .map(|ep| view(service, ep))
        .collect()
}

/// One endpoint of the org.
pub fn get(service: &Service, org: &str, id: &str) -> Result<EndpointView, ServiceError> {
    view(service, endpoint_of(service, org, id)?)
}

/// Changes an endpoint (enable/disable, events, url). A new `url` must already have
/// passed [`TargetPolicy::check_target`]. Enabling clears the failure streak.
pub fn update(
    service: &Service,
    org: &str,
    id: &str,
    change: EndpointChange,
) -> Result<EndpointView, ServiceError> {
    let mut ep = endpoint_of(service, org, id)?;
    if let Some(events) = &change.events {
        ep.events = check_events(events)?;
    }
    if let Some(url) = change.url {
        check_url_len(&url)?;
        ep.url = url;
    }
    if let Some(enabled) = change.enabled {
        ep.enabled = enabled;
        if enabled {
            ep.disabled_reason = None;
            ep.failure_streak = 0;
            ep.failing_since = None;
        }
    }
    service.store().events().put_endpoint(&ep)?;
    view(service, ep)
}

/// Removes an endpoint with its queued events and log.
pub fn delete(service: &Service, org: &str, id: &str) -> Result<(), ServiceError> {
    if service.store().events().delete_endpoint(org, id)? {
        Ok(())
    } else {
        Err(ServiceError::NotFound {
            kind: "webhook",
            id: id.to_owned(),
        })
    }
}

/// A page of an endpoint's delivery log, newest first.
pub fn deliveries(
    service: &Service,
    org: &str,
    id: &str,
    before: Option<&str>,
    limit: usize,
) -> Result<DeliveryPage, ServiceError> {
    endpoint_of(service, org, id)?;
    let limit = limit.clamp(1, crate::service::MAX_LIMIT);
    let rows = service
        .store()
        .events()
        .deliveries(org, id, before, limit + 1)?;
    let more = rows.len() > limit;
    let deliveries: Vec<DeliveryView> = rows.into_iter().take(limit).map(Into::into).collect();
    let next_cursor = more
        .then(|| deliveries.last().map(|d| d.id.clone()))
        .flatten();
    Ok(DeliveryPage {
        deliveries,
        next_cursor,
    })
}

/// Queues the event of one logged delivery again (sent as soon as the worker gets to it,
/// outside the per-item order, with the same event id).
pub fn redeliver(
    service: &Service,
    org: &str,
    id: &str,
    delivery_id: &str,
) -> Result<(), ServiceError> {
    endpoint_of(service, org, id)?;
    let store = service.store().events();
    let found =
        store
            .get_delivery(org, id, delivery_id)?
            .ok_or_else(|| ServiceError::NotFound {
                kind: "delivery",
                id: delivery_id.to_owned(),
            })?;
    store.enqueue(&OutboxEntry {
        endpoint_id: id.to_owned(),
        org_id: org.to_owned(),
        subject: Subject {
            kind: KIND_REDELIVERY,
            id: format!("rdl-{}", ulid::Ulid::new()),
            version: 0,
        },
        event_id: found.event_id,
        event: found.event,
        body: found.body,
        attempts: 0,
        next_attempt_at: 0,
    })?;
    Ok(())
}
