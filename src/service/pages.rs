//! By-adapter pages made of rendered items, most of them kept from earlier pages.
//!
//! A page's rows come from the graph snapshot (each with its record version); each item is
//! then taken from the [`ItemCache`] at that version, and only the items it does not hold
//! are read from the store (in place), rendered by the caller's writer and kept for the
//! next page. A page whose items are all held needs no store read at all: the HTTP layer
//! first tries it right on its async thread ([`Service::by_adapter_cached_now`]: a bounded
//! walk of the graph, lookups that never wait for a lock), and hands it to the blocking
//! pool ([`Service::by_adapter_rendered`]) only when that cannot answer.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::item_cache::{CachedItem, ItemCache, Ticket};
use super::runs::Want;
use super::{
    ByAdapterQuery, ListQuery, Service, ServiceError, check_cursor, collect_page, cursor_after,
    effective_limit, training,
};
use crate::graph::{LinkedPage, OrgGraph};
use crate::store::StoreError;
use crate::store::codec::CodecError;
use crate::store::view::FeedbackView;

/// Default of `pages.cache_bytes`: 32 MiB, about 40,000 rendered items.
pub const DEFAULT_CACHE_BYTES: u64 = 32 << 20;

/// Default of `pages.inline_rows`.
pub const DEFAULT_INLINE_ROWS: usize = 2048;

/// Feedback pages (`[pages]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PagesConfig {
    /// Bytes of rendered feedback items kept for later pages (default 32 MiB; 0 keeps
    /// none). An entry is served only for the record version it was rendered from and is
    /// dropped on any change to its record.
    pub cache_bytes: u64,
    /// Most graph rows a by-adapter page may look at to be answered on the HTTP thread
    /// itself, from held items only, without a hand-off to the blocking pool (default
    /// 2048; 0 sends every page to the blocking pool).
    pub inline_rows: usize,
    /// Adapters holding at least this many items get a run once clients page through
    /// them: their items rendered and laid out newest first in a scratch file under
    /// `<data_dir>/runs`, so that a page of them not read before is one file read instead
    /// of a store lookup per item (default 5,000; 0 builds none). See `service::runs`.
    pub runs_min_items: usize,
    /// Items of such an adapter its pages read from the store before its run is built
    /// (default 1,000).
    pub runs_after_reads: u64,
    /// The most disk all runs together may take (default 1 GiB).
    pub runs_max_bytes: u64,
    /// A run is not built, or stops growing, when the data directory's file system would
    /// have less than this free (default 2 GiB): runs never take the room the store needs.
    pub runs_min_free_bytes: u64,
}

impl Default for PagesConfig {
    fn default() -> Self {
        PagesConfig {
            cache_bytes: DEFAULT_CACHE_BYTES,
            inline_rows: DEFAULT_INLINE_ROWS,
            runs_min_items: super::runs::DEFAULT_MIN_ITEMS,
            runs_after_reads: super::runs::DEFAULT_AFTER_READS,
            runs_max_bytes: super::runs::DEFAULT_MAX_BYTES,
            runs_min_free_bytes: super::runs::DEFAULT_MIN_FREE_BYTES,
        }
    }
}

