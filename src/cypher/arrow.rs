//! Query results as an Apache Arrow IPC stream.
//!
//! [`ArrowEncoder`] turns the row batches of a streamed query into Arrow record batches,
//! one record batch per batch of rows, behind one schema. Arrow fixes a column's type for
//! the whole stream, while a Cypher column may hold any value, so the types are read from
//! the values of the first batch:
//!
//! | values in the first batch (nulls aside) | Arrow type |
//! |---|---|
//! | only booleans | `Boolean` |
//! | only integers | `Int64` |
//! | numbers, at least one a float | `Float64` (integers converted) |
//! | only strings | `Utf8` |
//! | only adapter ids kept as references into the graph (`a.id` of an `Adapter` node) | `Dictionary(Int32, Utf8)`: each batch's distinct adapter ids once, and an index per row |
//! | anything else: nodes, relationships, paths, lists, maps, mixed kinds, or only nulls | `Utf8` holding each value's JSON text, the field's metadata `feedgraph.encoding = json` |
//!
//! Every column is nullable; a Cypher null is an Arrow null. A later row whose value does
//! not fit its column's type (a float in an `Int64` column, a number in a `Utf8` string
//! column) stops the query with a type error, which the HTTP layer reports by cutting the
//! stream short; an integer in a `Float64` column is converted. JSON-text columns take any
//! value.
//!
//! Adapter ids repeat over a result (one adapter over all its feedback rows), so a column
//! of them is dictionary-encoded: a record batch carries the distinct ids of its rows once
//! and an `Int32` index per row, and readers (pyarrow, arrow-rs) give back the same strings
//! (pandas makes it a categorical column). Each batch sends its own dictionary (a
//! replacement, as the IPC stream format allows). A later batch of such a column may hold
//! any strings and nulls.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::builder::{
    BooleanBuilder, Float64Builder, Int64Builder, StringBuilder, StringDictionaryBuilder,
};
use arrow_array::types::Int32Type;
use arrow_array::{ArrayRef, DictionaryArray, Int32Array, RecordBatch};
use arrow_ipc::writer::StreamWriter;
use arrow_schema::{DataType, Field, Schema, SchemaRef};

use super::error::CypherError;
use super::rows::{Rows, Scalar};
use super::value::FastBuild;

/// The field metadata key that marks a column of JSON text.
pub const ENCODING_KEY: &str = "feedgraph.encoding";

/// The value of [`ENCODING_KEY`] on a column of JSON text.
pub const ENCODING_JSON: &str = "json";

/// The media type of an Arrow IPC stream.
pub const MEDIA_TYPE: &str = "application/vnd.apache.arrow.stream";

/// A column's Arrow type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    Int,
    Float,
    Str,
    /// Strings, dictionary-encoded (a column of adapter ids).
    Dict,
    Json,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Bool => "Boolean",
            Kind::Int => "Int64",
            Kind::Float => "Float64",
            Kind::Str => "Utf8",
            Kind::Dict => "Dictionary(Int32, Utf8)",
            Kind::Json => "Utf8 (JSON text)",
        }
    }
}

/// The type of column `col` from the values of `rows` (see the module docs).
fn infer(rows: &Rows, col: usize) -> Kind {
    match rows.id_rows(col) {
        Some((true, ids)) if !ids.is_empty() => return Kind::Dict,
        Some((false, ids)) if !ids.is_empty() => return Kind::Str,
        _ => {}
    }
    let (mut b, mut i, mut f, mut s, mut n) = (false, false, false, false, false);
    for r in 0..rows.len() {
        match rows.scalar(r, col) {
            Scalar::Null => {}
            Scalar::Bool(_) => b = true,
            Scalar::Int(_) => i = true,
            Scalar::Float(_) => f = true,
            Scalar::Str(_) => s = true,
            Scalar::Nested => n = true,
        }
    }
    match (b, i, f, s, n) {
        (true, false, false, false, false) => Kind::Bool,
        (false, true, false, false, false) => Kind::Int,
        (false, _, true, false, false) => Kind::Float,
        (false, false, false, true, false) => Kind::Str,
        _ => Kind::Json,
    }
}

fn arrow_error(e: arrow_schema::ArrowError) -> CypherError {
    CypherError::Type {
        message: format!("the result could not be encoded as Arrow: {e}"),
        position: None,
    }
}

