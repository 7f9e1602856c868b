//! The graph checkpoint: every org's graph written to one file at a clean stop, and read
//! back at start-up instead of scanning the store.
//!
//! The file (`graph.ckpt` in the data directory) holds a magic, a format version, a random
//! checkpoint id, then each org's graph as flat little-endian columns (the interner's text
//! and offsets, the petgraph nodes and edges, the feedback columns, the id arena, the
//! adapters, the typed lists, the counters, the subtree counts), and last a CRC-32 of
//! every byte before it. Loading is bulk copies into vectors of the right size; only the
//! hash maps (symbols, adapters by id) and the session groups are rebuilt, which is faster
//! than reading them.
//!
//! The file is only ever trusted when the store vouches for it: the writer records the
//! checkpoint id in the store after the file is durable, and the store hands that id out
//! once, at open, removing it durably before anything else can write (see
//! `SledStore::open`). A file whose id is not the vouched one, whose checksum or format
//! version does not match, or that is short, is not used: the caller scans the store.
//!
//! Edges are written in the order of their stable ids ([`super::EdgeData::id`]), which is
//! the order they were added: re-adding them in that order gives every node's adjacency
//! list the order it had (newest edge first), and the same petgraph indices when no edge
//! was ever removed. The session groups are rebuilt from the session column, as the
//! start-up scan builds them.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use petgraph::graph::{Graph, NodeIndex};
use rustc_hash::FxHashMap;

use super::columns::{Bits, FeedbackColumns};
use super::counts::{Counters, Counts, Day, DayCounters, DaySeries};
use super::ids::{self, FeedbackIds, Order};
use super::pages::{FamilyCounts, FamilyState};
use super::sparse::{Tail, U64Col};
use super::{AdapterNode, EdgeData, EdgeKind, Interner, NodeRef, OrgGraph, Sym};
use crate::model::{FeedbackType, LinkSource, ValidationStatus};
use crate::store::Lease;

/// The checkpoint's file name in the data directory.
pub const FILE_NAME: &str = crate::store::compact::GRAPH_CHECKPOINT_FILE;

/// The first bytes of a checkpoint file.
const MAGIC: [u8; 8] = *b"FGGRAPH\0";

/// The layout this build writes and reads. Bump it whenever the layout or the meaning of a
/// field changes: a file of another version is not read (the store is scanned instead).
pub const FORMAT_VERSION: u32 = 3;

/// Elements converted per chunk while reading or writing a column.
const CHUNK: usize = 16 * 1024;

/// Bytes of one edge record: source and target node, id, created_at, flags.
const EDGE_BYTES: usize = 4 + 4 + 4 + 8 + 1;

/// Buffer of the file reader and writer.
const IO_BUFFER: usize = 1 << 20;

/// Why a checkpoint could not be written or was not used.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// A file-system operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What we were doing.
        context: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file does not start with the checkpoint magic.
    #[error("not a graph checkpoint (bad magic)")]
    Magic,
    /// The file was written in another layout.
    #[error("format version {found}, this build reads version {FORMAT_VERSION}")]
    Version {
        /// The version in the file.
        found: u32,
    },
    /// The file is not the checkpoint the store vouches for.
    #[error("checkpoint {found:032x} is not the one the store vouches for ({expected:032x})")]
    OtherId {
        /// The id in the file.
        found: u128,
        /// The id the store holds.
        expected: u128,
    },
    /// The bytes do not match their checksum.
    #[error("checksum mismatch (the file is damaged)")]
    Checksum,
    /// The file is short or its contents do not fit together.
    #[error("malformed checkpoint: {0}")]
    Malformed(String),
    /// The graph does not fit the format's fixed-width fields.
    #[error("the graph does not fit the checkpoint format: {0}")]
    TooLarge(String),
}

/// What writing a checkpoint did.
#[derive(Debug, Clone, Copy)]
pub struct Written {
    /// The checkpoint's id (to be recorded in the store).
    pub id: u128,
    /// Size of the file.
    pub bytes: u64,
}

/// The checkpoint's path in `data_dir`.
pub fn path_in(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE_NAME)
}

fn malformed(what: impl Into<String>) -> CheckpointError {
    CheckpointError::Malformed(what.into())
}

/// A fixed-width little-endian value of a column.
trait Fixed: Sized + Copy {
    const SIZE: usize;
    fn put(self, out: &mut Vec<u8>);
    fn get(b: &[u8]) -> Self;
}

impl Fixed for u8 {
    const SIZE: usize = 1;
    fn put(self, out: &mut Vec<u8>) {
        out.push(self);
    }
    fn get(b: &[u8]) -> Self {
        b.first().copied().unwrap_or(0)
    }
}

impl Fixed for u32 {
    const SIZE: usize = 4;
    fn put(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
    fn get(b: &[u8]) -> Self {
        <[u8; 4]>::try_from(b).map_or(0, u32::from_le_bytes)
    }
}

impl Fixed for u64 {
    const SIZE: usize = 8;
    fn put(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
    fn get(b: &[u8]) -> Self {
        <[u8; 8]>::try_from(b).map_or(0, u64::from_le_bytes)
    }
}

/// The writing side: a buffered file and the running checksum.
struct Out {
    w: BufWriter<File>,
    crc: crc32fast::Hasher,
    bytes: u64,
    scratch: Vec<u8>,
}

impl Out {
    fn raw(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.crc.update(b);
        self.bytes += b.len() as u64;
        self.w.write_all(b)
    }

    fn u8(&mut self, v: u8) -> std::io::Result<()> {
        self.raw(&[v])
    }

    fn u32(&mut self, v: u32) -> std::io::Result<()> {
        self.raw(&v.to_le_bytes())
    }

    fn u64(&mut self, v: u64) -> std::io::Result<()> {
        self.raw(&v.to_le_bytes())
    }

