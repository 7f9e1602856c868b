//! Read models for the review console: the review queue, the adapter lineage forest, the
//! dashboard's day series and pages of training batches.
//!
//! Each answers from the org's graph snapshot (counters, orders, filters) and loads from
//! the store only the records of the page it returns, so a page costs at most one pass
//! over the graph's columns, never a read of every record, however large the org.

use std::sync::Arc;

use serde::Serialize;

use super::training::BatchView;
use super::{Service, ServiceError, Stats, check_cursor, effective_limit};
use crate::graph::DaySeries;
use crate::model::{Feedback, Millis, ValidationStatus, now_millis};

pub use crate::graph::DAY_MS;
/// Most days a dashboard covers.
pub const MAX_DAYS: u32 = 366;
/// Most roots one lineage page draws.
pub const MAX_ROOTS_PER_PAGE: usize = 50;

/// One page of the review queue: flagged and pending items, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueuePage {
    /// The items of this page, oldest first.
    pub items: Vec<Feedback>,
    /// How many items wait for review in the whole org (this page included).
    pub remaining: usize,
    /// Pass as `after` for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// Whether an item waits for a reviewer.
pub fn awaits_review(status: ValidationStatus) -> bool {
    matches!(
        status,
        ValidationStatus::Flagged | ValidationStatus::Pending
    )
}

/// One adapter in the lineage forest, in depth-first order (parents before children).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ForestNode {
    /// Adapter id.
    pub id: String,
    /// Its version label.
    pub version: Option<String>,
    /// Its base model.
    pub base_model: Option<String>,
    /// Steps from its root (0 = a root).
    pub depth: usize,
    /// Index of its parent in [`Forest::nodes`] (`None` for a root).
    pub parent: Option<usize>,
    /// Feedback items linked to it (FEEDBACK_FOR in-degree).
    pub feedback: u64,
    /// Of those, thumbs up.
    pub positive: u64,
    /// Children left out because the page reached its node limit.
    pub hidden_children: usize,
}

impl ForestNode {
    /// positive / feedback, or `None` without feedback.
    pub fn positive_ratio(&self) -> Option<f64> {
        (self.feedback > 0).then(|| self.positive as f64 / self.feedback as f64)
    }
}

/// One page of the org's adapter lineage: whole trees under a page of roots.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Forest {
    /// The adapters drawn, each tree depth first, children by id.
    pub nodes: Vec<ForestNode>,
    /// Adapters without a parent in the org (lineage roots).
    pub roots_total: usize,
    /// Adapters in the org.
    pub adapters_total: usize,
    /// The first root of this page (0-based, roots sorted by id).
    pub first_root: usize,
    /// Whether further roots follow.
    pub more: bool,
}

/// One named line of a dashboard chart.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Series {
    /// Adapter id or model version.
    pub name: String,
    /// Items per day.
    pub count: Vec<u64>,
    /// Thumbs up per day.
    pub positive: Vec<u64>,
}

impl Series {
    fn new(name: String, days: usize) -> Series {
        Series {
            name,
            count: vec![0; days],
            positive: vec![0; days],
        }
    }

    /// Items over all days.
    pub fn total(&self) -> u64 {
        self.count.iter().sum()
    }
}

/// The dashboard's numbers: per-day series over a window ending at the newest item.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Dashboard {
    /// Start of each day (ms since epoch, UTC midnight), oldest first.
    pub days: Vec<Millis>,
    /// Every item of the org per day.
    pub all: Series,
    /// The adapters with the most feedback in the window.
    pub adapters: Vec<Series>,
    /// The model versions with the most feedback in the window.
    pub models: Vec<Series>,
    /// The org's counters over all time.
    pub totals: Stats,
}

