//! Listing and counting feedback from the graph: `list` with its filters and cursor,
//! `find_by_session`, `stats` (from the counters kept on write when it can), and the
//! page helpers the other read models share.

use super::*;

pub(super) fn effective_limit(limit: Option<usize>) -> Result<usize, ServiceError> {
    match limit {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(n) => Err(ServiceError::BadRequest(format!(
            "limit must be between 1 and {MAX_LIMIT}, got {n}"
        ))),
    }
}

/// A compiled list filter: strings resolved to symbols once, so matching is integer compares.
pub(super) struct Filter {
    feedback_type: Option<FeedbackType>,
    status: Option<ValidationStatus>,
    unused: bool,
    model: Option<Sym>,
    session: Option<Sym>,
    since: Option<Millis>,
}

impl Filter {
    fn matches(&self, f: &FeedbackNode<'_>) -> bool {
        self.feedback_type.is_none_or(|t| f.feedback_type == t)
            && self.status.is_none_or(|s| f.status == s)
            && (!self.unused || !f.used_for_training)
            && self.model.is_none_or(|m| f.model_version == Some(m))
            && self.session.is_none_or(|s| f.session_id == Some(s))
            && self.since.is_none_or(|t| f.created_at >= t)
    }
}

/// Resolves an optional filter string; `Err(())` means no item can match.
pub(super) fn resolve(g: &OrgGraph, s: &Option<String>) -> Result<Option<Sym>, ()> {
    match s {
        None => Ok(None),
        Some(s) => g.strings().get(s).map(Some).ok_or(()),
    }
}

impl Service {
    /// The page [`Service::list`] answers, each item handed to `emit` as it is read in
    /// place instead of collected (for callers that render the page straight away).
    pub fn list_with(
        &self,
        org: &str,
        q: &ListQuery,
        emit: &mut EmitView<'_>,
    ) -> Result<ViewPage, ServiceError> {
        let limit = effective_limit(q.limit)?;
        let snapshot = self.graph.org(org);
        check_cursor(snapshot.as_deref(), q.cursor.as_deref())?;
        let rows = if q.kind.is_some() { ALL_ROWS } else { limit };
        let (ids, more) = match snapshot {
            None => (Vec::new(), false),
            Some(g) => collect_page(&g, q, rows),
        };
        let (count, last, more) = self.emit_views(org, &ids, q.kind, limit, more, emit)?;
        Ok(ViewPage {
            count,
            limit,
            next_cursor: cursor_after(more, last.as_deref()),
        })
    }

    /// Lists the org's feedback newest first, filtered, one page at a time.
    pub fn list(&self, org: &str, q: &ListQuery) -> Result<Page, ServiceError> {
        let limit = effective_limit(q.limit)?;
        let snapshot = self.graph.org(org);
        check_cursor(snapshot.as_deref(), q.cursor.as_deref())?;
        if let Some(kind) = q.kind {
            // Every candidate the graph's filters leave, newest first, then the stored
            // records decide the kind.
            let ids = match snapshot {
                None => Vec::new(),
                Some(g) => collect_page(&g, q, ALL_ROWS).0,
            };
            let (items, more) = self.first_of_kind(org, ids, kind, limit)?;
            let next_cursor = if more {
                items.last().map(|f| f.id.clone())
            } else {
                None
            };
            return Ok(Page {
                items,
                limit,
                next_cursor,
            });
        }
        let (ids, more) = match snapshot {
            None => (Vec::new(), false),
            Some(g) => collect_page(&g, q, limit),
        };
        let next_cursor = if more {
            ids.last().map(|s| s.to_string())
        } else {
            None
        };
        Ok(Page {
            items: self.load(org, ids)?,
            limit,
            next_cursor,
        })
    }

