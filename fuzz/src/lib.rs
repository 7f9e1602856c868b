//! The bodies of feedgraph's fuzz targets, one function per target.
//!
//! `fuzz_targets/*.rs` hand libFuzzer's bytes to these functions; the main crate's
//! `tests/fuzz_corpus.rs` includes this file with `#[path]` and replays every file of
//! `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/` through them on stable, so the
//! corpora and the fixed crashes are checked on every test run.
//!
//! Each body feeds its input to the same public functions the server or the CLI use, and
//! panics only when feedgraph breaks a promise: a panic inside feedgraph, or one of the
//! invariants asserted here (a record that decodes in full also decodes as the start-up
//! prefix, and agrees with it; a dump line that checks out encodes and decodes as a
//! record; the count pushdown and the statistics of the planner change no answer).

use std::sync::OnceLock;
use std::time::Duration;

use feedgraph::cypher::{self, PlanOptions, QueryLimits, TextSource};
use feedgraph::graph::OrgGraph;
use feedgraph::model::{
    Adapter, Feedback, FeedbackLink, FeedbackType, LinkSource, Metadata, NewFeedback,
    ValidationStatus,
};
use feedgraph::service::dump::{self, Staged};
use feedgraph::store::{self, FeedbackHeadRef, FeedbackRecord, RecordHeadRef, codec};
use feedgraph::validate::{self, FieldLimits, ValidationConfig, Validator};
use serde_json::{Map, Value};

/// The target names, as `fuzz/corpus/<name>/` and `fuzz/regressions/<name>/` use them.
pub const TARGETS: [&str; 4] = ["cypher", "request_body", "codec", "dump_line"];

/// Runs the body of target `name` on `data`; false if there is no such target.
pub fn run(name: &str, data: &[u8]) -> bool {
    match name {
        "cypher" => cypher(data),
        "request_body" => request_body(data),
        "codec" => codec(data),
        "dump_line" => dump_line(data),
        _ => return false,
    }
    true
}

// ---------------------------------------------------------------------------------------
// cypher: query text -> dialect rewrite -> open-cypher parse -> plan -> execute.

/// The fixed graph the Cypher target runs on: a three-adapter lineage (`root` <- `child`
/// <- `grandchild`, plus an unrelated `solo`) and five feedback items linked to them,
/// with every property kind set on some item and absent on another.
pub fn fixed_graph() -> &'static OrgGraph {
    static GRAPH: OnceLock<OrgGraph> = OnceLock::new();
    GRAPH.get_or_init(|| {
        let mut g = OrgGraph::default();
        for (id, parent) in [
            ("root", None),
            ("child", Some("root")),
            ("grandchild", Some("child")),
            ("solo", None),
        ] {
            g.upsert_adapter(&Adapter {
                id: id.into(),
                org_id: "fuzz".into(),
                version: parent.map(|_| "v1".to_owned()),
                base_model: Some("base".into()),
                derived_from: parent.map(str::to_owned),
                metadata: Metadata::default(),
                created_at: 10,
                source: LinkSource::Manual,
                record_version: 1,
            });
        }
        /// Id, type, status, score and linked adapters of one fixed item.
        type Item<'a> = (
            &'a str,
            FeedbackType,
            ValidationStatus,
            Option<f64>,
            &'a [&'a str],
        );
        let items: [Item; 5] = [
            (
                "feedback-1",
                FeedbackType::Positive,
                ValidationStatus::Approved,
                Some(1.0),
                &["child"],
            ),
            (
                "feedback-2",
                FeedbackType::Negative,
                ValidationStatus::Flagged,
                Some(0.5),
                &["child", "root"],
            ),
            (
                "feedback-3",
                FeedbackType::Positive,
                ValidationStatus::Pending,
                None,
                &["grandchild"],
            ),
            (
                "feedback-4",
                FeedbackType::Negative,
                ValidationStatus::Rejected,
                Some(-2.0),
                &["root"],
            ),
            (
                "feedback-5",
                FeedbackType::Positive,
                ValidationStatus::Approved,
                Some(4.0),
                &[],
            ),
        ];
        for (i, (id, kind, status, score, links)) in items.into_iter().enumerate() {
            let n = i as u64 + 1;
            let f = Feedback {
                id: id.into(),
                org_id: "fuzz".into(),
                feedback_type: kind,
                validation_status: status,
                created_at: 100 + n,
                updated_at: 200 + n,
                version: n,
                used_for_training: n.is_multiple_of(2),
                training_batch_id: if n.is_multiple_of(2) { 7 } else { 0 },
                model_version: (n != 3).then(|| format!("model-{}", n % 2)),
                adapter_id: links.first().map(|a| (*a).to_owned()),
                adapter_version: links.first().map(|_| "v1".to_owned()),
                user_id: Some(format!("user-{}", n % 3)),
                session_id: (n != 5).then(|| format!("session-{}", n % 2)),
                interaction_id: Some(format!("trace-{n}")),
                score,
                correction: (kind == FeedbackType::Negative).then(|| "better".to_owned()),
                comment: (n == 1).then(|| "fine".to_owned()),
                validation_reasons: Vec::new(),
                question: format!("question {n}?"),
                answer: format!("answer {n}."),
                metadata: Metadata::default(),
                pii: Vec::new(),
                kind: Default::default(),
                label: None,
                provider: None,
                score_config: None,
                erased_at: None,
                erased_by: None,
            };
            g.upsert_feedback(&f);
            for (k, a) in links.iter().enumerate() {
                g.add_link(&FeedbackLink {
                    feedback_id: f.id.clone(),
                    adapter_id: (*a).to_owned(),
                    created_at: 300 + n,
                    source: if k == 0 {
                        LinkSource::Auto
                    } else {
                        LinkSource::Manual
                    },
                    metadata: Metadata::default(),
                });
            }
        }
        g
    })
}