/// A string array of the ids of an id column of `rows` (no nulls). The ids are read
/// first, all of them, then copied: in a big result each id is a cache miss, and a loop
/// that only reads them keeps many of those misses in flight at once, where reading and
/// copying one id after another waits on each in turn.
fn id_array(rows: &Rows, col: usize) -> ArrayRef {
    let ids: Vec<&str> = rows.id_column(col).map_or_else(Vec::new, Iterator::collect);
    let bytes = ids.iter().map(|s| s.len()).sum();
    let mut b = StringBuilder::with_capacity(ids.len(), bytes);
    for id in ids {
        b.append_value(id);
    }
    Arc::new(b.finish())
}

/// A dictionary array of the adapter ids `ids` (adapter row numbers of the graph `rows`
/// keep): the distinct ids in order of first appearance, and one index per row. Adapters
/// come in runs (a walk returns an adapter's feedback rows together), so a row whose
/// adapter is the previous row's takes its index without a lookup.
fn adapter_dictionary(rows: &Rows, ids: &[u32]) -> Result<ArrayRef, CypherError> {
    let mut keys: Vec<i32> = Vec::with_capacity(ids.len());
    let mut values = StringBuilder::new();
    let mut index: HashMap<u32, i32, FastBuild> = HashMap::default();
    let mut prev: Option<(u32, i32)> = None;
    for &r in ids {
        let key = match prev {
            Some((p, k)) if p == r => k,
            _ => {
                let next = index.len();
                let k = match index.get(&r) {
                    Some(k) => *k,
                    None => {
                        let k = i32::try_from(next).map_err(|_| CypherError::Type {
                            message: "too many distinct adapter ids in one Arrow batch".into(),
                            position: None,
                        })?;
                        values.append_value(rows.adapter_id(r));
                        index.insert(r, k);
                        k
                    }
                };
                prev = Some((r, k));
                k
            }
        };
        keys.push(key);
    }
    let dict =
        DictionaryArray::<Int32Type>::try_new(Int32Array::from(keys), Arc::new(values.finish()))
            .map_err(arrow_error)?;
    Ok(Arc::new(dict))
}

/// Encodes a streamed query's rows as an Arrow IPC stream, batch by batch.
pub struct ArrowEncoder {
    columns: Vec<String>,
    kinds: Vec<Kind>,
    schema: SchemaRef,
    writer: Option<StreamWriter<Vec<u8>>>,
    /// The bytes of the last batch: the next batch's buffer starts with room for as many,
    /// instead of growing to them.
    last_len: usize,
}

impl ArrowEncoder {
    /// An encoder for a result with these columns.
    pub fn new(columns: &[String]) -> Self {
        ArrowEncoder {
            columns: columns.to_vec(),
            kinds: Vec::new(),
            schema: Arc::new(Schema::empty()),
            writer: None,
            last_len: 0,
        }
    }

    fn start(&mut self, kinds: Vec<Kind>) -> Result<(), CypherError> {
        let fields: Vec<Field> = self
            .columns
            .iter()
            .zip(&kinds)
            .map(|(name, kind)| {
                let dt = match kind {
                    Kind::Bool => DataType::Boolean,
                    Kind::Int => DataType::Int64,
                    Kind::Float => DataType::Float64,
                    Kind::Str | Kind::Json => DataType::Utf8,
                    Kind::Dict => {
                        DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
                    }
                };
                let field = Field::new(name, dt, true);
                if *kind == Kind::Json {
                    let meta: std::collections::HashMap<String, String> =
                        [(ENCODING_KEY.to_owned(), ENCODING_JSON.to_owned())].into();
                    field.with_metadata(meta)
                } else {
                    field
                }
            })
            .collect();
        let schema: SchemaRef = Arc::new(Schema::new(fields));
        self.writer = Some(StreamWriter::try_new(Vec::new(), &schema).map_err(arrow_error)?);
        self.schema = schema;
        self.kinds = kinds;
        Ok(())
    }

    fn mismatch(&self, col: usize, kind: Kind, found: Scalar<'_>) -> CypherError {
        let what = match found {
            Scalar::Null => "null",
            Scalar::Bool(_) => "a boolean",
            Scalar::Int(_) => "an integer",
            Scalar::Float(_) => "a float",
            Scalar::Str(_) => "a string",
            Scalar::Nested => "a node, relationship, path, list or map",
        };
        CypherError::Type {
            message: format!(
                "column '{}' is {} in the Arrow stream (from its first rows), but a later row holds {what}; convert the column in the query (toFloat, toString) or ask for JSON",
                self.columns.get(col).map_or("?", String::as_str),
                kind.name()
            ),
            position: None,
        }
    }