    fn u128(&mut self, v: u128) -> std::io::Result<()> {
        self.raw(&v.to_le_bytes())
    }

    fn len(&mut self, n: usize) -> std::io::Result<()> {
        self.u64(n as u64)
    }

    fn bytes(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.len(b.len())?;
        self.raw(b)
    }

    /// A column: its length, then its values.
    fn col<T: Fixed>(&mut self, values: impl ExactSizeIterator<Item = T>) -> std::io::Result<()> {
        self.len(values.len())?;
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        for v in values {
            v.put(&mut buf);
            if buf.len() >= CHUNK * 8 {
                self.raw(&buf)?;
                buf.clear();
            }
        }
        let done = self.raw(&buf);
        self.scratch = buf;
        done
    }

    fn counts(&mut self, c: &Counts) -> std::io::Result<()> {
        for v in [
            c.total, c.positive, c.negative, c.pending, c.approved, c.rejected, c.flagged, c.used,
            c.scored,
        ] {
            self.u64(v)?;
        }
        self.raw(&c.score_sum.to_le_bytes())
    }

    fn series(&mut self, s: &DaySeries) -> std::io::Result<()> {
        let days = &s.days;
        self.col(
            days.iter()
                .flat_map(|d| [d.day, d.count, d.positive])
                .collect::<Vec<_>>()
                .into_iter(),
        )
    }
}

/// The reading side: a buffered file, the running checksum and the bytes left before the
/// trailing checksum (no length read from the file may claim more).
struct In {
    r: BufReader<File>,
    crc: crc32fast::Hasher,
    left: u64,
    scratch: Vec<u8>,
}

impl In {
    fn raw(&mut self, buf: &mut [u8]) -> Result<(), CheckpointError> {
        if buf.len() as u64 > self.left {
            return Err(malformed("the file ends early"));
        }
        self.r
            .read_exact(buf)
            .map_err(|source| CheckpointError::Io {
                context: "reading the graph checkpoint".into(),
                source,
            })?;
        self.crc.update(buf);
        self.left -= buf.len() as u64;
        Ok(())
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], CheckpointError> {
        let mut b = [0u8; N];
        self.raw(&mut b)?;
        Ok(b)
    }

