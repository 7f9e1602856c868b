//! `feedgraph load` when something breaks under it (issue 18, point 10): the reader
//! thread dies mid-file, or the final sync fails. Each runs the real command in this
//! process (so the store's fault hooks reach it) and checks the error and what is left.

mod common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use clap::Parser;
use feedgraph::cli::{Cli, CliError};
use feedgraph::store::testing::{self, Fault};

/// Runs `feedgraph --data-dir DATA load --org ORG FILE`; a panic escaping the command is
/// a failure of the test, not an error of the load.
fn load(data: &Path, org: &str, file: &Path) -> Result<(), CliError> {
    let cli = Cli::parse_from([
        OsStr::new("feedgraph"),
        OsStr::new("--data-dir"),
        data.as_os_str(),
        OsStr::new("load"),
        OsStr::new("--org"),
        OsStr::new(org),
        file.as_os_str(),
    ]);
    std::panic::catch_unwind(|| feedgraph::cli::run(&cli))
        .unwrap_or_else(|_| panic!("`feedgraph load` panicked instead of failing cleanly"))
}

/// A dump of `n` feedback items (`{prefix}-{i}`) linked to two adapters, one line each,
/// with the edges at the end.
fn dump_file(dir: &Path, name: &str, prefix: &str, n: usize) -> (PathBuf, Vec<String>) {
    let mut lines = vec![
        r#"{"kind":"adapter","id":"base","created_at":1}"#.to_owned(),
        r#"{"kind":"adapter","id":"child","created_at":2}"#.to_owned(),
        r#"{"kind":"derived_from","from":"child","to":"base"}"#.to_owned(),
    ];
    let ids: Vec<String> = (0..n).map(|i| format!("{prefix}-{i:05}")).collect();
    for (i, id) in ids.iter().enumerate() {
        lines.push(format!(
            r#"{{"kind":"feedback","id":"{id}","type":"positive","validation_status":"approved","used_for_training":false,"model_version":null,"question":"question {i}","answer":"answer {i}","created_at":{}}}"#,
            10 + i
        ));
    }
    for (i, id) in ids.iter().enumerate() {
        let to = if i % 2 == 0 { "base" } else { "child" };
        lines.push(format!(
            r#"{{"kind":"feedback_for","from":"{id}","to":"{to}"}}"#
        ));
    }
    let path = dir.join(name);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    (path, ids)
}

/// What the store holds after a load: `org`'s feedback records and adapters, and the
/// history entries of every org, committed or not (a failed load's entries would be
/// uncommitted ones, which reads never show). Checks the store on the way.
fn left_behind(data: &Path, org: &str) -> (usize, usize, usize) {
    let service = common::open(data);
    assert_eq!(
        service.verify().unwrap(),
        None,
        "the store is consistent and the graph rebuilds"
    );
    let store = service.sled().unwrap();
    let records = store.records_of(org).count();
    let adapters = store.adapters_of(org).unwrap().len();
    (records, adapters, store.history_entries())
}

/// Rule: a dump reader that dies mid-file fails the load with an error that says so, and
/// leaves nothing of it: no records, no history entries, no adapters. The reader dies
/// after several batches went to the loader, which had written their history entries.
#[test]
fn a_reader_that_dies_mid_file_fails_the_load_and_leaves_nothing() {
    common::sled_only!("the sled store's fault hooks and its leftover trees");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (file, _) = dump_file(dir.path(), "dies.jsonl", "f", 3000);
    testing::kill_dump_reader_at(&file, 2500);
    let err = load(&data, "acme", &file)
        .expect_err("the load fails")
        .to_string();
    assert!(
        err.contains("the dump reader stopped before the end of the file"),
        "{err}"
    );
    assert!(
        err.contains("died at line 2500"),
        "the reader's reason: {err}"
    );
    assert!(err.contains("nothing was loaded"), "{err}");
    assert!(!err.contains("line 0"), "{err}");
    assert_eq!(left_behind(&data, "acme"), (0, 0, 0), "{err}");

    // The same data directory takes a complete file afterwards: a history entry for each
    // item and adapter.
    let (good, _) = dump_file(dir.path(), "good.jsonl", "g", 10);
    load(&data, "acme", &good).expect("a whole file loads");
    assert_eq!(left_behind(&data, "acme"), (10, 2, 12));
}

/// Rule: when the final sync fails, the load fails with an error that names the sync,
/// says the outcome is unknown and what to run; the store stays consistent (every item
/// that is there is whole, with its history), what was there before is untouched, and
/// the load is there completely or not at all.
#[test]
fn a_failed_final_sync_fails_the_load_with_a_clear_error() {
    common::sled_only!("a failed sled sync, injected through the sled store's fault hooks");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Something already stored, in another org.
    let (before, _) = dump_file(dir.path(), "before.jsonl", "b", 5);
    load(&data, "other", &before).expect("the first load");
    assert_eq!(left_behind(&data, "other"), (5, 2, 7));

    // With the store in place, the load's final sync is the only sync it makes.
    let (file, _) = dump_file(dir.path(), "load.jsonl", "f", 300);
    testing::inject(&data, Fault::Error);
    let result = load(&data, "acme", &file);
    testing::release(&data);
    let err = result.expect_err("the load fails").to_string();
    assert!(err.contains("the final sync failed"), "{err}");
    assert!(err.contains("may be partly on disk"), "{err}");
    assert!(err.contains("feedgraph check"), "{err}");
    assert!(!err.contains("nothing was loaded"), "{err}");

    let (records, adapters, _) = left_behind(&data, "other");
    assert_eq!(
        (records, adapters),
        (5, 2),
        "what was there before is untouched"
    );
    let (records, adapters, history) = left_behind(&data, "acme");
    assert!(
        (records, adapters, history) == (0, 0, 7) || (records, adapters, history) == (300, 2, 309),
        "all or nothing: {records} records, {adapters} adapters, {history} history entries"
    );
}
