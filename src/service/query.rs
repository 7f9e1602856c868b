//! Graph queries: runs openCypher on the caller's org graph with the configured limits,
//! loading long text fields from the store only for the items a query reads or returns.
//! A query can be cancelled (its caller went away), and each org, and the server as a
//! whole, may run only so many queries at once ([`QueryGate`]).

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;

use crate::cypher::{
    self, CypherError, Limit, NamedQuery, QueryLimits, QueryResult, QueryStats, RowSink, TextSource,
};
use crate::store::Backend;

use super::{Service, ServiceError};

/// Plans the query service caches by default (`query.plan_cache_entries`).
pub const DEFAULT_PLAN_CACHE_ENTRIES: usize = 1024;

/// Counts the queries each org is running, so one tenant cannot take every blocking thread,
/// and the queries of all orgs together, so many tenants cannot either; and holds the plans
/// of repeated query texts, shared by every request.
///
/// The last quarter of the server-wide slots is kept for orgs that run no query yet: a
/// tenant that already runs one cannot take them, so however the busy tenants behave, a
/// tenant that runs nothing gets its query in until those slots too are taken, one per
/// tenant.
#[derive(Debug)]
pub struct QueryGate {
    /// Plans of repeated texts (see [`cypher::PlanCache`]).
    plans: cypher::PlanCache,
    max_per_org: usize,
    max_total: usize,
    running: parking_lot::Mutex<Running>,
}

/// What runs now: queries per org, and in all.
#[derive(Debug, Default)]
struct Running {
    per_org: HashMap<String, usize>,
    total: usize,
}

/// One running query's place in the [`QueryGate`], given back on drop.
struct GateSlot<'g> {
    gate: &'g QueryGate,
    org: &'g str,
}

impl QueryGate {
    /// A gate letting `max_per_org` queries of one org run at once (0: no limit) and no
    /// limit across orgs.
    pub fn new(max_per_org: usize) -> Self {
        Self::with_plan_cache(max_per_org, 0, DEFAULT_PLAN_CACHE_ENTRIES)
    }

    /// A gate letting `max_per_org` queries of one org and `max_total` queries of all orgs
    /// run at once (0: no limit), with a plan cache of `plan_cache_entries` plans (0: off).
    pub fn with_plan_cache(
        max_per_org: usize,
        max_total: usize,
        plan_cache_entries: usize,
    ) -> Self {
        QueryGate {
            plans: cypher::PlanCache::new(plan_cache_entries),
            max_per_org,
            max_total,
            running: parking_lot::Mutex::new(Running::default()),
        }
    }

    /// The server-wide slots an org that already runs a query may not take.
    fn reserved(&self) -> usize {
        if self.max_total > 1 {
            self.max_total.div_ceil(4)
        } else {
            0
        }
    }

    fn enter<'g>(&'g self, org: &'g str) -> Result<GateSlot<'g>, CypherError> {
        let mut running = self.running.lock();
        let total = running.total;
        let n = running.per_org.get(org).copied().unwrap_or(0);
        if self.max_per_org > 0 && n >= self.max_per_org {
            return Err(CypherError::LimitExceeded {
                limit: Limit::MaxConcurrent,
                detail: format!(
                    "{} queries of this org are running already; retry shortly (query.max_concurrent_per_org)",
                    self.max_per_org
                ),
            });
        }
        if self.max_total > 0 {
            let open_to_this_org = if n == 0 {
                self.max_total
            } else {
                self.max_total - self.reserved()
            };
            if total >= open_to_this_org {
                return Err(CypherError::LimitExceeded {
                    limit: Limit::MaxConcurrentTotal,
                    detail: format!(
                        "the server is running {total} queries (at most {} at once, the last {} kept for orgs running none); retry shortly (query.max_concurrent_total)",
                        self.max_total,
                        self.reserved()
                    ),
                });
            }
        }
        *running.per_org.entry(org.to_owned()).or_insert(0) += 1;
        running.total += 1;
        Ok(GateSlot { gate: self, org })
    }
}

