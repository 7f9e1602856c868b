//! Result rows in a compact, column-by-column form.
//!
//! A query can return millions of rows. Building each as a `Vec<serde_json::Value>` costs a
//! vector and a string allocation per row and cell; [`Rows`] instead keeps each column's
//! cells in one vector of 16-byte [`Cell`]s and every string in one text buffer, so a row
//! costs a push per column and short copies. A string borrowed from the graph that repeats
//! in a column (an adapter id over many feedback rows) is stored once. Nodes and
//! relationships are JSON values built once per query and shared by every cell that returns
//! them (a lineage path repeats the same adapters in row after row; a streamed query keeps
//! them for one batch); paths and lists are lists of cells; maps stay JSON values.
//!
//! A node's id (the `id` property of a Feedback or Adapter node) is not copied: the rows
//! keep the graph snapshot they were built from (snapshots are immutable and shared), and
//! the id is read from it only when the rows are serialized or read. A column whose cells
//! are ids of one kind of node keeps just the nodes' row numbers (4 bytes a row; see
//! `Col`), other ids are [`Cell::Id`] cells naming the node. A result of a million
//! feedback ids then costs four megabytes and no text, and the writers read a column's
//! ids in row order: [`Rows::write_json_rows`] writes one batch of a streamed result
//! (strings that need no escape, every id, go out without serde_json's escaping loop),
//! and the Arrow encoder copies an id column straight into its string array
//! (`Rows::id_column`), other cells through `Rows::scalar`. Both read a batch's ids in a
//! first pass of their own (each id of a big result is a cache miss; a loop that only
//! reads them overlaps the misses), and an adapter-id column becomes an Arrow dictionary.
//!
//! [`Rows`] serializes to exactly the JSON of the rows as arrays of JSON values, and
//! [`Rows::to_json`] gives those values.

use std::fmt;
use std::sync::Arc;

use serde::ser::{Serialize, SerializeSeq, Serializer};

use crate::graph::{NodeRef, OrgGraph};

/// One result cell.
#[derive(Debug, Clone)]
pub(crate) enum Cell {
    Null,
    Bool(bool),
    Int(i64),
    /// Always finite (NaN and infinities are stored as `Null`, as JSON has no spelling).
    Float(f64),
    /// `text[start..start + len]`.
    Str {
        len: u32,
        start: usize,
    },
    /// A list (a path is the list of its nodes and relationships).
    List(Box<[Cell]>),
    /// A value several cells share: a node or relationship, built once per query.
    Shared(Arc<serde_json::Value>),
    /// Anything else, or a string too long for `len`.
    Json(Box<serde_json::Value>),
    /// The id of a node of the rows' graph (see [`Rows::push_node_id`]), read from the
    /// graph when needed.
    Id(NodeRef),
}

/// The id of node `n` in `g` (empty when `g` has no such node).
pub(crate) fn node_id_str(g: &OrgGraph, n: NodeRef) -> &str {
    match n {
        NodeRef::Feedback(r) => g.feedback().id_str(r),
        NodeRef::Adapter(r) => g
            .adapters()
            .get(r as usize)
            .map_or("", |a| g.strings().resolve(a.id)),
    }
}

impl Cell {
    /// A float cell; NaN and infinities become `Null`.
    pub(crate) fn float(f: f64) -> Cell {
        if f.is_finite() {
            Cell::Float(f)
        } else {
            Cell::Null
        }
    }
}

/// One cell with the rows it belongs to (for its strings).
struct CellRef<'r>(&'r Rows, &'r Cell);

