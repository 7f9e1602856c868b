//! The in-memory graph index: Feedback and Adapter nodes with FEEDBACK_FOR and DERIVED_FROM
//! edges in a petgraph `Graph`, one per org, with node properties in side columns.
//!
//! It is derived state: built from the store at start-up and kept in step by applying each
//! write's [`ChangeSet`] after the write is durable. Queries and filters run here and never
//! touch sled; long text fields (question, answer, correction, comment) stay in sled.
//!
//! Layout choices for speed: strings of low cardinality (model versions, adapter, user and
//! session ids) are interned to 4-byte symbols; node weights are just a row number into the
//! typed column vectors; neighbours are walked through petgraph's adjacency lists without
//! allocating. Each org's graph is published as immutable snapshots ([`GraphIndex`], in
//! `index.rs`): readers never lock, and tenants never contend.
//!
//! Edge shapes are fixed by construction, and the query engine relies on them: FEEDBACK_FOR
//! always runs from a Feedback node to an Adapter node and is unique per pair; DERIVED_FROM
//! runs from an adapter to its one parent; no edge ends at a Feedback node. Besides
//! petgraph's adjacency lists, each adapter keeps dense lists of its FEEDBACK_FOR sources
//! and its children ([`OrgGraph::feedback_in`], [`OrgGraph::child_rows`]), so typed walks
//! and in-degrees do not step through a popular adapter's whole mixed edge list.

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroU32;

pub use petgraph::Direction;
use petgraph::graph::{EdgeIndex, Graph, NodeIndex};
use petgraph::visit::EdgeRef;
use rustc_hash::FxHashMap;

use crate::model::{Adapter, Feedback, FeedbackLink, LinkSource, Millis};
use crate::store::{ChangeSet, FeedbackHeadRef, Lease};

mod build;
pub mod checkpoint;
mod columns;
mod counts;
#[cfg(test)]
mod equivalence;
mod ids;
mod index;
mod interner;
mod memory;
mod pages;
mod sessions;
mod sparse;

pub use columns::{Bits, FeedbackColumns, FeedbackNode, FeedbackProps, SymCol};

pub use counts::{Counters, Counts, DAY_MS, Day, DayCounters, DaySeries, SCORE_SCALE};
pub use index::{Applied, ChangeWatcher, GraphIndex, WouldBlock};
pub use interner::Interner;
pub use memory::resident_kib;
pub use pages::LinkedPage;

/// An interned string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sym(NonZeroU32);

/// The indexed properties of a record's leading fields, its strings interned in `strings`.
/// `hint` gives a symbol likely to be the one of a column (the previous row's), which is
/// compared before the hash lookup; it changes only the speed, never the result.
fn head_props(
    strings: &mut Interner,
    f: &FeedbackHeadRef<'_>,
    lease: Option<Lease>,
    hint: impl Fn(SymCol) -> Option<Sym>,
) -> FeedbackProps {
    let mut sym = |s: Option<&str>, col: SymCol| {
        let s = s?;
        Some(match hint(col) {
            Some(h) if strings.resolve(h) == s => h,
            _ => strings.intern(s),
        })
    };
    FeedbackProps {
        feedback_type: f.feedback_type,
        status: f.validation_status,
        used_for_training: f.used_for_training,
        training_batch_id: f.training_batch_id,
        created_at: f.created_at,
        updated_at: f.updated_at,
        version: f.version,
        model_version: sym(f.model_version, SymCol::ModelVersion),
        adapter_id: sym(f.adapter_id, SymCol::AdapterId),
        adapter_version: sym(f.adapter_version, SymCol::AdapterVersion),
        user_id: sym(f.user_id, SymCol::UserId),
        session_id: sym(f.session_id, SymCol::SessionId),
        interaction_id: sym(f.interaction_id, SymCol::InteractionId),
        score: f.score,
        has_correction: f.correction.is_some(),
        has_comment: f.comment.is_some(),
        lease,
    }
}

/// What a graph node is: a row in the feedback or adapter columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeRef {
    /// Row in [`OrgGraph::feedback`].
    Feedback(u32),
    /// Row in [`OrgGraph::adapters`].
    Adapter(u32),
}

/// A relationship handle within one snapshot of an org graph (not its stable id: see
/// [`EdgeData::id`]).
pub type EdgeId = u32;

/// One relationship seen from a node: its handle, type and the node at its other end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EdgeAt {
    /// The relationship.
    pub id: EdgeId,
    /// Its type.
    pub kind: EdgeKind,
    /// The node at the other end.
    pub other: NodeRef,
}

/// The relationships at one node in one direction ([`OrgGraph::edges`]).
pub struct Edges<'a> {
    graph: &'a Graph<NodeRef, EdgeData, petgraph::Directed, u32>,
    inner: Option<petgraph::graph::Edges<'a, EdgeData, petgraph::Directed, u32>>,
    out: bool,
}

impl Iterator for Edges<'_> {
    type Item = EdgeAt;

    #[inline]
    fn next(&mut self) -> Option<EdgeAt> {
        let e = self.inner.as_mut()?.next()?;
        let other = if self.out { e.target() } else { e.source() };
        Some(EdgeAt {
            id: e.id().index() as EdgeId,
            kind: e.weight().kind,
            other: *self.graph.node_weight(other)?,
        })
    }
}

/// Relationship types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EdgeKind {
    /// `(Feedback)-[:FEEDBACK_FOR]->(Adapter)`.
    FeedbackFor,
    /// `(Adapter)-[:DERIVED_FROM]->(Adapter)`, child to parent.
    DerivedFrom,
}