impl Service {
    /// The review queue of `org`: flagged and pending items oldest first, `limit` at a time
    /// after the item `after`, with the number of items waiting in the whole org.
    pub fn review_queue(
        &self,
        org: &str,
        after: Option<&str>,
        limit: Option<usize>,
    ) -> Result<QueuePage, ServiceError> {
        let limit = effective_limit(limit)?;
        let snapshot = self.graph.org(org);
        check_cursor(snapshot.as_deref(), after)?;
        let Some(g) = snapshot else {
            return Ok(QueuePage {
                items: Vec::new(),
                remaining: 0,
                next_cursor: None,
            });
        };
        let remaining = g
            .feedback()
            .iter()
            .filter(|f| awaits_review(f.status))
            .count();
        let mut ids: Vec<Arc<str>> = Vec::with_capacity(limit.min(64));
        let mut more = false;
        for r in g.feedback_oldest_first(after) {
            let Some(f) = g.feedback().get(r) else {
                continue;
            };
            if !awaits_review(f.status) {
                continue;
            }
            if ids.len() == limit {
                more = true;
                break;
            }
            ids.push(Arc::from(f.id));
        }
        let next_cursor = if more {
            ids.last().map(|s| s.to_string())
        } else {
            None
        };
        drop(g);
        Ok(QueuePage {
            items: self.load(org, ids)?,
            remaining,
            next_cursor,
        })
    }

    /// One page of the org's adapter lineage: the trees under roots `first_root..` (roots
    /// sorted by id) until `roots` roots or `max_nodes` adapters are drawn, whichever comes
    /// first (a tree cut short says how many children it left out).
    pub fn lineage_forest(
        &self,
        org: &str,
        first_root: usize,
        roots: usize,
        max_nodes: usize,
    ) -> Result<Forest, ServiceError> {
        if !(1..=MAX_ROOTS_PER_PAGE).contains(&roots) {
            return Err(ServiceError::BadRequest(format!(
                "roots per page must be between 1 and {MAX_ROOTS_PER_PAGE}, got {roots}"
            )));
        }
        let Some(g) = self.graph.org(org) else {
            return Ok(Forest {
                nodes: Vec::new(),
                roots_total: 0,
                adapters_total: 0,
                first_root,
                more: false,
            });
        };
        let name = |row: u32| g.strings().resolve(g.adapters()[row as usize].id);
        let mut root_rows: Vec<u32> = (0..g.adapters().len() as u32)
            .filter(|&r| g.adapters()[r as usize].parent.is_none())
            .collect();
        root_rows.sort_unstable_by(|&a, &b| name(a).cmp(name(b)));
        let mut nodes: Vec<ForestNode> = Vec::new();
        let mut next_root = first_root;
        for &root in root_rows.iter().skip(first_root).take(roots) {
            if !nodes.is_empty() && nodes.len() >= max_nodes {
                break;
            }
            next_root += 1;
            // Depth first with an explicit stack: (row, depth, parent index).
            let mut stack: Vec<(u32, usize, Option<usize>)> = vec![(root, 0, None)];
            while let Some((row, depth, parent)) = stack.pop() {
                if nodes.len() >= max_nodes.max(1) {
                    if let Some(p) = parent.and_then(|p| nodes.get_mut(p)) {
                        p.hidden_children += 1;
                    }
                    continue;
                }
                let a = &g.adapters()[row as usize];
                // Kept on write (graph::Counters): the same items feedback_in(row) lists.
                let linked = g
                    .counters()
                    .adapters
                    .get(row as usize)
                    .copied()
                    .unwrap_or_default();
                let index = nodes.len();
                nodes.push(ForestNode {
                    id: name(row).to_owned(),
                    version: g.text(a.version).map(str::to_owned),
                    base_model: g.text(a.base_model).map(str::to_owned),
                    depth,
                    parent,
                    feedback: linked.total,
                    positive: linked.positive,
                    hidden_children: 0,
                });
                let mut children: Vec<u32> = g.child_rows(row).to_vec();
                // Popped in reverse, so the stack yields children by id.
                children.sort_unstable_by(|&a, &b| name(b).cmp(name(a)));
                stack.extend(children.into_iter().map(|c| (c, depth + 1, Some(index))));
            }
        }
        Ok(Forest {
            nodes,
            roots_total: root_rows.len(),
            adapters_total: g.adapters().len(),
            first_root,
            more: next_root < root_rows.len(),
        })
    }