impl<'r> CellRef<'r> {
    fn str(&self, start: usize, len: u32) -> &'r str {
        self.0.text_at(start, len)
    }

    /// The id an [`Cell::Id`] stands for.
    fn id(&self, n: NodeRef) -> &'r str {
        self.0.id_text(n)
    }

    fn to_json(&self) -> serde_json::Value {
        match self.1 {
            Cell::Id(n) => serde_json::Value::String(self.id(*n).into()),
            Cell::Null => serde_json::Value::Null,
            Cell::Bool(b) => serde_json::Value::Bool(*b),
            Cell::Int(i) => serde_json::Value::from(*i),
            Cell::Float(f) => serde_json::Number::from_f64(*f)
                .map_or(serde_json::Value::Null, serde_json::Value::Number),
            Cell::Str { len, start } => serde_json::Value::String(self.str(*start, *len).into()),
            Cell::List(items) => serde_json::Value::Array(
                items.iter().map(|c| CellRef(self.0, c).to_json()).collect(),
            ),
            Cell::Shared(v) => (**v).clone(),
            Cell::Json(v) => (**v).clone(),
        }
    }

    /// Equal to a JSON value (numbers compare as serde_json compares them).
    fn eq_json(&self, v: &serde_json::Value) -> bool {
        match (self.1, v) {
            (Cell::Str { len, start }, serde_json::Value::String(t)) => self.str(*start, *len) == t,
            (Cell::Id(n), serde_json::Value::String(t)) => self.id(*n) == t,
            (Cell::Shared(x), y) => **x == *y,
            (Cell::Json(x), y) => **x == *y,
            (_, y) => self.to_json() == *y,
        }
    }
}

impl Serialize for CellRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.1 {
            Cell::Null => s.serialize_unit(),
            Cell::Bool(b) => s.serialize_bool(*b),
            Cell::Int(i) => s.serialize_i64(*i),
            Cell::Float(f) => s.serialize_f64(*f),
            Cell::Str { len, start } => s.serialize_str(self.str(*start, *len)),
            Cell::Id(n) => s.serialize_str(self.id(*n)),
            Cell::List(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for c in items.iter() {
                    seq.serialize_element(&CellRef(self.0, c))?;
                }
                seq.end()
            }
            Cell::Shared(v) => v.serialize(s),
            Cell::Json(v) => v.serialize(s),
        }
    }
}

/// One output column of a [`Rows`], in row order: first the ids of a run of nodes of one
/// kind (feedback or adapter), kept as the nodes' row numbers, 4 bytes a row; then, from
/// the first cell that is not such an id, cells. A column of a million feedback ids is a
/// million row numbers.
#[derive(Debug, Clone, Default)]
struct Col {
    /// Row numbers of the nodes whose ids are the column's first cells.
    ids: Vec<u32>,
    /// The `ids` are adapters' (feedback items' otherwise).
    adapters: bool,
    /// The cells after the ids.
    cells: Vec<Cell>,
}

impl Col {
    /// The node of id row `r`.
    #[inline]
    fn node(&self, r: u32) -> NodeRef {
        if self.adapters {
            NodeRef::Adapter(r)
        } else {
            NodeRef::Feedback(r)
        }
    }
}

/// The rows of a query result: `len()` rows of `width()` cells each, kept column by
/// column (see [`Col`]); cells are pushed row by row.
#[derive(Clone, Default)]
pub struct Rows {
    width: usize,
    rows: usize,
    cols: Vec<Col>,
    /// The column the next pushed cell goes to.
    cur: usize,
    /// Rows each column reserves room for when it gets its first cell.
    reserve: usize,
    text: String,
    /// The graph snapshot that [`Cell::Id`] cells and id columns refer to.
    graph: Option<Arc<OrgGraph>>,
}

/// The most cells [`Rows::for_graph`] reserves ahead (1 MiB of cells); a batch that grows
/// past it grows as any vector does, charged to the budget as it goes.
pub(crate) const MAX_RESERVED_CELLS: usize = 1 << 16;

/// A cell read from the rows: one kept as a cell, or a node id of an id column.
enum At<'r> {
    Cell(&'r Cell),
    Id(NodeRef),
    Out,
}

impl Rows {
    /// `text[start..start + len]`.
    #[inline]
    fn text_at(&self, start: usize, len: u32) -> &str {
        self.text
            .get(start..start.saturating_add(len as usize))
            .unwrap_or("")
    }

    /// The id of node `n` of the graph the rows keep.
    #[inline]
    fn id_text(&self, n: NodeRef) -> &str {
        self.graph.as_deref().map_or("", |g| node_id_str(g, n))
    }

    /// No rows of `width` cells.
    pub fn new(width: usize) -> Self {
        Rows {
            width,
            cols: vec![Col::default(); width],
            ..Rows::default()
        }
    }