impl Drop for GateSlot<'_> {
    fn drop(&mut self) {
        let mut running = self.gate.running.lock();
        if let Some(n) = running.per_org.get_mut(self.org) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                running.per_org.remove(self.org);
            }
            running.total = running.total.saturating_sub(1);
        }
    }
}

/// Reads what the graph does not hold from the store for the executor: feedback texts,
/// metadata and validation reasons, adapters' metadata.
struct StoreText<'a> {
    store: &'a dyn Backend,
    org: &'a str,
}

impl StoreText<'_> {
    /// The stored feedback record `id`, durable state only: a record newer than the
    /// graph's (an update not yet synced) waits here. A record that cannot be read yields
    /// `None`, and its stored properties read as null (the query is read-only and the
    /// graph holds every other property).
    fn record(&self, id: &str) -> Option<crate::model::Feedback> {
        self.store
            .get_record(self.org, id)
            .ok()
            .flatten()
            .map(|r| r.feedback)
    }
}

/// The value of a stored field of `f` as `GET /feedback/{id}` shows it.
fn stored_field(f: &crate::model::Feedback, field: &str) -> Option<serde_json::Value> {
    use serde_json::Value;
    match field {
        "question" => Some(Value::String(f.question.clone())),
        "answer" => Some(Value::String(f.answer.clone())),
        "correction" => f.correction.clone().map(Value::String),
        "comment" => f.comment.clone().map(Value::String),
        "metadata" => Some(Value::Object(f.metadata.0.clone())),
        "validation_reasons" => serde_json::to_value(&f.validation_reasons).ok(),
        "pii" => serde_json::to_value(&f.pii).ok(),
        "kind" => Some(Value::String(f.kind.as_str().to_owned())),
        "label" => f.label.clone().map(Value::String),
        "provider" => f.provider.clone().map(Value::String),
        "score_config" => f.score_config.clone().map(Value::String),
        _ => None,
    }
}

impl TextSource for StoreText<'_> {
    fn feedback_text(&self, id: &str, field: &str) -> Option<String> {
        match stored_field(&self.record(id)?, field)? {
            serde_json::Value::String(s) => Some(s),
            _ => None,
        }
    }

    fn feedback_json(&self, id: &str, field: &str) -> Option<serde_json::Value> {
        stored_field(&self.record(id)?, field)
    }

    fn feedback_fields(&self, id: &str, fields: &[&str]) -> Vec<Option<serde_json::Value>> {
        // One read per item.
        let f = self.record(id);
        fields
            .iter()
            .map(|field| stored_field(f.as_ref()?, field))
            .collect()
    }

    fn link_metadata(
        &self,
        feedback_id: &str,
        adapter_id: &str,
    ) -> Option<serde_json::Map<String, serde_json::Value>> {
        let links = self.store.get_record(self.org, feedback_id).ok()??.links;
        links
            .into_iter()
            .find(|l| l.adapter_id == adapter_id)
            .map(|l| l.metadata.0)
    }

    fn adapter_metadata(&self, id: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
        let a = self.store.get_adapter(self.org, id).ok()??;
        Some(a.metadata.0)
    }

    fn org_id(&self) -> Option<&str> {
        Some(self.org)
    }
}

impl Service {
    /// The configured query limits.
    pub fn query_limits(&self) -> &QueryLimits {
        &self.query_limits
    }

    /// The limits of one query of `org`: the configured ones, drawing on the server's
    /// memory pool through the org's share.
    fn limits_for(&self, org: &str) -> QueryLimits {
        QueryLimits {
            memory_pool: self.memory_pool.as_ref().map(|pool| cypher::PoolShare {
                pool: std::sync::Arc::clone(pool),
                org: std::sync::Arc::from(org),
            }),
            ..self.query_limits.clone()
        }
    }