impl EdgeKind {
    /// The relationship type name as in Cypher.
    pub fn name(self) -> &'static str {
        match self {
            EdgeKind::FeedbackFor => "FEEDBACK_FOR",
            EdgeKind::DerivedFrom => "DERIVED_FROM",
        }
    }
}

/// Edge weight: its id, type and properties (edge metadata stays in sled).
///
/// petgraph's edge indices are not identities: removing an edge moves the last edge into
/// its slot. `id` is: given once from the org graph's counter when the edge is added, it
/// never changes while the edge exists and is never given to another edge. It fits in the
/// padding of the other fields, so the weight stays 16 bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EdgeData {
    /// The edge's id in its org graph (what queries show as a relationship's `_id`).
    pub id: u32,
    /// Relationship type.
    pub kind: EdgeKind,
    /// When the edge was made.
    pub created_at: Millis,
    /// Auto or manual.
    pub source: LinkSource,
    /// A FEEDBACK_FOR edge whose metadata (kept in sled) is not empty.
    pub has_metadata: bool,
}

// Edge weights are walked on every traversal: the id and the metadata flag live in what
// was padding, and must stay there.
const _: () = assert!(std::mem::size_of::<EdgeData>() == 16);

/// The indexed properties of one adapter.
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterNode {
    /// Its graph node.
    pub node: NodeIndex,
    /// Adapter id.
    pub id: Sym,
    /// Version label.
    pub version: Option<Sym>,
    /// Base model.
    pub base_model: Option<Sym>,
    /// Parent row (DERIVED_FROM target).
    pub parent: Option<u32>,
    /// Created, ms.
    pub created_at: Millis,
    /// Auto-created or created explicitly.
    pub source: LinkSource,
    /// Record version.
    pub record_version: u64,
}

/// The graph of one org.
#[derive(Debug, Default, Clone)]
pub struct OrgGraph {
    graph: Graph<NodeRef, EdgeData, petgraph::Directed, u32>,
    strings: Interner,
    feedback: FeedbackColumns,
    adapters: Vec<AdapterNode>,
    adapter_by_id: FxHashMap<Sym, u32>,
    sessions: sessions::SessionRows,
    /// Per adapter row: the feedback rows with a FEEDBACK_FOR edge into it, in the order the
    /// edges were added. The petgraph adjacency list of a popular adapter interleaves its
    /// few DERIVED_FROM edges with every FEEDBACK_FOR edge and is scattered over the edge
    /// array; these dense lists let typed walks and degree counts skip both.
    feedback_in: Vec<Vec<u32>>,
    /// Per adapter row: the child adapter rows (DERIVED_FROM edges into it), in the order
    /// the edges were added.
    children_in: Vec<Vec<u32>>,
    /// Per adapter row: the same feedback rows as `feedback_in`, ordered by feedback id
    /// (ids are time-ordered), so a by-adapter page starts where its cursor points and reads
    /// only the rows it returns. Empty while that order is `feedback_in`'s own (links
    /// added newest item last, as a start-up build adds them all): then `feedback_in` is
    /// the list, and a link that breaks the order makes the copy.
    linked_by_id: Vec<Vec<u32>>,
    /// Counts per org, adapter and model, kept up to date on every change.
    counters: Counters,
    /// The id the next edge gets (see [`EdgeData::id`]).
    next_edge_id: u32,
    /// Per adapter row: distinct items linked into its subtree (`pages.rs`).
    family: pages::FamilyCounts,
}

impl OrgGraph {
    /// The underlying petgraph graph (for this module's tests and algorithms; the query
    /// engine walks through the methods below).
    #[cfg(test)]
    fn graph(&self) -> &Graph<NodeRef, EdgeData, petgraph::Directed, u32> {
        &self.graph
    }

    /// Interned strings of this org.
    pub fn strings(&self) -> &Interner {
        &self.strings
    }

    /// Resolves an optional symbol.
    pub fn text(&self, sym: Option<Sym>) -> Option<&str> {
        sym.map(|s| self.strings.resolve(s))
    }

    /// All feedback rows (row number = index), as property columns.
    pub fn feedback(&self) -> &FeedbackColumns {
        &self.feedback
    }

    /// All adapter rows.
    pub fn adapters(&self) -> &[AdapterNode] {
        &self.adapters
    }

    /// Row of a feedback id.
    pub fn feedback_row(&self, id: &str) -> Option<u32> {
        self.feedback.row_of(id)
    }

    /// Row of an adapter id.
    pub fn adapter_row(&self, id: &str) -> Option<u32> {
        let sym = self.strings.get(id)?;
        self.adapter_by_id.get(&sym).copied()
    }

    /// Feedback rows with a FEEDBACK_FOR edge into the adapter, in the order the edges were
    /// added (petgraph's incoming walk, and [`OrgGraph::adapter_feedback`], yield them in
    /// the reverse order). Its length is the adapter's FEEDBACK_FOR in-degree.
    pub fn feedback_in(&self, adapter_row: u32) -> &[u32] {
        self.feedback_in
            .get(adapter_row as usize)
            .map_or(&[], Vec::as_slice)
    }

    /// The same rows as [`OrgGraph::feedback_in`], ordered by feedback id, oldest first:
    /// binary-search a cursor, walk back for newest first.
    pub fn linked_by_id(&self, adapter_row: u32) -> &[u32] {
        match self.linked_by_id.get(adapter_row as usize) {
            Some(own) if !own.is_empty() => own,
            _ => self.feedback_in(adapter_row),
        }
    }