    /// No rows of `width` cells, whose node ids may refer to `graph` (see
    /// [`Rows::push_id`]); room for `capacity` rows is reserved, up to
    /// [`MAX_RESERVED_CELLS`] cells (the batch size is configurable without bound, and
    /// the reservation is not charged to the query's memory budget).
    pub(crate) fn for_graph(width: usize, graph: Option<Arc<OrgGraph>>, capacity: usize) -> Self {
        Rows {
            width,
            cols: vec![Col::default(); width],
            reserve: capacity.min(MAX_RESERVED_CELLS / width.max(1)),
            graph,
            ..Rows::default()
        }
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows
    }

    /// True when there are no rows.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Cells per row.
    pub fn width(&self) -> usize {
        self.width
    }

    /// The cell at row `row`, column `col`.
    #[inline]
    fn at(&self, row: usize, col: usize) -> At<'_> {
        let Some(c) = self.cols.get(col) else {
            return At::Out;
        };
        match c.ids.get(row) {
            Some(r) => At::Id(c.node(*r)),
            None => c.cells.get(row - c.ids.len()).map_or(At::Out, At::Cell),
        }
    }

    /// Calls `f` with the cell at `row`, `col` (an id column's cell made on the spot), if
    /// there is one.
    fn with_cell<R>(&self, row: usize, col: usize, f: impl FnOnce(CellRef<'_>) -> R) -> Option<R> {
        match self.at(row, col) {
            At::Cell(c) => Some(f(CellRef(self, c))),
            At::Id(n) => Some(f(CellRef(self, &Cell::Id(n)))),
            At::Out => None,
        }
    }

    /// Row `i` as JSON values, if it exists.
    pub fn row(&self, i: usize) -> Option<Vec<serde_json::Value>> {
        (i < self.rows).then(|| {
            (0..self.width)
                .map(|c| {
                    self.with_cell(i, c, |r| r.to_json())
                        .unwrap_or(serde_json::Value::Null)
                })
                .collect()
        })
    }

    /// Every row as JSON values (what the rows serialize as).
    pub fn to_json(&self) -> Vec<Vec<serde_json::Value>> {
        (0..self.rows).filter_map(|i| self.row(i)).collect()
    }

    /// Ends a row: called after pushing exactly `width()` cells.
    #[inline]
    pub(crate) fn end_row(&mut self) {
        debug_assert_eq!(self.cur, self.width);
        self.rows += 1;
        self.cur = 0;
    }

    /// The column the next cell goes to, as a column of cells.
    #[inline]
    fn next_cells(&mut self) -> &mut Vec<Cell> {
        let at = self.cur;
        self.cur += 1;
        if at >= self.cols.len() {
            // More cells than columns: a caller's bug; keep them rather than lose them.
            self.cols.resize_with(at + 1, Col::default);
        }
        let reserve = self.reserve;
        let cells = &mut self.cols[at].cells;
        if cells.capacity() == 0 {
            cells.reserve(reserve);
        }
        cells
    }

    pub(crate) fn push_null(&mut self) {
        self.next_cells().push(Cell::Null);
    }

    pub(crate) fn push_bool(&mut self, b: bool) {
        self.next_cells().push(Cell::Bool(b));
    }

    pub(crate) fn push_int(&mut self, i: i64) {
        self.next_cells().push(Cell::Int(i));
    }

    pub(crate) fn push_float(&mut self, f: f64) {
        self.next_cells().push(Cell::float(f));
    }

    /// Copies `s` into the text buffer; returns where it went, to be reused by
    /// [`Rows::push_stored`] for an identical string.
    pub(crate) fn push_str(&mut self, s: &str) -> Option<(usize, u32)> {
        let cell = self.str_cell(s);
        let at = match cell {
            Cell::Str { len, start } => Some((start, len)),
            _ => None,
        };
        self.next_cells().push(cell);
        at
    }

    /// A cell for `s`, copied into the text buffer.
    pub(crate) fn str_cell(&mut self, s: &str) -> Cell {
        match u32::try_from(s.len()) {
            Ok(len) => {
                let start = self.text.len();
                self.text.push_str(s);
                Cell::Str { len, start }
            }
            Err(_) => Cell::Json(Box::new(serde_json::Value::String(s.to_owned()))),
        }
    }

    /// Pushes a cell built with [`Rows::str_cell`] or by hand.
    pub(crate) fn push(&mut self, cell: Cell) {
        self.next_cells().push(cell);
    }

    /// Pushes the id of node `n` of the graph these rows keep: into the column's row
    /// numbers while the column holds only ids of that kind of node, as a [`Cell::Id`]
    /// otherwise. Only for rows made with [`Rows::for_graph`] and a graph, and a node of
    /// that graph.
    #[inline]
    pub(crate) fn push_id(&mut self, n: NodeRef) {
        debug_assert!(self.graph.is_some());
        if let Some(c) = self.cols.get_mut(self.cur)
            && c.cells.is_empty()
        {
            let (r, adapters) = match n {
                NodeRef::Feedback(r) => (r, false),
                NodeRef::Adapter(r) => (r, true),
            };
            if c.ids.is_empty() {
                c.adapters = adapters;
                c.ids.reserve(self.reserve.max(1));
            }
            if c.adapters == adapters {
                c.ids.push(r);
                self.cur += 1;
                return;
            }
        }
        self.next_cells().push(Cell::Id(n));
    }

    /// Appends `ids` (nodes of one kind: adapters' rows when `adapters`, feedback rows
    /// otherwise) to column `col`, one per row of a run of rows being added column by
    /// column (see [`Rows::end_rows`]): into the column's row numbers while it holds only
    /// ids of that kind of node, as [`Cell::Id`] cells otherwise (as [`Rows::push_id`]
    /// would, one at a time). Only for rows that keep a graph, and nodes of it.
    pub(crate) fn extend_ids(
        &mut self,
        col: usize,
        adapters: bool,
        ids: impl ExactSizeIterator<Item = u32>,
    ) {
        debug_assert!(self.graph.is_some());
        debug_assert_eq!(self.cur, 0);
        if col >= self.cols.len() {
            self.cols.resize_with(col + 1, Col::default);
        }
        let reserve = self.reserve;
        let c = &mut self.cols[col];
        if c.cells.is_empty() && (c.ids.is_empty() || c.adapters == adapters) {
            if c.ids.is_empty() {
                c.adapters = adapters;
                c.ids.reserve(reserve.max(ids.len()));
            }
            c.ids.extend(ids);
            return;
        }
        let node = |r| {
            if adapters {
                NodeRef::Adapter(r)
            } else {
                NodeRef::Feedback(r)
            }
        };
        if c.cells.capacity() == 0 {
            c.cells.reserve(reserve);
        }
        c.cells.extend(ids.map(|r| Cell::Id(node(r))));
    }

    /// Ends `n` rows whose cells were added column by column ([`Rows::extend_ids`]): every
    /// column must have had `n` cells added.
    pub(crate) fn end_rows(&mut self, n: usize) {
        debug_assert_eq!(self.cur, 0);
        debug_assert!(
            self.cols
                .iter()
                .all(|c| c.ids.len() + c.cells.len() == self.rows + n)
        );
        self.rows += n;
    }

    /// Pushes a string already in the text buffer (from [`Rows::push_str`]).
    pub(crate) fn push_stored(&mut self, (start, len): (usize, u32)) {
        self.next_cells().push(Cell::Str { len, start });
    }

    /// The ids of column `col` in row order, when it is a column of node ids (see
    /// [`Col`]): what the Arrow encoder copies into a string column.
    pub(crate) fn id_column(&self, col: usize) -> Option<impl Iterator<Item = &str> + '_> {
        let g = self.graph.as_deref()?;
        let c = self.cols.get(col).filter(|c| c.cells.is_empty())?;
        Some(if c.adapters {
            IdIter::Adapter(g, c.ids.iter())
        } else {
            IdIter::Feedback(g, c.ids.iter())
        })
    }
}