    fn u8(&mut self) -> Result<u8, CheckpointError> {
        Ok(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, CheckpointError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, CheckpointError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn u128(&mut self) -> Result<u128, CheckpointError> {
        Ok(u128::from_le_bytes(self.array()?))
    }

    /// A count of elements of `size` bytes each, checked against what is left.
    fn len(&mut self, size: usize) -> Result<usize, CheckpointError> {
        let n = self.u64()?;
        if n.saturating_mul(size.max(1) as u64) > self.left {
            return Err(malformed(format!("a length of {n} runs past the end")));
        }
        usize::try_from(n).map_err(|_| malformed("a length does not fit in memory"))
    }

    fn bytes(&mut self) -> Result<Vec<u8>, CheckpointError> {
        let n = self.len(1)?;
        let mut v = vec![0u8; n];
        self.raw(&mut v)?;
        Ok(v)
    }

    fn string(&mut self) -> Result<String, CheckpointError> {
        String::from_utf8(self.bytes()?).map_err(|_| malformed("text that is not UTF-8"))
    }

    /// A column written by [`Out::col`], into a vector of exactly its length.
    fn col<T: Fixed>(&mut self) -> Result<Vec<T>, CheckpointError> {
        let n = self.len(T::SIZE)?;
        let mut v = Vec::with_capacity(n);
        let mut buf = std::mem::take(&mut self.scratch);
        while v.len() < n {
            let k = (n - v.len()).min(CHUNK);
            buf.resize(k * T::SIZE, 0);
            self.raw(&mut buf)?;
            v.extend(buf.chunks_exact(T::SIZE).map(T::get));
        }
        self.scratch = buf;
        Ok(v)
    }

    fn counts(&mut self) -> Result<Counts, CheckpointError> {
        Ok(Counts {
            total: self.u64()?,
            positive: self.u64()?,
            negative: self.u64()?,
            pending: self.u64()?,
            approved: self.u64()?,
            rejected: self.u64()?,
            flagged: self.u64()?,
            used: self.u64()?,
            scored: self.u64()?,
            score_sum: i128::from_le_bytes(self.array()?),
        })
    }

    fn series(&mut self) -> Result<DaySeries, CheckpointError> {
        let flat: Vec<u64> = self.col()?;
        if !flat.len().is_multiple_of(3) {
            return Err(malformed("a day series of uneven length"));
        }
        Ok(DaySeries {
            days: flat
                .chunks_exact(3)
                .map(|d| Day {
                    day: d[0],
                    count: d[1],
                    positive: d[2],
                })
                .collect(),
        })
    }
}

fn sym_u32(s: Option<Sym>) -> u32 {
    s.map_or(0, |s| s.0.get())
}

fn u32_sym(v: u32) -> Option<Sym> {
    NonZeroU32::new(v).map(Sym)
}

fn type_u8(t: FeedbackType) -> u8 {
    match t {
        FeedbackType::Positive => 0,
        FeedbackType::Negative => 1,
    }
}

fn u8_type(v: u8) -> Result<FeedbackType, CheckpointError> {
    match v {
        0 => Ok(FeedbackType::Positive),
        1 => Ok(FeedbackType::Negative),
        _ => Err(malformed(format!("feedback type {v}"))),
    }
}

fn status_u8(s: ValidationStatus) -> u8 {
    match s {
        ValidationStatus::Approved => 0,
        ValidationStatus::Pending => 1,
        ValidationStatus::Flagged => 2,
        ValidationStatus::Rejected => 3,
    }
}

fn u8_status(v: u8) -> Result<ValidationStatus, CheckpointError> {
    match v {
        0 => Ok(ValidationStatus::Approved),
        1 => Ok(ValidationStatus::Pending),
        2 => Ok(ValidationStatus::Flagged),
        3 => Ok(ValidationStatus::Rejected),
        _ => Err(malformed(format!("validation status {v}"))),
    }
}

fn source_u8(s: LinkSource) -> u8 {
    match s {
        LinkSource::Auto => 0,
        LinkSource::Manual => 1,
    }
}

fn u8_source(v: u8) -> LinkSource {
    if v & 1 == 1 {
        LinkSource::Manual
    } else {
        LinkSource::Auto
    }
}

/// A node as one number: the row shifted left, the low bit set for an adapter.
fn node_u32(n: NodeRef) -> Result<u32, CheckpointError> {
    let (row, tag) = match n {
        NodeRef::Feedback(r) => (r, 0),
        NodeRef::Adapter(r) => (r, 1),
    };
    if row >= 1 << 31 {
        return Err(CheckpointError::TooLarge(format!("row {row}")));
    }
    Ok(row << 1 | tag)
}

fn u32_node(v: u32) -> NodeRef {
    if v & 1 == 1 {
        NodeRef::Adapter(v >> 1)
    } else {
        NodeRef::Feedback(v >> 1)
    }
}

/// Edge flags: bit 0 DERIVED_FROM, bit 1 manual, bit 2 has metadata.
fn edge_flags(e: &EdgeData) -> u8 {
    u8::from(e.kind == EdgeKind::DerivedFrom)
        | source_u8(e.source) << 1
        | u8::from(e.has_metadata) << 2
}

/// Lists of rows (one per adapter) as lengths and one flat column.
fn write_lists(out: &mut Out, lists: &[Vec<u32>]) -> Result<(), CheckpointError> {
    let lens = lists
        .iter()
        .map(|l| u32::try_from(l.len()))
        .collect::<Result<Vec<u32>, _>>()
        .map_err(|_| CheckpointError::TooLarge("a list of rows".into()))?;
    out.col(lens.into_iter()).map_err(write_err)?;
    out.col(
        lists
            .iter()
            .flatten()
            .copied()
            .collect::<Vec<_>>()
            .into_iter(),
    )
    .map_err(write_err)
}

fn read_lists(i: &mut In, bound: usize) -> Result<Vec<Vec<u32>>, CheckpointError> {
    let lens: Vec<u32> = i.col()?;
    let flat: Vec<u32> = i.col()?;
    if lens.iter().map(|&l| l as usize).sum::<usize>() != flat.len() {
        return Err(malformed("list lengths do not add up"));
    }
    if flat.iter().any(|&r| r as usize >= bound) {
        return Err(malformed("a list names a row past the end"));
    }
    let mut at = 0usize;
    Ok(lens
        .iter()
        .map(|&l| {
            let l = l as usize;
            let v = flat
                .get(at..at + l)
                .map(<[u32]>::to_vec)
                .unwrap_or_default();
            at += l;
            v
        })
        .collect())
}

fn write_err(source: std::io::Error) -> CheckpointError {
    CheckpointError::Io {
        context: "writing the graph checkpoint".into(),
        source,
    }
}

/// Per symbol (index = symbol number - 1): 1 if anything in the graph refers to it, else
/// 0. These are every place a graph keeps a [`Sym`]: the feedback's symbol columns, the
/// adapters' id, version and base model, and the per-model counters and day series.
fn used_symbols(g: &OrgGraph) -> Vec<u32> {
    let mut used = vec![0u32; g.strings.len()];
    let mut mark = |s: Option<Sym>| {
        if let Some(u) = s.and_then(|s| used.get_mut(s.0.get() as usize - 1)) {
            *u = 1;
        }
    };
    let f = &g.feedback;
    for col in [
        &f.model_version,
        &f.adapter_id,
        &f.adapter_version,
        &f.user_id,
        &f.session_id,
        &f.interaction_id,
    ] {
        col.stored().iter().for_each(|&s| mark(s));
    }
    for a in &g.adapters {
        mark(Some(a.id));
        mark(a.version);
        mark(a.base_model);
    }
    g.counters.models.keys().for_each(|&m| mark(Some(m)));
    g.counters.days.models.keys().for_each(|&m| mark(Some(m)));
    used
}

/// Writes one org's graph.
fn write_org(out: &mut Out, name: &str, g: &OrgGraph) -> Result<(), CheckpointError> {
    let io = write_err;
    out.bytes(name.as_bytes()).map_err(io)?;
    // The interner: each string's end in one text. A string nothing refers to any more
    // (a user, session or interaction id of an item since erased) is written empty and
    // marked unused, so that erased text never reaches the file.
    let used = used_symbols(g);
    let mut text = String::new();
    let mut ends = Vec::with_capacity(g.strings.len());
    for (s, &u) in g.strings.iter().zip(&used) {
        if u != 0 {
            text.push_str(s);
        }
        ends.push(
            u32::try_from(text.len())
                .map_err(|_| CheckpointError::TooLarge("interned text".into()))?,
        );
    }
    out.col(ends.into_iter()).map_err(io)?;
    out.bytes(text.as_bytes()).map_err(io)?;
    out.col(used.into_iter()).map_err(io)?;
    drop(text);
    // Nodes, then edges in the order they were added (their ids).
    let nodes = g
        .graph
        .node_weights()
        .map(|&n| node_u32(n))
        .collect::<Result<Vec<u32>, _>>()?;
    out.col(nodes.into_iter()).map_err(io)?;
    let mut edges: Vec<(u32, u32, EdgeData)> = g
        .graph
        .raw_edges()
        .iter()
        .map(|e| {
            (
                e.source().index() as u32,
                e.target().index() as u32,
                e.weight,
            )
        })
        .collect();
    edges.sort_unstable_by_key(|e| e.2.id);
    // One record per edge, so that loading adds them as it reads, with no column of each.
    out.len(edges.len()).map_err(io)?;
    let mut buf = Vec::with_capacity(CHUNK * EDGE_BYTES);
    for chunk in edges.chunks(CHUNK) {
        buf.clear();
        for (s, t, e) in chunk {
            buf.extend_from_slice(&s.to_le_bytes());
            buf.extend_from_slice(&t.to_le_bytes());
            buf.extend_from_slice(&e.id.to_le_bytes());
            buf.extend_from_slice(&e.created_at.to_le_bytes());
            buf.push(edge_flags(e));
        }
        out.raw(&buf).map_err(io)?;
    }
    drop(edges);
    out.u32(g.next_edge_id).map_err(io)?;
    write_columns(out, &g.feedback)?;
    // Adapters, as columns.
    let a = &g.adapters;
    out.col(a.iter().map(|a| a.node.index() as u32))
        .map_err(io)?;
    out.col(a.iter().map(|a| a.id.0.get())).map_err(io)?;
    out.col(a.iter().map(|a| sym_u32(a.version))).map_err(io)?;
    out.col(a.iter().map(|a| sym_u32(a.base_model)))
        .map_err(io)?;
    out.col(
        a.iter()
            .map(|a| a.parent.map_or(0, |p| p.saturating_add(1))),
    )
    .map_err(io)?;
    out.col(a.iter().map(|a| a.created_at)).map_err(io)?;
    out.col(a.iter().map(|a| source_u8(a.source))).map_err(io)?;
    out.col(a.iter().map(|a| a.record_version)).map_err(io)?;
    write_lists(out, &g.feedback_in)?;
    write_lists(out, &g.children_in)?;
    write_lists(out, &g.linked_by_id)?;
    // Counters.
    let c = &g.counters;
    out.counts(&c.org).map_err(io)?;
    out.len(c.adapters.len()).map_err(io)?;
    for x in &c.adapters {
        out.counts(x).map_err(io)?;
    }
    out.len(c.models.len()).map_err(io)?;
    for (m, x) in &c.models {
        out.u32(m.0.get()).map_err(io)?;
        out.counts(x).map_err(io)?;
    }
    out.series(&c.days.org).map_err(io)?;
    out.len(c.days.adapters.len()).map_err(io)?;
    for s in &c.days.adapters {
        out.series(s).map_err(io)?;
    }
    out.len(c.days.models.len()).map_err(io)?;
    for (m, s) in &c.days.models {
        out.u32(m.0.get()).map_err(io)?;
        out.series(s).map_err(io)?;
    }
    // Subtree counts.
    out.col(g.family.counts.iter().copied()).map_err(io)?;
    out.u8(match g.family.state {
        FamilyState::Fresh => 0,
        FamilyState::Stale => 1,
        FamilyState::Off => 2,
    })
    .map_err(io)
}

/// Writes the feedback columns and the id arena.
fn write_columns(out: &mut Out, f: &FeedbackColumns) -> Result<(), CheckpointError> {
    let io = write_err;
    out.col(f.node.iter().map(|n| n.index() as u32))
        .map_err(io)?;
    let ids = &f.ids;
    out.bytes(ids.text.as_bytes()).map_err(io)?;
    out.col(ids.ends.iter().copied()).map_err(io)?;
    out.col(ids.bases.iter().copied()).map_err(io)?;
    out.u64(ids::BLOCK as u64).map_err(io)?;
    out.len(ids.long.len()).map_err(io)?;
    for (r, id) in &ids.long {
        out.u32(*r).map_err(io)?;
        out.bytes(id.as_bytes()).map_err(io)?;
    }
    match &ids.order {
        Order::Prefix(n) => {
            out.u8(0).map_err(io)?;
            out.u32(*n).map_err(io)?;
        }
        Order::Rows(rows) => {
            out.u8(1).map_err(io)?;
            out.col(rows.iter().copied()).map_err(io)?;
        }
    }
    out.len(ids.late.len()).map_err(io)?;
    for (id, r) in &ids.late {
        out.bytes(id.as_bytes()).map_err(io)?;
        out.u32(*r).map_err(io)?;
    }
    out.col(f.feedback_type.iter().map(|&t| type_u8(t)))
        .map_err(io)?;
    out.col(f.status.iter().map(|&s| status_u8(s)))
        .map_err(io)?;
    for bits in [&f.used, &f.has_correction, &f.has_comment, &f.has_score] {
        out.col(bits.words.iter().copied()).map_err(io)?;
    }
    out.col(f.created_at.iter().copied()).map_err(io)?;
    for col in [&f.training_batch_id, &f.updated_after, &f.version] {
        out.col(col.small.stored().iter().copied()).map_err(io)?;
        out.len(col.big.len()).map_err(io)?;
        for (r, v) in &col.big {
            out.u32(*r).map_err(io)?;
            out.u64(*v).map_err(io)?;
        }
    }
    for col in [
        &f.model_version,
        &f.adapter_id,
        &f.adapter_version,
        &f.user_id,
        &f.session_id,
        &f.interaction_id,
    ] {
        out.col(col.stored().iter().map(|&s| sym_u32(s)))
            .map_err(io)?;
    }
    out.col(f.score.stored().iter().copied()).map_err(io)?;
    out.len(f.leases.len()).map_err(io)?;
    for (r, l) in &f.leases {
        out.u32(*r).map_err(io)?;
        out.u64(l.batch_id).map_err(io)?;
        out.u64(l.expires_at).map_err(io)?;
    }
    Ok(())
}

/// Reads the feedback columns and the id arena; `nodes` are the graph's nodes.
fn read_columns(i: &mut In, nodes: &[NodeRef]) -> Result<FeedbackColumns, CheckpointError> {
    let node: Vec<u32> = i.col()?;
    let n = node.len();
    for (r, &x) in node.iter().enumerate() {
        if nodes.get(x as usize) != Some(&NodeRef::Feedback(r as u32)) {
            return Err(malformed(format!("feedback row {r} and its node disagree")));
        }
    }
    let text = i.string()?;
    let ends: Vec<u32> = i.col()?;
    let bases: Vec<u64> = i.col()?;
    if i.u64()? != ids::BLOCK as u64 {
        return Err(malformed("written with another id block size"));
    }
    if ends.len() != n || bases.len() != n.div_ceil(ids::BLOCK) {
        return Err(malformed("the id column does not match the rows"));
    }
    let mut long = FxHashMap::default();
    for _ in 0..i.len(5)? {
        let r = i.u32()?;
        long.insert(r, i.string()?.into_boxed_str());
    }
    let order = match i.u8()? {
        0 => {
            let p = i.u32()?;
            if p as usize > n {
                return Err(malformed("the id order runs past the rows"));
            }
            Order::Prefix(p)
        }
        1 => {
            let rows: Vec<u32> = i.col()?;
            if rows.iter().any(|&r| r as usize >= n) {
                return Err(malformed("the id order names a row past the end"));
            }
            Order::Rows(rows)
        }
        t => return Err(malformed(format!("id order tag {t}"))),
    };
    let mut late = std::collections::BTreeMap::new();
    for _ in 0..i.len(12)? {
        let id = i.string()?.into_boxed_str();
        let r = i.u32()?;
        if r as usize >= n {
            return Err(malformed("a late id names a row past the end"));
        }
        late.insert(id, r);
    }
    let ids = FeedbackIds {
        text,
        ends,
        bases,
        long,
        order,
        late,
    };
    let feedback_type = i
        .col::<u8>()?
        .into_iter()
        .map(u8_type)
        .collect::<Result<Vec<_>, _>>()?;
    let status = i
        .col::<u8>()?
        .into_iter()
        .map(u8_status)
        .collect::<Result<Vec<_>, _>>()?;
    let mut bits = || -> Result<Bits, CheckpointError> {
        let words: Vec<u64> = i.col()?;
        if words.len() > n.div_ceil(64) {
            return Err(malformed("a bit column longer than the rows"));
        }
        Ok(Bits { words })
    };
    let (used, has_correction, has_comment, has_score) = (bits()?, bits()?, bits()?, bits()?);
    let created_at: Vec<u64> = i.col()?;
    if created_at.len() != n {
        return Err(malformed("a column of another length than the rows"));
    }
    let mut narrow = || -> Result<U64Col, CheckpointError> {
        let small: Vec<u32> = i.col()?;
        if small.len() > n {
            return Err(malformed("a column longer than the rows"));
        }
        let mut big = FxHashMap::default();
        for _ in 0..i.len(12)? {
            let r = i.u32()?;
            big.insert(r, i.u64()?);
        }
        let col = U64Col {
            small: Tail { values: small },
            big,
        };
        if !col.consistent() {
            return Err(malformed("a narrow column's wide values do not match it"));
        }
        Ok(col)
    };
    let (training_batch_id, updated_after, version) = (narrow()?, narrow()?, narrow()?);
    let mut syms = || -> Result<Tail<Option<Sym>>, CheckpointError> {
        let v: Vec<u32> = i.col()?;
        if v.len() > n {
            return Err(malformed("a symbol column longer than the rows"));
        }
        Ok(Tail {
            values: v.into_iter().map(u32_sym).collect(),
        })
    };
    let (model_version, adapter_id, adapter_version) = (syms()?, syms()?, syms()?);
    let (user_id, session_id, interaction_id) = (syms()?, syms()?, syms()?);
    let score = Tail {
        values: i.col::<u64>()?,
    };
    if feedback_type.len() != n || status.len() != n || score.values.len() > n {
        return Err(malformed("a column of another length than the rows"));
    }
    let mut leases = FxHashMap::default();
    for _ in 0..i.len(20)? {
        let r = i.u32()?;
        let batch_id = i.u64()?;
        let expires_at = i.u64()?;
        leases.insert(
            r,
            Lease {
                batch_id,
                expires_at,
            },
        );
    }
    Ok(FeedbackColumns {
        node: node
            .into_iter()
            .map(|x| NodeIndex::new(x as usize))
            .collect(),
        ids,
        feedback_type,
        status,
        used,
        has_correction,
        has_comment,
        training_batch_id,
        created_at,
        updated_after,
        version,
        model_version,
        adapter_id,
        adapter_version,
        user_id,
        session_id,
        interaction_id,
        score,
        has_score,
        leases,
    })
}

/// Reads a map keyed by model symbol, as `Out` writes the per-model counters and day
/// series: the number of entries (each at least `min_bytes` in the file), then each
/// model's symbol and its value, read by `value`.
fn read_per_model<T>(
    i: &mut In,
    min_bytes: usize,
    value: impl Fn(&mut In) -> Result<T, CheckpointError>,
) -> Result<FxHashMap<Sym, T>, CheckpointError> {
    let n = i.len(min_bytes)?;
    let mut map = FxHashMap::with_capacity_and_hasher(n, Default::default());
    for _ in 0..n {
        let m = u32_sym(i.u32()?).ok_or_else(|| malformed("a model without a symbol"))?;
        map.insert(m, value(i)?);
    }
    Ok(map)
}

/// Reads one org's graph.
fn read_org(i: &mut In) -> Result<(String, OrgGraph), CheckpointError> {
    let name = i.string()?;
    // The interner.
    let ends: Vec<u32> = i.col()?;
    let text = i.string()?;
    let used: Vec<u32> = i.col()?;
    if used.len() != ends.len() {
        return Err(malformed(
            "the interner's used marks do not match its strings",
        ));
    }
    let mut strings = Interner::with_capacity(ends.len(), text.len());
    let mut start = 0usize;
    for (k, &end) in ends.iter().enumerate() {
        let s = text
            .get(start..end as usize)
            .ok_or_else(|| malformed("an interned string out of bounds"))?;
        start = end as usize;
        // An unused symbol keeps its number, blank, and is found by no lookup.
        let used = used.get(k).is_some_and(|&u| u != 0);
        strings
            .push(s, used)
            .ok_or_else(|| malformed("an interned string written twice"))?;
    }
    if u32::try_from(ends.len()).is_err() {
        return Err(malformed("too many symbols"));
    }
    drop(text);
    let symbols = strings.len();
    let sym_ok = |s: Option<Sym>| s.is_none_or(|s| s.0.get() as usize <= symbols);
    // Nodes and edges.
    let nodes: Vec<NodeRef> = i.col::<u32>()?.into_iter().map(u32_node).collect();
    let m = i.len(EDGE_BYTES)?;
    let mut graph: Graph<NodeRef, EdgeData, petgraph::Directed, u32> =
        Graph::with_capacity(nodes.len(), m);
    for &n in &nodes {
        graph.add_node(n);
    }
    let mut buf = std::mem::take(&mut i.scratch);
    let mut added = 0usize;
    while added < m {
        let k = (m - added).min(CHUNK);
        buf.resize(k * EDGE_BYTES, 0);
        i.raw(&mut buf)?;
        for e in buf.chunks_exact(EDGE_BYTES) {
            let (s, t) = (u32::get(&e[0..4]) as usize, u32::get(&e[4..8]) as usize);
            if s >= nodes.len() || t >= nodes.len() {
                return Err(malformed("an edge names a node past the end"));
            }
            let f = e[20];
            graph.add_edge(
                NodeIndex::new(s),
                NodeIndex::new(t),
                EdgeData {
                    id: u32::get(&e[8..12]),
                    kind: if f & 1 == 1 {
                        EdgeKind::DerivedFrom
                    } else {
                        EdgeKind::FeedbackFor
                    },
                    created_at: u64::get(&e[12..20]),
                    source: u8_source(f >> 1),
                    has_metadata: f & 4 != 0,
                },
            );
        }
        added += k;
    }
    i.scratch = buf;
    let next_edge_id = i.u32()?;
    let feedback = read_columns(i, &nodes)?;
    let rows = feedback.len();
    for col in [
        &feedback.model_version,
        &feedback.adapter_id,
        &feedback.adapter_version,
        &feedback.user_id,
        &feedback.session_id,
        &feedback.interaction_id,
    ] {
        if !col.stored().iter().all(|&s| sym_ok(s)) {
            return Err(malformed("a symbol past the interner's end"));
        }
    }
    // Adapters.
    let node: Vec<u32> = i.col()?;
    let id: Vec<u32> = i.col()?;
    let version: Vec<u32> = i.col()?;
    let base_model: Vec<u32> = i.col()?;
    let parent: Vec<u32> = i.col()?;
    let created_at: Vec<u64> = i.col()?;
    let source: Vec<u8> = i.col()?;
    let record_version: Vec<u64> = i.col()?;
    let na = node.len();
    if [id.len(), version.len(), base_model.len(), parent.len()]
        .iter()
        .chain([created_at.len(), source.len(), record_version.len()].iter())
        .any(|&l| l != na)
    {
        return Err(malformed("adapter columns of different lengths"));
    }
    let mut adapters = Vec::with_capacity(na);
    for (r, &at) in node.iter().enumerate() {
        if nodes.get(at as usize) != Some(&NodeRef::Adapter(r as u32)) {
            return Err(malformed(format!("adapter row {r} and its node disagree")));
        }
        let a = AdapterNode {
            node: NodeIndex::new(at as usize),
            id: u32_sym(id[r]).ok_or_else(|| malformed("an adapter without an id"))?,
            version: u32_sym(version[r]),
            base_model: u32_sym(base_model[r]),
            parent: parent[r].checked_sub(1),
            created_at: created_at[r],
            source: u8_source(source[r]),
            record_version: record_version[r],
        };
        if !(sym_ok(Some(a.id)) && sym_ok(a.version) && sym_ok(a.base_model))
            || a.parent.is_some_and(|p| p as usize >= na)
        {
            return Err(malformed(format!(
                "adapter row {r} names a row or symbol past the end"
            )));
        }
        adapters.push(a);
    }
    // Each row and adapter names its own node, so with this every node is one of them.
    if nodes.len() != rows + na {
        return Err(malformed("nodes that are neither a row nor an adapter"));
    }
    drop(nodes);
    let adapter_by_id: FxHashMap<Sym, u32> = adapters
        .iter()
        .enumerate()
        .map(|(r, a)| (a.id, r as u32))
        .collect();
    let feedback_in = read_lists(i, rows)?;
    let children_in = read_lists(i, na)?;
    let linked_by_id = read_lists(i, rows)?;
    if feedback_in.len() != na || children_in.len() != na || linked_by_id.len() != na {
        return Err(malformed("typed lists that do not match the adapters"));
    }
    // Counters.
    let org = i.counts()?;
    if i.len(88)? != na {
        return Err(malformed("adapter counts that do not match the adapters"));
    }
    let mut counter_adapters = Vec::with_capacity(na);
    for _ in 0..na {
        counter_adapters.push(i.counts()?);
    }
    let models = read_per_model(i, 92, In::counts)?;
    let day_org = i.series()?;
    let n_day_adapters = i.len(8)?;
    if n_day_adapters > na {
        return Err(malformed("more day series than adapters"));
    }
    let mut day_adapters = Vec::with_capacity(n_day_adapters);
    for _ in 0..n_day_adapters {
        day_adapters.push(i.series()?);
    }
    let day_models = read_per_model(i, 12, In::series)?;
    let family_counts: Vec<u64> = i.col()?;
    if family_counts.len() > na {
        return Err(malformed("more subtree counts than adapters"));
    }
    let state = match i.u8()? {
        0 => FamilyState::Fresh,
        1 => FamilyState::Stale,
        2 => FamilyState::Off,
        s => return Err(malformed(format!("subtree count state {s}"))),
    };
    let mut g = OrgGraph {
        graph,
        strings,
        feedback,
        adapters,
        adapter_by_id,
        sessions: Default::default(),
        feedback_in,
        children_in,
        linked_by_id,
        counters: Counters {
            org,
            adapters: counter_adapters,
            models,
            days: DayCounters {
                org: day_org,
                adapters: day_adapters,
                models: day_models,
            },
        },
        next_edge_id,
        family: FamilyCounts {
            counts: family_counts,
            state,
        },
    };
    // As the start-up scan does: group every row by session at once.
    g.sessions.rebuild(&g.feedback, g.strings.len());
    Ok((name, g))
}

/// Writes the header, every org and the checksum; returns the file (not yet synced) and
/// its size.
fn write_body(
    mut out: Out,
    id: u128,
    orgs: &[(String, Arc<OrgGraph>)],
) -> Result<(File, u64), CheckpointError> {
    out.raw(&MAGIC).map_err(write_err)?;
    out.u32(FORMAT_VERSION).map_err(write_err)?;
    out.u128(id).map_err(write_err)?;
    out.len(orgs.len()).map_err(write_err)?;
    for (name, g) in orgs {
        write_org(&mut out, name, g)?;
    }
    let crc = out.crc.clone().finalize();
    out.w.write_all(&crc.to_le_bytes()).map_err(write_err)?;
    let file = out.w.into_inner().map_err(|e| write_err(e.into_error()))?;
    Ok((file, out.bytes + 4))
}

/// Writes every org's graph to the checkpoint file in `data_dir` under a new random id:
/// to a temporary name, synced, renamed over the old file, and the directory synced. The
/// caller records the returned id in the store once this returns.
pub fn write(
    data_dir: &Path,
    orgs: &[(String, Arc<OrgGraph>)],
) -> Result<Written, CheckpointError> {
    let path = path_in(data_dir);
    let tmp = data_dir.join(format!("{FILE_NAME}.tmp"));
    let io = |context: String| move |source| CheckpointError::Io { context, source };
    let file = File::create(&tmp).map_err(io(format!("creating {}", tmp.display())))?;
    let id: u128 = rand::random();
    let out = Out {
        w: BufWriter::with_capacity(IO_BUFFER, file),
        crc: crc32fast::Hasher::new(),
        bytes: 0,
        scratch: Vec::with_capacity(CHUNK * 8),
    };
    let bytes = match write_body(out, id, orgs) {
        Ok((file, bytes)) => {
            file.sync_all()
                .map_err(io(format!("syncing {}", tmp.display())))?;
            bytes
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    std::fs::rename(&tmp, &path).map_err(io(format!("renaming {}", tmp.display())))?;
    File::open(data_dir)
        .and_then(|d| d.sync_all())
        .map_err(io(format!("syncing directory {}", data_dir.display())))?;
    Ok(Written { id, bytes })
}

/// Reads the checkpoint file of `data_dir` if it is the one with id `expected` (the one
/// the store vouches for), whole and of this build's format; returns every org's graph.
pub fn read(data_dir: &Path, expected: u128) -> Result<Vec<(String, OrgGraph)>, CheckpointError> {
    let path = path_in(data_dir);
    let io = |context: String| move |source| CheckpointError::Io { context, source };
    let file = File::open(&path).map_err(io(format!("opening {}", path.display())))?;
    let size = file
        .metadata()
        .map_err(io(format!("reading the size of {}", path.display())))?
        .len();
    let mut i = In {
        r: BufReader::with_capacity(IO_BUFFER, file),
        crc: crc32fast::Hasher::new(),
        left: size
            .checked_sub(4)
            .ok_or_else(|| malformed("shorter than its checksum"))?,
        scratch: Vec::with_capacity(CHUNK * 8),
    };
    if i.array::<8>().map_err(|_| CheckpointError::Magic)? != MAGIC {
        return Err(CheckpointError::Magic);
    }
    let found = i.u32()?;
    if found != FORMAT_VERSION {
        return Err(CheckpointError::Version { found });
    }
    let id = i.u128()?;
    if id != expected {
        return Err(CheckpointError::OtherId {
            found: id,
            expected,
        });
    }
    let n = i.len(8)?;
    let mut orgs = Vec::with_capacity(n);
    for _ in 0..n {
        orgs.push(read_org(&mut i)?);
    }
    if i.left != 0 {
        return Err(malformed(format!("{} bytes after the last org", i.left)));
    }
    let computed = i.crc.clone().finalize();
    let mut trailer = [0u8; 4];
    i.r.read_exact(&mut trailer)
        .map_err(io(format!("reading {}", path.display())))?;
    if u32::from_le_bytes(trailer) != computed {
        return Err(CheckpointError::Checksum);
    }
    Ok(orgs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Adapter, Feedback, FeedbackLink, Metadata};

    fn adapter(id: &str, parent: Option<&str>, record_version: u64) -> Adapter {
        Adapter {
            id: id.into(),
            org_id: "t".into(),
            version: Some("v1".into()),
            base_model: None,
            derived_from: parent.map(str::to_owned),
            metadata: Metadata::default(),
            created_at: record_version,
            source: LinkSource::Manual,
            record_version,
        }
    }

    /// A graph with lineage, a re-parenting (an edge removed), links, sessions, leases and
    /// ids out of order.
    fn sample() -> OrgGraph {
        let mut g = OrgGraph::default();
        for (id, parent) in [("root", None), ("a", Some("root")), ("b", Some("root"))] {
            g.upsert_adapter(&adapter(id, parent, 1));
        }
        for i in 0..40 {
            // Every fifth id sorts before all the others.
            let id = if i % 5 == 0 {
                format!("a{i:03}")
            } else {
                format!("f{i:03}")
            };
            let mut f = Feedback::sample(&id, "t");
            f.session_id = Some(format!("s{}", i % 7));
            f.model_version = Some(["m1", "m2"][i % 2].into());
            f.score = (i % 3 == 0).then_some(i as f64 / 3.0);
            // Values the narrow and tail columns keep beside their 4-byte slots or leave
            // out: past 32 bits, a change before the creation, a negative zero score, a
            // property only some late rows have.
            f.version = [1, 3, u64::from(u32::MAX), u64::MAX][i % 4];
            f.training_batch_id = [0, 0, 9, 1 << 40][i % 4];
            f.updated_at = match i % 5 {
                0 => f.created_at,
                1 => f.created_at + 5,
                2 => f.created_at.wrapping_sub(7),
                _ => f.created_at + (1 << 36),
            };
            if i == 38 {
                f.score = Some(-0.0);
            }
            f.interaction_id = (i > 30 && i % 2 == 0).then(|| format!("x{i}"));
            f.adapter_version = (i % 11 == 3).then(|| "v2".into());
            let lease = (i % 4 == 0).then_some(Lease {
                batch_id: 7,
                expires_at: 1_000 + i as u64,
            });
            g.upsert_feedback_leased(&f, lease);
            for a in ["a", "b", "root"].iter().take(i % 3 + 1) {
                g.add_link(&FeedbackLink {
                    feedback_id: id.clone(),
                    adapter_id: (*a).into(),
                    created_at: i as u64,
                    source: LinkSource::Auto,
                    metadata: Metadata::default(),
                });
            }
        }
        g.upsert_adapter(&adapter("a", Some("b"), 2));
        g.family_refresh();
        g
    }

    fn written(dir: &Path) -> u128 {
        let orgs = vec![
            ("t".to_owned(), Arc::new(sample())),
            ("empty".to_owned(), Arc::new(OrgGraph::default())),
        ];
        write(dir, &orgs).unwrap().id
    }

    #[test]
    fn a_graph_reads_back_as_it_was_written() {
        let dir = tempfile::tempdir().unwrap();
        let id = written(dir.path());
        let orgs = read(dir.path(), id).unwrap();
        assert_eq!(orgs.len(), 2);
        let (name, g) = &orgs[0];
        assert_eq!(name, "t");
        let want = sample();
        assert_eq!(g.canonical(), want.canonical());
        let (days, want_days) = (&g.counters().days, &want.counters().days);
        assert_eq!(days.org, want_days.org);
        assert_eq!(days.adapters, want_days.adapters);
        assert_eq!(days.models, want_days.models);
        assert_eq!(g.counters().models, want.counters().models);
        assert_eq!(g.counters().adapters, want.counters().adapters);
        for r in 0..want.feedback().len() as u32 {
            assert_eq!(g.feedback().get(r), want.feedback().get(r), "row {r}");
            let bits = |g: &OrgGraph| g.feedback().score(r).map(f64::to_bits);
            assert_eq!(bits(g), bits(&want), "score bits of row {r}");
        }
        assert_eq!(g.family.counts, want.family.counts);
        let newest: Vec<u32> = g.feedback_newest_first(None).collect();
        assert_eq!(newest, want.feedback_newest_first(None).collect::<Vec<_>>());
        for r in 0..want.adapters().len() as u32 {
            assert_eq!(g.feedback_in(r), want.feedback_in(r));
            assert_eq!(g.linked_by_id(r), want.linked_by_id(r));
            assert_eq!(g.child_rows(r), want.child_rows(r));
            let edges = |g: &OrgGraph| {
                g.edges(NodeRef::Adapter(r), petgraph::Direction::Incoming)
                    .map(|e| (g.edge(e.id).map(|d| d.id), e.other))
                    .collect::<Vec<_>>()
            };
            assert_eq!(edges(g), edges(&want), "adjacency order of adapter {r}");
        }
        for s in 0..7 {
            let mut rows: Vec<u32> = g.session_rows(&format!("s{s}")).collect();
            let mut want_rows: Vec<u32> = want.session_rows(&format!("s{s}")).collect();
            rows.sort_unstable();
            want_rows.sort_unstable();
            assert_eq!(rows, want_rows);
        }
        assert_eq!(orgs[1].1.canonical(), OrgGraph::default().canonical());
        // A later write gets the next edge id, as it would have.
        assert_eq!(g.next_edge_id, want.next_edge_id);
    }

    #[test]
    fn any_damage_is_an_error_never_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let id = written(dir.path());
        let path = path_in(dir.path());
        let good = std::fs::read(&path).unwrap();
        assert!(matches!(
            read(dir.path(), id ^ 1),
            Err(CheckpointError::OtherId { .. })
        ));
        for len in 0..good.len() {
            std::fs::write(&path, &good[..len]).unwrap();
            assert!(read(dir.path(), id).is_err(), "cut at {len}");
        }
        for at in (0..good.len()).step_by(3) {
            let mut bad = good.clone();
            bad[at] ^= 0x41;
            std::fs::write(&path, &bad).unwrap();
            assert!(read(dir.path(), id).is_err(), "byte {at} flipped");
        }
        let mut old = good.clone();
        old[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
        std::fs::write(&path, &old).unwrap();
        assert!(matches!(
            read(dir.path(), id),
            Err(CheckpointError::Version { .. })
        ));
        std::fs::write(&path, &good).unwrap();
        assert!(read(dir.path(), id).is_ok());
    }
}
