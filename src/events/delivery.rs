//! The delivery worker: sends each endpoint's due outbox entries, at least once, signed,
//! in (record, version) order, and settles them.
//!
//! Every `poll_ms` the worker lists the endpoints and starts a pass for each enabled one
//! that has no pass running, up to `webhooks.concurrency` passes at once, so a slow or dead
//! receiver holds up only its own endpoint. Within a pass an endpoint's entries go one at a
//! time: at most one request per endpoint is in flight, which keeps per-item order.
//!
//! A pass first takes the endpoint's delivery lease from the store (`EventStore::
//! acquire_lease`; see `store::outbox::Lease`): on PostgreSQL several replicas run this
//! worker over one outbox, and the lease lets one of them deliver an endpoint at a time.
//! The pass renews it every third of `lease_ms` (also while a request is in flight) and
//! releases it when it ends. If a renewal fails, or cannot be made before the lease would
//! lapse by our own clock, the pass stops at once: an in-flight request is abandoned and
//! not settled (it is sent again by whoever takes over: at least once), so two live
//! replicas never send one endpoint's events at the same time. A replica that dies holding
//! a lease delays that endpoint by at most `lease_ms`. On sled the lease is always granted.
//!
//! Per endpoint and pass the worker reads the entries whose change is durable (the store's
//! `pending`). An entry that fails is retried after an exponentially growing delay with
//! jitter; until it is delivered, the later events of the same record wait (per-item
//! order). A 2xx answer delivers; anything else (another status, a refused or timed-out
//! connection, a target the allow-list refuses) is a failure. After
//! `webhooks.disable_after_failures` failures in a row, or failures for
//! `webhooks.disable_after_secs`, the endpoint is disabled; its queued events stay and go
//! out once an admin enables it again.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::WebhooksConfig;
use super::allow::{CheckedResolver, TargetPolicy};
use super::sign;
use crate::model::{Millis, now_millis};
use crate::service::{Service, ServiceError};
use crate::store::outbox::{Delivery, Endpoint, KIND_REDELIVERY, Lease, OutboxEntry, Settle};

/// Entries one pass reads per endpoint.
const PASS_ENTRIES: usize = 200;

/// The shortest lease accepted (`webhooks.lease_ms` is raised to it).
pub const MIN_LEASE_MS: u64 = 300;

/// Most passes in flight, whatever `webhooks.concurrency` says.
const MAX_CONCURRENCY: usize = 4096;