    fn column(&self, rows: &Rows, col: usize, kind: Kind) -> Result<ArrayRef, CypherError> {
        let n = rows.len();
        Ok(match kind {
            Kind::Bool => {
                let mut b = BooleanBuilder::with_capacity(n);
                for r in 0..n {
                    match rows.scalar(r, col) {
                        Scalar::Null => b.append_null(),
                        Scalar::Bool(v) => b.append_value(v),
                        other => return Err(self.mismatch(col, kind, other)),
                    }
                }
                Arc::new(b.finish())
            }
            Kind::Int => {
                let mut b = Int64Builder::with_capacity(n);
                for r in 0..n {
                    match rows.scalar(r, col) {
                        Scalar::Null => b.append_null(),
                        Scalar::Int(v) => b.append_value(v),
                        other => return Err(self.mismatch(col, kind, other)),
                    }
                }
                Arc::new(b.finish())
            }
            Kind::Float => {
                let mut b = Float64Builder::with_capacity(n);
                for r in 0..n {
                    match rows.scalar(r, col) {
                        Scalar::Null => b.append_null(),
                        Scalar::Float(v) => b.append_value(v),
                        Scalar::Int(v) => b.append_value(v as f64),
                        other => return Err(self.mismatch(col, kind, other)),
                    }
                }
                Arc::new(b.finish())
            }
            Kind::Str if rows.id_column(col).is_some() => id_array(rows, col),
            Kind::Str => {
                let mut b = StringBuilder::with_capacity(n, n * 16);
                for r in 0..n {
                    match rows.scalar(r, col) {
                        Scalar::Null => b.append_null(),
                        Scalar::Str(v) => b.append_value(v),
                        other => return Err(self.mismatch(col, kind, other)),
                    }
                }
                Arc::new(b.finish())
            }
            Kind::Dict => match rows.id_rows(col) {
                Some((true, ids)) => adapter_dictionary(rows, ids)?,
                _ => {
                    let mut b = StringDictionaryBuilder::<Int32Type>::new();
                    for r in 0..n {
                        match rows.scalar(r, col) {
                            Scalar::Null => b.append_null(),
                            Scalar::Str(v) => {
                                b.append(v).map_err(arrow_error)?;
                            }
                            other => return Err(self.mismatch(col, kind, other)),
                        }
                    }
                    Arc::new(b.finish())
                }
            },
            Kind::Json => {
                let mut b = StringBuilder::with_capacity(n, n * 32);
                for r in 0..n {
                    match rows.scalar(r, col) {
                        Scalar::Null => b.append_null(),
                        _ => b.append_value(rows.cell_json(r, col)),
                    }
                }
                Arc::new(b.finish())
            }
        })
    }

    fn take(&mut self) -> Vec<u8> {
        let Some(w) = self.writer.as_mut() else {
            return Vec::new();
        };
        let next = Vec::with_capacity(self.last_len.saturating_add(self.last_len / 8));
        let bytes = std::mem::replace(w.get_mut(), next);
        self.last_len = bytes.len();
        bytes
    }

    /// Encodes one batch of rows as a record batch and returns the bytes to send: the
    /// schema first, when this is the first batch. A value that does not fit its column's
    /// type is a [`CypherError::Type`].
    pub fn batch(&mut self, rows: &Rows) -> Result<Vec<u8>, CypherError> {
        if self.writer.is_none() {
            let kinds = (0..self.columns.len()).map(|c| infer(rows, c)).collect();
            self.start(kinds)?;
        }
        let arrays = self
            .kinds
            .iter()
            .enumerate()
            .map(|(c, k)| self.column(rows, c, *k))
            .collect::<Result<Vec<_>, _>>()?;
        let batch = RecordBatch::try_new(self.schema.clone(), arrays).map_err(arrow_error)?;
        if let Some(w) = self.writer.as_mut() {
            w.write(&batch).map_err(arrow_error)?;
        }
        Ok(self.take())
    }

    /// Ends the stream and returns its last bytes: the end-of-stream marker (after the
    /// schema, with every column JSON text, when there were no rows).
    pub fn finish(&mut self) -> Result<Vec<u8>, CypherError> {
        if self.writer.is_none() {
            self.start(vec![Kind::Json; self.columns.len()])?;
        }
        if let Some(w) = self.writer.as_mut() {
            w.finish().map_err(arrow_error)?;
        }
        // Nothing follows the end of the stream: no room to keep.
        self.last_len = 0;
        Ok(self.take())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Array, BooleanArray, Float64Array, Int64Array, StringArray};
    use arrow_ipc::reader::StreamReader;