impl Rows {
    /// The node row numbers of column `col` when it is a column of node ids (see
    /// [`Col`]), and whether they are adapters' (feedback items' otherwise).
    pub(crate) fn id_rows(&self, col: usize) -> Option<(bool, &[u32])> {
        self.graph.as_ref()?;
        let c = self.cols.get(col).filter(|c| c.cells.is_empty())?;
        Some((c.adapters, &c.ids))
    }

    /// The id of adapter row `r` of the rows' graph (empty when there is none).
    pub(crate) fn adapter_id(&self, r: u32) -> &str {
        self.id_text(NodeRef::Adapter(r))
    }
}

/// The ids of an id column.
enum IdIter<'r> {
    Feedback(&'r OrgGraph, std::slice::Iter<'r, u32>),
    Adapter(&'r OrgGraph, std::slice::Iter<'r, u32>),
}

impl<'r> Iterator for IdIter<'r> {
    type Item = &'r str;

    #[inline]
    fn next(&mut self) -> Option<&'r str> {
        match self {
            IdIter::Feedback(g, it) => it.next().map(|r| g.feedback().id_str(*r)),
            IdIter::Adapter(g, it) => it.next().map(|r| node_id_str(g, NodeRef::Adapter(*r))),
        }
    }
}

#[cfg(test)]
impl Rows {
    /// How many cells are node ids kept as references into the graph.
    pub(crate) fn id_cells(&self) -> usize {
        self.cols
            .iter()
            .map(|c| c.ids.len() + c.cells.iter().filter(|c| matches!(c, Cell::Id(_))).count())
            .sum()
    }

