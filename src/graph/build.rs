//! The start-up build of every org's graph from the store, on two threads.
//!
//! The calling thread reads the store (sled's iteration, the record heads' decoding) and
//! interns every string of each record, so that what it hands on holds only numbers: the
//! row's properties with their symbols, the id, and each FEEDBACK_FOR edge as the adapter's
//! symbol and the edge's weight. A second thread takes these in batches, through a bounded
//! channel, and grows the graphs: nodes, property columns, counters, sessions, edges and
//! the typed lists. Each org's interner belongs to the first thread for the whole scan
//! and goes back into its graph at the end.
//!
//! The result is the graph the one-threaded build made (and that applying the same records
//! one by one makes): strings are interned in the same order, so every symbol is the same;
//! rows, nodes and edges are added in the same order, so every row number, node id and
//! edge id is the same. Records come in key order (org, then id), so each org's records are
//! neighbours and each row's id is above the previous row's.
//!
//! If the second thread cannot be started, the batches are applied on the calling thread
//! as they fill: slower, same result.

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::ScopedJoinHandle;

use super::{EdgeData, FeedbackProps, Interner, OrgGraph, Sym, SymCol, head_props};
use crate::store::{Backend, RecordHeadRef, StoreError};

/// Rows per batch handed from the reading thread to the building thread.
const BATCH_ROWS: usize = 2048;

/// Batches that may wait in the channel: enough to ride out a slow page read or a vector
/// doubling on either side, few enough to keep the memory in flight small (each batch is
/// about 300 KiB).
const BATCHES_IN_FLIGHT: usize = 4;

/// One record's row as the building thread needs it.
#[derive(Debug)]
struct Row {
    /// Index of the org (see [`Batch::new_orgs`]).
    org: u32,
    /// Its properties, strings already interned.
    props: FeedbackProps,
    /// End of its id in [`Batch::ids`] (it starts where the previous row's ends).
    id_end: u32,
    /// End of its edges in [`Batch::links`] (likewise).
    links_end: u32,
}

/// Rows read and interned by the reading thread, in key order.
#[derive(Debug, Default)]
struct Batch {
    /// Orgs first seen in this batch, in the order of their indices (each gets the next
    /// index after those seen before).
    new_orgs: Vec<String>,
    rows: Vec<Row>,
    /// The rows' ids, one after another.
    ids: String,
    /// The rows' FEEDBACK_FOR edges: the adapter's symbol and the edge's weight.
    links: Vec<(Sym, EdgeData)>,
}

impl Batch {
    fn empty() -> Batch {
        Batch {
            new_orgs: Vec::new(),
            rows: Vec::with_capacity(BATCH_ROWS),
            ids: String::with_capacity(BATCH_ROWS * 32),
            links: Vec::with_capacity(BATCH_ROWS * 2),
        }
    }
}

/// One org as the reading thread sees it: its interner and the previous row's properties
/// (its symbols are the first guess for the next row's).
#[derive(Debug, Default)]
struct OrgStrings {
    strings: Interner,
    prev: Option<FeedbackProps>,
}

/// The symbol a row holds in column `col`.
fn prop_sym(p: &FeedbackProps, col: SymCol) -> Option<Sym> {
    match col {
        SymCol::ModelVersion => p.model_version,
        SymCol::AdapterId => p.adapter_id,
        SymCol::AdapterVersion => p.adapter_version,
        SymCol::UserId => p.user_id,
        SymCol::SessionId => p.session_id,
        SymCol::InteractionId => p.interaction_id,
    }
}

/// One org's graph on the building thread.
#[derive(Default)]
struct Building {
    graph: OrgGraph,
}

/// The building thread's side: every org's graph so far, by org index.
#[derive(Default)]
struct Builder {
    orgs: Vec<Building>,
}

