//! Replays the fuzz corpora and the fixed crashes on stable, without a fuzz engine.
//!
//! The target bodies are `fuzz/src/lib.rs`, included here as a module, so `cargo fuzz`
//! and this test run the same code. Every file under `fuzz/corpus/<target>/` and
//! `fuzz/regressions/<target>/` goes through its target; any panic fails the test and
//! names the file. See fuzz/README.md for running the fuzzers themselves.

#[path = "../fuzz/src/lib.rs"]
mod bodies;

use std::path::{Path, PathBuf};

use feedgraph::model::{
    Adapter, ChangeAction, Feedback, FeedbackLink, FeedbackType, FieldChange, HistoryVersion,
    LinkSource, Metadata, ValidationReason, ValidationStatus,
};
use feedgraph::store::{self, Batch, BatchState, FeedbackRecord, Lease, ManifestEntry, codec};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect(),
        Err(_) => Vec::new(),
    };
    out.sort();
    out
}

/// Runs every file of `kind` (`corpus` or `regressions`) through its target; returns the
/// number of files per target and the failures (file and panic message).
fn replay(kind: &str) -> (Vec<(&'static str, usize)>, Vec<String>) {
    let mut counts = Vec::new();
    let mut failures = Vec::new();
    for target in bodies::TARGETS {
        let dir = fuzz_dir().join(kind).join(target);
        let list = files(&dir);
        for path in &list {
            let data = std::fs::read(path).unwrap();
            let outcome = std::panic::catch_unwind(|| assert!(bodies::run(target, &data)));
            if let Err(p) = outcome {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default();
                failures.push(format!("{}: {msg}", path.display()));
            }
        }
        counts.push((target, list.len()));
    }
    (counts, failures)
}

#[test]
fn every_corpus_file_runs_clean() {
    let (counts, failures) = replay("corpus");
    assert!(
        failures.is_empty(),
        "corpus inputs failed:\n{}",
        failures.join("\n")
    );
    for (target, n) in counts {
        assert!(n >= 10, "fuzz/corpus/{target} has only {n} files");
    }
}

#[test]
fn every_fixed_crash_stays_fixed() {
    let (counts, failures) = replay("regressions");
    assert!(
        failures.is_empty(),
        "regression inputs failed:\n{}",
        failures.join("\n")
    );
    let total: usize = counts.iter().map(|(_, n)| n).sum();
    assert!(total > 0, "fuzz/regressions holds no reproducers");
}

#[test]
fn the_fixed_cypher_graph_answers() {
    // The target's graph is not empty and its queries run: a body that silently failed
    // every query would fuzz nothing but the parser.
    let r = feedgraph::cypher::execute(
        bodies_graph(),
        &feedgraph::cypher::NoText,
        "MATCH (f:Feedback)-[:FEEDBACK_FOR]->(a:Adapter)-[:DERIVED_FROM*0..]->(r:Adapter {id: 'root'}) RETURN count(DISTINCT f)",
        &serde_json::Map::new(),
        &feedgraph::cypher::QueryLimits::default(),
    )
    .unwrap();
    assert_eq!(r.rows.to_json(), vec![vec![serde_json::json!(4)]]);
}

fn bodies_graph() -> &'static feedgraph::graph::OrgGraph {
    // Runs the target once so its graph is built, then reads it through a query above.
    bodies::cypher(b"RETURN 1");
    bodies::fixed_graph()
}