    /// How many columns keep node ids as row numbers.
    pub(crate) fn id_columns(&self) -> usize {
        self.cols
            .iter()
            .filter(|c| c.cells.is_empty() && !c.ids.is_empty())
            .count()
    }
}

impl fmt::Debug for Rows {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.to_json()).finish()
    }
}

impl PartialEq for Rows {
    fn eq(&self, o: &Rows) -> bool {
        self.rows == o.rows
            && self.width == o.width
            && (0..self.rows).all(|i| {
                (0..self.width).all(|c| {
                    let theirs = o.with_cell(i, c, |b| b.to_json());
                    self.with_cell(i, c, |a| theirs.as_ref().is_some_and(|v| a.eq_json(v)))
                        .unwrap_or(theirs.is_none())
                })
            })
    }
}

impl PartialEq<Vec<Vec<serde_json::Value>>> for Rows {
    fn eq(&self, o: &Vec<Vec<serde_json::Value>>) -> bool {
        self.rows == o.len()
            && o.iter().enumerate().all(|(i, r)| {
                r.len() == self.width
                    && r.iter()
                        .enumerate()
                        .all(|(c, v)| self.with_cell(i, c, |a| a.eq_json(v)).unwrap_or(false))
            })
    }
}

impl PartialEq<Rows> for Vec<Vec<serde_json::Value>> {
    fn eq(&self, o: &Rows) -> bool {
        o == self
    }
}

/// A result cell as the Arrow encoder sees it: a scalar, or something only JSON text can
/// hold (a node, relationship, path, list or map).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Scalar<'r> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(&'r str),
    Nested,
}

impl Rows {
    /// Appends the rows as JSON arrays separated by commas, without enclosing brackets;
    /// a comma comes first too unless `first` (the rows continue an array already begun).
    /// The same text as serializing each row with serde_json, written cell by cell.
    pub fn write_json_rows(&self, out: &mut Vec<u8>, first: bool) -> serde_json::Result<()> {
        // The ids of each id column, read ahead of the rows: in a big result each is a
        // cache miss, and a loop that only reads them keeps many misses in flight at once.
        let ids: Vec<Option<Vec<&str>>> = (0..self.width)
            .map(|c| self.id_column(c).map(Iterator::collect))
            .collect();
        for i in 0..self.rows {
            if i > 0 || !first {
                out.push(b',');
            }
            out.push(b'[');
            for c in 0..self.width {
                if c > 0 {
                    out.push(b',');
                }
                match self.at(i, c) {
                    At::Id(n) => {
                        let read = ids.get(c).and_then(Option::as_ref);
                        let id = read.and_then(|v| v.get(i).copied());
                        write_json_str(out, id.unwrap_or_else(|| self.id_text(n)));
                    }
                    At::Cell(Cell::Str { len, start }) => {
                        write_json_str(out, self.text_at(*start, *len));
                    }
                    At::Cell(cell) => serde_json::to_writer(&mut *out, &CellRef(self, cell))?,
                    At::Out => out.extend_from_slice(b"null"),
                }
            }
            out.push(b']');
        }
        Ok(())
    }