impl Builder {
    /// Adds a batch's rows and edges to their orgs' graphs.
    fn take(&mut self, batch: &Batch) {
        self.orgs
            .extend(batch.new_orgs.iter().map(|_| Building::default()));
        let (mut id_start, mut link_start) = (0usize, 0usize);
        for row in &batch.rows {
            let (id_end, link_end) = (row.id_end as usize, row.links_end as usize);
            let id = batch.ids.get(id_start..id_end).unwrap_or_default();
            let links = batch.links.get(link_start..link_end).unwrap_or_default();
            (id_start, link_start) = (id_end, link_end);
            let Some(b) = self.orgs.get_mut(row.org as usize) else {
                continue;
            };
            let g = &mut b.graph;
            let f = g.push_row(id, &row.props, false);
            for &(sym, data) in links {
                let a = g.adapter_row_for_sym(sym);
                let (Some(from), Some(to)) = (
                    g.feedback.node(f),
                    g.adapters.get(a as usize).map(|a| a.node),
                ) else {
                    continue;
                };
                g.add_edge(from, to, data);
                g.note_link(f, a);
            }
        }
    }

    /// The building thread: takes the graphs so far, then applies batches until the
    /// reading thread hangs up.
    fn run(rx: Receiver<Msg>) -> Builder {
        let mut builder = Builder::default();
        for msg in rx {
            match msg {
                Msg::Start(b) => builder = b,
                Msg::Rows(batch) => builder.take(&batch),
            }
        }
        builder
    }
}

/// What the reading thread sends the building thread.
enum Msg {
    /// The graphs so far (the adapters), first.
    Start(Builder),
    /// Rows to add.
    Rows(Batch),
}

/// Where the reading thread puts full batches.
enum Sink<'scope> {
    /// To the building thread.
    Channel(SyncSender<Msg>, ScopedJoinHandle<'scope, Builder>),
    /// Applied here (the building thread could not be started).
    Inline(Builder),
}

impl Sink<'_> {
    /// Every graph, once every batch is in.
    fn finish(self) -> Builder {
        match self {
            Sink::Inline(b) => b,
            Sink::Channel(tx, thread) => {
                drop(tx);
                match thread.join() {
                    Ok(b) => b,
                    // A panic while building is a bug; it goes on up as it would have on
                    // one thread.
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
        }
    }
}

/// The reading thread's side.
struct Reader<'a> {
    serves: &'a dyn Fn(&str) -> bool,
    /// Index of each org seen so far; `None` for an org this build does not serve.
    org_index: HashMap<String, Option<u32>>,
    /// The org of the previous record and its index (records of an org are neighbours).
    last_org: Option<(String, Option<u32>)>,
    /// Per org index.
    orgs: Vec<OrgStrings>,
    names: Vec<String>,
    batch: Batch,
}

impl Reader<'_> {
    /// The index of `org`, adding it if it is new and served.
    fn org(&mut self, org: &str) -> Option<u32> {
        if let Some((name, index)) = &self.last_org
            && name == org
        {
            return *index;
        }
        let index = match self.org_index.get(org) {
            Some(&index) => index,
            None => {
                let index = (self.serves)(org).then(|| {
                    let i = self.orgs.len() as u32;
                    self.orgs.push(OrgStrings::default());
                    self.names.push(org.to_owned());
                    self.batch.new_orgs.push(org.to_owned());
                    i
                });
                self.org_index.insert(org.to_owned(), index);
                index
            }
        };
        self.last_org = Some((org.to_owned(), index));
        index
    }

    /// Interns one record and adds it to the batch; says whether the batch is full.
    fn read(&mut self, org: &str, r: &RecordHeadRef<'_>) -> bool {
        let Some(index) = self.org(org) else {
            return false;
        };
        let Some(o) = self.orgs.get_mut(index as usize) else {
            return false;
        };
        let prev = o.prev;
        let props = head_props(&mut o.strings, &r.feedback, r.lease, |col| {
            prev.as_ref().and_then(|p| prop_sym(p, col))
        });
        o.prev = Some(props);
        for (i, l) in r.links.iter().enumerate() {
            // A record lists each adapter once (links are added only if absent); a repeat
            // would be a second edge between the same pair, so it is skipped.
            if r.links[..i].iter().any(|p| p.adapter_id == l.adapter_id) {
                continue;
            }
            // Most items link the adapter they name: its symbol is known. Others are
            // interned whether or not the adapter exists (a lookup that finds it gives the
            // symbol it has; a new one gets the next, as a placeholder's would).
            let sym = match props.adapter_id {
                Some(a) if r.feedback.adapter_id == Some(l.adapter_id) => a,
                _ => o.strings.intern(l.adapter_id),
            };
            // Metadata is stored as its JSON text; an empty object is `{}`.
            let data = OrgGraph::link_data(
                l.created_at,
                l.source,
                !matches!(l.metadata.trim(), "{}" | ""),
            );
            self.batch.links.push((sym, data));
        }
        self.batch.ids.push_str(r.feedback.id);
        self.batch.rows.push(Row {
            org: index,
            props,
            id_end: self.batch.ids.len() as u32,
            links_end: self.batch.links.len() as u32,
        });
        self.batch.rows.len() >= BATCH_ROWS || self.batch.ids.len() >= u32::MAX as usize / 2
    }

    /// Hands the batch on.
    fn flush(&mut self, sink: &mut Sink<'_>) {
        if self.batch.rows.is_empty() && self.batch.new_orgs.is_empty() {
            return;
        }
        let batch = std::mem::replace(&mut self.batch, Batch::empty());
        match sink {
            // An error means the building thread is gone, which it is only by panicking:
            // joining it raises the panic here.
            Sink::Channel(tx, _) => drop(tx.send(Msg::Rows(batch))),
            Sink::Inline(b) => b.take(&batch),
        }
    }
}

