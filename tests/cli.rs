//! The command line as a user runs it: import checks, read-only commands, tokens, queries,
//! and a data directory held by a running server.

mod common;

use std::process::{Command, Output};

/// Runs `feedgraph --data-dir DIR ARGS` on the backend under test.
fn feedgraph(dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_feedgraph"))
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .envs(common::backend_env(dir))
        .env("RUST_LOG", "error")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn import_checks_every_line_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("in.jsonl");
    std::fs::write(
        &file,
        [
            r#"{"org":"acme","type":"positive","question":"How do I shard?","answer":"Use SHARD BY."}"#,
            r#"{"org":"acme","type":"meh","question":"How do I shard?","answer":"Use SHARD BY."}"#,
            r#"{"type":"positive","question":"How do I shard?","answer":"Use SHARD BY."}"#,
            r#"{"kind":"adapter","org":"acme","id":"x","derived_from":"ghost"}"#,
            r#"{"kind":"link","org":"acme","feedback_id":"nope","adapter_id":"x"}"#,
        ]
        .join("\n"),
    )
    .unwrap();
    let data = dir.path().join("data");
    let out = feedgraph(&data, &["import", file.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    for needle in [
        "4 bad line(s)",
        "line 2",
        "meh",
        "line 3",
        "org",
        "line 4",
        "ghost",
        "line 5",
        "nope",
    ] {
        assert!(err.contains(needle), "{needle} missing from: {err}");
    }
    let stats = feedgraph(&data, &["stats", "--org", "acme"]);
    let v: serde_json::Value = serde_json::from_slice(&stats.stdout).unwrap();
    assert_eq!(v["total_feedback"], 0, "nothing imported");

    // The fixtures import, and a re-run skips the items (they carry ids).
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/feedback.jsonl");
    assert!(feedgraph(&data, &["import", fixtures]).status.success());
    let again = feedgraph(&data, &["import", fixtures]);
    let v: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(
        (v["feedback"].as_u64(), v["skipped"].as_u64()),
        (Some(0), Some(240))
    );

    // A line naming a stored id with other content is skipped and changes nothing of the
    // stored item (neither its record nor its history) nor creates its adapter (the count
    // of adapters below stays 9), while the new item beside it in the same write is
    // stored with its own history.
    let clash = dir.path().join("clash.jsonl");
    std::fs::write(
        &clash,
        [
            r#"{"org":"acme","id":"feedback-01M32H550553R7WVEWWYKTSSSJ","created_at":1790099999999,"type":"positive","question":"CLASHQ?","answer":"CLASHA.","adapter_id":"clash_adapter"}"#,
            r#"{"org":"acme","id":"feedback-clash-new","created_at":1790099999999,"type":"positive","question":"NEWQ?","answer":"NEWA.","adapter_id":"themis_help_lora"}"#,
        ]
        .join("\n"),
    )
    .unwrap();
    let out = feedgraph(&data, &["import", clash.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["feedback"].as_u64(), v["skipped"].as_u64()),
        (Some(1), Some(1)),
        "{v}"
    );
    let service = common::open(&data);
    let kept = service
        .get("acme", "feedback-01M32H550553R7WVEWWYKTSSSJ")
        .unwrap();
    assert_eq!(kept.question, "What does the error 'lease expired' mean?");
    let history = service
        .history("acme", "feedback-01M32H550553R7WVEWWYKTSSSJ")
        .unwrap();
    assert_eq!(history.len(), 1, "{history:?}");
    assert!(
        !format!("{history:?}").contains("CLASH"),
        "the skipped line reached the history: {history:?}"
    );
    assert_eq!(
        service.history("acme", "feedback-clash-new").unwrap().len(),
        1
    );
    drop(service);

    // Queries from the command line.
    let out = feedgraph(
        &data,
        &[
            "query",
            "--org",
            "acme",
            "MATCH (a:Adapter) RETURN count(*) AS n",
            "--format",
            "json",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["rows"][0][0], 9);
    let out = feedgraph(
        &data,
        &[
            "query",
            "--org",
            "acme",
            "--named",
            "lineage",
            "--param",
            "root=base_model",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("| path"),
        "{}",
        text(&out.stdout)
    );
    let out = feedgraph(&data, &["query", "--org", "acme", "MATCH (a RETURN a"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("line 1"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn read_only_commands_refuse_a_missing_directory() {
    common::sled_only!("a missing sled data directory; on PostgreSQL the data is in the database");
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("typo");
    let out = feedgraph(&missing, &["stats", "--org", "acme"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no feedgraph data"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        !missing.exists(),
        "a read-only command created the directory"
    );
}

#[test]
fn tokens_need_org_and_sub() {
    let dir = tempfile::tempdir().unwrap();
    let out = feedgraph(dir.path(), &["token", "--org", "", "--sub", "alice"]);
    assert!(!out.status.success());
    let out = feedgraph(
        dir.path(),
        &[
            "token", "--org", "acme", "--sub", "alice", "--role", "wizard",
        ],
    );
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("wizard"));
    let out = feedgraph(
        dir.path(),
        &[
            "token",
            "--org",
            "acme",
            "--sub",
            "alice",
            "--role",
            "admin,trainer",
            "--ttl",
            "2h",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim().split('.').count(), 3, "a JWT");
}

#[test]
fn load_names_the_bad_line_leaves_nothing_and_then_loads() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let good = [
        r#"{"kind":"adapter","id":"base","created_at":1}"#,
        r#"{"kind":"adapter","id":"child","created_at":2}"#,
        r#"{"kind":"derived_from","from":"child","to":"base"}"#,
        r#"{"kind":"feedback","id":"f1","type":"positive","validation_status":"approved","used_for_training":false,"model_version":null,"question":"q1","answer":"a1","created_at":10}"#,
        r#"{"kind":"feedback","id":"f2","type":"negative","validation_status":"approved","used_for_training":false,"model_version":null,"question":"q2","answer":"a2","created_at":11}"#,
        r#"{"kind":"feedback_for","from":"f1","to":"child"}"#,
        r#"{"kind":"feedback_for","from":"f2","to":"base"}"#,
    ];
    let write = |name: &str, bytes: Vec<u8>| {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let with_last = |last: &[u8]| {
        let mut b = good.join("\n").into_bytes();
        b.push(b'\n');
        b.extend_from_slice(last);
        b
    };
    // A bad line, bytes that are not UTF-8, and a reference that fails only after every
    // feedback line was checked (and its history written): each names its line and leaves
    // nothing behind.
    for (file, line, needle) in [
        (
            write("syntax.jsonl", with_last(b"{\"kind\":\"feedback\",")),
            8,
            "EOF",
        ),
        (
            write(
                "utf8.jsonl",
                with_last(b"{\"kind\":\"adapter\",\"id\":\"\xff\"}"),
            ),
            8,
            "UTF-8",
        ),
        (
            write(
                "ref.jsonl",
                with_last(br#"{"kind":"feedback_for","from":"f1","to":"ghost"}"#),
            ),
            8,
            "ghost",
        ),
    ] {
        let out = feedgraph(&data, &["load", "--org", "acme", file.to_str().unwrap()]);
        assert!(!out.status.success(), "{}", file.display());
        let err = text(&out.stderr);
        assert!(err.contains(&format!("line {line}")), "{err}");
        assert!(err.contains(needle), "{needle} missing from: {err}");
        assert!(err.contains("nothing was loaded"), "{err}");
        let get = feedgraph(&data, &["get", "f1", "--org", "acme", "--history"]);
        assert!(!get.status.success(), "f1 exists after a failed load");
        let check = feedgraph(&data, &["check"]);
        assert!(check.status.success(), "{}", text(&check.stdout));
    }
    // The good file loads, with a history entry per item.
    let file = write("good.jsonl", good.join("\n").into_bytes());
    let out = feedgraph(&data, &["load", "--org", "acme", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["feedback"], 2);
    assert_eq!(summary["feedback_for"], 2);
    let get = feedgraph(&data, &["get", "f2", "--org", "acme", "--history"]);
    assert!(get.status.success(), "{}", text(&get.stderr));
    let out = text(&get.stdout);
    assert!(
        out.contains("\"import\"") || out.contains("Import"),
        "{out}"
    );
    let check = feedgraph(&data, &["check"]);
    assert!(check.status.success(), "{}", text(&check.stdout));
}

#[test]
fn a_data_directory_in_use_is_refused_with_a_clear_error() {
    common::sled_only!("sled's lock on its data directory");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/feedback.jsonl");
    assert!(feedgraph(&data, &["import", fixtures]).status.success());
    // Held by this process, as a running server would hold it.
    let config = feedgraph::config::Config {
        data_dir: data.clone(),
        ..Default::default()
    };
    let held = feedgraph::service::Service::open(&config).unwrap();
    let out = feedgraph(&data, &["stats", "--org", "acme"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("is in use by another feedgraph process"),
        "{err}"
    );
    drop(held);
    // Once it is released, the directory opens (after sled lets go of its lock).
    let out = feedgraph(&data, &["stats", "--org", "acme"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}
