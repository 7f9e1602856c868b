//! The PostgreSQL backend against a real PostgreSQL started by the test harness
//! (tests/support/postgres.rs): the service's operations, a reopen that rebuilds the same
//! graph, exactly-once claims from two services sharing one database, and the HTTP API.

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use common::postgres::PgServer;
use common::server::TestServer;
use feedgraph::config::Config;
use feedgraph::http::auth::Role;
use feedgraph::model::ValidationStatus;
use feedgraph::service::training::{ClaimRequest, CommitRequest, ReviewRequest};
use feedgraph::service::{ListQuery, NewAdapter, Service, ServiceError};
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

#[test]
fn every_service_operation_works_on_postgres_and_a_reopen_rebuilds_the_same_graph() {
    let dir = tempfile::tempdir().unwrap();
    let Some(config) = pg_config(dir.path()) else {
        return;
    };
    let s = Service::open(&config).unwrap();
    assert_eq!(s.store().name(), "postgres");
    common::load_fixtures(&s);
    let listed = s.list("acme", &ListQuery::default()).unwrap();
    assert!(!listed.items.is_empty(), "the fixtures are listed");

    // Submit with an idempotency key: the retry replays, a different body conflicts.
    let actor = common::actor("acme");
    let key = |hash| {
        Some(IdempotencyKey {
            key: "k-1".into(),
            request_hash: hash,
        })
    };
    let (first, replay) = s
        .submit_idempotent(&actor, common::item("q one", "a one"), key(7))
        .unwrap();
    assert!(!replay);
    let (again, replay) = s
        .submit_idempotent(&actor, common::item("q one", "a one"), key(7))
        .unwrap();
    assert!(replay);
    assert_eq!(again.id, first.id);
    let conflict = s.submit_idempotent(&actor, common::item("q two", "a two"), key(8));
    assert!(
        matches!(conflict, Err(ServiceError::Conflict(_))),
        "{conflict:?}"
    );

    // Adapters: a lineage, and a cycle refused.
    let admin = feedgraph::model::Actor::new("acme", "admin");
    let adapter = |id: &str, parent: Option<&str>| NewAdapter {
        id: Some(id.into()),
        derived_from: parent.map(str::to_owned),
        ..Default::default()
    };
    s.create_adapter(&admin, adapter("pg-root", None)).unwrap();
    s.create_adapter(&admin, adapter("pg-child", Some("pg-root")))
        .unwrap();
    let cycle = s.create_adapter(&admin, adapter("pg-root", Some("pg-child")));
    assert!(cycle.is_err(), "a cycle is refused: {cycle:?}");

    // Link, review, history.
    let linked = s
        .link(&admin, &first.id, Some("pg-child".into()), None)
        .unwrap();
    assert!(linked.created);
    let again = s
        .link(&admin, &first.id, Some("pg-child".into()), None)
        .unwrap();
    assert!(!again.created, "linking is idempotent");
    let reviewed = s
        .review(
            &admin,
            &first.id,
            ReviewRequest {
                validation_status: Some("rejected".into()),
                reason: Some("wrong".into()),
            },
        )
        .unwrap();
    assert_eq!(
        reviewed.feedback.validation_status,
        ValidationStatus::Rejected
    );
    let history = s.history("acme", &first.id).unwrap();
    assert_eq!(history.len(), 3, "submit, link, review: {history:?}");
    assert!(
        !history[0].changes.is_empty(),
        "the creation entry was written out before the first update"
    );

    // Training: claim, commit, mark-used.
    let claimed = s
        .claim(
            &common::actor("acme"),
            ClaimRequest {
                limit: Some(3),
                ..Default::default()
            },
        )
        .unwrap()
        .expect("approved fixtures to claim");
    assert!(!claimed.feedback.is_empty());
    let committed = s
        .commit(
            &common::actor("acme"),
            claimed.batch.batch.id,
            CommitRequest {
                trained_adapter_id: Some("pg-trained".into()),
                trained_adapter_version: None,
            },
        )
        .unwrap();
    assert_eq!(committed.batch.manifest.len(), claimed.feedback.len());
    assert!(s.get_adapter("acme", "pg-trained").is_ok());

    assert_eq!(s.verify().unwrap(), None, "store and graph agree");
    let before = s.graph().canonical();
    drop(s);
    let reopened = Service::open(&config).unwrap();
    assert_eq!(
        reopened.graph().canonical(),
        before,
        "the graph rebuilt from PostgreSQL equals the live one"
    );
    assert_eq!(reopened.get("acme", &first.id).unwrap().version, 3);
}