/// One org's graph as the scan left it: its ids not yet indexed.
pub(super) struct BuiltOrg {
    /// The org.
    pub(super) name: String,
    /// Its graph.
    pub(super) graph: OrgGraph,
}

/// Builds the graph of every org `serves` accepts from the store: adapters first (so
/// parents exist), then every feedback record with its edges. Returns each org's graph
/// with its ids and sessions not yet indexed (`OrgGraph::index_bulk`), for the caller to finish.
pub(super) fn build_graphs(
    store: &dyn Backend,
    serves: &dyn Fn(&str) -> bool,
) -> Result<Vec<BuiltOrg>, StoreError> {
    let mut reader = Reader {
        serves,
        org_index: HashMap::new(),
        last_org: None,
        orgs: Vec::new(),
        names: Vec::new(),
        batch: Batch::empty(),
    };
    let mut builder = Builder::default();
    store.for_each_adapter(&mut |a| {
        if let Some(i) = reader.org(&a.org_id) {
            let i = i as usize;
            if builder.orgs.len() <= i {
                builder.orgs.resize_with(i + 1, Building::default);
            }
            if let Some(b) = builder.orgs.get_mut(i) {
                b.graph.upsert_adapter(&a);
            }
        }
        Ok(())
    })?;
    // The orgs seen so far have their graphs already; their interners move to this thread
    // for the scan.
    reader.batch.new_orgs.clear();
    for (b, o) in builder.orgs.iter_mut().zip(reader.orgs.iter_mut()) {
        o.strings = std::mem::take(&mut b.graph.strings);
    }
    let builder = std::thread::scope(|scope| -> Result<Builder, StoreError> {
        let (tx, rx) = sync_channel::<Msg>(BATCHES_IN_FLIGHT);
        let spawned = std::thread::Builder::new()
            .name("feedgraph-build".into())
            .spawn_scoped(scope, move || Builder::run(rx));
        let mut sink = match spawned {
            Ok(thread) => {
                // The thread holds the receiver: the send fails only if it panicked, which
                // joining it raises.
                drop(tx.send(Msg::Start(builder)));
                Sink::Channel(tx, thread)
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not start the build thread; building on one");
                Sink::Inline(builder)
            }
        };
        let scanned = store.for_each_record_head(&mut |org, r| {
            if reader.read(org, &r) {
                reader.flush(&mut sink);
            }
        });
        reader.flush(&mut sink);
        let built = sink.finish();
        scanned?;
        Ok(built)
    })?;
    let mut out = Vec::with_capacity(builder.orgs.len());
    for ((b, o), name) in builder.orgs.into_iter().zip(reader.orgs).zip(reader.names) {
        let mut graph = b.graph;
        graph.strings = o.strings;
        out.push(BuiltOrg { name, graph });
    }
    Ok(out)
}
