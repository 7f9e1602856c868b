//! Records written before the PII findings existed (format version 1) still read.
//!
//! `tests/pii_v1_store/sled` is a data directory written by the release before format
//! version 2 (commit 1df5c1d): two submits through its HTTP API, one of them linked to an
//! adapter afterwards, so the store holds version-1 feedback records, history entries, an
//! adapter and idempotency-free submits. The JSON files beside it are what that release's
//! `feedgraph get` printed for the two items.

mod common;

use std::path::Path;

use common::server::TestServer;
use feedgraph::http::auth::Role;
use serde_json::{Value, json};

const NEGATIVE: &str = "feedback-01M8M5ERVDJXGRNKGSP2FAC9ZC";
const POSITIVE: &str = "feedback-01M8M5ERVV60CJ8C02M92962Q2";

fn fixture_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pii_v1_store")
}

/// A copy of the version-1 data directory in a temporary directory.
fn v1_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let sled = dir.path().join("sled");
    std::fs::create_dir_all(sled.join("blobs")).unwrap();
    for e in std::fs::read_dir(fixture_dir().join("sled")).unwrap() {
        let e = e.unwrap();
        if e.path().is_file() {
            std::fs::copy(e.path(), sled.join(e.file_name())).unwrap();
        }
    }
    dir
}

/// What the old release printed for `name`, with the field this release adds.
fn expected(name: &str) -> Value {
    let text = std::fs::read_to_string(fixture_dir().join(name)).unwrap();
    let mut v: Value = serde_json::from_str(&text).unwrap();
    v["pii"] = json!([]);
    // Format 3's kind fields: an old record reads as thumbs with none of them.
    v["kind"] = json!("thumbs");
    for k in ["label", "provider", "score_config"] {
        v[k] = Value::Null;
    }
    // Format 4 (erasure): an old record reads as never erased.
    v["erased_at"] = Value::Null;
    v["erased_by"] = Value::Null;
    v
}

#[tokio::test]
async fn version_1_records_read_unchanged_and_migrate_on_their_next_write() {
    common::sled_only!("it reads a sled data directory written by an old release");
    let dir = v1_copy();
    // The raw bytes are version 1: the first byte of a feedback value is the format.
    {
        let db = sled::open(dir.path().join("sled")).unwrap();
        let tree = db.open_tree("feedback").unwrap();
        let versions: Vec<u8> = tree.iter().map(|kv| kv.unwrap().1[0]).collect();
        assert_eq!(versions, [1, 1], "the fixture holds version-1 records");
    }
    {
        // The consistency check reads every record, history entry and adapter.
        let service = common::open(dir.path());
        assert_eq!(service.verify().unwrap(), None);
    }

    let s = TestServer::start_in(dir, |_| {}).await;
    let t = s.token("acme", "alice", Role::Admin);
    for (id, file) in [
        (NEGATIVE, "feedback-negative.json"),
        (POSITIVE, "feedback-positive.json"),
    ] {
        let (status, fb) = s.get(&t, &format!("/feedback/{id}")).await;
        assert_eq!(status, 200, "{fb}");
        assert_eq!(fb, expected(file), "{id}");
    }
    let (_, history) = s.get(&t, &format!("/feedback/{POSITIVE}/history")).await;
    assert_eq!(history["count"], 2, "{history}");
    assert_eq!(history["versions"][1]["action"], "link");
    let (_, byad) = s.get(&t, "/feedback/by-adapter/lora_v1").await;
    assert_eq!(byad["count"], 2, "{byad}");

    // A change writes the record in the current format; it reads back the same.
    let (status, r) = s
        .patch(
            &t,
            &format!("/feedback/{NEGATIVE}"),
            &json!({"validation_status": "rejected", "reason": "migration test"}),
        )
        .await;
    assert_eq!(status, 200, "{r}");
    let (_, after) = s.get(&t, &format!("/feedback/{NEGATIVE}")).await;
    let mut want = expected("feedback-negative.json");
    for k in [
        "validation_status",
        "validation_reasons",
        "updated_at",
        "version",
    ] {
        want[k] = after[k].clone();
    }
    assert_eq!(after, want);
    assert_eq!(after["version"], 2);
    let dir = s.stop_keep().await;
    {
        let db = sled::open(dir.path().join("sled")).unwrap();
        let tree = db.open_tree("feedback").unwrap();
        let mut versions: Vec<u8> = tree.iter().map(|kv| kv.unwrap().1[0]).collect();
        versions.sort_unstable();
        assert_eq!(versions, [1, feedgraph::store::codec::FORMAT_VERSION]);
    }
    let service = common::open(dir.path());
    assert_eq!(service.verify().unwrap(), None);
    let again = service.get("acme", NEGATIVE).unwrap();
    assert_eq!(serde_json::to_value(&again).unwrap(), after);
}
