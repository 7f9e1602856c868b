//! Result rows in a compact, flat form.
//!
//! A query can return millions of rows. Building each as a `Vec<serde_json::Value>` costs a
//! vector and a string allocation per row and cell; [`Rows`] instead keeps every cell in one
//! flat vector of 16-byte [`Cell`]s and every string in one text buffer, so a row of ids
//! costs two cell pushes and two short copies. A string borrowed from the graph that repeats
//! in a column (an adapter id over many feedback rows) is stored once. Nodes,
//! relationships, paths, lists and maps stay JSON values.
//!
//! [`Rows`] serializes to exactly the JSON of the rows as arrays of JSON values, and
//! [`Rows::to_json`] gives those values.

use std::fmt;

use serde::ser::{Serialize, SerializeSeq, Serializer};

/// One result cell.
#[derive(Debug, Clone)]
enum Cell {
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
    /// Anything else, or a string too long for `len`.
    Json(Box<serde_json::Value>),
}

/// The rows of a query result: `len()` rows of `width()` cells each.
#[derive(Clone, Default)]
pub struct Rows {
    width: usize,
    rows: usize,
    cells: Vec<Cell>,
    text: String,
}

/// One cell, borrowed from [`Rows`].
enum CellRef<'r> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(&'r str),
    Json(&'r serde_json::Value),
}

impl CellRef<'_> {
    fn to_json(&self) -> serde_json::Value {
        match self {
            CellRef::Null => serde_json::Value::Null,
            CellRef::Bool(b) => serde_json::Value::Bool(*b),
            CellRef::Int(i) => serde_json::Value::from(*i),
            CellRef::Float(f) => serde_json::Number::from_f64(*f)
                .map_or(serde_json::Value::Null, serde_json::Value::Number),
            CellRef::Str(s) => serde_json::Value::String((*s).to_owned()),
            CellRef::Json(v) => (*v).clone(),
        }
    }

    /// Equal to a JSON value (numbers compare as serde_json compares them).
    fn eq_json(&self, v: &serde_json::Value) -> bool {
        match (self, v) {
            (CellRef::Str(s), serde_json::Value::String(t)) => *s == t,
            (CellRef::Json(x), y) => *x == y,
            (CellRef::Null, serde_json::Value::Null) => true,
            (CellRef::Bool(a), serde_json::Value::Bool(b)) => a == b,
            (c, y) => &c.to_json() == y,
        }
    }
}

impl Serialize for CellRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            CellRef::Null => s.serialize_unit(),
            CellRef::Bool(b) => s.serialize_bool(*b),
            CellRef::Int(i) => s.serialize_i64(*i),
            CellRef::Float(f) => s.serialize_f64(*f),
            CellRef::Str(t) => s.serialize_str(t),
            CellRef::Json(v) => v.serialize(s),
        }
    }
}