    /// The counts of the org, of each adapter's linked items and of each model version.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Child adapter rows (DERIVED_FROM edges into the adapter), in the order the edges were
    /// added (the reverse of petgraph's incoming walk).
    pub fn child_rows(&self, adapter_row: u32) -> &[u32] {
        self.children_in
            .get(adapter_row as usize)
            .map_or(&[], Vec::as_slice)
    }

    /// The edge of `kind` from `from` to `to`, found by walking `from`'s outgoing edges
    /// (short: a feedback item's links, or an adapter's one parent edge). There is at most
    /// one such edge: links are added only if absent and an adapter has one parent.
    pub fn edge_between(&self, from: NodeRef, to: NodeRef, kind: EdgeKind) -> Option<EdgeId> {
        let (a, b) = (self.node_index(from)?, self.node_index(to)?);
        self.graph
            .edges_directed(a, Direction::Outgoing)
            .find(|e| e.target() == b && e.weight().kind == kind)
            .map(|e| e.id().index() as EdgeId)
    }

    /// The graph node of a row.
    fn node_index(&self, n: NodeRef) -> Option<NodeIndex> {
        match n {
            NodeRef::Feedback(r) => self.feedback.node(r),
            NodeRef::Adapter(r) => self.adapters.get(r as usize).map(|a| a.node),
        }
    }

    /// The public id of a node (what queries show as `id(n)` and `_id`): its position in
    /// the order nodes were added, feedback and adapters together.
    pub fn node_id(&self, n: NodeRef) -> Option<u32> {
        self.node_index(n).map(|i| i.index() as u32)
    }

    /// The node with public id `id` (see [`OrgGraph::node_id`]).
    pub fn node_at(&self, id: u32) -> Option<NodeRef> {
        self.graph.node_weight(NodeIndex::new(id as usize)).copied()
    }