/// Texts for the fixed graph's items (what the store would read from sled).
struct FixedText;

impl TextSource for FixedText {
    fn feedback_text(&self, id: &str, field: &str) -> Option<String> {
        match field {
            "question" | "answer" => Some(format!("{field} of {id}")),
            "correction" if id.ends_with('2') || id.ends_with('4') => Some("better".into()),
            "comment" if id.ends_with('1') => Some("fine".into()),
            _ => None,
        }
    }
}

/// Tight limits, so that no input runs long or builds large results.
fn limits() -> QueryLimits {
    QueryLimits {
        timeout: Duration::from_secs(2),
        stream_timeout: Duration::from_secs(2),
        max_rows: 200,
        max_work: 20_000,
        max_depth: 6,
        max_memory: 16 << 20,
        memory_pool: None,
    }
}

/// Parameters every Cypher input may use: one of each JSON kind.
fn fixed_params() -> Map<String, Value> {
    let mut p = Map::new();
    p.insert("x".into(), Value::from("child"));
    p.insert("root".into(), Value::from("root"));
    p.insert("adapter_id".into(), Value::from("child"));
    p.insert("n".into(), Value::from(2));
    p.insert("f".into(), Value::from(1.5));
    p.insert("b".into(), Value::from(true));
    p.insert("l".into(), serde_json::json!([1, "two", null, 3.5]));
    p.insert("m".into(), serde_json::json!({"a": 1, "b": [2]}));
    p.insert("null".into(), Value::Null);
    p
}

/// Runs `query` on the fixed graph with and without the count pushdown and statistics;
/// when both succeed they must return as many rows, and the same rows where the order and
/// the float sums cannot differ between the two plans.
fn run_query(query: &str, params: &Map<String, Value>) {
    let g = fixed_graph();
    let limits = limits();
    let on = cypher::execute(g, &FixedText, query, params, &limits);
    if let Ok(r) = &on {
        assert!(r.rows.len() <= limits.max_rows, "more rows than max_rows");
        assert_eq!(
            r.columns.len(),
            r.rows.width(),
            "a row is not as wide as the columns"
        );
    }
    let off = PlanOptions {
        count_pushdown: false,
        statistics: false,
        pair_count: false,
        group_scan: false,
    };
    let plain = cypher::execute_with(g, &FixedText, query, params, &limits, &off);
    if let (Ok(a), Ok(b)) = (&on, &plain) {
        assert_eq!(
            a.columns, b.columns,
            "columns differ with the count pushdown"
        );
        assert_eq!(
            a.rows.len(),
            b.rows.len(),
            "row counts differ with the count pushdown"
        );
        let upper = query.to_ascii_uppercase();
        let order_free = [
            "LIMIT",
            "SKIP",
            "COLLECT",
            "SUM",
            "AVG",
            "STDEV",
            "PERCENTILE",
        ]
        .iter()
        .all(|w| !upper.contains(w));
        if order_free {
            let sorted = |r: &cypher::QueryResult| {
                let mut rows: Vec<String> = r
                    .rows
                    .to_json()
                    .iter()
                    .map(|row| serde_json::to_string(row).unwrap_or_default())
                    .collect();
                rows.sort();
                rows
            };
            assert_eq!(sorted(a), sorted(b), "rows differ with the count pushdown");
        }
    }
}

