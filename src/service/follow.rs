//! The replica follower: keeps this process's graph index in step with what other
//! replicas write to a shared store, by reading the store's change log
//! ([`crate::store::ChangeLog`]; on PostgreSQL `fg_changes`, see `store::pg::follow` for
//! why it never misses a transaction that commits out of sequence order).
//!
//! One thread (`feedgraph-follow`) per process with a shared store. Each round reads the
//! next changes of finished transactions, drops those of orgs this replica does not serve
//! (its placement) and those its graph already holds at that version or newer (its own
//! writes, applied before they were acknowledged), re-reads the current state of the
//! rest in one query, and applies it to the graph. Applying is idempotent and a record's
//! node keeps its highest version, so a change read twice, or after a newer local write,
//! does no harm. Then it waits for a notification from another replica or the poll
//! interval, whichever comes first. A failed round (database down) is retried from the
//! same position; nothing is skipped.
//!
//! Lag (changes past the position, age of the oldest) is measured every round and shown
//! by `/readyz` and `/metrics`; the position is reported to the store every few seconds,
//! which prunes what every live replica has read.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use serde::Serialize;

use super::Service;
use crate::model::now_millis;
use crate::store::{ChangeLog, ChangeSet, LogPosition, LoggedChange, keys};

/// Changes read per round.
const READ_LIMIT: usize = 2000;
/// How often the position is reported to the store, and old changes pruned.
const REPORT_EVERY: Duration = Duration::from_secs(5);
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// How often lag is measured while changes keep coming (always after an idle wait).
const LAG_EVERY: Duration = Duration::from_millis(200);

/// How far this replica's graph is behind the shared store's change log.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ReplicationStatus {
    /// Changes logged by finished transactions that this replica has not read yet.
    pub changes_behind: u64,
    /// Age in ms of the oldest of them (0 when none).
    pub ms_behind: u64,
    /// Changes this replica applied from the log since it started.
    pub applied: u64,
    /// Rounds the follower has completed (read the log and applied what it needed).
    pub rounds: u64,
    /// The last round's failure, if it failed (the store unreachable, say).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The follower's shared state: its status and instruments.
#[derive(Debug)]
pub struct Follower {
    status: Mutex<ReplicationStatus>,
    /// Where it starts (taken before the graph was built).
    start: LogPosition,
    poll: Duration,
    retention: Duration,
    replica_id: String,
    lag_changes: Gauge,
    lag_ms: Gauge<i64, AtomicI64>,
    applied: Counter<u64, AtomicU64>,
    apply_delay: Histogram,
}

impl Follower {
    /// A follower that will start at `start`.
    pub fn new(start: LogPosition, poll: Duration, retention: Duration) -> Self {
        let replica_id = format!("{}-{}-{:x}", hostname(), std::process::id(), now_millis());
        Follower {
            status: Mutex::new(ReplicationStatus::default()),
            start,
            poll,
            retention,
            replica_id,
            lag_changes: Gauge::default(),
            lag_ms: Gauge::default(),
            applied: Counter::default(),
            // From 1 ms to about 65 s.
            apply_delay: Histogram::new(exponential_buckets(0.001, 2.0, 17)),
        }
    }

    /// The current status.
    pub fn status(&self) -> ReplicationStatus {
        self.status.lock().clone()
    }

    /// Adds the follower's instruments to `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "feedgraph_replication_changes_behind",
            "Change-log entries of finished transactions this replica has not applied yet",
            self.lag_changes.clone(),
        );
        registry.register_with_unit(
            "feedgraph_replication_lag",
            "Age of the oldest change-log entry this replica has not applied yet",
            Unit::Other("milliseconds".into()),
            self.lag_ms.clone(),
        );
        registry.register(
            "feedgraph_replication_applied",
            "Change-log entries applied to this replica's graph",
            self.applied.clone(),
        );
        registry.register_with_unit(
            "feedgraph_replication_apply_delay",
            "Time from a change being logged to this replica applying it",
            Unit::Seconds,
            self.apply_delay.clone(),
        );
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "replica".into())
}

impl Service {
    /// Starts the follower thread when the store is shared with other processes (it has
    /// a change log). It holds the service weakly and ends once the service is dropped.
    pub fn start_following(self: &Arc<Self>) {
        let Some(follower) = self.follower.clone() else {
            return;
        };
        let weak = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("feedgraph-follow".into())
            .spawn(move || follow_loop(&weak, &follower));
        if let Err(e) = spawned {
            tracing::error!("cannot start the change-log follower: {e}");
        }
    }

    /// How far behind the shared store this replica is, when it follows one.
    pub fn replication(&self) -> Option<ReplicationStatus> {
        self.follower.as_ref().map(|f| f.status())
    }