    /// The relationships at `n` in direction `dir` (outgoing: `n` is the start), newest
    /// edge first, without allocating.
    pub fn edges(&self, n: NodeRef, dir: Direction) -> Edges<'_> {
        Edges {
            graph: &self.graph,
            inner: self
                .node_index(n)
                .map(|i| self.graph.edges_directed(i, dir)),
            out: dir == Direction::Outgoing,
        }
    }

    /// The properties of relationship `e`.
    #[inline]
    pub fn edge(&self, e: EdgeId) -> Option<&EdgeData> {
        self.graph.edge_weight(EdgeIndex::new(e as usize))
    }

    /// The start and end nodes of relationship `e`.
    pub fn edge_ends(&self, e: EdgeId) -> Option<(NodeRef, NodeRef)> {
        let (a, b) = self.graph.edge_endpoints(EdgeIndex::new(e as usize))?;
        Some((*self.graph.node_weight(a)?, *self.graph.node_weight(b)?))
    }

    /// Number of relationships.
    pub fn edge_count(&self) -> usize {
        self.graph.edge_count()
    }

    /// Number of nodes.
    pub fn node_count(&self) -> usize {
        self.graph.node_count()
    }

    /// Feedback rows newest first (ids are time-ordered), strictly before `before` if given.
    pub fn feedback_newest_first<'a>(
        &'a self,
        before: Option<&'a str>,
    ) -> Box<dyn Iterator<Item = u32> + 'a> {
        Box::new(self.feedback.newest_first(before))
    }

    /// Feedback rows oldest first (ids are time-ordered), strictly after `after` if given.
    pub fn feedback_oldest_first<'a>(
        &'a self,
        after: Option<&'a str>,
    ) -> Box<dyn Iterator<Item = u32> + 'a> {
        Box::new(self.feedback.oldest_first(after))
    }

    /// Rows of the feedback in a session (in no particular order).
    pub fn session_rows<'a>(&'a self, session: &str) -> impl Iterator<Item = u32> + use<'a> {
        self.strings
            .get(session)
            .into_iter()
            .flat_map(move |s| self.sessions.rows(s, &self.feedback))
    }

    /// Feedback rows linked to an adapter (FEEDBACK_FOR edges into it), newest link first.
    pub fn adapter_feedback(&self, adapter_row: u32) -> impl Iterator<Item = u32> + '_ {
        self.feedback_in(adapter_row).iter().rev().copied()
    }

    /// Adapter rows a feedback item is linked to.
    pub fn feedback_adapters(&self, feedback_row: u32) -> impl Iterator<Item = u32> + '_ {
        let node = self.feedback.node(feedback_row);
        node.into_iter().flat_map(move |n| {
            self.graph
                .edges_directed(n, Direction::Outgoing)
                .filter_map(|e| match self.graph[e.target()] {
                    NodeRef::Adapter(r) => Some(r),
                    NodeRef::Feedback(_) => None,
                })
        })
    }

    /// Child adapter rows (DERIVED_FROM edges into this adapter), newest edge first.
    pub fn children(&self, adapter_row: u32) -> impl Iterator<Item = u32> + '_ {
        self.child_rows(adapter_row).iter().rev().copied()
    }

    fn find_edge(&self, from: NodeIndex, to: NodeIndex, kind: EdgeKind) -> Option<EdgeIndex> {
        self.graph
            .edges_connecting(from, to)
            .find(|e| e.weight().kind == kind)
            .map(|e| e.id())
    }

    /// Adds an edge with a fresh id (see [`EdgeData::id`]); `data.id` is replaced.
    fn add_edge(&mut self, from: NodeIndex, to: NodeIndex, mut data: EdgeData) -> EdgeIndex {
        if self.next_edge_id == u32::MAX {
            // Four billion edges were added to this org since start-up: renumber the live
            // ones densely. Only here do ids change; a graph has fewer than u32::MAX edges.
            for (n, w) in self.graph.edge_weights_mut().enumerate() {
                w.id = n as u32;
            }
            self.next_edge_id = self.graph.edge_count() as u32;
        }
        data.id = self.next_edge_id;
        self.next_edge_id += 1;
        self.graph.add_edge(from, to, data)
    }

    /// The weight of a FEEDBACK_FOR edge (its id is given when it is added).
    fn link_data(created_at: Millis, source: LinkSource, has_metadata: bool) -> EdgeData {
        EdgeData {
            id: 0,
            kind: EdgeKind::FeedbackFor,
            created_at,
            source,
            has_metadata,
        }
    }

    fn adapter_row_or_placeholder(&mut self, id: &str) -> u32 {
        if let Some(r) = self.adapter_row(id) {
            return r;
        }
        let sym = self.strings.intern(id);
        self.adapter_row_for_sym(sym)
    }

    /// The row of the adapter whose interned id is `sym`, adding a placeholder if there is
    /// none. Does not read the interner (the start-up build interns on another thread).
    fn adapter_row_for_sym(&mut self, sym: Sym) -> u32 {
        if let Some(&r) = self.adapter_by_id.get(&sym) {
            return r;
        }
        let row = self.adapters.len() as u32;
        let node = self.graph.add_node(NodeRef::Adapter(row));
        self.adapters.push(AdapterNode {
            node,
            id: sym,
            version: None,
            base_model: None,
            parent: None,
            created_at: 0,
            source: LinkSource::Auto,
            record_version: 0,
        });
        self.adapter_by_id.insert(sym, row);
        self.feedback_in.push(Vec::new());
        self.children_in.push(Vec::new());
        self.linked_by_id.push(Vec::new());
        self.counters.adapters.push(Counts::default());
        row
    }

    /// Inserts or updates an adapter (a newer `record_version` wins) and its parent edge.
    pub fn upsert_adapter(&mut self, a: &Adapter) {
        let row = self.adapter_row_or_placeholder(&a.id);
        if self.adapters[row as usize].record_version >= a.record_version {
            return;
        }
        let version = a.version.as_deref().map(|s| self.strings.intern(s));
        let base_model = a.base_model.as_deref().map(|s| self.strings.intern(s));
        let parent = a
            .derived_from
            .as_deref()
            .map(|p| self.adapter_row_or_placeholder(p));
        let node = &mut self.adapters[row as usize];
        node.version = version;
        node.base_model = base_model;
        node.created_at = a.created_at;
        node.source = a.source;
        node.record_version = a.record_version;
        let old_parent = std::mem::replace(&mut node.parent, parent);
        let child = node.node;
        if old_parent != parent {
            if let Some(old) = old_parent {
                let old_node = self.adapters[old as usize].node;
                if let Some(e) = self.find_edge(child, old_node, EdgeKind::DerivedFrom) {
                    self.graph.remove_edge(e);
                    if let Some(list) = self.children_in.get_mut(old as usize)
                        && let Some(i) = list.iter().position(|&c| c == row)
                    {
                        list.remove(i);
                    }
                }
            }
            self.family_note_parent(row);
            if let Some(p) = parent {
                let parent_node = self.adapters[p as usize].node;
                self.add_edge(
                    child,
                    parent_node,
                    EdgeData {
                        id: 0,
                        kind: EdgeKind::DerivedFrom,
                        created_at: a.created_at,
                        source: LinkSource::Manual,
                        has_metadata: false,
                    },
                );
                if let Some(list) = self.children_in.get_mut(p as usize) {
                    list.push(row);
                }
            }
        }
    }

    /// Inserts or updates a feedback item (a newer `version` wins).
    pub fn upsert_feedback(&mut self, f: &Feedback) {
        self.upsert_feedback_leased(f, None);
    }

    /// Inserts or updates a feedback item with its lease (a newer `version` wins).
    pub fn upsert_feedback_leased(&mut self, f: &Feedback, lease: Option<Lease>) {
        self.upsert_head(&FeedbackHeadRef::from(f), lease, true);
    }

    /// Inserts or updates from a record's leading fields. With `index == false` the id is
    /// not put into the id map (bulk build does that once at the end, from sorted ids).
    fn upsert_head(&mut self, f: &FeedbackHeadRef<'_>, lease: Option<Lease>, index: bool) -> u32 {
        let existing = if index { self.feedback_row(f.id) } else { None };
        if let Some(r) = existing
            && self.feedback.version(r).is_some_and(|v| v >= f.version)
        {
            return r;
        }
        // Neighbouring records often share a value (a session's items, a model): the
        // previous row's symbol in the same column is tried before a hash lookup.
        let prev = (self.feedback.len() as u32).checked_sub(1);
        let columns = &self.feedback;
        let new = head_props(&mut self.strings, f, lease, |col| {
            prev.and_then(|p| columns.sym(p, col))
        });
        let session_id = new.session_id;
        let (row, old_session) = match existing.and_then(|r| Some((r, self.feedback.props(r)?))) {
            Some((r, old)) => {
                self.feedback.set(r, &new);
                self.recount(&old, r);
                (r, old.session_id)
            }
            None => return self.push_row(f.id, &new, index),
        };
        // A bulk build groups every row by session at the end (`index_sessions`).
        if index {
            self.sessions.moved(
                row,
                old_session,
                session_id,
                &self.feedback,
                self.strings.len(),
            );
        }
        row
    }

    /// Adds a new feedback row with id `id` and properties `new` (already interned), its
    /// node, counts and session entry; returns the row. With `index == false` the id is not
    /// put into the id map (see [`OrgGraph::upsert_head`]). The caller knows the id is new.
    fn push_row(&mut self, id: &str, new: &FeedbackProps, index: bool) -> u32 {
        let r = self.feedback.len() as u32;
        let node = self.graph.add_node(NodeRef::Feedback(r));
        self.counters.add_item(new);
        self.feedback.push(node, id, new, index);
        // A bulk build groups every row by session at the end (`index_bulk`).
        if index {
            self.sessions
                .moved(r, None, new.session_id, &self.feedback, self.strings.len());
        }
        r
    }

    /// Moves row `r`'s contribution to the counters from `old` to what the row holds now:
    /// in the org's and model's counts, and in those of every adapter it is linked to.
    fn recount(&mut self, old: &FeedbackProps, r: u32) {
        let OrgGraph {
            graph,
            feedback,
            counters,
            ..
        } = self;
        let (Some(new), Some(node)) = (feedback.props(r), feedback.node(r)) else {
            return;
        };
        counters.remove_item(old);
        counters.add_item(&new);
        for e in graph.edges_directed(node, Direction::Outgoing) {
            if let NodeRef::Adapter(a) = graph[e.target()] {
                counters.unlink(a, old);
                counters.link(a, &new);
            }
        }
    }

    /// Gives back the spare capacity vectors and tables grew while the graph was built (a
    /// doubling vector holds up to twice what it needs).
    fn shrink_to_fit(&mut self) {
        self.graph.shrink_to_fit();
        self.strings.shrink_to_fit();
        self.feedback.shrink_to_fit();
        self.adapters.shrink_to_fit();
        self.sessions.shrink_to_fit();
        // A list in id order that is `feedback_in` in the same order is not kept twice.
        for (own, added) in self.linked_by_id.iter_mut().zip(&self.feedback_in) {
            if !own.is_empty() && own == added {
                *own = Vec::new();
            }
        }
        for lists in [
            &mut self.feedback_in,
            &mut self.children_in,
            &mut self.linked_by_id,
        ] {
            lists.shrink_to_fit();
            for v in lists.iter_mut() {
                v.shrink_to_fit();
            }
        }
    }

    /// Whether upkeep that costs O(rows) is due: ids that came out of order to merge into
    /// the id order, or rows that joined sessions to group. Lookups are right either way;
    /// they slow down as the backlog grows. The graph's owner does the upkeep off the
    /// request path ([`OrgGraph::upkeep`]; `index.rs` runs it on the graph thread, on a
    /// copy, so no writer on a runtime thread and no reader waits for it).
    pub fn upkeep_due(&self) -> bool {
        self.feedback.ids_merge_due() || self.sessions.rebuild_due(&self.feedback)
    }

    /// Does the upkeep [`OrgGraph::upkeep_due`] reports, if any.
    pub fn upkeep(&mut self) {
        if self.feedback.ids_merge_due() {
            self.feedback.merge_ids();
        }
        if self.sessions.rebuild_due(&self.feedback) {
            self.sessions.rebuild(&self.feedback, self.strings.len());
        }
    }

    /// Indexes every row's id and groups the rows by session at once, after a bulk build
    /// that added rows unindexed.
    fn index_bulk(&mut self) {
        self.feedback.index_ids();
        self.sessions.rebuild(&self.feedback, self.strings.len());
    }

    /// Records a new FEEDBACK_FOR edge from feedback row `f` to adapter row `a` in the
    /// typed lists and the adapter's counts (the petgraph edge is added by the caller).
    fn note_link(&mut self, f: u32, a: u32) {
        self.note_link_lists(f, a);
        self.family_note_link(f, a);
    }

    /// [`OrgGraph::note_link`]'s typed lists and counts.
    fn note_link_lists(&mut self, f: u32, a: u32) {
        let feedback = &self.feedback;
        let (Some(added), Some(list)) = (
            self.feedback_in.get_mut(a as usize),
            self.linked_by_id.get_mut(a as usize),
        ) else {
            return;
        };
        let (Some(item), Some(id)) = (feedback.props(f), feedback.id(f)) else {
            added.push(f);
            return;
        };
        // Links mostly arrive newest item last (always, in a start-up build, where rows
        // come in id order): then one comparison with the last entry makes it a push,
        // instead of a binary search that compares a string at every step. While the id
        // order is the order of `added` (`list` empty, shared), such a link keeps it so.
        let shared = list.is_empty();
        let last = if shared { added.last() } else { list.last() };
        let in_order = last
            .and_then(|&x| feedback.id(x))
            .is_none_or(|last| last < id);
        if shared && !in_order {
            list.clone_from(added);
        }
        added.push(f);
        if !(shared && in_order) {
            if in_order {
                list.push(f);
            } else {
                let at = list.partition_point(|&x| feedback.id(x).is_some_and(|other| other < id));
                list.insert(at, f);
            }
        }
        self.counters.link(a, &item);
    }

    /// Adds a FEEDBACK_FOR edge if absent. Returns false if either end is unknown.
    pub fn add_link(&mut self, l: &FeedbackLink) -> bool {
        let Some(f) = self.feedback_row(&l.feedback_id) else {
            return false;
        };
        let a = self.adapter_row_or_placeholder(&l.adapter_id);
        let (Some(from), Some(to)) = (
            self.feedback.node(f),
            self.adapters.get(a as usize).map(|a| a.node),
        ) else {
            return false;
        };
        if !self.linked_to(f, a) {
            let data = Self::link_data(l.created_at, l.source, !l.metadata.is_empty());
            self.add_edge(from, to, data);
            self.note_link(f, a);
        }
        true
    }

    /// Whether feedback row `f` has a FEEDBACK_FOR edge to adapter row `a`: a binary
    /// search of the adapter's id-ordered list, which holds exactly the rows linked to it
    /// ([`OrgGraph::note_link`] keeps it with every edge added; these edges are never
    /// removed). Walking the item's edges instead would cost a step per edge, each a jump
    /// through petgraph's edge array, and an item can have hundreds.
    fn linked_to(&self, f: u32, a: u32) -> bool {
        let list = self.linked_by_id(a);
        let Some(id) = self.feedback.id(f) else {
            return false;
        };
        list.binary_search_by(|&x| self.feedback.id(x).unwrap_or_default().cmp(id))
            .is_ok()
    }

    /// A canonical, order-independent rendering of the whole graph, for equality checks.
    pub fn canonical(&self) -> CanonicalGraph {
        let mut nodes = BTreeMap::new();
        let t = |s: Option<Sym>| self.text(s).map(str::to_owned);
        for f in self.feedback.iter() {
            let props: BTreeMap<&'static str, String> = [
                ("type", Some(f.feedback_type.as_str().to_owned())),
                ("validation_status", Some(f.status.as_str().to_owned())),
                ("used_for_training", Some(f.used_for_training.to_string())),
                ("training_batch_id", Some(f.training_batch_id.to_string())),
                ("created_at", Some(f.created_at.to_string())),
                ("updated_at", Some(f.updated_at.to_string())),
                ("version", Some(f.version.to_string())),
                ("model_version", t(f.model_version)),
                ("adapter_id", t(f.adapter_id)),
                ("adapter_version", t(f.adapter_version)),
                ("user_id", t(f.user_id)),
                ("session_id", t(f.session_id)),
                ("interaction_id", t(f.interaction_id)),
                ("score", f.score.map(|s| s.to_string())),
                ("has_correction", Some(f.has_correction.to_string())),
                ("has_comment", Some(f.has_comment.to_string())),
                (
                    "lease",
                    f.lease.map(|l| format!("{}@{}", l.batch_id, l.expires_at)),
                ),
            ]
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect();
            nodes.insert(format!("Feedback:{}", f.id), props);
        }
        for a in &self.adapters {
            let props: BTreeMap<&'static str, String> = [
                ("version", t(a.version)),
                ("base_model", t(a.base_model)),
                ("created_at", Some(a.created_at.to_string())),
                ("source", Some(a.source.as_str().to_owned())),
                ("record_version", Some(a.record_version.to_string())),
            ]
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect();
            nodes.insert(format!("Adapter:{}", self.strings.resolve(a.id)), props);
        }
        let name = |n: NodeIndex| match self.graph[n] {
            NodeRef::Feedback(r) => format!("Feedback:{}", self.feedback.id_str(r)),
            NodeRef::Adapter(r) => {
                format!(
                    "Adapter:{}",
                    self.strings.resolve(self.adapters[r as usize].id)
                )
            }
        };
        let edges = self
            .graph
            .edge_references()
            .map(|e| {
                let w = e.weight();
                (
                    w.kind.name(),
                    name(e.source()),
                    name(e.target()),
                    w.created_at,
                    w.source.as_str(),
                )
            })
            .collect();
        // The counters and the id-ordered lists are derived; rendering them checks that a
        // graph kept up to date write by write derived the same as one built at once.
        let mut counts = BTreeMap::new();
        counts.insert("org".to_owned(), format!("{:?}", self.counters.org));
        for (m, c) in &self.counters.models {
            counts.insert(
                format!("model:{}", self.strings.resolve(*m)),
                format!("{c:?}"),
            );
        }
        for (r, a) in self.adapters.iter().enumerate() {
            let ids: Vec<&str> = self
                .linked_by_id(r as u32)
                .iter()
                .filter_map(|&f| self.feedback.id(f))
                .collect();
            let c = self.counters.adapters.get(r).copied().unwrap_or_default();
            counts.insert(
                format!("adapter:{}", self.strings.resolve(a.id)),
                format!("{c:?} {ids:?}"),
            );
        }
        CanonicalGraph {
            nodes,
            edges,
            counts,
        }
    }
}