/// Target `cypher`: the bytes (lossily UTF-8) as a query, with [`fixed_params`].
pub fn cypher(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    // The dialect front on its own too: it must never panic, and its offset map must
    // point into the original text.
    if let Ok(rw) = cypher::dialect::rewrite(&text) {
        let _ = rw.map.to_original(rw.text.len());
    }
    run_query(&text, &fixed_params());
}

// ---------------------------------------------------------------------------------------
// request_body: JSON bytes -> every request body type the HTTP layer parses.

fn json_headers() -> &'static axum::http::HeaderMap {
    static HEADERS: OnceLock<axum::http::HeaderMap> = OnceLock::new();
    HEADERS.get_or_init(|| {
        let mut h = axum::http::HeaderMap::new();
        h.insert(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/json"),
        );
        h
    })
}

fn validator() -> &'static Validator {
    static VALIDATOR: OnceLock<Option<Validator>> = OnceLock::new();
    VALIDATOR
        .get_or_init(|| Validator::from_config(&ValidationConfig::default()).ok())
        .as_ref()
        .unwrap_or_else(|| panic!("the default validation config names a known plugin"))
}

fn parse<T: serde::de::DeserializeOwned>(data: &[u8]) -> Option<T> {
    feedgraph::http::extract::parse_json(json_headers(), data).ok()
}

/// The fields of `POST /feedback/{id}/link` (the HTTP type keeps its fields private).
#[derive(serde::Deserialize)]
struct LinkFields {
    adapter_id: Option<String>,
    metadata: Option<Map<String, Value>>,
}

/// The fields of `POST /graph/query`.
#[derive(serde::Deserialize)]
struct QueryFields {
    query: Option<String>,
    #[serde(default)]
    params: Map<String, Value>,
}

/// The fields of `POST /feedback/mark-used`.
#[derive(serde::Deserialize)]
struct MarkUsedFields {
    ids: Vec<String>,
}

/// Target `request_body`: the bytes as the body of every JSON request (submit, link,
/// review, adapter create, claim, commit, mark-used, query), each through the HTTP layer's
/// parser and then the checks the service makes before it touches the store.
pub fn request_body(data: &[u8]) {
    let limits = FieldLimits::default();
    // Submit: shape, then the content rules.
    if let Some(new) = parse::<NewFeedback>(data)
        && let Ok(valid) = validator().check_shape(new)
    {
        let verdict = validator().judge(&valid);
        assert_eq!(
            verdict.status,
            verdict
                .reasons
                .iter()
                .map(|r| r.status)
                .max()
                .unwrap_or(ValidationStatus::Approved)
        );
        let _ = valid.texts().count();
    }
    // Link.
    if parse::<feedgraph::http::feedback::LinkRequest>(data).is_some()
        && let Ok(f) = serde_json::from_slice::<LinkFields>(data)
        && let Ok(Some(id)) = validate::check_id("adapter_id", f.adapter_id, &limits)
    {
        let _ = validate::check_adapter_id("adapter_id", id);
        let _ = validate::check_metadata("metadata", f.metadata, &limits);
    }
    // Review.
    if let Some(r) = parse::<feedgraph::service::training::ReviewRequest>(data)
        && let Some(s) = r.validation_status.as_deref()
    {
        let _ = s.parse::<ValidationStatus>();
        let _ = r.reason.map(|r| r.trim().chars().count());
    }
    // Adapter create.
    if let Some(a) = parse::<feedgraph::service::NewAdapter>(data) {
        for (field, v) in [
            ("id", a.id),
            ("derived_from", a.derived_from),
            ("version", a.version),
            ("base_model", a.base_model),
        ] {
            if let Ok(Some(v)) = validate::check_id(field, v, &limits) {
                let _ = validate::check_adapter_id(field, v);
            }
        }
        let _ = validate::check_metadata("metadata", a.metadata, &limits);
    }
    // Claim and commit.
    let _ = parse::<feedgraph::service::training::ClaimRequest>(data);
    let _ = parse::<feedgraph::service::training::CommitRequest>(data);
    // Mark used.
    if parse::<feedgraph::http::feedback::MarkUsedRequest>(data).is_some()
        && let Ok(m) = serde_json::from_slice::<MarkUsedFields>(data)
    {
        for id in m.ids {
            let _ = validate::check_id("ids", Some(id), &limits);
        }
    }
    // Query: the text with the body's own parameters, on the fixed graph.
    if parse::<feedgraph::http::graph::QueryRequest>(data).is_some()
        && let Ok(q) = serde_json::from_slice::<QueryFields>(data)
        && let Some(text) = q.query.filter(|t| !t.trim().is_empty())
    {
        run_query(&text, &q.params);
    }
}

