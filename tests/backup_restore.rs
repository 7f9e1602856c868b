//! Full backups move a store between backends with nothing lost: a store with history,
//! batches, edges with metadata and idempotency keys is backed up from sled, restored into
//! PostgreSQL (started by the harness, tests/support/postgres.rs), backed up again and
//! restored into a fresh sled directory; every backup of the chain is the same, and each
//! restored store behaves as the original (graph, history, key replays, batch ids).
//! Damaged files write nothing; an org with data is not overwritten unless asked.

mod common;

use std::process::Command;

use common::postgres::PgServer;
use feedgraph::config::Config;
use feedgraph::events::NewEndpoint;
use feedgraph::model::Actor;
use feedgraph::service::erasure::EraseRequest;
use feedgraph::service::kinds::NewScoreConfig;
use feedgraph::service::training::{ClaimRequest, CommitRequest, ReviewRequest};
use feedgraph::service::{NewAdapter, Service, ServiceError};
use feedgraph::store::ErasureScope;
use feedgraph::store::outbox::EventType;
use feedgraph::store::{BackendKind, IdempotencyKey};
use serde_json::{Value, json};

/// A configuration on a fresh database of the shared test server, or `None` without
/// PostgreSQL (a skip, unless CI requires it).
fn pg_config(dir: &std::path::Path) -> Option<Config> {
    let server = PgServer::get()?;
    let mut c = common::config(dir);
    c.storage.backend = BackendKind::Postgres;
    c.storage.postgres.url = server.fresh_database();
    Some(c)
}

fn key(k: &str, hash: u64) -> Option<IdempotencyKey> {
    Some(IdempotencyKey {
        key: k.into(),
        request_hash: hash,
    })
}

/// Fills `s` with every kind of state a backup must carry, in two orgs.
fn populate(s: &Service) {
    common::load_fixtures(s);
    let admin = Actor::new("acme", "admin");
    let adapter = |id: &str, parent: Option<&str>| NewAdapter {
        id: Some(id.into()),
        derived_from: parent.map(str::to_owned),
        ..Default::default()
    };
    s.create_adapter(&admin, adapter("bk-root", None)).unwrap();
    s.create_adapter(&admin, adapter("bk-child", Some("bk-root")))
        .unwrap();
    let user = Actor::new("acme", "alice");
    let (first, _) = s
        .submit_idempotent(
            &user,
            common::item("kept question", "kept answer"),
            key("k-1", 11),
        )
        .unwrap();
    let (_second, _) = s
        .submit_idempotent(
            &user,
            common::item("second question", "second answer"),
            key("k-2", 12),
        )
        .unwrap();
    let mut meta = serde_json::Map::new();
    meta.insert("reason".into(), json!("nightly eval"));
    s.link(&admin, &first.id, Some("bk-child".into()), Some(meta))
        .unwrap();
    s.review(
        &admin,
        &first.id,
        ReviewRequest {
            validation_status: Some("rejected".into()),
            reason: Some("checked".into()),
        },
    )
    .unwrap();
    let claim = |limit| {
        s.claim(
            &common::actor("acme"),
            ClaimRequest {
                limit: Some(limit),
                ..Default::default()
            },
        )
        .unwrap()
        .expect("approved items to claim")
    };
    let committed = claim(2);
    s.commit(
        &common::actor("acme"),
        committed.batch.batch.id,
        CommitRequest {
            trained_adapter_id: Some("bk-trained".into()),
            trained_adapter_version: Some("v1".into()),
        },
    )
    .unwrap();
    let aborted = claim(2);
    s.abort(&common::actor("acme"), aborted.batch.batch.id)
        .unwrap();
    // A score config with two versions, an erasure receipt, a webhook endpoint.
    for max in [5.0, 10.0] {
        s.put_score_config(
            &admin,
            NewScoreConfig {
                name: Some("stars".into()),
                data_type: Some("numeric".into()),
                min: Some(1.0),
                max: Some(max),
                ..Default::default()
            },
        )
        .unwrap();
    }
    s.erase(
        &admin,
        &EraseRequest {
            scope: ErasureScope::Session,
            value: "no-such-session".into(),
        },
    )
    .unwrap();
    feedgraph::events::register(
        s,
        &admin,
        NewEndpoint {
            url: "https://203.0.113.7/hooks".into(),
            events: vec![EventType::FeedbackSubmitted],
            secret: Some("a signing secret of enough length".into()),
            description: None,
        },
    )
    .unwrap();
    // A second org, so a backup holds several parts.
    s.submit(
        &Actor::new("globex", "bob"),
        common::item("globex question", "globex answer"),
    )
    .unwrap();
}