/// A graph rendered as sorted nodes with properties and sorted edges; two graphs are the
/// same iff their canonical forms are equal.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CanonicalGraph {
    /// `Label:id` -> property name -> rendered value.
    pub nodes: BTreeMap<String, BTreeMap<&'static str, String>>,
    /// (type, from, to, created_at, source).
    pub edges: BTreeSet<(&'static str, String, String, Millis, &'static str)>,
    /// The derived counts (org, `model:M`, `adapter:A` with its id-ordered item list).
    pub counts: BTreeMap<String, String>,
}

/// Applying changes; for bulk loads, a new org's graph is built beside the live index while
/// its records are written, and published once they are durable.
impl OrgGraph {
    /// A graph holding exactly `changes`: its adapters, its feedback records and the
    /// FEEDBACK_FOR edges stored inside them, and the explicit links.
    pub fn from_changes(changes: &ChangeSet) -> OrgGraph {
        // The same steps as `GraphIndex::apply_records`, so both give the same graph.
        let mut g = OrgGraph::default();
        g.apply_changes(changes);
        g.apply_record_links(changes);
        g
    }

    /// Applies a write's changes: adapters first (so parents exist), then feedback, then
    /// the explicit links.
    fn apply_changes(&mut self, changes: &ChangeSet) {
        for a in &changes.adapters {
            self.upsert_adapter(a);
        }
        for r in &changes.feedback {
            if changes.linked_only && self.bump_linked(&r.feedback) {
                continue;
            }
            self.upsert_feedback_leased(&r.feedback, r.lease);
        }
        for l in &changes.links {
            self.add_link(l);
        }
        self.family_refresh();
    }