    /// The dashboard of `org` over `days` days (1..=366) ending with the day of its newest
    /// item (today when it has none), with the `top` busiest adapters and models.
    pub fn dashboard(&self, org: &str, days: u32, top: usize) -> Result<Dashboard, ServiceError> {
        if !(1..=MAX_DAYS).contains(&days) {
            return Err(ServiceError::BadRequest(format!(
                "days must be between 1 and {MAX_DAYS}, got {days}"
            )));
        }
        let n = days as usize;
        let g = self.graph.org(org);
        let newest = g
            .as_deref()
            .and_then(|g| g.counters().days.org.last_day())
            .map_or_else(now_millis, |d| d * DAY_MS);
        let last_day = newest - newest % DAY_MS;
        let first_day = last_day.saturating_sub(DAY_MS * (u64::from(days) - 1));
        let day_starts: Vec<Millis> = (0..n as u64).map(|i| first_day + i * DAY_MS).collect();
        let Some(g) = g else {
            return Ok(Dashboard {
                days: day_starts,
                all: Series::new("all".into(), n),
                adapters: Vec::new(),
                models: Vec::new(),
                totals: Stats::default(),
            });
        };
        // Every series reads the per-day counters kept on write (graph::Counters::days):
        // O(days) per series, whatever the number of items.
        let (first, last) = (first_day / DAY_MS, first_day / DAY_MS + n as u64 - 1);
        let series = |name: String, d: &DaySeries| {
            let mut s = Series::new(name, n);
            for day in d.range(first, last) {
                let i = (day.day - first) as usize;
                if let (Some(c), Some(p)) = (s.count.get_mut(i), s.positive.get_mut(i)) {
                    *c = day.count;
                    *p = day.positive;
                }
            }
            s
        };
        let window = |d: &DaySeries| d.range(first, last).iter().map(|d| d.count).sum::<u64>();
        let days_of = &g.counters().days;
        let all = series("all".into(), &days_of.org);
        let mut models: Vec<Series> = days_of
            .models
            .iter()
            .filter(|(_, d)| window(d) > 0)
            .map(|(m, d)| series(g.strings().resolve(*m).to_owned(), d))
            .collect();
        models.sort_by(|a, b| b.total().cmp(&a.total()).then(a.name.cmp(&b.name)));
        models.truncate(top);
        // Adapters: each adapter's items in the window first, then the series of the busiest.
        let mut busiest: Vec<(u64, &str, &DaySeries)> = days_of
            .adapters
            .iter()
            .enumerate()
            .filter_map(|(row, d)| {
                let in_window = window(d);
                let a = g.adapters().get(row)?;
                (in_window > 0).then(|| (in_window, g.strings().resolve(a.id), d))
            })
            .collect();
        // The top few of thousands: select them, then sort only those.
        let order = |a: &(u64, &str, &DaySeries), b: &(u64, &str, &DaySeries)| {
            b.0.cmp(&a.0).then(a.1.cmp(b.1))
        };
        if top > 0 && busiest.len() > top {
            busiest.select_nth_unstable_by(top - 1, order);
        }
        busiest.truncate(top);
        busiest.sort_by(order);
        let adapters = busiest
            .into_iter()
            .map(|(_, name, d)| series(name.to_owned(), d))
            .collect();
        Ok(Dashboard {
            days: day_starts,
            all,
            adapters,
            models,
            // The org's counts are kept on write (graph::Counters).
            totals: Stats::from_counts(&g.counters().org),
        })
    }

    /// Up to `limit` of the org's batches, newest first, with ids below `before` if given;
    /// the second value says whether older batches follow.
    pub fn batches_page(
        &self,
        org: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<(Vec<BatchView>, bool), ServiceError> {
        let limit = effective_limit(Some(limit))?;
        let mut batches = self.store.batches_page(org, before, limit + 1)?;
        let more = batches.len() > limit;
        batches.truncate(limit);
        let now = now_millis();
        Ok((
            batches
                .into_iter()
                .map(|b| BatchView::new(b, now))
                .collect(),
            more,
        ))
    }
}