impl Rows {
    /// No rows of `width` cells.
    pub fn new(width: usize) -> Self {
        Rows {
            width,
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

    fn cell<'r>(&'r self, c: &'r Cell) -> CellRef<'r> {
        match c {
            Cell::Null => CellRef::Null,
            Cell::Bool(b) => CellRef::Bool(*b),
            Cell::Int(i) => CellRef::Int(*i),
            Cell::Float(f) => CellRef::Float(*f),
            Cell::Str { len, start } => CellRef::Str(
                self.text
                    .get(*start..start.saturating_add(*len as usize))
                    .unwrap_or(""),
            ),
            Cell::Json(v) => CellRef::Json(v),
        }
    }

    fn row_cells(&self, i: usize) -> &[Cell] {
        let from = i.saturating_mul(self.width);
        self.cells
            .get(from..from.saturating_add(self.width))
            .unwrap_or(&[])
    }

    /// Row `i` as JSON values, if it exists.
    pub fn row(&self, i: usize) -> Option<Vec<serde_json::Value>> {
        (i < self.rows).then(|| {
            self.row_cells(i)
                .iter()
                .map(|c| self.cell(c).to_json())
                .collect()
        })
    }

    /// Every row as JSON values (what the rows serialize as).
    pub fn to_json(&self) -> Vec<Vec<serde_json::Value>> {
        (0..self.rows).filter_map(|i| self.row(i)).collect()
    }

    /// Ends a row: called after pushing exactly `width()` cells.
    pub(crate) fn end_row(&mut self) {
        self.rows += 1;
    }

    pub(crate) fn push_null(&mut self) {
        self.cells.push(Cell::Null);
    }

    pub(crate) fn push_bool(&mut self, b: bool) {
        self.cells.push(Cell::Bool(b));
    }

    pub(crate) fn push_int(&mut self, i: i64) {
        self.cells.push(Cell::Int(i));
    }

    pub(crate) fn push_float(&mut self, f: f64) {
        self.cells.push(if f.is_finite() {
            Cell::Float(f)
        } else {
            Cell::Null
        });
    }

    /// Copies `s` into the text buffer; returns where it went, to be reused by
    /// [`Rows::push_stored`] for an identical string.
    pub(crate) fn push_str(&mut self, s: &str) -> Option<(usize, u32)> {
        match u32::try_from(s.len()) {
            Ok(len) => {
                let start = self.text.len();
                self.text.push_str(s);
                self.cells.push(Cell::Str { len, start });
                Some((start, len))
            }
            Err(_) => {
                self.push_json(serde_json::Value::String(s.to_owned()));
                None
            }
        }
    }

    /// Pushes a string already in the text buffer (from [`Rows::push_str`]).
    pub(crate) fn push_stored(&mut self, (start, len): (usize, u32)) {
        self.cells.push(Cell::Str { len, start });
    }

    pub(crate) fn push_json(&mut self, v: serde_json::Value) {
        self.cells.push(Cell::Json(Box::new(v)));
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
                self.row_cells(i)
                    .iter()
                    .zip(o.row_cells(i))
                    .all(|(a, b)| self.cell(a).eq_json(&o.cell(b).to_json()))
            })
    }
}

impl PartialEq<Vec<Vec<serde_json::Value>>> for Rows {
    fn eq(&self, o: &Vec<Vec<serde_json::Value>>) -> bool {
        self.rows == o.len()
            && o.iter().enumerate().all(|(i, r)| {
                let cells = self.row_cells(i);
                cells.len() == r.len() && cells.iter().zip(r).all(|(c, v)| self.cell(c).eq_json(v))
            })
    }
}

impl PartialEq<Rows> for Vec<Vec<serde_json::Value>> {
    fn eq(&self, o: &Rows) -> bool {
        o == self
    }
}

/// One row while serializing.
struct RowSer<'r>(&'r Rows, &'r [Cell]);

impl Serialize for RowSer<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.1.len()))?;
        for c in self.1 {
            seq.serialize_element(&self.0.cell(c))?;
        }
        seq.end()
    }
}

impl Serialize for Rows {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.rows))?;
        for i in 0..self.rows {
            seq.serialize_element(&RowSer(self, self.row_cells(i)))?;
        }
        seq.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rows_serialize_like_json_values() {
        let mut r = Rows::new(4);
        for i in 0..3 {
            let at = r.push_str("shared");
            r.push_int(i);
            r.push_float(if i == 1 { f64::NAN } else { 0.5 });
            if i == 2 {
                r.push_json(json!({"b": 1, "a": [true, null]}));
            } else {
                r.push_null();
            }
            r.end_row();
            if let Some(at) = at {
                r.push_stored(at);
                r.push_bool(i == 0);
                r.push_float(2.0);
                r.push_str("");
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
        assert_eq!(
            values[1],
            vec![json!("shared"), json!(true), json!(2.0), json!("")]
        );
        assert_eq!(values[2][2], json!(null));
        assert_eq!(r.row(6), None);
        let empty = Rows::new(0);
        assert_eq!(serde_json::to_string(&empty).unwrap(), "[]");
    }
}