/// Writes one item as the page's format has it (the HTTP layer's JSON writer). Every
/// rendered item the cache holds was written by it.
pub type RenderItem = fn(&mut Vec<u8>, &FeedbackView<'_>) -> Result<(), CodecError>;

/// A by-adapter page of rendered items, newest first.
#[derive(Debug, Clone, Default)]
pub struct RenderedPage {
    /// The items, each as the writer rendered it.
    pub items: Vec<Arc<[u8]>>,
    /// The page size asked for (or the default).
    pub limit: usize,
    /// Every item linked to the adapter (or its family), whatever the filters.
    pub total_linked: usize,
    /// Pass as `cursor` for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// One rendered item of a page.
type Item = Arc<[u8]>;

/// Room for one rendered item in the buffer items are written into (a typical item is
/// under 1 KiB; a longer one grows it).
const SCRATCH_BYTES: usize = 1024;

/// `v` written by `render` into `scratch` (cleared first) and copied out as an item. A
/// record the writer cannot render is corruption.
fn rendered(
    org: &str,
    v: &FeedbackView<'_>,
    render: RenderItem,
    scratch: &mut Vec<u8>,
) -> Result<Arc<[u8]>, StoreError> {
    scratch.clear();
    render(scratch, v).map_err(|source| corrupt(org, v.id, source))?;
    Ok(Arc::from(scratch.as_slice()))
}

/// An emitter that renders every item it is handed onto `items` (pages filtered by kind,
/// whose records decide which items are on the page).
fn keep_all<'a>(
    org: &'a str,
    render: RenderItem,
    items: &'a mut Vec<Arc<[u8]>>,
) -> impl FnMut(&FeedbackView<'_>) -> Result<(), StoreError> + 'a {
    let mut scratch = Vec::with_capacity(SCRATCH_BYTES);
    move |v| {
        items.push(rendered(org, v, render, &mut scratch)?);
        Ok(())
    }
}

/// A stored record the writer could not render: corruption.
fn corrupt(org: &str, id: &str, source: CodecError) -> StoreError {
    StoreError::Corrupt {
        tree: "feedback",
        key: format!("{org}/{id}"),
        source,
    }
}

impl Service {
    /// The rendered items kept between pages.
    pub fn item_cache(&self) -> &ItemCache {
        &self.items
    }

    /// The rows of a by-adapter page (`rows` of them at most, or every candidate) and the
    /// adapter's `total_linked`; `None` when that would look at more than `max_rows` rows.
    pub(super) fn by_adapter_rows(
        &self,
        g: &OrgGraph,
        adapter_id: &str,
        q: &ByAdapterQuery,
        rows: usize,
        max_rows: usize,
    ) -> Result<Option<(LinkedPage, usize)>, ServiceError> {
        let row = g
            .adapter_row(adapter_id)
            .ok_or_else(|| ServiceError::NotFound {
                kind: "adapter",
                id: adapter_id.to_owned(),
            })?;
        check_cursor(Some(g), q.cursor.as_deref())?;
        let keep = |f: &crate::graph::FeedbackNode<'_>| !q.unused || !f.used_for_training;
        if q.include_descendants && !g.child_rows(row).is_empty() {
            // A family: its rows are listed only when the counts kept on write cannot
            // answer (see `OrgGraph::subtree_page`).
            let family = || training::adapter_family(g, row, true);
            let cursor = q.cursor.as_deref();
            let Some(page) = g.subtree_page_within(row, family, cursor, rows, keep, max_rows)
            else {
                return Ok(None);
            };
            let total = match g.subtree_linked_count(row) {
                Some(n) => n,
                None if max_rows == usize::MAX => g.linked_count(&family()),
                None => return Ok(None),
            };
            Ok(Some((page, total)))
        } else {
            let cursor = q.cursor.as_deref();
            let page = g.linked_page_within(&[row], cursor, rows, keep, max_rows);
            Ok(page.map(|p| (p, g.linked_by_id(row).len())))
        }
    }

    /// The by-adapter page, if it can be answered at once: every item held by the cache
    /// at the version the graph shows, found within `pages.inline_rows` graph rows, and no
    /// lock in the way. `Ok(None)` means "ask [`Service::by_adapter_rendered`]"; errors
    /// (an unknown adapter, a bad cursor or limit) are the page's answer. Never waits for
    /// a lock or does I/O: for callers on an async runtime thread.
    pub fn by_adapter_cached_now(
        &self,
        org: &str,
        adapter_id: &str,
        q: &ByAdapterQuery,
    ) -> Result<Option<RenderedPage>, ServiceError> {
        let max_rows = self.pages.inline_rows;
        if q.kind.is_some() || max_rows == 0 || !self.items.enabled() {
            return Ok(None);
        }
        let limit = effective_limit(q.limit)?;
        let g = match self.graph.try_org(org) {
            Err(_) => return Ok(None),
            Ok(Some(g)) => g,
            Ok(None) => {
                return Err(ServiceError::NotFound {
                    kind: "adapter",
                    id: adapter_id.to_owned(),
                });
            }
        };
        let Some((page, total)) = self.by_adapter_rows(&g, adapter_id, q, limit, max_rows)? else {
            return Ok(None);
        };
        let cols = g.feedback();
        let mut items = Vec::with_capacity(page.rows.len());
        for &r in &page.rows {
            let (Some(id), Some(version)) = (cols.id(r), cols.version(r)) else {
                return Ok(None);
            };
            match self.items.try_get(org, id, version) {
                Ok(Some(hit)) => items.push(hit.bytes),
                _ => return Ok(None),
            }
        }
        self.items.count_hits(items.len());
        Ok(Some(RenderedPage {
            items,
            limit,
            total_linked: total,
            next_cursor: next_cursor(&g, &page),
        }))
    }

    /// The by-adapter page ([`Service::by_adapter`]) as rendered items: those the cache
    /// holds at the version the graph shows, the others read from the store in place,
    /// written by `render` and kept. Blocking (store reads).
    pub fn by_adapter_rendered(
        &self,
        org: &str,
        adapter_id: &str,
        q: &ByAdapterQuery,
        render: RenderItem,
    ) -> Result<RenderedPage, ServiceError> {
        if q.kind.is_some() {
            // The records decide the kind: read as the list of views does.
            let mut items: Vec<Arc<[u8]>> = Vec::new();
            let (page, total) =
                self.by_adapter_with(org, adapter_id, q, &mut keep_all(org, render, &mut items))?;
            return Ok(RenderedPage {
                items,
                limit: page.limit,
                total_linked: total,
                next_cursor: page.next_cursor,
            });
        }
        let limit = effective_limit(q.limit)?;
        let g = self.graph.org(org).ok_or_else(|| ServiceError::NotFound {
            kind: "adapter",
            id: adapter_id.to_owned(),
        })?;
        let (page, total) = self
            .by_adapter_rows(&g, adapter_id, q, limit, usize::MAX)?
            .unwrap_or_default();
        let walking = q.cursor.is_some();
        let (items, from_store) = self.rendered_items(org, &g, &page.rows, walking, render)?;
        // A client paging through one big adapter's items not held: its run is due.
        if let Some(row) = g.adapter_row(adapter_id)
            && (!q.include_descendants || g.child_rows(row).is_empty())
        {
            let linked = g.linked_by_id(row).len();
            self.runs.note_reads(org, row, linked, from_store as u64);
        }
        Ok(RenderedPage {
            items,
            limit,
            total_linked: total,
            next_cursor: next_cursor(&g, &page),
        })
    }

    /// The page [`Service::list`] answers, as rendered items (kept ones where held, see
    /// [`Service::by_adapter_rendered`]). `total_linked` is left at 0. Blocking.
    pub fn list_rendered(
        &self,
        org: &str,
        q: &ListQuery,
        render: RenderItem,
    ) -> Result<RenderedPage, ServiceError> {
        if q.kind.is_some() {
            // The records decide the kind: read as the list of views does.
            let mut items: Vec<Arc<[u8]>> = Vec::new();
            let page = self.list_with(org, q, &mut keep_all(org, render, &mut items))?;
            return Ok(RenderedPage {
                items,
                limit: page.limit,
                total_linked: 0,
                next_cursor: page.next_cursor,
            });
        }
        let limit = effective_limit(q.limit)?;
        let snapshot = self.graph.org(org);
        check_cursor(snapshot.as_deref(), q.cursor.as_deref())?;
        let Some(g) = snapshot else {
            return Ok(RenderedPage {
                limit,
                ..RenderedPage::default()
            });
        };
        let (ids, more) = collect_page(&g, q, limit);
        let rows: Vec<u32> = ids.iter().filter_map(|id| g.feedback_row(id)).collect();
        let (items, _) = self.rendered_items(org, &g, &rows, q.cursor.is_some(), render)?;
        Ok(RenderedPage {
            items,
            limit,
            total_linked: 0,
            next_cursor: cursor_after(more, ids.last().map(|id| &**id)),
        })
    }

    /// The items of `rows` rendered: from the cache at the graph's version where held,
    /// else from an adapter run at that version (see `runs`), else read from the store
    /// (one pass, in order) and rendered; each one not held is then kept, or, on a page
    /// that continues a cursor (`walking`), only if [`ItemCache::admit`] says so. Also says
    /// how many items were read from the store.
    fn rendered_items(
        &self,
        org: &str,
        g: &OrgGraph,
        rows: &[u32],
        walking: bool,
        render: RenderItem,
    ) -> Result<(Vec<Item>, usize), ServiceError> {
        let cols = g.feedback();
        let mut slots: Vec<Option<Item>> = Vec::with_capacity(rows.len());
        // The items not held: where they go, their row, id and version (if the graph has
        // one), the ticket taken before the read.
        let mut wanted: Vec<(usize, u32, &str, Option<u64>, Ticket)> = Vec::new();
        for &r in rows {
            let Some(id) = cols.id(r) else {
                continue;
            };
            let version = cols.version(r);
            match version.and_then(|version| self.items.get(org, id, version)) {
                Some(hit) => slots.push(Some(hit.bytes)),
                None => {
                    wanted.push((slots.len(), r, id, version, self.items.ticket(org, id)));
                    slots.push(None);
                }
            }
        }
        // Then from the adapter runs, at the graph's version; the rest from the store.
        let mut misses: Vec<(usize, &str, Ticket)> = Vec::with_capacity(wanted.len());
        if !wanted.is_empty() {
            let wants: Vec<Want<'_>> = wanted
                .iter()
                .filter_map(|&(_, row, id, version, _)| {
                    Some(Want {
                        row,
                        id,
                        version: version?,
                    })
                })
                .collect();
            let mut from_runs = self.runs.read(org, &wants).into_iter();
            for (at, _, id, version, ticket) in wanted {
                let got = match version {
                    Some(_) => from_runs.next().flatten(),
                    None => None,
                };
                match (got, version) {
                    (Some(item), Some(version)) => {
                        if let Some(slot) = slots.get_mut(at) {
                            *slot = Some(item.bytes.clone());
                        }
                        if !walking || self.items.admit(org, id) {
                            self.items.insert(ticket, org, id, version, item);
                        }
                    }
                    _ => misses.push((at, id, ticket)),
                }
            }
        }
        let from_store = misses.len();
        if !misses.is_empty() {
            let ids: Vec<&str> = misses.iter().map(|m| m.1).collect();
            let mut read: Vec<(u64, CachedItem)> = Vec::with_capacity(ids.len());
            let mut missing: Option<usize> = None;
            let mut scratch = Vec::with_capacity(SCRATCH_BYTES);
            self.store.for_each_feedback_view(org, &ids, &mut |v| {
                let Some(v) = v else {
                    missing.get_or_insert(read.len());
                    return Ok(());
                };
                if missing.is_some() {
                    return Ok(());
                }
                read.push((
                    v.version,
                    CachedItem {
                        kind: v.kind,
                        bytes: rendered(org, v, render, &mut scratch)?,
                    },
                ));
                Ok(())
            })?;
            if let Some(i) = missing {
                // The graph only holds ids whose records are durable; a miss means the
                // store lost a record the index has, which is corruption, not a 404.
                let id = ids.get(i).copied().unwrap_or_default();
                return Err(ServiceError::Store(corrupt(org, id, CodecError::Empty)));
            }
            // Kept only now that the read is durable (the store settles reads before it
            // returns them).
            for ((at, id, ticket), (version, item)) in misses.into_iter().zip(read) {
                if let Some(slot) = slots.get_mut(at) {
                    *slot = Some(item.bytes.clone());
                }
                if !walking || self.items.admit(org, id) {
                    self.items.insert(ticket, org, id, version, item);
                }
            }
        }
        Ok((slots.into_iter().flatten().collect(), from_store))
    }
}

/// The cursor of the page after `page`: its last id, when more rows follow.
fn next_cursor(g: &OrgGraph, page: &LinkedPage) -> Option<String> {
    if !page.more {
        return None;
    }
    page.rows
        .last()
        .and_then(|&r| g.feedback().id(r))
        .map(str::to_owned)
}
