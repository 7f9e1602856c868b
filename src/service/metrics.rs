//! The service's instruments for `/metrics` (graph queries), and the optional `org` label
//! that every per-tenant series shares.
//!
//! Label sets are small structs of `&'static str` (plus the org when
//! `metrics.per_org_labels` is on), so recording allocates nothing in the default setup.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, LabelSetEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::cypher::{CypherError, Limit};

/// The `org` label of per-tenant series: present only when per-org labels are on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct OrgLabel(pub Option<Arc<str>>);

impl OrgLabel {
    /// The label for `org`, or none when `per_org` is off (then nothing is allocated).
    pub fn new(per_org: bool, org: &str) -> Self {
        OrgLabel(per_org.then(|| Arc::from(org)))
    }
}

impl EncodeLabelSet for OrgLabel {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        match &self.0 {
            Some(org) => [("org", org.as_ref())].encode(encoder),
            None => Ok(()),
        }
    }
}

/// One label with a fixed set of values.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Tag(pub &'static str, pub &'static str);

impl EncodeLabelSet for Tag {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        [(self.0, self.1)].encode(encoder)
    }
}

/// Builds the histograms of a family: query times from 0.1 ms to about 6.5 s.
fn query_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_1, 2.0, 17))
}

/// Graph query instruments: time per query by outcome, and limits hit by limit.
#[derive(Debug, Clone)]
pub struct QueryMetrics {
    per_org: bool,
    seconds: Family<(Tag, OrgLabel), Histogram, fn() -> Histogram>,
    limits: Family<(Tag, OrgLabel), Counter>,
    plan_cache: Family<(Tag, OrgLabel), Counter>,
}

impl QueryMetrics {
    /// Instruments with or without the `org` label.
    pub fn new(per_org: bool) -> Self {
        QueryMetrics {
            per_org,
            seconds: Family::new_with_constructor(query_histogram),
            limits: Family::default(),
            plan_cache: Family::default(),
        }
    }

    /// Adds the instruments to `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register_with_unit(
            "feedgraph_query_duration",
            "Graph query time by outcome (ok, limit, invalid, cancelled)",
            Unit::Seconds,
            self.seconds.clone(),
        );
        registry.register(
            "feedgraph_query_limit_hits",
            "Graph queries stopped or refused by a limit (timeout, max_rows, max_work, \
             max_depth, max_memory, max_concurrent_per_org, max_concurrent_total, \
             max_memory_total)",
            self.limits.clone(),
        );
        registry.register(
            "feedgraph_query_plan_cache",
            "Graph query plans by how they were found: hit (cached), miss (planned and \
             cached), stale (cached, but the graph changed what it depends on; planned \
             again), bypass (not cached: cache off, text too long, or planning failed)",
            self.plan_cache.clone(),
        );
    }

    /// Records how one query of `org` found its plan.
    pub fn plan_cache(&self, org: &str, outcome: crate::cypher::CacheOutcome) {
        let org = OrgLabel::new(self.per_org, org);
        self.plan_cache
            .get_or_create(&(Tag("result", outcome.name()), org))
            .inc();
    }

    /// Records one query of `org` that took `took` and ended in `result`.
    pub fn record<T>(&self, org: &str, took: Duration, result: &Result<T, CypherError>) {
        let org = OrgLabel::new(self.per_org, org);
        let outcome = match result {
            Ok(_) => "ok",
            Err(CypherError::LimitExceeded { limit, .. }) => {
                self.limits
                    .get_or_create(&(Tag("limit", limit.name()), org.clone()))
                    .inc();
                if matches!(limit, Limit::MaxConcurrent | Limit::MaxConcurrentTotal) {
                    // Refused before it ran: no time to report.
                    return;
                }
                "limit"
            }
            Err(CypherError::Cancelled) => "cancelled",
            Err(_) => "invalid",
        };
        self.seconds
            .get_or_create(&(Tag("outcome", outcome), org))
            .observe(took.as_secs_f64());
    }
}
