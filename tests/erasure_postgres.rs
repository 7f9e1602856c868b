//! Erasure on the PostgreSQL backend: a user erasure blanks the records and every history
//! version (the rows are updated), the receipt is listed, and a job left `running` (as a
//! crash leaves it) is finished when a service opens the database.

mod common;

use common::postgres::PgServer;
use feedgraph::model::{Actor, HistoryVersion, NewFeedback};
use feedgraph::service::Service;
use feedgraph::service::erasure::EraseRequest;
use feedgraph::store::{BackendKind, ErasureRecord, ErasureScope, ErasureState};

fn item(m: &str, user: &str) -> NewFeedback {
    let mut f = common::item(
        &format!("Question with {m} inside?"),
        &format!("Answer with {m} inside."),
    );
    f.user_id = Some(user.into());
    f.comment = Some(format!("Comment {m}"));
    f
}

fn history_text(s: &Service, id: &str) -> String {
    let h = s.history("acme", id).unwrap();
    serde_json::to_string(&h.iter().map(HistoryVersion::to_json).collect::<Vec<_>>()).unwrap()
}

#[test]
fn erasure_and_its_resume_work_on_postgres() {
    let Some(server) = PgServer::get() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path());
    config.storage.backend = BackendKind::Postgres;
    config.storage.postgres.url = server.fresh_database();
    let s = Service::open(&config).unwrap();
    let actor = common::actor("acme");
    let m = format!("PGM{:016x}", rand::random::<u64>());
    let a = s.submit(&actor, item(&m, "pg-user")).unwrap();
    let b = s.submit(&actor, item(&m, "pg-user")).unwrap();
    let keep = s.submit(&actor, item("kept", "other")).unwrap();
    // A second version that holds the fields (the creation entry is written out).
    s.link(
        &Actor::new("acme", "root"),
        &a.id,
        Some("ad-pg".into()),
        None,
    )
    .unwrap();
    assert!(history_text(&s, &a.id).contains(&m));

    let admin = Actor::new("acme", "root");
    let receipt = s
        .erase(
            &admin,
            &EraseRequest {
                scope: ErasureScope::User,
                value: "pg-user".into(),
            },
        )
        .unwrap();
    assert_eq!(receipt.items, 2);
    assert_eq!(receipt.state, ErasureState::Done);
    for id in [&a.id, &b.id] {
        let f = s.get("acme", id).unwrap();
        assert!(f.is_erased() && f.question.is_empty() && f.user_id.is_none());
        assert!(!history_text(&s, id).contains(&m), "history of {id}");
    }
    assert_eq!(s.get("acme", &keep.id).unwrap().question, keep.question);
    let page = s.erasures("acme", None, None).unwrap();
    let listed: Vec<_> = page.erasures.iter().map(|e| e.record.clone()).collect();
    assert_eq!(listed, vec![receipt.clone()]);
    assert_eq!(
        page.erasures[0].bytes_gone_at, None,
        "PostgreSQL keeps no such time"
    );

    // A job a crash left running is finished by the next open.
    let job = ErasureRecord {
        id: "erasure-00000000000000000000000001".into(),
        org_id: "acme".into(),
        scope: ErasureScope::Item,
        subject: keep.id.clone(),
        requested_by: "root".into(),
        requested_at: 1,
        state: ErasureState::Running,
        item_ids: vec![keep.id.clone()],
        items: 0,
        versions: 0,
        finished_at: None,
    };
    s.store()
        .write(&admin, &mut |tx| tx.put_erasure(&job))
        .unwrap();
    drop(s);
    let s = Service::open(&config).unwrap();
    assert!(s.get("acme", &keep.id).unwrap().is_erased());
    let done = s.erasure("acme", &job.id).unwrap();
    assert_eq!(done.state, ErasureState::Done);
    assert_eq!(done.items, 1);
    assert!(s.store().unfinished_erasures().unwrap().is_empty());
}