/// Rule: two services over one database (replicas) never lease an item twice: the row
/// lock and the check inside the claim's transaction decide, whatever each graph says.
#[test]
fn claims_from_two_services_on_one_database_take_each_item_once() {
    let dir = tempfile::tempdir().unwrap();
    let Some(config) = pg_config(dir.path()) else {
        return;
    };
    let a = Arc::new(Service::open(&config).unwrap());
    let actor = common::actor("acme");
    let mut ids = HashSet::new();
    for i in 0..120 {
        let fb = a
            .submit(&actor, common::item(&format!("question {i}"), "an answer"))
            .unwrap();
        ids.insert(fb.id);
    }
    // The second service builds its graph from the database now: it sees every item as
    // free, and so does the first.
    let b = Arc::new(Service::open(&config).unwrap());
    let mut threads = Vec::new();
    // Rounds start together, so the two services' claims overlap in time.
    let barrier = Arc::new(std::sync::Barrier::new(8));
    for n in 0..8 {
        let s = if n % 2 == 0 { a.clone() } else { b.clone() };
        let barrier = barrier.clone();
        threads.push(std::thread::spawn(move || {
            let mut got = Vec::new();
            for _ in 0..6 {
                barrier.wait();
                let claimed = s
                    .claim(
                        &common::actor("acme"),
                        ClaimRequest {
                            limit: Some(10),
                            ..Default::default()
                        },
                    )
                    .unwrap();
                if let Some(c) = claimed {
                    got.extend(c.feedback.into_iter().map(|f| f.id));
                }
            }
            got
        }));
    }
    let mut seen = HashSet::new();
    for t in threads {
        for id in t.join().unwrap() {
            assert!(seen.insert(id.clone()), "item {id} was leased twice");
        }
    }
    assert!(seen.is_subset(&ids));
    assert!(!seen.is_empty());
}

#[tokio::test]
async fn the_http_api_runs_on_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let Some(config) = pg_config(dir.path()) else {
        return;
    };
    let url = config.storage.postgres.url.clone();
    let server = TestServer::start_in(dir, |c| {
        c.storage.backend = BackendKind::Postgres;
        c.storage.postgres.url = url;
    })
    .await;
    let token = server.token("acme", "alice", Role::Admin);
    let http = reqwest::Client::new();
    let created: Value = http
        .post(server.url("/feedback"))
        .bearer_auth(&token)
        .json(
            &json!({"type": "positive", "question": "What is 2+2?", "answer": "4",
                      "adapter_id": "pg-http"}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{created}"))
        .to_owned();
    let got: Value = http
        .get(server.url(&format!("/feedback/{id}")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["answer"], "4");
    let by_adapter: Value = http
        .get(server.url("/feedback/by-adapter/pg-http"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(by_adapter["total_linked"], 1, "{by_adapter}");
    let batch: Value = http
        .post(server.url("/feedback/batch"))
        .bearer_auth(&token)
        .json(&json!({"items": [
            {"type": "negative", "question": "q", "answer": "a", "idempotency_key": "b-1"},
            {"type": "sideways", "question": "q", "answer": "a"}
        ]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(batch["created"], 1, "{batch}");
    assert_eq!(batch["failed"], 1, "{batch}");
    let health = http
        .get(format!("{}/readyz", server.base))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(health, 200);
}

/// Rule: concurrent changes of one record from two services over one database lose
/// nothing: every link made is there, and the history has one version per change.
#[test]
fn concurrent_links_from_two_services_lose_no_update() {
    let dir = tempfile::tempdir().unwrap();
    let Some(config) = pg_config(dir.path()) else {
        return;
    };
    let a = Arc::new(Service::open(&config).unwrap());
    let b = Arc::new(Service::open(&config).unwrap());
    let item = a
        .submit(&common::actor("acme"), common::item("shared", "one item"))
        .unwrap();
    let barrier = Arc::new(std::sync::Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|n| {
            let s = if n % 2 == 0 { a.clone() } else { b.clone() };
            let (barrier, id) = (barrier.clone(), item.id.clone());
            std::thread::spawn(move || {
                for k in 0..4 {
                    barrier.wait();
                    let adapter = format!("ad-{n}-{k}");
                    s.link(&common::actor("acme"), &id, Some(adapter), None)
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let reopened = Service::open(&config).unwrap();
    let links = reopened.links_of("acme", &item.id).unwrap();
    assert_eq!(links.len(), 32, "every link is kept: {links:?}");
    let stored = reopened.get("acme", &item.id).unwrap();
    assert_eq!(stored.version, 33);
    let history = reopened.history("acme", &item.id).unwrap();
    assert_eq!(
        history.iter().map(|h| h.version).collect::<Vec<_>>(),
        (1..=33).collect::<Vec<_>>()
    );
    assert_eq!(reopened.verify().unwrap(), None);
}

/// The read-only commands (`stats`, `check`, `dump`) find a PostgreSQL store by its URL:
/// they must not refuse for want of a sled directory under `--data-dir`.
#[test]
fn read_only_commands_read_postgres_without_a_sled_directory() {
    let dir = tempfile::tempdir().unwrap();
    let Some(config) = pg_config(dir.path()) else {
        return;
    };
    common::load_fixtures(&Service::open(&config).unwrap());
    let empty = dir.path().join("no-sled-here");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_feedgraph"))
            .arg("--data-dir")
            .arg(&empty)
            .args(args)
            .env("RUST_LOG", "error")
            .env("FEEDGRAPH__STORAGE__BACKEND", "postgres")
            .env(
                "FEEDGRAPH__STORAGE__POSTGRES__URL",
                &config.storage.postgres.url,
            )
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "feedgraph {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let stats: Value = serde_json::from_str(&run(&["stats", "--org", "acme"])).unwrap();
    assert!(stats["total_feedback"].as_u64().unwrap() > 0, "{stats}");
    run(&["check"]);
    assert!(run(&["dump", "--org", "acme"]).lines().count() > 1);
}