    /// Runs a read-only query on `org`'s graph. An org without data answers every query
    /// as if its graph were empty.
    pub fn query(
        &self,
        org: &str,
        text: &str,
        params: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<QueryResult, ServiceError> {
        self.query_cancellable(org, text, params, &AtomicBool::new(false))
    }

    /// [`Service::query`] that stops with [`CypherError::Cancelled`] soon after `cancel`
    /// turns true. Over `query.max_concurrent_per_org` running queries of `org` it refuses
    /// with [`Limit::MaxConcurrent`], over `query.max_concurrent_total` of all orgs with
    /// [`Limit::MaxConcurrentTotal`].
    pub fn query_cancellable(
        &self,
        org: &str,
        text: &str,
        params: &serde_json::Map<String, serde_json::Value>,
        cancel: &AtomicBool,
    ) -> Result<QueryResult, ServiceError> {
        super::check_org(org)?;
        let started = std::time::Instant::now();
        let result = self.run_query(org, text, params, cancel);
        let took = started.elapsed();
        self.query_metrics.record(org, took, &result);
        tracing::debug!(
            org,
            elapsed_us = took.as_micros() as u64,
            ok = result.is_ok(),
            "graph query finished"
        );
        result.map_err(ServiceError::Query)
    }

    /// One query within the org's place in the gate.
    fn run_query(
        &self,
        org: &str,
        text: &str,
        params: &serde_json::Map<String, serde_json::Value>,
        cancel: &AtomicBool,
    ) -> Result<QueryResult, CypherError> {
        let _slot = self.query_gate.enter(org)?;
        let source = StoreText {
            store: self.store.as_ref(),
            org,
        };
        let limits = &self.limits_for(org);
        let plans = &self.query_gate.plans;
        let (result, outcome) = match self.graph.org(org) {
            Some(g) => {
                cypher::execute_cached(&g, &source, text, params, limits, cancel, plans, org)
            }
            None => {
                let empty = std::sync::Arc::new(crate::graph::OrgGraph::default());
                cypher::execute_cached(&empty, &source, text, params, limits, cancel, plans, org)
            }
        };
        self.query_metrics.plan_cache(org, outcome);
        if matches!(result, Err(CypherError::Cancelled)) {
            tracing::info!(org, "a graph query was cancelled: its client went away");
        }
        result
    }

    /// [`Service::query_cancellable`] that hands the rows to `sink` in batches as they are
    /// produced (see [`cypher::execute_streaming`]): rows handed over no longer count
    /// against the query's memory limit. Returns what the query cost.
    pub fn query_stream(
        &self,
        org: &str,
        text: &str,
        params: &serde_json::Map<String, serde_json::Value>,
        cancel: &AtomicBool,
        sink: &mut dyn RowSink,
    ) -> Result<QueryStats, ServiceError> {
        super::check_org(org)?;
        let started = std::time::Instant::now();
        let result = (|| {
            let _slot = self.query_gate.enter(org)?;
            let source = StoreText {
                store: self.store.as_ref(),
                org,
            };
            let limits = &self.limits_for(org);
            // An org without data answers as if its graph were empty.
            let graph = self.graph.org(org).unwrap_or_default();
            let plans = &self.query_gate.plans;
            let (result, outcome) = cypher::execute_streaming(
                &graph, &source, text, params, limits, cancel, sink, plans, org,
            );
            self.query_metrics.plan_cache(org, outcome);
            result
        })();
        let took = started.elapsed();
        self.query_metrics.record(org, took, &result);
        match &result {
            Err(CypherError::Cancelled) => {
                tracing::info!(
                    org,
                    "a streamed graph query was cancelled: its client went away"
                )
            }
            r => tracing::debug!(
                org,
                elapsed_us = took.as_micros() as u64,
                ok = r.is_ok(),
                streamed = true,
                "graph query finished"
            ),
        }
        result.map_err(ServiceError::Query)
    }

    /// The text of the named query `name`, once every parameter it needs is in `params`.
    pub fn named_query_text(
        &self,
        name: &str,
        params: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<&'static str, ServiceError> {
        let q = cypher::named_queries()
            .into_iter()
            .find(|q| q.name == name)
            .ok_or_else(|| ServiceError::NotFound {
                kind: "named query",
                id: name.to_owned(),
            })?;
        if let Some(missing) = q.params.iter().find(|p| !params.contains_key(**p)) {
            return Err(ServiceError::Query(CypherError::MissingParameter {
                name: (*missing).to_owned(),
                position: None,
            }));
        }
        Ok(q.query)
    }

    /// Runs one of the named queries of `queries/`.
    pub fn named_query(
        &self,
        org: &str,
        name: &str,
        params: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<QueryResult, ServiceError> {
        self.named_query_cancellable(org, name, params, &AtomicBool::new(false))
    }

    /// [`Service::named_query`] that stops soon after `cancel` turns true.
    pub fn named_query_cancellable(
        &self,
        org: &str,
        name: &str,
        params: &serde_json::Map<String, serde_json::Value>,
        cancel: &AtomicBool,
    ) -> Result<QueryResult, ServiceError> {
        let text = self.named_query_text(name, params)?;
        self.query_cancellable(org, text, params, cancel)
    }

    /// The named queries shipped in `queries/`.
    pub fn named_queries(&self) -> Vec<NamedQuery> {
        cypher::named_queries()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit_of(r: Result<GateSlot<'_>, CypherError>) -> Option<Limit> {
        match r {
            Ok(_) => None,
            Err(CypherError::LimitExceeded { limit, .. }) => Some(limit),
            Err(e) => panic!("unexpected error {e}"),
        }
    }

    #[test]
    fn busy_orgs_leave_the_reserved_slots_to_idle_ones() {
        // 8 slots in all, the last 2 kept for orgs running nothing; 4 per org.
        let gate = QueryGate::with_plan_cache(4, 8, 0);
        let mut held = Vec::new();
        for org in ["a", "b"] {
            for _ in 0..3 {
                held.push(gate.enter(org).unwrap());
            }
        }
        // Six run: a busy org may not take slot 7, though it is under its own limit.
        assert_eq!(limit_of(gate.enter("a")), Some(Limit::MaxConcurrentTotal));
        // An org running nothing may, once each.
        held.push(gate.enter("c").unwrap());
        assert_eq!(limit_of(gate.enter("c")), Some(Limit::MaxConcurrentTotal));
        held.push(gate.enter("d").unwrap());
        // All 8 taken: nobody else.
        assert_eq!(limit_of(gate.enter("e")), Some(Limit::MaxConcurrentTotal));
        // Slots come back on drop, the per-org count with them.
        held.truncate(5);
        assert_eq!(gate.running.lock().total, 5);
        assert_eq!(gate.running.lock().per_org.get("c"), None);
        held.push(gate.enter("a").unwrap());
        assert_eq!(gate.running.lock().per_org.get("a"), Some(&4));
        // The org's own limit is named when it is the one reached.
        held.truncate(0);
        let four: Vec<_> = (0..4).map(|_| gate.enter("a").unwrap()).collect();
        assert_eq!(limit_of(gate.enter("a")), Some(Limit::MaxConcurrent));
        drop(four);
        assert_eq!(gate.running.lock().total, 0);
        assert!(gate.running.lock().per_org.is_empty());
    }

    #[test]
    fn zero_means_no_limit_and_one_slot_has_no_reserve() {
        let gate = QueryGate::with_plan_cache(0, 0, 0);
        let held: Vec<_> = (0..100).map(|_| gate.enter("a").unwrap()).collect();
        assert_eq!(held.len(), 100);
        let one = QueryGate::with_plan_cache(0, 1, 0);
        let slot = one.enter("a").unwrap();
        assert_eq!(limit_of(one.enter("b")), Some(Limit::MaxConcurrentTotal));
        drop(slot);
        assert!(one.enter("a").is_ok());
    }
}