    /// The first `limit` items of `ids` (newest first) whose kind is `kind`, read from the
    /// store a chunk at a time, and whether more follow.
    pub(super) fn first_of_kind(
        &self,
        org: &str,
        ids: Vec<Arc<str>>,
        kind: crate::model::FeedbackKind,
        limit: usize,
    ) -> Result<(Vec<Feedback>, bool), ServiceError> {
        const CHUNK: usize = 256;
        let mut out = Vec::new();
        for chunk in ids.chunks(CHUNK) {
            for f in self.load(org, chunk.to_vec())? {
                if f.kind != kind {
                    continue;
                }
                if out.len() == limit {
                    return Ok((out, true));
                }
                out.push(f);
            }
        }
        Ok((out, false))
    }

    /// Every item of a session, newest first.
    pub fn find_by_session(&self, org: &str, session: &str) -> Result<Vec<Feedback>, ServiceError> {
        let ids = match self.graph.org(org) {
            None => Vec::new(),
            Some(g) => {
                let mut ids: Vec<Arc<str>> = g
                    .session_rows(session)
                    .filter_map(|r| g.feedback().id(r).map(Arc::from))
                    .collect();
                ids.sort_unstable_by(|a, b| b.cmp(a));
                ids
            }
        };
        self.load(org, ids)
    }

    /// The seed's counters over the org's feedback, optionally narrowed.
    ///
    /// An `adapter` that the org does not have is a 404, as everywhere an adapter is named
    /// (by-adapter, lineage, descendants, claims); a `model` filter that matches nothing
    /// gives zeros.
    pub fn stats(&self, org: &str, q: &StatsQuery) -> Result<Stats, ServiceError> {
        let snapshot = self.graph.org(org);
        if let Some(a) = &q.adapter
            && snapshot.as_ref().is_none_or(|g| g.adapter_row(a).is_none())
        {
            return Err(ServiceError::NotFound {
                kind: "adapter",
                id: a.clone(),
            });
        }
        let Some(g) = snapshot else {
            return Ok(Stats::default());
        };
        let since = q
            .window_hours
            .map(|h| now_millis().saturating_sub(h.saturating_mul(3_600_000)));
        let Ok(model) = resolve(&g, &q.model) else {
            return Ok(Stats::default());
        };
        let filter = Filter {
            feedback_type: None,
            status: None,
            unused: false,
            model,
            session: None,
            since,
        };
        // Unfiltered, by adapter or by model: the counters kept on write. A time window,
        // or an adapter and a model together, scan the items in scope.
        let adapter_row = q.adapter.as_deref().and_then(|a| g.adapter_row(a));
        let kept = match (adapter_row, model, since) {
            (None, None, None) => Some(g.counters().org),
            (Some(row), None, None) => g.counters().adapters.get(row as usize).copied(),
            (None, Some(m), None) => Some(g.counters().models.get(&m).copied().unwrap_or_default()),
            _ => None,
        };
        if let Some(c) = kept {
            return Ok(Stats::from_counts(&c));
        }
        let mut acc = Counts::default();
        match adapter_row {
            Some(row) => {
                for r in g.adapter_feedback(row) {
                    if let Some(f) = g.feedback().get(r)
                        && filter.matches(&f)
                    {
                        acc.add(&f);
                    }
                }
            }
            None => {
                for f in g.feedback().iter() {
                    if filter.matches(&f) {
                        acc.add(&f);
                    }
                }
            }
        }
        Ok(Stats::from_counts(&acc))
    }
}

/// Keeps the `keep` newest rows (by id), sorted newest first: a partial selection, so a
/// page of a hot adapter with 100k links does not sort all of them.
pub(super) fn newest_first(rows: &mut Vec<FeedbackNode<'_>>, keep: usize) {
    let newer = |a: &FeedbackNode<'_>, b: &FeedbackNode<'_>| b.id.cmp(a.id);
    if rows.len() > keep {
        rows.select_nth_unstable_by(keep - 1, newer);
        rows.truncate(keep);
    }
    rows.sort_unstable_by(newer);
}

/// A page size that takes every matching row (for filters the graph cannot apply).
pub(super) const ALL_ROWS: usize = usize::MAX / 4;

