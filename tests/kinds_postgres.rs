//! Kinds and score configs on the PostgreSQL backend (migration 2): configs are written,
//! versioned with history and checked on submit; kinds survive a reopen; the HTTP
//! submit path looks configs up off the runtime.

mod common;

use common::postgres::PgServer;
use common::server::TestServer;
use feedgraph::config::Config;
use feedgraph::http::auth::Role;
use feedgraph::model::{FeedbackKind, NewFeedback};
use feedgraph::service::kinds::{ConfigOutcome, NewScoreConfig};
use feedgraph::service::{ListQuery, Service, ServiceError};
use feedgraph::store::BackendKind;
use serde_json::json;

fn pg_config(dir: &std::path::Path) -> Option<Config> {
    let server = PgServer::get()?;
    let mut c = common::config(dir);
    c.storage.backend = BackendKind::Postgres;
    c.storage.postgres.url = server.fresh_database();
    Some(c)
}

fn stars(max: f64) -> NewScoreConfig {
    NewScoreConfig {
        name: Some("stars".into()),
        data_type: Some("numeric".into()),
        min: Some(1.0),
        max: Some(max),
        threshold: Some(4.0),
        ..Default::default()
    }
}

fn rating(score: f64) -> NewFeedback {
    NewFeedback {
        kind: Some("rating".into()),
        score: Some(score),
        score_config: Some("stars".into()),
        provider: Some("openai".into()),
        feedback_type: None,
        ..common::item("How do I rotate a key?", "Open Settings, then Keys.")
    }
}

#[test]
fn score_configs_and_kinds_on_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let Some(config) = pg_config(dir.path()) else {
        return;
    };
    let s = Service::open(&config).unwrap();
    let admin = feedgraph::model::Actor::new("acme", "root");
    let (c, outcome) = s.put_score_config(&admin, stars(5.0)).unwrap();
    assert_eq!((c.version, outcome), (1, ConfigOutcome::Created));
    let (_, outcome) = s.put_score_config(&admin, stars(5.0)).unwrap();
    assert_eq!(outcome, ConfigOutcome::Unchanged);
    let (c, outcome) = s.put_score_config(&admin, stars(10.0)).unwrap();
    assert_eq!((c.version, outcome), (2, ConfigOutcome::Updated));
    assert_eq!(s.score_config_history("acme", "stars").unwrap().len(), 2);
    assert_eq!(s.score_configs("acme").unwrap().len(), 1);
    assert!(s.score_configs("globex").unwrap().is_empty());

    let actor = common::actor("acme");
    let refused = s.submit(&actor, rating(11.0));
    assert!(
        matches!(refused, Err(ServiceError::Invalid(_))),
        "{refused:?}"
    );
    let stored = s.submit(&actor, rating(3.0)).unwrap();
    assert_eq!(
        stored.feedback_type.as_str(),
        "negative",
        "below the threshold"
    );
    assert_eq!(stored.kind, FeedbackKind::Rating);
    drop(s);

    let s = Service::open(&config).unwrap();
    let page = s
        .list(
            "acme",
            &ListQuery {
                kind: Some(FeedbackKind::Rating),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].provider.as_deref(), Some("openai"));
    assert_eq!(page.items[0].score_config.as_deref(), Some("stars"));
    assert_eq!(s.get_score_config("acme", "stars").unwrap().max, Some(10.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_submit_checks_its_config_on_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let Some(pg) = pg_config(dir.path()) else {
        return;
    };
    let s = TestServer::start_in(dir, move |c| {
        c.storage = pg.storage.clone();
        c.rate_limit.enabled = false;
    })
    .await;
    let admin = s.token("acme", "root", Role::Admin);
    let t = s.token("acme", "ana", Role::User);
    let (status, body) = s
        .post(
            &admin,
            "/score-configs",
            &json!({"name": "topic", "data_type": "categorical", "categories": ["billing"]}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let item = |label: &str| {
        json!({"kind": "label", "label": label, "score_config": "topic",
               "question": "Why was I charged twice?", "answer": "A retry made a second charge."})
    };
    let (status, body) = s.post(&t, "/feedback", &item("shipping")).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = s.post(&t, "/feedback", &item("billing")).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = s
        .post(
            &t,
            "/feedback/batch",
            &json!({"items": [item("billing"), item("nope")]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][0]["status"], 201, "{body}");
    assert_eq!(body["results"][1]["status"], 400, "{body}");
    let (_, sum) = s.get(&t, "/feedback/summary").await;
    assert_eq!(sum["label_distribution"], json!({"billing": 2}), "{sum}");
    s.stop().await;
}
