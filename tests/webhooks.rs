//! Lifecycle events delivered as signed webhooks to a real receiver on 127.0.0.1 that
//! the test starts: every event type, per-item order, signatures checked with our own
//! HMAC, a receiver that is down for a while, a server SIGKILLed between a change and its
//! delivery, the allow-list, automatic disabling after a failure streak, manual
//! redelivery, a slow endpoint that does not hold up another, and the PostgreSQL
//! backend. Several replicas delivering one outbox: tests/webhooks_replicas.rs.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use common::server::{TestServer, error_details};
use feedgraph::config::Config;
use feedgraph::http::auth::{Role, mint};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    signature: String,
    event_id: String,
    event_type: String,
    body: String,
    json: Value,
}

/// A webhook receiver on 127.0.0.1: records every request; answers 503 while `down`.
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Received>>>,
    down: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::on(listener).await
    }

    async fn on(listener: tokio::net::TcpListener) -> Receiver {
        let addr = listener.local_addr().unwrap();
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let down = Arc::new(AtomicBool::new(false));
        let (g, d) = (got.clone(), down.clone());
        let app = axum::Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
            let (g, d) = (g.clone(), d.clone());
            async move {
                let h = |n: &str| {
                    headers
                        .get(n)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned()
                };
                let body = String::from_utf8(body.to_vec()).unwrap();
                if d.load(Ordering::SeqCst) {
                    return StatusCode::SERVICE_UNAVAILABLE;
                }
                g.lock().unwrap().push(Received {
                    signature: h("feedgraph-signature"),
                    event_id: h("feedgraph-event-id"),
                    event_type: h("feedgraph-event-type"),
                    json: serde_json::from_str(&body).unwrap(),
                    body,
                });
                StatusCode::NO_CONTENT
            }
        });
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Receiver {
            url: format!("http://{addr}/hook"),
            got,
            down,
            task,
        }
    }

    fn got(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Waits (up to a minute: a give-up bound, not a timing assertion) until `f` holds.
async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Settings for tests: loopback and http allowed, fast polling and retries.
fn fast(c: &mut Config) {
    let w = &mut c.webhooks;
    w.allow_private = true;
    w.allow_http = true;
    w.poll_ms = 20;
    w.retry_base_ms = 20;
    w.retry_max_ms = 100;
}

/// Checks `Feedgraph-Signature: t=<unix>,v1=<hex>` against our own HMAC-SHA256 of
/// `t + "." + body`.
fn verify(secret: &str, r: &Received) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in r.signature.split(',') {
        match part.split_once('=') {
            Some(("t", x)) => t = Some(x.to_owned()),
            Some(("v1", x)) => v1 = Some(x.to_owned()),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.{}", r.body).as_bytes());
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    hex == v1
}

async fn register(s: &TestServer, admin: &str, url: &str, events: Value) -> (u16, Value) {
    s.post(admin, "/webhooks", &json!({"url": url, "events": events}))
        .await
}

const ALL: [&str; 8] = [
    "feedback.submitted",
    "feedback.reviewed",
    "feedback.linked",
    "feedback.erased",
    "batch.claimed",
    "batch.committed",
    "batch.aborted",
    "adapter.created",
];

fn item(q: &str) -> Value {
    json!({"type": "positive", "question": q, "answer": "An answer long enough to pass."})
}

/// The events of one record, in the order received (first delivery of each event id).
fn of_subject(got: &[Received], key: &str, id: &str) -> Vec<(String, u64)> {
    let mut seen = std::collections::HashSet::new();
    got.iter()
        .filter(|r| r.json["data"][key] == id && seen.insert(r.event_id.clone()))
        .map(|r| {
            (
                r.event_type.clone(),
                r.json["data"]["version"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_type_arrives_signed_and_in_order_per_item() {
    let rx = Receiver::start().await;
    let s = TestServer::start_with(fast).await;
    let admin = s.token("acme", "root", Role::Admin);
    let trainer = s.token("acme", "tina", Role::Trainer);
    let (status, ep) = register(&s, &admin, &rx.url, json!(ALL)).await;
    assert_eq!(status, 201, "{ep}");
    let secret = ep["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"));
    let id = ep["id"].as_str().unwrap().to_owned();
    // The secret is shown once: not in a later read.
    let (_, again) = s.get(&admin, &format!("/webhooks/{id}")).await;
    assert!(again.get("secret").is_none(), "{again}");

    // feedback.submitted + adapter.created (on the fly), then linked and reviewed.
    let (_, a) = s
        .post(
            &admin,
            "/feedback",
            &json!({"type": "negative",
            "question": "How do I drop a shard?", "answer": "Use DROP SHARD with the id.",
            "adapter_id": "ad-auto"}),
        )
        .await;
    let a_id = a["id"].as_str().unwrap().to_owned();
    assert_eq!(a["validation_status"], "flagged");
    let (st, _) = s
        .post(
            &admin,
            "/adapters",
            &json!({"id": "ad-explicit", "base_model": "m"}),
        )
        .await;
    assert_eq!(st, 201);
    let (st, _) = s
        .post(
            &admin,
            &format!("/feedback/{a_id}/link"),
            &json!({"adapter_id": "ad-explicit"}),
        )
        .await;
    assert!(st == 200 || st == 201, "{st}");
    let (st, body) = s
        .patch(
            &admin,
            &format!("/feedback/{a_id}"),
            &json!({"validation_status": "approved", "reason": "checked"}),
        )
        .await;
    assert_eq!(st, 200, "{body}");
    let (st, body) = s
        .post(&admin, &format!("/feedback/{a_id}/erase"), &json!({}))
        .await;
    assert_eq!(st, 201, "{body}");
    // Batches: one committed, one aborted.
    for q in ["First question here?", "Second question here?"] {
        let (st, _) = s.post(&admin, "/feedback", &item(q)).await;
        assert_eq!(st, 201);
    }
    let (st, b1) = s
        .post(&trainer, "/training/batches", &json!({"limit": 1}))
        .await;
    assert_eq!(st, 201, "{b1}");
    let b1 = b1["batch_id"].as_u64().unwrap();
    let (st, body) = s
        .post(
            &trainer,
            &format!("/training/batches/{b1}/commit"),
            &json!({}),
        )
        .await;
    assert_eq!(st, 200, "{body}");
    let (st, b2) = s
        .post(&trainer, "/training/batches", &json!({"limit": 1}))
        .await;
    assert_eq!(st, 201, "{b2}");
    let b2 = b2["batch_id"].as_u64().unwrap();
    let (st, body) = s
        .post(
            &trainer,
            &format!("/training/batches/{b2}/abort"),
            &json!({}),
        )
        .await;
    assert_eq!(st, 200, "{body}");

    until("every event type", || {
        let got = rx.got();
        ALL.iter().all(|t| got.iter().any(|r| r.event_type == *t))
    })
    .await;
    until("both adapters' events", || {
        rx.got()
            .iter()
            .filter(|r| r.event_type == "adapter.created")
            .count()
            >= 2
    })
    .await;
    let got = rx.got();
    for r in &got {
        assert!(
            verify(&secret, r),
            "signature of {} does not verify",
            r.body
        );
        assert!(!verify("another secret of enough length", r));
        assert_eq!(r.json["id"], r.event_id.as_str());
        assert_eq!(r.json["type"], r.event_type.as_str());
        assert_eq!(r.json["org_id"], "acme");
        // Never the item's text.
        assert!(!r.body.contains("drop a shard"), "{}", r.body);
    }
    // The item's events came in the order they happened.
    assert_eq!(
        of_subject(&got, "feedback_id", &a_id),
        vec![
            ("feedback.submitted".to_owned(), 1),
            ("feedback.linked".to_owned(), 2),
            ("feedback.reviewed".to_owned(), 3),
            ("feedback.erased".to_owned(), 4),
        ]
    );
    let batch_events: Vec<_> = got
        .iter()
        .filter(|r| r.event_type.starts_with("batch."))
        .map(|r| {
            (
                r.json["data"]["batch_id"].as_u64().unwrap(),
                r.event_type.clone(),
            )
        })
        .collect();
    assert!(batch_events.contains(&(b1, "batch.committed".into())));
    assert!(batch_events.contains(&(b2, "batch.aborted".into())));

    // The delivery log lists them, all delivered.
    let (st, log) = s
        .get(&admin, &format!("/webhooks/{id}/deliveries?limit=1000"))
        .await;
    assert_eq!(st, 200, "{log}");
    let rows = log["deliveries"].as_array().unwrap();
    assert!(rows.len() > ALL.len(), "{log}");
    assert!(rows.iter().all(|d| d["ok"] == true));
    // Another org sees none of it.
    let other = s.token("other", "root", Role::Admin);
    let (st, _) = s.get(&other, &format!("/webhooks/{id}")).await;
    assert_eq!(st, 404);
    // A user may not manage webhooks.
    let user = s.token("acme", "u", Role::User);
    let (st, _) = s.get(&user, "/webhooks").await;
    assert_eq!(st, 403);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_down_for_a_while_loses_nothing_and_keeps_each_items_order() {
    let rx = Receiver::start().await;
    rx.down.store(true, Ordering::SeqCst);
    let s = TestServer::start_with(fast).await;
    let admin = s.token("acme", "root", Role::Admin);
    let (_, ep) = register(
        &s,
        &admin,
        &rx.url,
        json!(["feedback.submitted", "feedback.linked"]),
    )
    .await;
    let id = ep["id"].as_str().unwrap().to_owned();
    let mut items = Vec::new();
    for i in 0..5 {
        let (st, fb) = s
            .post(&admin, "/feedback", &item(&format!("Question number {i}?")))
            .await;
        assert_eq!(st, 201);
        let fid = fb["id"].as_str().unwrap().to_owned();
        for adapter in ["x-1", "x-2"] {
            let (st, _) = s
                .post(
                    &admin,
                    &format!("/feedback/{fid}/link"),
                    &json!({"adapter_id": adapter}),
                )
                .await;
            assert!(st == 200 || st == 201);
        }
        items.push(fid);
    }
    // While it is down, attempts fail and are logged; nothing is lost.
    until("failed attempts", || failing(&s, &admin, &id)).await;
    let (_, view) = s.get(&admin, &format!("/webhooks/{id}")).await;
    assert_eq!(view["pending"], 15, "{view}");
    assert!(rx.got().is_empty());
    rx.down.store(false, Ordering::SeqCst);
    until("all 15 events", || {
        let got = rx.got();
        let ids: std::collections::HashSet<_> = got.iter().map(|r| r.event_id.clone()).collect();
        ids.len() == 15
    })
    .await;
    let got = rx.got();
    for fid in &items {
        let seq = of_subject(&got, "feedback_id", fid);
        assert_eq!(
            seq,
            vec![
                ("feedback.submitted".to_owned(), 1),
                ("feedback.linked".to_owned(), 2),
                ("feedback.linked".to_owned(), 3),
            ],
            "events of {fid}"
        );
    }
    // The receiver records an event before its answer reaches the sender, which marks the
    // event delivered only then: the last one may still be pending for a moment.
    until("nothing pending", || {
        let view = webhook_view(&s, &admin, &id);
        view["pending"] == 0 && view["failure_streak"] == 0
    })
    .await;
    s.stop().await;
}

/// Whether the endpoint has failed twice in a row by now.
fn failing(s: &TestServer, admin: &str, id: &str) -> bool {
    webhook_view(s, admin, id)["failure_streak"]
        .as_u64()
        .unwrap_or(0)
        >= 2
}

/// The endpoint's view (read over HTTP on a thread of its own, since `until` takes a plain
/// closure).
fn webhook_view(s: &TestServer, admin: &str, id: &str) -> Value {
    let url = s.url(&format!("/webhooks/{id}"));
    let admin = admin.to_owned();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            reqwest::Client::new()
                .get(url)
                .bearer_auth(admin)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        })
    })
    .join()
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_of_a_server_killed_before_delivery_is_delivered_after_restart() {
    // A port nobody listens on yet: the receiver starts only after the kill.
    let reserved = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = reserved.local_addr().unwrap();
    drop(reserved);
    let url = format!("http://{addr}/hook");
    let dir = tempfile::tempdir().unwrap();
    let serve = |dir: &std::path::Path| {
        let envs = [
            ("FEEDGRAPH__WEBHOOKS__ALLOW_PRIVATE", "true"),
            ("FEEDGRAPH__WEBHOOKS__ALLOW_HTTP", "true"),
            ("FEEDGRAPH__WEBHOOKS__POLL_MS", "20"),
            ("FEEDGRAPH__WEBHOOKS__RETRY_BASE_MS", "20"),
            ("FEEDGRAPH__WEBHOOKS__RETRY_MAX_MS", "100"),
        ]
        .map(|(k, v)| (k, v.to_owned()));
        common::spawn_serve(dir, &envs)
    };
    let client = reqwest::Client::new();
    let ready = |base: String| {
        let client = client.clone();
        async move {
            for _ in 0..500 {
                if let Ok(r) = client.get(format!("{base}/readyz")).send().await
                    && r.status().is_success()
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            panic!("server not ready");
        }
    };
    let (mut child, base) = serve(dir.path());
    ready(base.clone()).await;
    let config = Config {
        data_dir: dir.path().to_owned(),
        ..Config::default()
    };
    let admin = mint(&config, "acme", "root", &[Role::Admin], 600).unwrap();
    let ep: Value = client
        .post(format!("{base}/api/v1/llm/webhooks"))
        .bearer_auth(&admin)
        .json(&json!({"url": url, "events": ["feedback.submitted"],
                      "secret": "a secret of sixteen or more"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(ep["id"].is_string(), "{ep}");
    let fb: Value = client
        .post(format!("{base}/api/v1/llm/feedback"))
        .bearer_auth(&admin)
        .json(&item("Will this event survive a crash?"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let fid = fb["id"].as_str().unwrap().to_owned();
    child.kill().unwrap(); // SIGKILL: the event is acknowledged, not delivered.
    child.wait().unwrap();

    let rx = Receiver::on(tokio::net::TcpListener::bind(addr).await.unwrap()).await;
    let (mut child, base) = serve(dir.path());
    ready(base).await;
    until("the event after restart", || {
        rx.got()
            .iter()
            .any(|r| r.json["data"]["feedback_id"] == fid.as_str())
    })
    .await;
    let got = rx.got();
    assert_eq!(got[0].event_type, "feedback.submitted");
    assert!(verify("a secret of sixteen or more", &got[0]));
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_outside_the_allow_list_are_refused() {
    // Defaults: no internal targets, https only.
    let s = TestServer::start().await;
    let admin = s.token("acme", "root", Role::Admin);
    let ev = json!(["feedback.submitted"]);
    let (st, body) = register(&s, &admin, "http://example.com/hook", ev.clone()).await;
    assert_eq!(st, 400, "{body}");
    assert!(error_details(&body).contains("https"), "{body}");
    for url in [
        "https://127.0.0.1/hook",
        "https://localhost:8443/hook",
        "https://10.0.0.7/hook",
        "https://192.168.1.1/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/hook",
        "https://[fd00::1]/hook",
        "https://[::ffff:127.0.0.1]/hook",
    ] {
        let (st, body) = register(&s, &admin, url, ev.clone()).await;
        assert_eq!(st, 400, "{url}: {body}");
        assert!(
            error_details(&body).contains("internal address"),
            "{url}: {body}"
        );
    }
    let (_, list) = s.get(&admin, "/webhooks").await;
    assert_eq!(list["count"], 0);
    s.stop().await;

    // An allowed network lets one range through, and nothing else.
    let s = TestServer::start_with(|c| {
        c.webhooks.allowed_cidrs = vec!["127.0.0.0/8".into()];
    })
    .await;
    let admin = s.token("acme", "root", Role::Admin);
    let (st, body) = register(&s, &admin, "https://127.0.0.1:9/hook", ev.clone()).await;
    assert_eq!(st, 201, "{body}");
    let (st, _) = register(&s, &admin, "https://10.0.0.7/hook", ev.clone()).await;
    assert_eq!(st, 400);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_checks_the_allow_list_again() {
    // Registered while loopback was allowed; the server restarts with it forbidden.
    let rx = Receiver::start().await;
    let s = TestServer::start_with(fast).await;
    let admin = s.token("acme", "root", Role::Admin);
    let (_, ep) = register(&s, &admin, &rx.url, json!(["feedback.submitted"])).await;
    let id = ep["id"].as_str().unwrap().to_owned();
    let dir = s.stop_keep().await;
    let s = TestServer::start_in(dir, |c| {
        fast(c);
        c.webhooks.allow_private = false;
    })
    .await;
    let (st, _) = s
        .post(&admin, "/feedback", &item("Does this reach loopback?"))
        .await;
    assert_eq!(st, 201);
    let mut log = Value::Null;
    for _ in 0..3000 {
        log = s.get(&admin, &format!("/webhooks/{id}/deliveries")).await.1;
        if !log["deliveries"].as_array().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first = &log["deliveries"][0];
    assert_eq!(first["ok"], false, "{log}");
    assert!(
        first["error"]
            .as_str()
            .unwrap()
            .contains("internal address"),
        "{log}"
    );
    assert!(rx.got().is_empty(), "nothing reached the receiver");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_streak_disables_the_endpoint_and_enabling_it_delivers_what_waited() {
    let rx = Receiver::start().await;
    rx.down.store(true, Ordering::SeqCst);
    let s = TestServer::start_with(|c| {
        fast(c);
        c.webhooks.disable_after_failures = 3;
    })
    .await;
    let admin = s.token("acme", "root", Role::Admin);
    let (_, ep) = register(&s, &admin, &rx.url, json!(["feedback.submitted"])).await;
    let id = ep["id"].as_str().unwrap().to_owned();
    let (_, fb) = s
        .post(&admin, "/feedback", &item("Who turns the endpoint off?"))
        .await;
    let fid = fb["id"].as_str().unwrap().to_owned();
    let mut view = Value::Null;
    for _ in 0..3000 {
        view = s.get(&admin, &format!("/webhooks/{id}")).await.1;
        if view["enabled"] == false {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(view["enabled"], false, "{view}");
    assert_eq!(view["failure_streak"], 3, "{view}");
    assert!(
        view["disabled_reason"]
            .as_str()
            .unwrap()
            .contains("3 failed"),
        "{view}"
    );
    assert_eq!(view["pending"], 1, "the event waits: {view}");
    let (_, log) = s.get(&admin, &format!("/webhooks/{id}/deliveries")).await;
    assert_eq!(log["deliveries"].as_array().unwrap().len(), 3, "{log}");
    assert_eq!(log["deliveries"][0]["status"], 503);
    // Events of a disabled endpoint are not queued.
    let (_, other) = s
        .post(&admin, "/feedback", &item("Queued while disabled?"))
        .await;
    let (_, view) = s.get(&admin, &format!("/webhooks/{id}")).await;
    assert_eq!(view["pending"], 1, "{view}");

    rx.down.store(false, Ordering::SeqCst);
    let (st, view) = s
        .patch(
            &admin,
            &format!("/webhooks/{id}"),
            &json!({"enabled": true}),
        )
        .await;
    assert_eq!(st, 200, "{view}");
    assert_eq!(view["failure_streak"], 0);
    until("the waiting event", || {
        rx.got()
            .iter()
            .any(|r| r.json["data"]["feedback_id"] == fid.as_str())
    })
    .await;
    assert!(
        !rx.got()
            .iter()
            .any(|r| r.json["data"]["feedback_id"] == other["id"])
    );
    // Delete: gone, with its log.
    let r = s
        .client
        .delete(s.url(&format!("/webhooks/{id}")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let (st, _) = s.get(&admin, &format!("/webhooks/{id}")).await;
    assert_eq!(st, 404);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logged_delivery_can_be_sent_again() {
    let rx = Receiver::start().await;
    let s = TestServer::start_with(fast).await;
    let admin = s.token("acme", "root", Role::Admin);
    let (_, ep) = register(&s, &admin, &rx.url, json!(["feedback.submitted"])).await;
    let id = ep["id"].as_str().unwrap().to_owned();
    let secret = ep["secret"].as_str().unwrap().to_owned();
    s.post(&admin, "/feedback", &item("Send me twice, please?"))
        .await;
    until("the first delivery", || rx.got().len() == 1).await;
    let mut log = Value::Null;
    for _ in 0..3000 {
        log = s.get(&admin, &format!("/webhooks/{id}/deliveries")).await.1;
        if log["deliveries"].as_array().is_some_and(|d| !d.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let dlv = log["deliveries"][0]["id"].as_str().unwrap().to_owned();
    let (st, body) = s
        .post(
            &admin,
            &format!("/webhooks/{id}/deliveries/{dlv}/redeliver"),
            &json!({}),
        )
        .await;
    assert_eq!(st, 202, "{body}");
    let (st, _) = s
        .post(
            &admin,
            &format!("/webhooks/{id}/deliveries/dlv-nope/redeliver"),
            &json!({}),
        )
        .await;
    assert_eq!(st, 404);
    until("the second delivery", || rx.got().len() == 2).await;
    let got = rx.got();
    assert_eq!(got[0].event_id, got[1].event_id, "the same event");
    assert_eq!(got[0].body, got[1].body);
    assert!(verify(&secret, &got[1]));
    // The log entry is written after the receiver answered: wait for it.
    let mut log = Value::Null;
    for _ in 0..3000 {
        log = s.get(&admin, &format!("/webhooks/{id}/deliveries")).await.1;
        if log["deliveries"].as_array().is_some_and(|d| d.len() == 2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(log["deliveries"][0]["manual"], true, "{log}");
    // Paging: one per page, newest first.
    let (_, p1) = s
        .get(&admin, &format!("/webhooks/{id}/deliveries?limit=1"))
        .await;
    let cursor = p1["next_cursor"].as_str().unwrap().to_owned();
    let (_, p2) = s
        .get(
            &admin,
            &format!("/webhooks/{id}/deliveries?limit=1&before={cursor}"),
        )
        .await;
    assert_eq!(p2["deliveries"][0]["id"], dlv.as_str());
    assert!(p2["next_cursor"].is_null());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_work_on_postgres() {
    let Some(server) = common::postgres::PgServer::get() else {
        return;
    };
    let url = server.fresh_database();
    let rx = Receiver::start().await;
    rx.down.store(true, Ordering::SeqCst);
    let s = TestServer::start_with(|c| {
        fast(c);
        c.storage.backend = feedgraph::store::BackendKind::Postgres;
        c.storage.postgres.url = url;
    })
    .await;
    let admin = s.token("acme", "root", Role::Admin);
    let (st, ep) = register(
        &s,
        &admin,
        &rx.url,
        json!(["feedback.submitted", "feedback.linked", "adapter.created"]),
    )
    .await;
    assert_eq!(st, 201, "{ep}");
    let secret = ep["secret"].as_str().unwrap().to_owned();
    let (_, fb) = s
        .post(
            &admin,
            "/feedback",
            &json!({"type": "positive", "question": "On postgres too?",
            "answer": "Yes, the outbox is in the same transaction.", "adapter_id": "pg-ad"}),
        )
        .await;
    let fid = fb["id"].as_str().unwrap().to_owned();
    s.post(
        &admin,
        &format!("/feedback/{fid}/link"),
        &json!({"adapter_id": "pg-ad-2"}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    rx.down.store(false, Ordering::SeqCst);
    until("four events", || {
        let ids: std::collections::HashSet<_> =
            rx.got().iter().map(|r| r.event_id.clone()).collect();
        ids.len() == 4
    })
    .await;
    let got = rx.got();
    assert!(got.iter().all(|r| verify(&secret, r)));
    assert_eq!(
        of_subject(&got, "feedback_id", &fid),
        vec![
            ("feedback.submitted".to_owned(), 1),
            ("feedback.linked".to_owned(), 2)
        ]
    );
    // The delivery log pages and redelivery work on this backend too.
    let id = ep["id"].as_str().unwrap().to_owned();
    let (_, p1) = s
        .get(&admin, &format!("/webhooks/{id}/deliveries?limit=2"))
        .await;
    assert_eq!(p1["deliveries"].as_array().unwrap().len(), 2, "{p1}");
    let cursor = p1["next_cursor"].as_str().unwrap().to_owned();
    let (_, p2) = s
        .get(
            &admin,
            &format!("/webhooks/{id}/deliveries?limit=1000&before={cursor}"),
        )
        .await;
    let older = p2["deliveries"].as_array().unwrap();
    assert!(
        older
            .iter()
            .all(|d| d["id"].as_str().unwrap() < cursor.as_str())
    );
    let ok = older
        .iter()
        .find(|d| d["ok"] == true)
        .unwrap_or(&p1["deliveries"][0]);
    let dlv = ok["id"].as_str().unwrap().to_owned();
    let event = ok["event_id"].as_str().unwrap().to_owned();
    let before = rx.got().len();
    let (st, body) = s
        .post(
            &admin,
            &format!("/webhooks/{id}/deliveries/{dlv}/redeliver"),
            &json!({}),
        )
        .await;
    assert_eq!(st, 202, "{body}");
    until("the redelivery", || rx.got().len() > before).await;
    assert_eq!(rx.got().last().unwrap().event_id, event);
    s.stop().await;
}

/// A receiver that records arrivals into a log shared with other receivers (so a test can
/// see the order of arrival across them) and, while `hold` is set, keeps each request
/// unanswered until it is cleared.
struct Holding {
    url: String,
    answered: Arc<Mutex<Vec<String>>>,
    arrived: Arc<Mutex<Vec<String>>>,
    hold: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Holding {
    async fn start(name: &'static str, log: Arc<Mutex<Vec<&'static str>>>, hold: bool) -> Holding {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (hold_tx, hold_rx) = tokio::sync::watch::channel(hold);
        let answered: Arc<Mutex<Vec<String>>> = Arc::default();
        let arrived: Arc<Mutex<Vec<String>>> = Arc::default();
        let (an, ar) = (answered.clone(), arrived.clone());
        let app = axum::Router::new().fallback(move |headers: HeaderMap| {
            let (an, ar, log) = (an.clone(), ar.clone(), log.clone());
            let mut hold = hold_rx.clone();
            async move {
                let id = headers
                    .get("feedgraph-event-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                ar.lock().unwrap().push(id.clone());
                let _ = hold.wait_for(|h| !*h).await;
                log.lock().unwrap().push(name);
                an.lock().unwrap().push(id);
                StatusCode::NO_CONTENT
            }
        });
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Holding {
            url: format!("http://{addr}/hook"),
            answered,
            arrived,
            hold: hold_tx,
            task,
        }
    }

    fn answered(&self) -> std::collections::HashSet<String> {
        self.answered.lock().unwrap().iter().cloned().collect()
    }
}

impl Drop for Holding {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_endpoint_does_not_hold_up_another() {
    // Two receivers on loopback: `slow` keeps every request open until released, `fast`
    // answers at once. The request timeout is longer than the give-up bound of `until`, so
    // a worker that waits for the slow endpoint before serving the fast one fails here.
    let log: Arc<Mutex<Vec<&'static str>>> = Arc::default();
    let slow = Holding::start("slow", log.clone(), true).await;
    let fast_rx = Holding::start("fast", log.clone(), false).await;
    let s = TestServer::start_with(|c| {
        fast(c);
        c.webhooks.timeout_ms = 180_000;
    })
    .await;
    let admin = s.token("acme", "root", Role::Admin);
    // The slow one first: a worker that goes through endpoints in order meets it first.
    let (st, _) = register(&s, &admin, &slow.url, json!(["feedback.submitted"])).await;
    assert_eq!(st, 201);
    tokio::time::sleep(Duration::from_millis(5)).await;
    let (st, _) = register(&s, &admin, &fast_rx.url, json!(["feedback.submitted"])).await;
    assert_eq!(st, 201);
    for n in 0..5 {
        let (st, body) = s
            .post(
                &admin,
                "/feedback",
                &item(&format!("Which endpoint is served first, {n}?")),
            )
            .await;
        assert_eq!(st, 201, "{body}");
    }
    until("the fast endpoint to get every event", || {
        fast_rx.answered().len() == 5
    })
    .await;
    // The slow endpoint's first request came and is still unanswered: the fast one got
    // all its events while the slow one was pending.
    until("the slow endpoint's first request", || {
        !slow.arrived.lock().unwrap().is_empty()
    })
    .await;
    assert!(slow.answered().is_empty());
    assert_eq!(
        slow.arrived.lock().unwrap().len(),
        1,
        "one request in flight per endpoint"
    );
    assert_eq!(*log.lock().unwrap(), vec!["fast"; 5]);
    // Released, the slow endpoint gets everything too, in order after the fast ones.
    slow.hold.send_replace(false);
    until("the slow endpoint to get every event", || {
        slow.answered().len() == 5
    })
    .await;
    let order = log.lock().unwrap().clone();
    assert_eq!(&order[..5], &["fast"; 5]);
    assert!(order[5..].iter().all(|n| *n == "slow"), "{order:?}");
    s.stop().await;
}