    /// One round: reads the next changes after `pos`, applies those this replica needs,
    /// and moves `pos` past them. Returns whether more are waiting already.
    fn follow_round(
        &self,
        log: &dyn ChangeLog,
        follower: &Follower,
        pos: &mut LogPosition,
    ) -> Result<bool, crate::store::StoreError> {
        let read = log.read_since(*pos, READ_LIMIT)?;
        let wanted: Vec<LoggedChange> = read
            .changes
            .iter()
            .filter(|c| self.placement.serves(&c.org) && self.needs(c))
            .cloned()
            .collect();
        if !wanted.is_empty() {
            let fetched = log.fetch(&wanted)?;
            let mut by_org: HashMap<String, ChangeSet> = HashMap::new();
            for a in fetched.adapters {
                by_org.entry(a.org_id.clone()).or_default().adapters.push(a);
            }
            for r in fetched.feedback {
                by_org
                    .entry(r.feedback.org_id.clone())
                    .or_default()
                    .feedback
                    .push(r);
            }
            for (org, changes) in &by_org {
                // The links stored in the records are added too (only if absent).
                let _published = self.graph.apply_records(org, changes);
            }
            let now = i64::try_from(now_millis()).unwrap_or(i64::MAX);
            for c in &wanted {
                let delay = now.saturating_sub(c.at_ms).max(0) as f64 / 1000.0;
                follower.apply_delay.observe(delay);
            }
            follower.applied.inc_by(wanted.len() as u64);
            follower.status.lock().applied += wanted.len() as u64;
        }
        *pos = read.next;
        follower.status.lock().rounds += 1;
        Ok(read.full)
    }

    /// Whether the graph lacks the change: a feedback item or adapter it does not hold at
    /// that version or newer. Batches are not in the graph; a deleted record (version -1)
    /// is left to whoever erases it.
    fn needs(&self, c: &LoggedChange) -> bool {
        let Ok(version) = u64::try_from(c.version) else {
            return false;
        };
        let g = self.graph.org(&c.org);
        if c.kind == keys::KIND_FEEDBACK {
            g.and_then(|g| g.feedback_row(&c.id).and_then(|r| g.feedback().version(r)))
                .is_none_or(|have| have < version)
        } else if c.kind == keys::KIND_ADAPTER {
            g.and_then(|g| {
                g.adapter_row(&c.id)
                    .map(|r| g.adapters()[r as usize].record_version)
            })
            .is_none_or(|have| have < version)
        } else {
            false
        }
    }
}

fn follow_loop(service: &std::sync::Weak<Service>, follower: &Follower) {
    let mut pos = follower.start;
    let (mut last_report, mut last_prune) = (None::<Instant>, Instant::now());
    let mut last_lag = None::<Instant>;
    loop {
        let Some(s) = service.upgrade() else {
            return;
        };
        let store = s.store.clone();
        let Some(log) = store.change_log() else {
            return;
        };
        let round = s.follow_round(log, follower, &mut pos);
        let more = match &round {
            Ok(more) => *more,
            Err(_) => false,
        };
        let measure = last_lag.is_none_or(|t: Instant| t.elapsed() >= LAG_EVERY) || round.is_err();
        let lag = if measure {
            last_lag = Some(Instant::now());
            log.lag(pos).map(Some)
        } else {
            Ok(None)
        };
        {
            let mut st = follower.status.lock();
            match (&round, &lag) {
                (Err(e), _) | (_, Err(e)) => st.error = Some(e.to_string()),
                (Ok(_), Ok(Some(_))) => st.error = None,
                _ => {}
            }
            if let Ok(Some(l)) = lag {
                st.changes_behind = l.changes_behind;
                st.ms_behind = l.ms_behind;
                follower
                    .lag_changes
                    .set(i64::try_from(l.changes_behind).unwrap_or(i64::MAX));
                follower
                    .lag_ms
                    .set(i64::try_from(l.ms_behind).unwrap_or(i64::MAX));
            }
        }
        if let Err(e) = &round {
            tracing::warn!("change-log follower: {e}; retrying");
        }
        if last_report.is_none_or(|t| t.elapsed() >= REPORT_EVERY) {
            if let Err(e) = log.report_position(&follower.replica_id, pos) {
                tracing::debug!("cannot report the replica's position: {e}");
            }
            last_report = Some(Instant::now());
        }
        if last_prune.elapsed() >= PRUNE_EVERY {
            match log.prune(follower.retention) {
                Ok(n) if n > 0 => tracing::debug!(removed = n, "pruned the change log"),
                Ok(_) => {}
                Err(e) => tracing::debug!("cannot prune the change log: {e}"),
            }
            last_prune = Instant::now();
        }
        drop(s);
        if !more {
            log.wait(follower.poll);
        }
    }
}