pub(super) fn collect_page(g: &OrgGraph, q: &ListQuery, limit: usize) -> (Vec<Arc<str>>, bool) {
    let (Ok(model), Ok(session)) = (resolve(g, &q.model), resolve(g, &q.session)) else {
        return (Vec::new(), false);
    };
    let filter = Filter {
        feedback_type: q.feedback_type,
        status: q.status,
        unused: q.unused,
        model,
        session,
        since: None,
    };
    let cursor = q.cursor.as_deref();
    let mut ids = Vec::with_capacity(limit.min(64));
    let mut more = false;
    let mut push = |f: &FeedbackNode<'_>| {
        if ids.len() == limit {
            more = true;
            return false;
        }
        ids.push(Arc::from(f.id));
        true
    };
    match &q.adapter {
        Some(a) => {
            let Some(row) = g.adapter_row(a) else {
                return (Vec::new(), false);
            };
            let mut rows: Vec<FeedbackNode<'_>> = g
                .adapter_feedback(row)
                .filter_map(|r| g.feedback().get(r))
                .filter(|f| filter.matches(f) && cursor.is_none_or(|c| f.id < c))
                .collect();
            newest_first(&mut rows, limit + 1);
            for f in rows {
                if !push(&f) {
                    break;
                }
            }
        }
        None => {
            for r in g.feedback_newest_first(cursor) {
                if let Some(f) = g.feedback().get(r)
                    && filter.matches(&f)
                    && !push(&f)
                {
                    break;
                }
            }
        }
    }
    (ids, more)
}

/// A page cursor is the id of the last item of the previous page (its `next_cursor`): one
/// that names no item of the org did not come from a listing, and is refused rather than
/// answered with an empty page a client would take for the end of the list.
pub(super) fn check_cursor(g: Option<&OrgGraph>, cursor: Option<&str>) -> Result<(), ServiceError> {
    match cursor {
        Some(c) if g.is_none_or(|g| g.feedback_row(c).is_none()) => {
            Err(ServiceError::BadRequest(format!(
                "invalid 'cursor' {:?}: it names no item of this org; pass back the \
                 'next_cursor' of the previous page",
                c.chars().take(80).collect::<String>()
            )))
        }
        _ => Ok(()),
    }
}

impl Stats {
    /// The stats of a set of items from what they add up to.
    pub(super) fn from_counts(c: &Counts) -> Stats {
        Stats {
            total_feedback: c.total,
            positive_count: c.positive,
            negative_count: c.negative,
            pending_validation: c.pending,
            approved_count: c.approved,
            rejected_count: c.rejected,
            flagged_count: c.flagged,
            unused_for_training: c.total.saturating_sub(c.used),
            used_for_training: c.used,
            positive_ratio: if c.total > 0 {
                c.positive as f64 / c.total as f64
            } else {
                0.0
            },
            average_score: c.average_score(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::OrgGraph;
    use crate::model::Feedback;
    use proptest::prelude::*;

    fn graph_with(ids: &[u32]) -> OrgGraph {
        let mut g = OrgGraph::default();
        for id in ids {
            let f = Feedback::sample(&format!("f{id:06}"), "o");
            g.upsert_feedback(&f);
        }
        g
    }

    proptest! {
        #[test]
        fn partial_selection_equals_a_full_sort(
            ids in proptest::collection::hash_set(0u32..5000, 0..300),
            keep in 1usize..50,
        ) {
            let ids: Vec<u32> = ids.into_iter().collect();
            let g = graph_with(&ids);
            let mut rows: Vec<FeedbackNode<'_>> = g.feedback().iter().collect();
            newest_first(&mut rows, keep);
            let got: Vec<&str> = rows.iter().map(|f| f.id).collect();
            let mut all: Vec<&str> = g.feedback().iter().map(|f| f.id).collect();
            all.sort_unstable_by(|a, b| b.cmp(a));
            all.truncate(keep);
            prop_assert_eq!(got, all);
        }
    }
}