/// Starts the worker on the current runtime. It holds the service weakly and ends when
/// the service is gone.
pub fn spawn(
    service: Weak<Service>,
    config: WebhooksConfig,
) -> Result<tokio::task::JoinHandle<()>, String> {
    let policy = Arc::new(config.policy()?);
    let client = reqwest::Client::builder()
        .dns_resolver(Arc::new(CheckedResolver(Arc::clone(&policy))))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(Duration::from_millis(config.timeout_ms.max(1)))
        .user_agent(concat!("feedgraph-webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("building the webhook client: {e}"))?;
    let worker = Worker {
        service,
        client,
        policy,
        holder: format!("pid{}-{}", std::process::id(), ulid::Ulid::new()),
        lease: Duration::from_millis(config.lease_ms.max(MIN_LEASE_MS)),
        slots: Arc::new(Semaphore::new(config.concurrency.clamp(1, MAX_CONCURRENCY))),
        running: Mutex::new(HashSet::new()),
        config,
    };
    Ok(tokio::spawn(Arc::new(worker).run()))
}

struct Worker {
    service: Weak<Service>,
    client: reqwest::Client,
    policy: Arc<TargetPolicy>,
    config: WebhooksConfig,
    /// This worker's name in the leases it takes: unique per process start.
    holder: String,
    /// The lease time (`webhooks.lease_ms`, at least [`MIN_LEASE_MS`]).
    lease: Duration,
    /// One permit per pass in flight (`webhooks.concurrency`).
    slots: Arc<Semaphore>,
    /// The endpoints (org, id) with a pass in flight.
    running: Mutex<HashSet<(String, String)>>,
}

/// How an attempt went.
struct Outcome {
    status: Option<u16>,
    ok: bool,
    error: Option<String>,
}

/// A lease this worker holds and until when it is surely valid by our own clock (counted
/// from before the request that took or renewed it; the store counts from later).
struct Held {
    lease: Lease,
    valid_until: Instant,
}

/// Marks an endpoint's pass as running until dropped; holds the pass's slot.
struct Running {
    worker: Arc<Worker>,
    key: (String, String),
    _slot: OwnedSemaphorePermit,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.worker.running.lock().remove(&self.key);
    }
}

impl Worker {
    async fn run(self: Arc<Self>) {
        let poll = Duration::from_millis(self.config.poll_ms.max(10));
        let mut passes: u64 = 0;
        loop {
            tokio::time::sleep(poll).await;
            let endpoints = match self
                .blocking(|s| Ok(s.store().events().endpoints(None)?))
                .await
            {
                Some(Ok(eps)) => eps,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "webhooks: cannot read endpoints");
                    continue;
                }
                None => break,
            };
            passes += 1;
            let enabled: Vec<Endpoint> = endpoints.into_iter().filter(|e| e.enabled).collect();
            if enabled.is_empty() {
                continue;
            }
            // Start each poll at another endpoint, so that when more endpoints have work
            // than there are slots, each gets its turn.
            let first = usize::try_from(passes % enabled.len() as u64).unwrap_or(0);
            let trim = passes.is_multiple_of(64);
            for ep in enabled[first..].iter().chain(&enabled[..first]) {
                let key = (ep.org_id.clone(), ep.id.clone());
                if self.running.lock().contains(&key) {
                    continue;
                }
                let Ok(slot) = Arc::clone(&self.slots).try_acquire_owned() else {
                    break;
                };
                self.running.lock().insert(key.clone());
                let running = Running {
                    worker: Arc::clone(&self),
                    key,
                    _slot: slot,
                };
                let ep = ep.clone();
                tokio::spawn(async move {
                    running.worker.endpoint_pass(ep, trim).await;
                    drop(running);
                });
            }
        }
    }

    /// Runs `f` on the blocking pool with the service; `None` once the service is gone.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Service) -> Result<T, ServiceError> + Send + 'static,
    ) -> Option<Result<T, ServiceError>> {
        let service = self.service.upgrade()?;
        match tokio::task::spawn_blocking(move || f(&service)).await {
            Ok(r) => Some(r),
            Err(e) => Some(Err(ServiceError::Internal(format!(
                "webhook task failed: {e}"
            )))),
        }
    }

    /// One pass over an endpoint: take its lease (or leave it to the replica holding
    /// it), deliver what is due, release the lease.
    async fn endpoint_pass(&self, ep: Endpoint, trim: bool) {
        // A read first: an idle endpoint costs no lease write.
        let reader = ep.clone();
        match self
            .blocking(move |s| Ok(s.store().events().pending(&reader, 1)?))
            .await
        {
            Some(Ok(due)) if !due.is_empty() => {}
            Some(Err(e)) => {
                tracing::warn!(org = %ep.org_id, endpoint = %ep.id, error = %e, "webhooks: cannot read the outbox");
                return;
            }
            _ => return,
        }
        let (org, id) = (ep.org_id.clone(), ep.id.clone());
        let (holder, ttl) = (self.holder.clone(), self.lease_ms());
        let asked = Instant::now();
        let lease = match self
            .blocking(move |s| Ok(s.store().events().acquire_lease(&org, &id, &holder, ttl)?))
            .await
        {
            Some(Ok(Some(lease))) => lease,
            Some(Ok(None)) | None => return,
            Some(Err(e)) => {
                tracing::warn!(org = %ep.org_id, endpoint = %ep.id, error = %e, "webhooks: cannot take the delivery lease");
                return;
            }
        };
        let mut held = Held {
            lease,
            valid_until: asked + self.lease,
        };
        if let Err(e) = self.deliver_endpoint(&ep, &mut held).await {
            tracing::warn!(org = %ep.org_id, endpoint = %ep.id, error = %e, "webhooks: delivery pass failed");
        }
        if trim {
            let (org, id, keep) = (ep.org_id.clone(), ep.id.clone(), self.config.log_keep);
            let _ = self
                .blocking(move |s| Ok(s.store().events().trim_log(&org, &id, keep)?))
                .await;
        }
        let lease = held.lease;
        if let Some(Err(e)) = self
            .blocking(move |s| Ok(s.store().events().release_lease(&lease)?))
            .await
        {
            // It lapses by itself after lease_ms.
            tracing::warn!(org = %ep.org_id, endpoint = %ep.id, error = %e, "webhooks: cannot release the delivery lease");
        }
    }

    fn lease_ms(&self) -> u64 {
        u64::try_from(self.lease.as_millis()).unwrap_or(u64::MAX)
    }

    /// When the held lease is due for renewal: a third of the lease time after it was
    /// last taken or renewed.
    fn renew_at(&self, held: &Held) -> Instant {
        held.valid_until - self.lease * 2 / 3
    }

    /// Renews the held lease; `false` if it is lost (taken over, the store failed, or no
    /// answer before it would lapse): the pass must stop.
    async fn renew(&self, held: &mut Held) -> bool {
        let asked = Instant::now();
        let (lease, ttl) = (held.lease.clone(), self.lease_ms());
        let renewed = tokio::time::timeout_at(
            held.valid_until,
            self.blocking(move |s| Ok(s.store().events().renew_lease(&lease, ttl)?)),
        )
        .await;
        let l = &held.lease;
        match renewed {
            Ok(Some(Ok(true))) => {
                held.valid_until = asked + self.lease;
                true
            }
            Ok(Some(Ok(false))) => {
                tracing::info!(org = %l.org_id, endpoint = %l.endpoint_id, "webhooks: delivery lease taken over; stopping");
                false
            }
            Ok(Some(Err(e))) => {
                tracing::warn!(org = %l.org_id, endpoint = %l.endpoint_id, error = %e, "webhooks: cannot renew the delivery lease; stopping");
                false
            }
            Ok(None) => false,
            Err(_) => {
                tracing::warn!(org = %l.org_id, endpoint = %l.endpoint_id, "webhooks: delivery lease lapsed before it could be renewed; stopping");
                false
            }
        }
    }

    /// Sends one entry while keeping the lease alive; `None` if the lease was lost
    /// meanwhile (the request is abandoned, unsettled).
    async fn send_leased(
        &self,
        ep: &Endpoint,
        entry: &OutboxEntry,
        delivery_id: &str,
        held: &mut Held,
    ) -> Option<Outcome> {
        if Instant::now() >= self.renew_at(held) && !self.renew(held).await {
            return None;
        }
        let send = self.send(ep, entry, delivery_id);
        tokio::pin!(send);
        loop {
            tokio::select! {
                outcome = &mut send => return Some(outcome),
                _ = tokio::time::sleep_until(self.renew_at(held)) => {
                    if !self.renew(held).await {
                        return None;
                    }
                }
            }
        }
    }

    async fn deliver_endpoint(&self, ep: &Endpoint, held: &mut Held) -> Result<(), ServiceError> {
        let reader = ep.clone();
        let Some(entries) = self
            .blocking(move |s| Ok(s.store().events().pending(&reader, PASS_ENTRIES)?))
            .await
        else {
            return Ok(());
        };
        let mut blocked: HashSet<(u8, String)> = HashSet::new();
        for entry in entries? {
            let ordered = entry.subject.kind != KIND_REDELIVERY;
            let subject = (entry.subject.kind, entry.subject.id.clone());
            if ordered && blocked.contains(&subject) {
                continue;
            }
            let now = now_millis();
            if entry.next_attempt_at > now {
                if ordered {
                    blocked.insert(subject);
                }
                continue;
            }
            let delivery_id = format!("dlv-{}", ulid::Ulid::new());
            let Some(outcome) = self.send_leased(ep, &entry, &delivery_id, held).await else {
                return Ok(());
            };
            if !outcome.ok && ordered {
                blocked.insert(subject);
            }
            let now = now_millis();
            let settle = if outcome.ok {
                Settle::Done
            } else {
                Settle::Retry {
                    next_attempt_at: now.saturating_add(self.backoff(entry.attempts)),
                }
            };
            let log = Delivery {
                id: delivery_id,
                endpoint_id: ep.id.clone(),
                org_id: ep.org_id.clone(),
                event_id: entry.event_id.clone(),
                event: entry.event,
                body: entry.body.clone(),
                attempt: entry.attempts.saturating_add(1),
                at: now,
                status: outcome.status,
                ok: outcome.ok,
                error: outcome.error,
                manual: !ordered,
            };
            let config = self.config.clone();
            let ok = outcome.ok;
            let stop = self
                .blocking(move |s| {
                    let events = s.store().events();
                    events.settle(&entry, &settle, &log)?;
                    record_outcome(s, &entry.org_id, &entry.endpoint_id, ok, now, &config)
                })
                .await;
            match stop {
                None | Some(Ok(true)) => break,
                Some(Ok(false)) => {}
                Some(Err(e)) => return Err(e),
            }
        }
        Ok(())
    }

    /// The delay before retry number `attempts + 1`: base × 2^attempts, capped, less a
    /// random share of up to `retry_jitter_pct` percent.
    fn backoff(&self, attempts: u32) -> Millis {
        let c = &self.config;
        let raw = c
            .retry_base_ms
            .saturating_mul(1u64 << attempts.min(40))
            .min(c.retry_max_ms.max(c.retry_base_ms));
        let jitter_max = raw.saturating_mul(u64::from(c.retry_jitter_pct.min(100))) / 100;
        let jitter = if jitter_max == 0 {
            0
        } else {
            rand::random_range(0..=jitter_max)
        };
        raw - jitter
    }

    async fn send(&self, ep: &Endpoint, entry: &OutboxEntry, delivery_id: &str) -> Outcome {
        let fail = |error: String| Outcome {
            status: None,
            ok: false,
            error: Some(error),
        };
        let url = match self.policy.check_url(&ep.url) {
            Ok(u) => u,
            Err(e) => return fail(e),
        };
        // A literal address never reaches the resolver: check it here.
        let host = url
            .host_str()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']');
        if let Ok(ip) = host.parse::<IpAddr>()
            && !self.policy.ip_allowed(ip)
        {
            return fail(format!(
                "{ip} is an internal address that webhooks may not reach"
            ));
        }
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let request = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(
                sign::SIGNATURE_HEADER,
                sign::header_value(&ep.secret, timestamp, entry.body.as_bytes()),
            )
            .header(sign::EVENT_ID_HEADER, &entry.event_id)
            .header(sign::EVENT_TYPE_HEADER, entry.event.as_str())
            .header(sign::DELIVERY_ID_HEADER, delivery_id)
            .body(entry.body.clone());
        match request.send().await {
            Ok(response) => {
                let status = response.status();
                // The body is not read: a receiver cannot make us hold much.
                drop(response);
                Outcome {
                    status: Some(status.as_u16()),
                    ok: status.is_success(),
                    error: (!status.is_success()).then(|| format!("answered {status}")),
                }
            }
            Err(e) => fail(error_chain(&e)),
        }
    }
}