fn backup_of(s: &Service) -> Vec<u8> {
    let mut out = Vec::new();
    s.backup(&[], &mut out, &mut |_| {}).unwrap();
    out
}

/// The backup with what differs by nature between two backups of equal stores (when it
/// was taken, from which backend) blanked out.
fn normalised(backup: &[u8]) -> Vec<Value> {
    std::str::from_utf8(backup)
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            if v["kind"] == "org" {
                v["taken_at"] = json!(0);
                v["backend"] = json!("");
            }
            v
        })
        .collect()
}

fn restore(s: &Service, backup: &[u8], overwrite: bool) -> Result<(), ServiceError> {
    s.restore_backup(
        || Ok(std::io::Cursor::new(backup.to_vec())),
        overwrite,
        &mut |_, _| {},
    )
    .map(|_| ())
}

#[test]
fn a_backup_moves_sled_to_postgres_and_back_with_nothing_lost() {
    let dir = tempfile::tempdir().unwrap();
    let Some(pg) = pg_config(&dir.path().join("pg")) else {
        return;
    };
    let source = common::open(&dir.path().join("sled-a"));
    populate(&source);
    let original = backup_of(&source);
    let lines = normalised(&original);
    for kind in [
        "org",
        "adapter",
        "feedback",
        "batch",
        "idempotency",
        "score_config",
        "erasure",
        "webhook",
        "end",
    ] {
        assert!(
            lines.iter().any(|l| l["kind"] == kind),
            "the backup has {kind} lines"
        );
    }
    let orgs: Vec<&Value> = lines
        .iter()
        .filter(|l| l["kind"] == "org")
        .map(|l| &l["org"])
        .collect();
    assert!(
        orgs.contains(&&json!("acme")) && orgs.contains(&&json!("globex")),
        "one part per org: {orgs:?}"
    );
    let graph = source.graph().canonical();
    let probe = lines
        .iter()
        .find(|l| l["kind"] == "feedback" && l["record"]["feedback"]["question"] == "kept question")
        .expect("the linked item");
    let probe_id = probe["record"]["feedback"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let history = source.history("acme", &probe_id).unwrap();
    assert!(
        history.len() >= 3,
        "submit, link, review at least: {history:?}"
    );
    let max_batch = source
        .batches("acme", None, None)
        .unwrap()
        .iter()
        .map(|b| b.batch.id)
        .max()
        .unwrap();
    drop(source);

    // Into PostgreSQL.
    let target = Service::open(&pg).unwrap();
    restore(&target, &original, false).unwrap();
    assert_eq!(
        normalised(&backup_of(&target)),
        lines,
        "postgres holds what sled held"
    );
    drop(target);
    // Reopened, it builds the same graph and behaves as the original.
    let target = Service::open(&pg).unwrap();
    assert_eq!(
        target.graph().canonical(),
        graph,
        "same graph from postgres"
    );
    assert_eq!(target.verify().unwrap(), None, "store and graph agree");
    assert_eq!(target.history("acme", &probe_id).unwrap(), history);
    assert_eq!(
        target
            .store()
            .score_config_history("acme", "stars")
            .unwrap()
            .len(),
        2,
        "both versions of the score config"
    );
    assert_eq!(
        target
            .store()
            .erasures_page("acme", None, 10)
            .unwrap()
            .len(),
        1
    );
    let hooks = target.store().events().endpoints(Some("acme")).unwrap();
    assert_eq!(hooks.len(), 1, "{hooks:?}");
    assert_eq!(hooks[0].secret, "a signing secret of enough length");
    let links = target.links_of("acme", &probe_id).unwrap();
    assert!(
        links.iter().any(|l| l.adapter_id == "bk-child"
            && l.metadata.0.get("reason") == Some(&json!("nightly eval"))),
        "the edge keeps its metadata: {links:?}"
    );
    let user = Actor::new("acme", "alice");
    let (replayed, was_replay) = target
        .submit_idempotent(
            &user,
            common::item("kept question", "kept answer"),
            key("k-1", 11),
        )
        .unwrap();
    assert!(was_replay, "the restored key replays");
    assert_eq!(replayed.id, probe_id);
    let conflict =
        target.submit_idempotent(&user, common::item("other", "other answer"), key("k-2", 99));
    assert!(
        matches!(conflict, Err(ServiceError::Conflict(_))),
        "{conflict:?}"
    );
    let pg_backup = backup_of(&target);
    assert_eq!(normalised(&pg_backup), lines);

    // And back into a fresh sled directory.
    let back = common::open(&dir.path().join("sled-b"));
    restore(&back, &pg_backup, false).unwrap();
    drop(back);
    let back = common::open(&dir.path().join("sled-b"));
    assert_eq!(
        normalised(&backup_of(&back)),
        lines,
        "sled again holds the same"
    );
    assert_eq!(back.graph().canonical(), graph);
    // Batch ids continue after the restored ones: none is handed out twice.
    back.submit(
        &common::actor("acme"),
        common::item("fresh question", "fresh answer"),
    )
    .unwrap();
    let next = back
        .claim(
            &common::actor("acme"),
            ClaimRequest {
                limit: Some(1),
                ..Default::default()
            },
        )
        .unwrap()
        .expect("an approved item to claim");
    assert!(
        next.batch.batch.id > max_batch,
        "batch {} after restored {max_batch}",
        next.batch.batch.id
    );
}

#[test]
fn a_damaged_backup_writes_nothing_and_data_is_not_overwritten_unasked() {
    let dir = tempfile::tempdir().unwrap();
    let source = common::open(&dir.path().join("a"));
    populate(&source);
    let good = backup_of(&source);
    let text = String::from_utf8(good.clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();

    let target = common::open(&dir.path().join("b"));
    // Cut short: the last org has no end line.
    let cut = lines[..lines.len() - 1].join("\n");
    let err = restore(&target, cut.as_bytes(), false).unwrap_err();
    assert!(err.to_string().contains("cut short"), "{err}");
    // A line dropped from the middle: the counts disagree.
    let mut dropped = lines.clone();
    let at = dropped
        .iter()
        .position(|l| l.contains("\"kind\":\"feedback\""))
        .unwrap();
    dropped.remove(at);
    let err = restore(&target, dropped.join("\n").as_bytes(), false).unwrap_err();
    assert!(err.to_string().contains("damaged"), "{err}");
    // An entity of another org inside a part.
    let moved = text.replacen("\"org_id\":\"acme\"", "\"org_id\":\"globex\"", 1);
    let err = restore(&target, moved.as_bytes(), false).unwrap_err();
    assert!(err.to_string().contains("inside the part"), "{err}");
    assert!(
        target.store().orgs().unwrap().is_empty(),
        "no damaged backup wrote anything"
    );

    restore(&target, &good, false).unwrap();
    let again = restore(&target, &good, false).unwrap_err();
    assert!(matches!(again, ServiceError::Conflict(_)), "{again:?}");
    // --overwrite rewrites the same entities: nothing changes.
    restore(&target, &good, true).unwrap();
    assert_eq!(normalised(&backup_of(&target)), normalised(&good));
}

/// The commands as an operator runs them, sled to sled: `backup --out` writes the file
/// whole (never a partial file under the final name) and `restore` reads it.
#[test]
fn the_backup_and_restore_commands_round_trip_a_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let source = common::open(&a);
    populate(&source);
    let expected = normalised(&backup_of(&source));
    drop(source);
    let file = dir.path().join("full.backup");
    let run = |data: &std::path::Path, args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_feedgraph"))
            .arg("--data-dir")
            .arg(data)
            .args(args)
            .env("RUST_LOG", "error")
            .envs(common::backend_env(data))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let said = run(&a, &["backup", "--out", file.to_str().unwrap()]);
    assert!(said.contains("backed up"), "{said}");
    assert!(!dir.path().join("full.partial").exists());
    let b = dir.path().join("b");
    let said = run(&b, &["restore", file.to_str().unwrap()]);
    assert!(said.contains("restored org 'acme'"), "{said}");
    let restored = common::open(&b);
    assert_eq!(normalised(&backup_of(&restored)), expected);
}