    /// The cell at row `row`, column `col` (null outside the rows).
    pub(crate) fn scalar(&self, row: usize, col: usize) -> Scalar<'_> {
        let cell = match self.at(row, col) {
            At::Cell(c) => c,
            At::Id(n) => return Scalar::Str(self.id_text(n)),
            At::Out => return Scalar::Null,
        };
        match cell {
            Cell::Null => Scalar::Null,
            Cell::Bool(b) => Scalar::Bool(*b),
            Cell::Int(i) => Scalar::Int(*i),
            Cell::Float(f) => Scalar::Float(*f),
            Cell::Str { len, start } => Scalar::Str(self.text_at(*start, *len)),
            Cell::Id(n) => Scalar::Str(self.id_text(*n)),
            Cell::Json(v) => match &**v {
                serde_json::Value::Null => Scalar::Null,
                serde_json::Value::Bool(b) => Scalar::Bool(*b),
                serde_json::Value::String(s) => Scalar::Str(s),
                serde_json::Value::Number(n) => match n.as_i64() {
                    Some(i) => Scalar::Int(i),
                    None => n.as_f64().map_or(Scalar::Null, Scalar::Float),
                },
                _ => Scalar::Nested,
            },
            Cell::List(_) | Cell::Shared(_) => Scalar::Nested,
        }
    }

    /// The cell at row `row`, column `col` as JSON text (`null` outside the rows).
    pub(crate) fn cell_json(&self, row: usize, col: usize) -> String {
        self.with_cell(row, col, |c| serde_json::to_string(&c).unwrap_or_default())
            .unwrap_or_else(|| "null".to_owned())
    }
}

/// Writes `s` as a JSON string, as serde_json writes it: as is between quotes when no byte
/// needs an escape (a control character, a quote or a backslash; ids never have one),
/// through serde_json's escaping otherwise.
#[inline]
fn write_json_str(out: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        // Writing a string into a vector cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

/// One row while serializing.
struct RowSer<'r>(&'r Rows, usize);

impl Serialize for RowSer<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let rows = self.0;
        let mut seq = s.serialize_seq(Some(rows.width))?;
        for c in 0..rows.width {
            match rows.at(self.1, c) {
                At::Cell(cell) => seq.serialize_element(&CellRef(rows, cell))?,
                At::Id(n) => seq.serialize_element(&CellRef(rows, &Cell::Id(n)))?,
                At::Out => seq.serialize_element(&())?,
            }
        }
        seq.end()
    }
}