/// An error with its causes, `a: b: c`.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Updates an endpoint's failure streak after an attempt, disabling it when the streak
/// is too long. Returns whether deliveries to it must stop now (disabled or deleted).
fn record_outcome(
    service: &Service,
    org: &str,
    id: &str,
    ok: bool,
    now: Millis,
    config: &WebhooksConfig,
) -> Result<bool, ServiceError> {
    let events = service.store().events();
    let Some(mut ep) = events.get_endpoint(org, id)? else {
        return Ok(true);
    };
    if ok {
        if ep.failure_streak > 0 || ep.failing_since.is_some() {
            ep.failure_streak = 0;
            ep.failing_since = None;
            events.put_endpoint(&ep)?;
        }
        return Ok(!ep.enabled);
    }
    ep.failure_streak = ep.failure_streak.saturating_add(1);
    let since = *ep.failing_since.get_or_insert(now);
    let by_count =
        config.disable_after_failures > 0 && ep.failure_streak >= config.disable_after_failures;
    let by_time = config.disable_after_secs > 0
        && now.saturating_sub(since) >= config.disable_after_secs.saturating_mul(1000);
    if ep.enabled && (by_count || by_time) {
        ep.enabled = false;
        ep.disabled_reason = Some(format!(
            "disabled by the server after {} failed attempts in a row (failing since {} ms)",
            ep.failure_streak, since
        ));
        tracing::warn!(org = %org, endpoint = %id, streak = ep.failure_streak, "webhook endpoint disabled after a failure streak");
    }
    events.put_endpoint(&ep)?;
    Ok(!ep.enabled)
}