/// Every stored record type, as the store writes it: the codec seeds.
fn codec_seeds() -> Vec<(String, Vec<u8>)> {
    let link = FeedbackLink {
        feedback_id: "feedback-01".into(),
        adapter_id: "child".into(),
        created_at: 5,
        source: LinkSource::Auto,
        metadata: Metadata(
            serde_json::json!({"confidence": 0.9, "tags": ["a", 1, null]})
                .as_object()
                .cloned()
                .unwrap(),
        ),
    };
    let feedback = Feedback {
        id: "feedback-01".into(),
        org_id: "acme".into(),
        feedback_type: FeedbackType::Negative,
        validation_status: ValidationStatus::Flagged,
        created_at: 1_700_000_000_000,
        updated_at: 1_700_000_000_500,
        version: 3,
        used_for_training: true,
        training_batch_id: 7,
        model_version: Some("m-1".into()),
        adapter_id: Some("child".into()),
        adapter_version: Some("v2".into()),
        user_id: Some("alice".into()),
        session_id: Some("s-1".into()),
        interaction_id: Some("trace-1".into()),
        score: Some(2.5),
        correction: Some("The right answer.".into()),
        comment: None,
        validation_reasons: vec![ValidationReason {
            rule: "negative_without_explanation".into(),
            status: ValidationStatus::Flagged,
            message: "no correction or comment".into(),
        }],
        question: "What is it?".into(),
        answer: "A thing.".into(),
        metadata: Metadata::default(),
        pii: Vec::new(),
        kind: Default::default(),
        label: None,
        provider: None,
        score_config: None,
        erased_at: None,
        erased_by: None,
    };
    let mut plain = feedback.clone();
    plain.score = None;
    plain.model_version = None;
    plain.validation_reasons.clear();
    let records = [
        FeedbackRecord {
            lease: Some(Lease {
                batch_id: 7,
                expires_at: 1_700_000_360_000,
            }),
            links: vec![link.clone()],
            feedback,
        },
        FeedbackRecord {
            lease: None,
            links: Vec::new(),
            feedback: plain,
        },
    ];
    let adapter = Adapter {
        id: "child".into(),
        org_id: "acme".into(),
        version: Some("v2".into()),
        base_model: Some("llama".into()),
        derived_from: Some("root".into()),
        metadata: Metadata(
            serde_json::json!({"rank": 16})
                .as_object()
                .cloned()
                .unwrap(),
        ),
        created_at: 1,
        source: LinkSource::Manual,
        record_version: 2,
    };
    let history = HistoryVersion {
        version: 2,
        at: 9,
        actor: "alice".into(),
        action: ChangeAction::Review,
        changes: vec![FieldChange {
            field: "validation_status".into(),
            old: Some("\"flagged\"".into()),
            new: Some("\"approved\"".into()),
        }],
    };
    let batch = Batch {
        id: 7,
        org_id: "acme".into(),
        state: BatchState::Committed,
        version: 2,
        created_at: 1,
        created_by: "trainer".into(),
        lease_expires_at: 2,
        adapter_id: Some("child".into()),
        model: None,
        include_descendants: true,
        items: vec!["feedback-01".into(), "feedback-02".into()],
        manifest: vec![ManifestEntry {
            feedback_id: "feedback-01".into(),
            content_hash: "0123456789abcdef".into(),
        }],
        trained_adapter_id: Some("child-2".into()),
        trained_adapter_version: None,
        finished_at: Some(3),
    };
    // The idempotency tree's record is private to the store: the same fields in order
    // (feedback id, request hash, time) encode to the same bytes.
    let idempotency = ("feedback-01".to_owned(), 0xfeed_u64, 1_700_000_000_000_u64);
    let mut out = vec![
        ("adapters-1".to_owned(), codec::encode(&adapter).unwrap()),
        ("history-1".to_owned(), codec::encode(&history).unwrap()),
        ("batches-1".to_owned(), codec::encode(&batch).unwrap()),
        (
            "idempotency-1".to_owned(),
            codec::encode(&idempotency).unwrap(),
        ),
    ];
    for (i, r) in records.iter().enumerate() {
        out.push((format!("feedback-{}", i + 1), codec::encode(r).unwrap()));
    }
    out
}

#[test]
fn codec_seeds_are_current_records() {
    // The committed seeds decode as today's records: after a format change, rewrite them
    // (`cargo test --test fuzz_corpus -- --ignored write_codec_seeds`).
    let dir = fuzz_dir().join("corpus").join("codec");
    for (name, bytes) in codec_seeds() {
        let tree = name.split('-').next().unwrap();
        store::decode_stored_value(tree, &bytes).unwrap();
        let committed = std::fs::read(dir.join(format!("{name}.bin")))
            .unwrap_or_else(|e| panic!("fuzz/corpus/codec/{name}.bin: {e}"));
        assert_eq!(committed, bytes, "fuzz/corpus/codec/{name}.bin is stale");
    }
}

#[test]
#[ignore = "writes the codec seeds into fuzz/corpus/codec"]
fn write_codec_seeds() {
    let dir = fuzz_dir().join("corpus").join("codec");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in codec_seeds() {
        std::fs::write(dir.join(format!("{name}.bin")), &bytes).unwrap();
        // Truncations and single-byte changes of each seed, so the corpus starts from
        // near-misses as well as valid records.
        for cut in [1, bytes.len() / 2, bytes.len() - 1] {
            std::fs::write(dir.join(format!("{name}-cut{cut}.bin")), &bytes[..cut]).unwrap();
        }
        let mut flipped = bytes.clone();
        let at = bytes.len() / 3;
        flipped[at] ^= 0xff;
        std::fs::write(dir.join(format!("{name}-flip{at}.bin")), &flipped).unwrap();
    }
}