impl Serialize for Rows {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.rows))?;
        for i in 0..self.rows {
            seq.serialize_element(&RowSer(self, i))?;
        }
        seq.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strings_are_written_as_serde_json_writes_them() {
        for s in [
            "",
            "plain",
            "a\"b",
            "a\\b",
            "\n",
            "\t",
            "\u{1f}",
            " ",
            "\u{7f}",
            "\u{e9}\u{20ac}",
            "</script>",
            "fb_00000001",
            "a-b_c.d:e@f/g+h",
        ] {
            let mut r = Rows::new(1);
            r.push_str(s);
            r.end_row();
            let mut text = Vec::new();
            r.write_json_rows(&mut text, true).unwrap();
            let want = serde_json::to_string(&[[s]]).unwrap();
            assert_eq!(
                format!("[{}]", String::from_utf8(text).unwrap()),
                want,
                "{s:?}"
            );
        }
    }

    #[test]
    fn ids_added_in_runs_equal_ids_added_one_at_a_time() {
        use crate::model::{Adapter, Feedback, LinkSource, Metadata};
        let mut g = OrgGraph::default();
        for id in ["x", "y"] {
            g.upsert_adapter(&Adapter {
                id: id.into(),
                org_id: "t".into(),
                version: None,
                base_model: None,
                derived_from: None,
                metadata: Metadata::default(),
                created_at: 1,
                source: LinkSource::Manual,
                record_version: 1,
            });
        }
        for id in ["f1", "f2", "f3"] {
            g.upsert_feedback(&Feedback::sample(id, "t"));
        }
        let g = Arc::new(g);
        let mut runs = Rows::for_graph(2, Some(g.clone()), 2);
        let mut single = Rows::for_graph(2, Some(g), 2);
        // Column 0 holds adapter ids, then feedback ids (from there on it keeps cells);
        // column 1 only feedback ids.
        for (adapters, c0, c1) in [
            (true, vec![0, 1, 1], vec![0, 1, 2]),
            (false, vec![2, 0], vec![1, 1]),
            (true, vec![1], vec![0]),
            (true, vec![], vec![]),
        ] {
            runs.extend_ids(0, adapters, c0.iter().copied());
            runs.extend_ids(1, false, c1.iter().copied());
            runs.end_rows(c0.len());
            for (a, f) in c0.iter().zip(&c1) {
                single.push_id(if adapters {
                    NodeRef::Adapter(*a)
                } else {
                    NodeRef::Feedback(*a)
                });
                single.push_id(NodeRef::Feedback(*f));
                single.end_row();
            }
        }
        assert_eq!(runs.len(), 6);
        assert_eq!(runs.to_json(), single.to_json());
        assert_eq!(runs.to_json()[3], vec![json!("f3"), json!("f2")]);
        assert_eq!(runs.id_columns(), 1);
        assert_eq!(single.id_columns(), 1);
        assert_eq!(runs.id_cells(), 12);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        runs.write_json_rows(&mut a, true).unwrap();
        single.write_json_rows(&mut b, true).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn rows_serialize_like_json_values() {
        let mut r = Rows::new(4);
        for i in 0..3 {
            let at = r.push_str("shared");
            r.push_int(i);
            r.push_float(if i == 1 { f64::NAN } else { 0.5 });
            if i == 2 {
                r.push(Cell::Json(Box::new(json!({"b": 1, "a": [true, null]}))));
            } else if i == 1 {
                // Written through the escaping path.
                r.push_str("q\"b\\s\n\u{1}\u{7f}\u{e9}/</");
            } else {
                r.push_null();
            }
            r.end_row();
            if let Some(at) = at {
                r.push_stored(at);
                r.push_bool(i == 0);
                r.push_float(2.0);
                let inner = r.str_cell("in a list");
                let node = Arc::new(json!({"_id": 1, "_labels": ["Adapter"]}));
                r.push(Cell::List(
                    vec![inner, Cell::Shared(node.clone()), Cell::Shared(node)].into(),
                ));
                r.end_row();
            }
        }
        let values = r.to_json();
        assert_eq!(values.len(), 6);
        assert_eq!(r.len(), 6);
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            serde_json::to_string(&values).unwrap()
        );
        assert_eq!(r, values);
        assert_eq!(values, r);
        let node = json!({"_id": 1, "_labels": ["Adapter"]});
        assert_eq!(
            values[1],
            vec![
                json!("shared"),
                json!(true),
                json!(2.0),
                json!(["in a list", node, node])
            ]
        );
        assert_eq!(values[2][2], json!(null));
        assert_eq!(values[2][3], json!("q\"b\\s\n\u{1}\u{7f}\u{e9}/</"));
        assert_eq!(r.row(6), None);
        let empty = Rows::new(0);
        assert_eq!(serde_json::to_string(&empty).unwrap(), "[]");
        // Written by hand: the same text as serde_json's.
        let mut once = b"[".to_vec();
        r.write_json_rows(&mut once, true).unwrap();
        once.push(b']');
        assert_eq!(
            String::from_utf8(once).unwrap(),
            serde_json::to_string(&values).unwrap()
        );
        // Rows written in pieces make the same array.
        let mut text = b"[".to_vec();
        r.write_json_rows(&mut text, true).unwrap();
        r.write_json_rows(&mut text, false).unwrap();
        text.push(b']');
        let twice: Vec<serde_json::Value> = serde_json::from_slice(&text).unwrap();
        assert_eq!(twice.len(), 12);
        assert_eq!(twice[..6], twice[6..]);
        assert_eq!(
            serde_json::Value::Array(twice[..6].to_vec()),
            serde_json::to_value(&values).unwrap()
        );
        assert_eq!(r.scalar(0, 0), Scalar::Str("shared"));
        assert_eq!(r.scalar(1, 3), Scalar::Nested);
        assert_eq!(r.scalar(2, 2), Scalar::Null);
        assert_eq!(r.cell_json(1, 0), "\"shared\"");
    }
}