    /// For a record that is its version before plus new edges (see
    /// [`ChangeSet::linked_only`]): if the graph holds that version before, moves the
    /// row's `version` and `updated_at` and returns true; every other property, and so
    /// every count, stays as it is. Returns false (the caller upserts the whole record)
    /// when the row is missing or at another version: a change of the item not applied
    /// yet, or one applied already.
    fn bump_linked(&mut self, f: &Feedback) -> bool {
        let Some(r) = self.feedback_row(&f.id) else {
            return false;
        };
        if self.feedback.version(r) != f.version.checked_sub(1) {
            return false;
        }
        self.feedback.set_version(r, f.version, f.updated_at);
        true
    }

    /// Adds the FEEDBACK_FOR edges stored inside the changed records (bulk loads).
    fn apply_record_links(&mut self, changes: &ChangeSet) {
        for r in &changes.feedback {
            for l in &r.links {
                self.add_link(l);
            }
        }
        self.family_refresh();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Metadata, ValidationStatus};

    fn adapter(id: &str, parent: Option<&str>, record_version: u64) -> Adapter {
        Adapter {
            id: id.into(),
            org_id: "t".into(),
            version: None,
            base_model: None,
            derived_from: parent.map(str::to_owned),
            metadata: Metadata::default(),
            created_at: record_version,
            source: LinkSource::Manual,
            record_version,
        }
    }

