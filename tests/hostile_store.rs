//! What the store promises when things go wrong: a write whose sync failed is answered
//! as outcome-unknown and the server stops saying it is ready; readers never see a write
//! before it is durable; the graph takes a record's org from its key and `check` reports a
//! record whose body disagrees; idempotency keys expire and are swept.

mod common;

use std::time::Duration;

use common::server::{TestServer, error_details};
use feedgraph::http::auth::Role;
use feedgraph::service::training::ReviewRequest;
use feedgraph::service::{ListQuery, Service, ServiceError};
use feedgraph::store::IdempotencyKey;
use feedgraph::store::testing::{self, Fault};
use serde_json::json;

const Q: &str = "How do I rotate the signing keys?";
const A: &str = "Generate a new key, publish it, then retire the old one.";

fn key(k: &str, hash: u64) -> Option<IdempotencyKey> {
    Some(IdempotencyKey {
        key: k.into(),
        request_hash: hash,
    })
}

fn count(s: &Service, org: &str) -> usize {
    s.list(
        org,
        &ListQuery {
            limit: Some(1000),
            ..Default::default()
        },
    )
    .unwrap()
    .items
    .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_sync_is_outcome_unknown_and_the_server_is_not_ready() {
    common::sled_only!("a failed sled sync, injected through the sled store's fault hooks");
    let server = TestServer::start().await;
    let token = server.token("acme", "alice", Role::User);
    let body = json!({"type": "positive", "question": Q, "answer": A});
    let (status, _) = server.post(&token, "/feedback", &body).await;
    assert_eq!(status, 201);
    let ready = server.get_open("/readyz").await;
    assert_eq!(ready.status().as_u16(), 200);

    testing::inject(server.dir.path(), Fault::Error);
    let (status, body_out) = server.post(&token, "/feedback", &body).await;
    assert_eq!(status, 503, "{body_out}");
    assert_eq!(body_out["error"], "Write outcome unknown", "{body_out}");
    let details = error_details(&body_out);
    assert!(
        details.contains("may or may not have been stored") && details.contains("Idempotency-Key"),
        "{details}"
    );

    // The store now refuses writes; readiness says so.
    let ready = server.get_open("/readyz").await;
    assert_eq!(ready.status().as_u16(), 503);
    let ready: serde_json::Value = ready.json().await.unwrap();
    assert!(error_details(&ready).contains("failed sync"), "{ready}");

    // A later write is refused before it is made: that one is definitely not stored.
    let (status, refused) = server.post(&token, "/feedback", &body).await;
    assert_eq!(status, 503, "{refused}");
    assert_eq!(refused["error"], "Service Unavailable", "{refused}");
    assert!(error_details(&refused).contains("nothing was written"));
    testing::release(server.dir.path());
}

#[test]
fn after_an_unknown_outcome_a_retry_with_the_same_key_after_restart_stores_once() {
    common::sled_only!("a failed sled sync, injected through the sled store's fault hooks");
    let dir = tempfile::tempdir().unwrap();
    let actor = common::actor("acme");
    {
        let s = common::open(dir.path());
        testing::inject(dir.path(), Fault::Error);
        let err = s
            .submit_idempotent(&actor, common::item(Q, A), key("k-1", 7))
            .unwrap_err();
        assert!(matches!(err, ServiceError::OutcomeUnknown(_)), "{err:?}");
        let refused = s
            .submit_idempotent(&actor, common::item(Q, A), key("k-2", 8))
            .unwrap_err();
        assert!(
            matches!(refused, ServiceError::Unavailable(_)),
            "{refused:?}"
        );
        testing::release(dir.path());
    }
    let s = common::open(dir.path());
    let (first, _) = s
        .submit_idempotent(&actor, common::item(Q, A), key("k-1", 7))
        .unwrap();
    let (again, replay) = s
        .submit_idempotent(&actor, common::item(Q, A), key("k-1", 7))
        .unwrap();
    assert!(replay);
    assert_eq!(again.id, first.id);
    assert_eq!(count(&s, "acme"), 1, "the retried write was stored twice");
}

#[test]
fn a_reader_does_not_see_a_write_before_its_sync_completes() {
    common::sled_only!("a sled sync held by the fault hooks and sled's sync tickets");
    let dir = tempfile::tempdir().unwrap();
    let s = std::sync::Arc::new(common::open(dir.path()));
    let admin = feedgraph::model::Actor::new("acme", "root");
    let fb = s
        .submit(&common::actor("acme"), common::item(Q, A))
        .unwrap();
    assert_eq!(s.get("acme", &fb.id).unwrap().version, 1);

    // A review is written to sled, then waits for a sync that is held.
    testing::inject(dir.path(), Fault::Hold);
    let writer = {
        let (s, id) = (s.clone(), fb.id.clone());
        std::thread::spawn(move || {
            let req = ReviewRequest {
                validation_status: Some("rejected".into()),
                reason: Some("off topic".into()),
            };
            s.review(&admin, &id, req).map(|_| ())
        })
    };
    assert!(
        testing::wait_until_held(dir.path(), Duration::from_secs(20)),
        "no sync started"
    );
    // The held sync was asked for after the review's write: sled has version 2 now.
    let tickets = s.sled().unwrap().tickets_taken_for_tests();
    let order = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
    let reader = {
        let (s, id, order) = (s.clone(), fb.id.clone(), order.clone());
        std::thread::spawn(move || {
            let seen = s.get("acme", &id).map(|f| f.version);
            let history = s.history("acme", &id).map(|h| h.len());
            order.lock().push("read");
            (seen, history)
        })
    };
    // Until the reader either answered (too early) or asked for a sync of its own.
    while !reader.is_finished() && s.sled().unwrap().tickets_taken_for_tests() == tickets {
        std::thread::yield_now();
    }
    order.lock().push("released");
    testing::release(dir.path());
    let (seen, history) = reader.join().unwrap();
    writer.join().unwrap().unwrap();
    assert_eq!(
        *order.lock(),
        vec!["released", "read"],
        "the reader answered while the write was not durable"
    );
    assert_eq!(seen.unwrap(), 2);
    assert_eq!(history.unwrap(), 2);
}

#[test]
fn the_graph_takes_the_org_from_the_key_and_check_reports_a_body_that_disagrees() {
    common::sled_only!("it plants a record in sled's trees under another org's key");
    let dir = tempfile::tempdir().unwrap();
    let planted_id;
    {
        let s = common::open(dir.path());
        let fb = s
            .submit(&common::actor("acme"), common::item(Q, A))
            .unwrap();
        assert_eq!(s.verify().unwrap(), None);
        // A record under acme's key whose body says it belongs to another org.
        let mut rec = s
            .sled()
            .unwrap()
            .get_record("acme", &fb.id)
            .unwrap()
            .unwrap();
        planted_id = format!("{}-planted", fb.id);
        rec.feedback.id = planted_id.clone();
        rec.feedback.org_id = "evil".into();
        for l in &mut rec.links {
            l.feedback_id = planted_id.clone();
        }
        let bytes = feedgraph::store::codec::encode(&rec).unwrap();
        s.sled()
            .unwrap()
            .corrupt_feedback_for_tests("acme", &planted_id, &bytes)
            .unwrap();
        s.sled()
            .unwrap()
            .corrupt_feedback_for_tests("acme", &format!("{planted_id}h"), &bytes)
            .unwrap();
    }
    let s = common::open(dir.path());
    assert_eq!(count(&s, "evil"), 0, "the body's org got the record");
    assert!(
        s.list("acme", &ListQuery::default())
            .unwrap()
            .items
            .iter()
            .any(|f| f.id == planted_id),
        "the key's org lost the record"
    );
    let problem = s.verify().unwrap().expect("check found nothing");
    assert!(
        problem.contains(&planted_id) && problem.contains("evil") && problem.contains("acme"),
        "{problem}"
    );
}

#[test]
fn idempotency_keys_expire_and_are_swept() {
    common::sled_only!("it moves the sled store's clock (the PostgreSQL backend has no such hook)");
    let dir = tempfile::tempdir().unwrap();
    let s = common::open(dir.path());
    let actor = common::actor("acme");
    let (first, replay) = s
        .submit_idempotent(&actor, common::item(Q, A), key("k", 1))
        .unwrap();
    assert!(!replay);
    s.submit_idempotent(&actor, common::item(Q, A), key("other", 2))
        .unwrap();
    s.sled().unwrap().advance_clock_for_tests(23 * 3600 * 1000);
    let (again, replay) = s
        .submit_idempotent(&actor, common::item(Q, A), key("k", 1))
        .unwrap();
    assert!(replay, "a repeat within the lifetime must replay");
    assert_eq!(again.id, first.id);
    assert_eq!(s.sled().unwrap().sweep_idempotency().unwrap(), 0);
    assert_eq!(s.sled().unwrap().idempotency_entries(), 2);

    // Past 24 h the key is new again: the same request stores a new item.
    s.sled().unwrap().advance_clock_for_tests(3600 * 1000);
    let (fresh, replay) = s
        .submit_idempotent(&actor, common::item(Q, A), key("k", 1))
        .unwrap();
    assert!(!replay, "an expired key replayed");
    assert_ne!(fresh.id, first.id);
    // And it is remembered from now on.
    let (repeat, replay) = s
        .submit_idempotent(&actor, common::item(Q, A), key("k", 1))
        .unwrap();
    assert!(replay);
    assert_eq!(repeat.id, fresh.id);
    assert_eq!(count(&s, "acme"), 3);

    // The sweep removes the expired entry ("other"), not the renewed one.
    assert_eq!(s.sled().unwrap().idempotency_entries(), 2);
    assert_eq!(s.sled().unwrap().sweep_idempotency().unwrap(), 1);
    assert_eq!(s.sled().unwrap().idempotency_entries(), 1);
    let (_, replay) = s
        .submit_idempotent(&actor, common::item(Q, A), key("k", 1))
        .unwrap();
    assert!(replay, "the sweep removed a live key");
}

#[test]
fn the_idempotency_settings_are_configurable() {
    common::sled_only!("it moves the sled store's clock (the PostgreSQL backend has no such hook)");
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path());
    config.storage.idempotency_ttl_secs = 60;
    let s = Service::open(&config).unwrap();
    let actor = common::actor("acme");
    let (first, _) = s
        .submit_idempotent(&actor, common::item(Q, A), key("k", 1))
        .unwrap();
    s.sled().unwrap().advance_clock_for_tests(61 * 1000);
    let (second, replay) = s
        .submit_idempotent(&actor, common::item(Q, A), key("k", 1))
        .unwrap();
    assert!(!replay);
    assert_ne!(first.id, second.id);
}