// ---------------------------------------------------------------------------------------
// codec: bytes as every stored record type.

/// Target `codec`: the bytes as the stored value of every tree that uses the record codec.
/// Each decode must be `Ok` or an error; a full feedback record that decodes must decode
/// as the start-up prefix too and agree with it, and re-encode to bytes that decode again.
pub fn codec(data: &[u8]) {
    for tree in store::CODEC_TREES {
        let _ = store::decode_stored_value(tree, data);
    }
    if let Ok(rec) = codec::decode::<FeedbackRecord>(data) {
        check_record_prefix(&rec, data);
        let again = codec::encode(&rec).unwrap_or_else(|e| panic!("re-encoding: {e}"));
        let back: FeedbackRecord =
            codec::decode(&again).unwrap_or_else(|e| panic!("decoding a re-encoded record: {e}"));
        check_record_prefix(&back, &again);
    }
    if let Ok(a) = codec::decode::<Adapter>(data) {
        let again = codec::encode(&a).unwrap_or_else(|e| panic!("re-encoding: {e}"));
        if let Err(e) = codec::decode::<Adapter>(&again) {
            panic!("decoding a re-encoded adapter: {e}");
        }
    }
}

/// The start-up prefix read of `bytes` agrees with the full record `rec` they hold.
fn check_record_prefix(rec: &FeedbackRecord, bytes: &[u8]) {
    let head: RecordHeadRef<'_> = codec::decode_prefix_borrowed(bytes)
        .unwrap_or_else(|e| panic!("a full record decodes but its prefix does not: {e}"));
    assert_eq!(head.lease, rec.lease);
    assert_eq!(head.links.len(), rec.links.len());
    for (h, l) in head.links.iter().zip(&rec.links) {
        assert_eq!(
            (h.feedback_id, h.adapter_id, h.created_at, h.source),
            (
                l.feedback_id.as_str(),
                l.adapter_id.as_str(),
                l.created_at,
                l.source
            )
        );
    }
    // Debug text: a NaN score equals itself there.
    assert_eq!(
        format!("{:?}", head.feedback),
        format!("{:?}", FeedbackHeadRef::from(&rec.feedback))
    );
}

// ---------------------------------------------------------------------------------------
// dump_line: one JSONL line as `feedgraph load` reads it.

/// Target `dump_line`: the bytes as one line of a dump, parsed and checked as `feedgraph
/// load` does each line. A line that parses must print and parse back to itself; a line
/// that checks out must make a record that the codec stores and reads back.
pub fn dump_line(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // `load` reads a file line by line; a line never holds a newline.
    let Some(line) = text.lines().next() else {
        return;
    };
    let _ = dump::parse_dump(text);
    let Ok((_, rec)) = dump::parse_line(1, line) else {
        return;
    };
    let printed = serde_json::to_string(&rec).unwrap_or_else(|e| panic!("printing: {e}"));
    match dump::parse_line(1, &printed) {
        Ok((_, back)) => assert_eq!(back, rec, "a dump line changed on print and parse"),
        Err(e) => panic!("a printed dump line does not parse: {e}: {printed}"),
    }
    let Ok(staged) = dump::check_record(1, rec, "fuzz", 1, &FieldLimits::default()) else {
        return;
    };
    match staged {
        Staged::Feedback(r) => {
            let bytes = codec::encode(&*r).unwrap_or_else(|e| panic!("encoding: {e}"));
            let back: FeedbackRecord =
                codec::decode(&bytes).unwrap_or_else(|e| panic!("decoding a loaded record: {e}"));
            check_record_prefix(&back, &bytes);
            assert_eq!(back.feedback.id, r.feedback.id);
        }
        Staged::Adapter(a) => {
            let bytes = codec::encode(&*a).unwrap_or_else(|e| panic!("encoding: {e}"));
            let back: Adapter =
                codec::decode(&bytes).unwrap_or_else(|e| panic!("decoding a loaded adapter: {e}"));
            assert_eq!(back.id, a.id);
        }
        Staged::DerivedFrom { .. } | Staged::FeedbackFor { .. } => {}
    }
}
