//! The delivery worker: a task that sends each endpoint's due outbox entries, at least
//! once, signed, in (record, version) order, and settles them.
//!
//! Per endpoint and pass it reads the entries whose change is durable (the store's
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

use super::WebhooksConfig;
use super::allow::{CheckedResolver, TargetPolicy};
use super::sign;
use crate::model::{Millis, now_millis};
use crate::service::{Service, ServiceError};
use crate::store::outbox::{Delivery, Endpoint, KIND_REDELIVERY, OutboxEntry, Settle};

/// Entries one pass reads per endpoint.
const PASS_ENTRIES: usize = 200;

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
        config,
    };
    Ok(tokio::spawn(worker.run()))
}

struct Worker {
    service: Weak<Service>,
    client: reqwest::Client,
    policy: Arc<TargetPolicy>,
    config: WebhooksConfig,
}

/// How an attempt went.
struct Outcome {
    status: Option<u16>,
    ok: bool,
    error: Option<String>,
}

impl Worker {
    async fn run(self) {
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
            for ep in endpoints.into_iter().filter(|e| e.enabled) {
                let (org, id) = (ep.org_id.clone(), ep.id.clone());
                if let Err(e) = self.deliver_endpoint(ep).await {
                    tracing::warn!(org = %org, endpoint = %id, error = %e, "webhooks: delivery pass failed");
                }
                if passes.is_multiple_of(64) {
                    let keep = self.config.log_keep;
                    let _ = self
                        .blocking(move |s| Ok(s.store().events().trim_log(&org, &id, keep)?))
                        .await;
                }
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

    async fn deliver_endpoint(&self, ep: Endpoint) -> Result<(), ServiceError> {
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
            let outcome = self.send(&ep, &entry, &delivery_id).await;
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