    fn link(f: &str, a: &str) -> FeedbackLink {
        FeedbackLink {
            feedback_id: f.into(),
            adapter_id: a.into(),
            created_at: 1,
            source: LinkSource::Auto,
            metadata: Metadata::default(),
        }
    }

    /// The typed lists are petgraph's incoming lists, per type, in reverse, and
    /// `edge_between` finds every edge.
    fn check_lists(g: &OrgGraph) {
        for row in 0..g.adapters().len() as u32 {
            let node = g.adapters()[row as usize].node;
            let incoming = |kind: EdgeKind| -> Vec<u32> {
                g.graph()
                    .edges_directed(node, Direction::Incoming)
                    .filter(|e| e.weight().kind == kind)
                    .map(|e| match g.graph()[e.source()] {
                        NodeRef::Feedback(r) | NodeRef::Adapter(r) => r,
                    })
                    .collect()
            };
            let feedback: Vec<u32> = g.adapter_feedback(row).collect();
            let children: Vec<u32> = g.children(row).collect();
            assert_eq!(feedback, incoming(EdgeKind::FeedbackFor), "adapter {row}");
            assert_eq!(children, incoming(EdgeKind::DerivedFrom), "adapter {row}");
        }
        for e in g.graph().edge_references() {
            let (from, to) = (g.graph()[e.source()], g.graph()[e.target()]);
            assert_eq!(
                g.edge_between(from, to, e.weight().kind),
                Some(e.id().index() as EdgeId)
            );
        }
    }

    #[test]
    fn typed_lists_follow_every_change() {
        let mut g = OrgGraph::default();
        for (id, parent) in [("root", None), ("a", Some("root")), ("b", Some("root"))] {
            g.upsert_adapter(&adapter(id, parent, 1));
        }
        for i in 0..6 {
            let f = Feedback::sample(&format!("f{i}"), "t");
            g.upsert_feedback(&f);
            for a in ["a", "b", "root"].iter().take(i % 3 + 1) {
                assert!(g.add_link(&link(&f.id, a)));
                // A repeated link adds nothing.
                assert!(g.add_link(&link(&f.id, a)));
            }
        }
        check_lists(&g);
        // Re-parenting removes an edge, which moves the last edge to its index.
        g.upsert_adapter(&adapter("a", Some("b"), 2));
        check_lists(&g);
        g.upsert_adapter(&adapter("b", None, 2));
        g.upsert_adapter(&adapter("c", Some("a"), 1));
        check_lists(&g);
        assert_eq!(g.child_rows(g.adapter_row("b").unwrap()).len(), 1);
        assert_eq!(g.feedback_in(g.adapter_row("root").unwrap()).len(), 2);
    }

    /// Every edge's (kind, from, to) keyed by its id.
    fn edges_by_id(g: &OrgGraph) -> BTreeMap<u32, (EdgeKind, NodeRef, NodeRef)> {
        g.graph()
            .edge_references()
            .map(|e| {
                let w = e.weight();
                (w.id, (w.kind, g.graph()[e.source()], g.graph()[e.target()]))
            })
            .collect()
    }