    fn rows(data: &[(i64, f64, &str, bool)]) -> Rows {
        let mut r = Rows::new(5);
        for (i, f, s, b) in data {
            r.push_int(*i);
            r.push_float(*f);
            r.push_str(s);
            r.push_bool(*b);
            if *i % 2 == 0 {
                r.push_null();
            } else {
                r.push_int(*i);
            }
            r.end_row();
        }
        r
    }

    #[test]
    fn batches_read_back_with_their_types() {
        let cols: Vec<String> = ["i", "f", "s", "b", "x"].map(String::from).to_vec();
        let mut enc = ArrowEncoder::new(&cols);
        let mut bytes = enc
            .batch(&rows(&[(1, 0.5, "a", true), (2, 1.5, "b", false)]))
            .unwrap();
        bytes.extend(enc.batch(&rows(&[(3, 2.5, "c", true)])).unwrap());
        bytes.extend(enc.finish().unwrap());
        let reader = StreamReader::try_new(std::io::Cursor::new(bytes), None).unwrap();
        let schema = reader.schema();
        assert_eq!(schema.field(0).data_type(), &DataType::Int64);
        assert_eq!(schema.field(1).data_type(), &DataType::Float64);
        assert_eq!(schema.field(2).data_type(), &DataType::Utf8);
        assert_eq!(schema.field(3).data_type(), &DataType::Boolean);
        assert_eq!(schema.field(4).data_type(), &DataType::Int64);
        let batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
        assert_eq!(batches.len(), 2);
        let b = &batches[1];
        let col = |i: usize| b.column(i).clone();
        assert_eq!(
            col(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .value(0),
            3
        );
        assert_eq!(
            col(1)
                .as_any()
                .downcast_ref::<Float64Array>()
                .unwrap()
                .value(0),
            2.5
        );
        assert_eq!(
            col(2)
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap()
                .value(0),
            "c"
        );
        assert!(
            col(3)
                .as_any()
                .downcast_ref::<BooleanArray>()
                .unwrap()
                .value(0)
        );
        assert!(batches[0].column(4).is_null(1));
        // A float where the first batch had only integers is refused.
        let mut r = Rows::new(5);
        for _ in 0..4 {
            r.push_float(0.25);
        }
        r.push_null();
        r.end_row();
        let e = enc.batch(&r).unwrap_err();
        assert!(matches!(e, CypherError::Type { .. }), "{e}");
        assert!(e.to_string().contains("column 'i'"), "{e}");
    }

    /// Adapters `root` <- `mid` <- `leaf` (DERIVED_FROM) and feedback items linked to
    /// them, one with an id that JSON must escape.
    fn lineage_graph() -> crate::graph::OrgGraph {
        use crate::model::{Adapter, Feedback, FeedbackLink, LinkSource, Metadata};
        let mut g = crate::graph::OrgGraph::default();
        for (id, parent) in [("root", None), ("mid", Some("root")), ("leaf", Some("mid"))] {
            g.upsert_adapter(&Adapter {
                id: id.into(),
                org_id: "t".into(),
                version: None,
                base_model: None,
                derived_from: parent.map(str::to_owned),
                metadata: Metadata::default(),
                created_at: 1,
                source: LinkSource::Manual,
                record_version: 1,
            });
        }
        for (i, a) in [
            (1, "mid"),
            (2, "leaf"),
            (3, "leaf"),
            (4, "root"),
            (5, "mid"),
        ] {
            let id = if i == 3 {
                "fb-\"3\"\u{e9}".to_owned()
            } else {
                format!("fb-{i}")
            };
            let f = Feedback::sample(&id, "t");
            g.upsert_feedback(&f);
            g.add_link(&FeedbackLink {
                feedback_id: f.id.clone(),
                adapter_id: a.into(),
                created_at: 1,
                source: LinkSource::Auto,
                metadata: Metadata::default(),
            });
        }
        g
    }

    #[test]
    fn node_ids_kept_as_references_read_back_like_copies() {
        use crate::cypher::{NoText, PlanCache, QueryLimits, execute, execute_cached};
        use std::sync::atomic::AtomicBool;
        let g = lineage_graph();
        let none = serde_json::Map::new();
        for (q, ids_per_row) in [
            (
                "MATCH (f:Feedback)-[:FEEDBACK_FOR]->(a1:Adapter)-[:DERIVED_FROM*1..30]->(a2:Adapter) WHERE a2.id = 'root' RETURN f.id, a1.id",
                2,
            ),
            (
                "MATCH (f:Feedback)-[:FEEDBACK_FOR]->(a1:Adapter)-[:DERIVED_FROM*0..]->(a2:Adapter) RETURN a2.id, f.type, f.id AS x, size(f.id) AS n",
                2,
            ),
            (
                "MATCH (a:Adapter) OPTIONAL MATCH (a)<-[:FEEDBACK_FOR]-(f:Feedback) WHERE f.id = 'fb-4' RETURN f.id, a.id",
                0,
            ),
            // One column of adapter ids then feedback ids (and the other way round).
            ("MATCH (n) RETURN n.id, 1 AS one, n.id AS again", 0),
            ("MATCH (n) RETURN n.id ORDER BY n.id DESC", 0),
        ] {
            let copied = execute(&g, &NoText, q, &none, &QueryLimits::default()).unwrap();
            let shared = Arc::new(g.clone());
            let (kept, _) = execute_cached(
                &shared,
                &NoText,
                q,
                &none,
                &QueryLimits::default(),
                &AtomicBool::new(false),
                &PlanCache::new(4),
                "t",
            );
            let kept = kept.unwrap();
            // The rows hold the snapshot: dropping the caller's handle changes nothing.
            drop(shared);
            assert!(!kept.rows.is_empty(), "{q}");
            assert_eq!(copied.rows.id_cells(), 0, "{q}");
            if ids_per_row > 0 {
                assert_eq!(kept.rows.id_cells(), ids_per_row * kept.rows.len(), "{q}");
                // Each id column keeps only row numbers.
                assert_eq!(kept.rows.id_columns(), ids_per_row, "{q}");
            }
            assert_eq!(kept.rows, copied.rows, "{q}");
            assert_eq!(kept.rows.to_json(), copied.rows.to_json(), "{q}");
            let (a, b) = (
                serde_json::to_string(&kept.rows).unwrap(),
                serde_json::to_string(&copied.rows).unwrap(),
            );
            assert_eq!(a, b, "{q}");
            let mut text = b"[".to_vec();
            kept.rows.write_json_rows(&mut text, true).unwrap();
            text.push(b']');
            assert_eq!(text, b.as_bytes(), "{q}");

            // Arrow: every column read back equals the JSON rows.
            let mut enc = ArrowEncoder::new(&kept.columns);
            let mut bytes = enc.batch(&kept.rows).unwrap();
            bytes.extend(enc.finish().unwrap());
            let reader = StreamReader::try_new(std::io::Cursor::new(bytes), None).unwrap();
            let batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
            let want = copied.rows.to_json();
            let b = &batches[0];
            assert_eq!(b.num_rows(), want.len(), "{q}");
            // A column of adapter ids is dictionary-encoded, one of feedback ids is not.
            let dict = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
            for (c, name) in kept.columns.iter().enumerate() {
                let t = b.schema().field(c).data_type().clone();
                match name.as_str() {
                    "a1.id" | "a2.id" => assert_eq!(t, dict, "{q}: {name}"),
                    "f.id" | "x" => assert_eq!(t, DataType::Utf8, "{q}: {name}"),
                    _ => {}
                }
            }
            for (c, col) in b.columns().iter().enumerate() {
                for (r, row) in want.iter().enumerate() {
                    let got = if col.is_null(r) {
                        serde_json::Value::Null
                    } else if let Some(d) =
                        col.as_any().downcast_ref::<DictionaryArray<Int32Type>>()
                    {
                        let values = d.values().as_any().downcast_ref::<StringArray>().unwrap();
                        serde_json::Value::from(values.value(d.keys().value(r) as usize))
                    } else if let Some(s) = col.as_any().downcast_ref::<StringArray>() {
                        serde_json::Value::from(s.value(r))
                    } else if let Some(i) = col.as_any().downcast_ref::<Int64Array>() {
                        serde_json::Value::from(i.value(r))
                    } else {
                        panic!("{q}: column {c} is {:?}", col.data_type())
                    };
                    assert_eq!(got, row[c], "{q}: row {r} column {c}");
                }
            }
        }
    }

    #[test]
    fn an_empty_result_is_a_stream_with_a_schema() {
        let cols = vec!["a".to_owned()];
        let mut enc = ArrowEncoder::new(&cols);
        let bytes = enc.finish().unwrap();
        let reader = StreamReader::try_new(std::io::Cursor::new(bytes), None).unwrap();
        assert_eq!(reader.schema().field(0).name(), "a");
        assert_eq!(reader.count(), 0);
    }
}