    #[test]
    fn edge_ids_survive_the_removal_of_other_edges_and_are_not_reused() {
        let mut g = OrgGraph::default();
        for (id, parent) in [("root", None), ("a", Some("root")), ("b", Some("root"))] {
            g.upsert_adapter(&adapter(id, parent, 1));
        }
        for i in 0..4 {
            let f = Feedback::sample(&format!("f{i}"), "t");
            g.upsert_feedback(&f);
            assert!(g.add_link(&link(&f.id, "b")));
        }
        let before = edges_by_id(&g);
        assert_eq!(before.len(), g.graph().edge_count(), "ids are unique");
        // Re-parent `a` (its DERIVED_FROM edge is an early one, so petgraph moves the last
        // edge into its slot): every other edge keeps its id, the new edge gets a new one.
        g.upsert_adapter(&adapter("a", Some("b"), 2));
        let after = edges_by_id(&g);
        let removed: Vec<_> = before.keys().filter(|k| !after.contains_key(k)).collect();
        assert_eq!(removed.len(), 1, "{before:?} -> {after:?}");
        for (id, e) in &before {
            if !removed.contains(&id) {
                assert_eq!(after.get(id), Some(e), "edge {id} kept its id");
            }
        }
        let added: Vec<_> = after.keys().filter(|k| !before.contains_key(k)).collect();
        assert_eq!(added.len(), 1);
        assert!(
            before.keys().all(|k| k < added[0]),
            "a fresh id, not a reused one"
        );
    }

    fn linked_only(f: &Feedback, adapter: &str) -> ChangeSet {
        ChangeSet {
            feedback: vec![crate::store::FeedbackRecord {
                lease: None,
                links: vec![link(&f.id, adapter)],
                feedback: f.clone(),
            }],
            links: vec![link(&f.id, adapter)],
            linked_only: true,
            ..ChangeSet::default()
        }
    }

    #[test]
    fn a_linked_only_record_moves_only_the_version_of_the_row_before_it() {
        let mut g = OrgGraph::default();
        let mut f = Feedback::sample("f1", "t");
        f.version = 2;
        g.upsert_feedback(&f);
        let r = g.feedback_row("f1").unwrap();
        // The version after, with an edge: version and updated_at move, the rest stays.
        let mut next = f.clone();
        next.version = 3;
        next.updated_at = 50;
        g.apply_changes(&linked_only(&next, "a"));
        assert_eq!(g.feedback().version(r), Some(3));
        assert_eq!(g.feedback().updated_at(r), Some(50));
        let a = g.adapter_row("a").unwrap();
        assert_eq!(g.linked_by_id(a), &[r]);
        assert_eq!(g.counters().adapters[a as usize].approved, 1);
        assert_eq!(g.counters().org.total, 1);
        // Two versions ahead: a change in between (here the status) is not in the graph
        // yet, so the whole record is taken, with its counts.
        let mut later = next.clone();
        later.version = 5;
        later.updated_at = 70;
        later.validation_status = ValidationStatus::Rejected;
        g.apply_changes(&linked_only(&later, "b"));
        assert_eq!(g.feedback().version(r), Some(5));
        let props = g.feedback().props(r).unwrap();
        assert_eq!(props.status, ValidationStatus::Rejected);
        assert_eq!(g.counters().org.rejected, 1);
        assert_eq!(g.counters().org.approved, 0);
        assert_eq!(g.counters().adapters[a as usize].rejected, 1);
        let b = g.adapter_row("b").unwrap();
        assert_eq!(g.counters().adapters[b as usize].rejected, 1);
        // One the graph is past already changes nothing.
        let mut stale = next.clone();
        stale.version = 4;
        stale.updated_at = 60;
        g.apply_changes(&linked_only(&stale, "c"));
        assert_eq!(g.feedback().version(r), Some(5));
        assert_eq!(g.feedback().updated_at(r), Some(70));
        assert_eq!(
            g.feedback().props(r).unwrap().status,
            ValidationStatus::Rejected
        );
        check_lists(&g);
    }

    #[test]
    fn a_link_applied_again_adds_no_second_edge() {
        let mut g = OrgGraph::default();
        // Items in an order that is not their id order, each linked to two adapters and
        // some to many: every edge once, however often it is applied.
        let ids: Vec<String> = [7, 3, 9, 1, 5, 8, 2, 6, 4, 0]
            .iter()
            .map(|n| format!("f{n}"))
            .collect();
        for id in &ids {
            g.upsert_feedback(&Feedback::sample(id, "t"));
        }
        for _ in 0..3 {
            for (n, id) in ids.iter().enumerate() {
                assert!(g.add_link(&link(id, "a")));
                assert!(g.add_link(&link(id, "b")));
                for k in 0..n {
                    assert!(g.add_link(&link(id, &format!("c{k}"))));
                }
            }
        }
        let want = 2 * ids.len() + (0..ids.len()).sum::<usize>();
        assert_eq!(g.edge_count(), want);
        let a = g.adapter_row("a").unwrap();
        let by_id: Vec<&str> = g
            .linked_by_id(a)
            .iter()
            .filter_map(|&r| g.feedback().id(r))
            .collect();
        assert_eq!(
            by_id,
            ["f0", "f1", "f2", "f3", "f4", "f5", "f6", "f7", "f8", "f9"]
        );
        assert_eq!(g.counters().adapters[a as usize].total, 10);
        check_lists(&g);
    }
}
