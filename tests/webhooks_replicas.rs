//! Webhook delivery by several `feedgraph serve` replicas over one real PostgreSQL
//! (tests/support/postgres.rs): each endpoint's outbox is delivered by one replica at a
//! time (a lease in the database), so with two and three replicas writing at once every
//! event arrives, none is sent twice, each item's events arrive in order and signatures
//! verify; a replica SIGKILLed while it holds a lease (its request left hanging) blocks
//! nobody once the lease has lapsed: another replica takes over and delivers everything;
//! one stopped gracefully releases its lease, so the next takes over at once.
//!
//! Receivers are real HTTP servers on 127.0.0.1 started by the test. Waits poll with a
//! give-up deadline; no assertion depends on how long something took.

#[path = "support/postgres.rs"]
mod postgres;
#[path = "support/replica.rs"]
mod replica;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::Path;
use axum::http::{HeaderMap, StatusCode};
use feedgraph::config::Config;
use feedgraph::http::auth::{Role, mint};
use hmac::{Hmac, Mac};
use postgres::PgServer;
use replica::Replica;
use serde_json::{Value, json};
use sha2::Sha256;

const SECRET: &str = "replica-webhook-secret-0123456789abcdef";
const DEADLINE: Duration = Duration::from_secs(90);

/// The webhook settings of every replica here: loopback receivers allowed, fast polling
/// and retries.
const WEBHOOK_ENV: [(&str, &str); 5] = [
    ("FEEDGRAPH__WEBHOOKS__ALLOW_PRIVATE", "true"),
    ("FEEDGRAPH__WEBHOOKS__ALLOW_HTTP", "true"),
    ("FEEDGRAPH__WEBHOOKS__POLL_MS", "20"),
    ("FEEDGRAPH__WEBHOOKS__RETRY_BASE_MS", "20"),
    ("FEEDGRAPH__WEBHOOKS__RETRY_MAX_MS", "100"),
];

/// Starts a replica with [`WEBHOOK_ENV`] and `extra` settings.
async fn start(url: &str, dir: &std::path::Path, extra: &[(&str, &str)]) -> Replica {
    let env: Vec<(&str, &str)> = WEBHOOK_ENV.iter().chain(extra).copied().collect();
    Replica::start(url, dir, SECRET, &env).await
}

fn token(org: &str) -> String {
    let mut c = Config::default();
    c.auth.secret = Some(SECRET.into());
    mint(&c, org, "tester", &[Role::User, Role::Admin], 3600).expect("mint")
}

async fn post(c: &reqwest::Client, url: String, token: &str, body: &Value) -> (u16, Value) {
    match c.post(url).bearer_auth(token).json(body).send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.json().await.unwrap_or(Value::Null))
        }
        Err(_) => (0, Value::Null),
    }
}

async fn patch(c: &reqwest::Client, url: String, token: &str, body: &Value) -> (u16, Value) {
    match c.patch(url).bearer_auth(token).json(body).send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.json().await.unwrap_or(Value::Null))
        }
        Err(_) => (0, Value::Null),
    }
}

/// One request a receiver got.
#[derive(Debug, Clone)]
struct Hit {
    hook: String,
    event_id: String,
    event_type: String,
    signature: String,
    body: String,
    feedback_id: String,
    version: u64,
}

#[derive(Default)]
struct Seen {
    /// Every request, in order of arrival.
    hits: Vec<Hit>,
    /// Requests in flight per hook now, and the most ever.
    in_flight: HashMap<String, usize>,
    most_in_flight: HashMap<String, usize>,
}

/// A webhook receiver on 127.0.0.1 serving `/hook/{name}` for any name. Each request is
/// held a few milliseconds (so two overlapping requests to one hook are seen as such);
/// requests to the hook named in `hold` are held until it is cleared.
struct Receiver {
    base: String,
    seen: Arc<Mutex<Seen>>,
    hold: tokio::sync::watch::Sender<Option<String>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Seen>> = Arc::default();
        let (hold_tx, hold_rx) = tokio::sync::watch::channel::<Option<String>>(None);
        let s = seen.clone();
        let app = axum::Router::new().route(
            "/hook/{name}",
            axum::routing::post(
                move |Path(hook): Path<String>, headers: HeaderMap, body: Bytes| {
                    let s = s.clone();
                    let mut hold = hold_rx.clone();
                    async move {
                        let h = |n: &str| {
                            headers
                                .get(n)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_owned()
                        };
                        let body = String::from_utf8(body.to_vec()).unwrap();
                        let json: Value = serde_json::from_str(&body).unwrap();
                        {
                            let mut s = s.lock().unwrap();
                            s.hits.push(Hit {
                                hook: hook.clone(),
                                event_id: h("feedgraph-event-id"),
                                event_type: h("feedgraph-event-type"),
                                signature: h("feedgraph-signature"),
                                feedback_id: json["data"]["feedback_id"]
                                    .as_str()
                                    .unwrap_or("")
                                    .to_owned(),
                                version: json["data"]["version"].as_u64().unwrap_or(0),
                                body,
                            });
                            let n = s.in_flight.entry(hook.clone()).or_default();
                            *n += 1;
                            let n = *n;
                            let most = s.most_in_flight.entry(hook.clone()).or_default();
                            *most = (*most).max(n);
                        }
                        let _ = hold.wait_for(|h| h.as_deref() != Some(hook.as_str())).await;
                        tokio::time::sleep(Duration::from_millis(3)).await;
                        *s.lock().unwrap().in_flight.entry(hook).or_default() -= 1;
                        StatusCode::NO_CONTENT
                    }
                },
            ),
        );
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Receiver {
            base: format!("http://{addr}"),
            seen,
            hold: hold_tx,
            task,
        }
    }

    fn url(&self, hook: &str) -> String {
        format!("{}/hook/{hook}", self.base)
    }

    fn hits(&self) -> Vec<Hit> {
        self.seen.lock().unwrap().hits.clone()
    }

    /// Distinct event ids a hook got.
    fn events(&self, hook: &str) -> HashSet<String> {
        self.hits()
            .into_iter()
            .filter(|h| h.hook == hook)
            .map(|h| h.event_id)
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Checks `Feedgraph-Signature: t=<unix>,v1=<hex>` with our own HMAC-SHA256.
fn verify(secret: &str, hit: &Hit) -> bool {
    let parts: HashMap<&str, &str> = hit
        .signature
        .split(',')
        .filter_map(|p| p.split_once('='))
        .collect();
    let (Some(t), Some(v1)) = (parts.get("t"), parts.get("v1")) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.{}", hit.body).as_bytes());
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    hex == *v1
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !f() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn item(tag: &str) -> Value {
    json!({
        "type": "negative",
        "question": format!("Which replica delivers this, case {tag}?"),
        "answer": format!("Whichever holds the lease ({tag})."),
    })
}

/// Registers an endpoint through `r`; returns its id.
async fn register(
    c: &reqwest::Client,
    r: &Replica,
    org: &str,
    url: &str,
    events: &[&str],
    secret: &str,
) -> String {
    let (st, body) = post(
        c,
        r.api("/webhooks"),
        &token(org),
        &json!({"url": url, "events": events, "secret": secret}),
    )
    .await;
    assert_eq!(st, 201, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

/// Submits an item through `r`, links it and reviews it (three versions, three events);
/// returns its id.
async fn write_item(c: &reqwest::Client, base: &str, org: &str, tag: &str) -> String {
    let t = token(org);
    let api = |path: &str| format!("{base}/api/v1/llm{path}");
    let (st, body) = post(c, api("/feedback"), &t, &item(tag)).await;
    assert_eq!(st, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    let (st, body) = post(
        c,
        api(&format!("/feedback/{id}/link")),
        &t,
        &json!({"adapter_id": "ad-shared"}),
    )
    .await;
    assert!(st == 200 || st == 201, "{st} {body}");
    let (st, body) = patch(
        c,
        api(&format!("/feedback/{id}")),
        &t,
        &json!({"validation_status": "approved", "reason": "checked"}),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    id
}

/// Per hook and item, the versions in the order their events arrived (every arrival).
fn arrivals(hits: &[Hit]) -> BTreeMap<(String, String), Vec<u64>> {
    let mut out: BTreeMap<(String, String), Vec<u64>> = BTreeMap::new();
    for h in hits.iter().filter(|h| !h.feedback_id.is_empty()) {
        out.entry((h.hook.clone(), h.feedback_id.clone()))
            .or_default()
            .push(h.version);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_deliver_each_event_once_in_order_per_item_with_two_and_three_replicas() {
    let Some(server) = PgServer::get() else {
        return;
    };
    let url = server.fresh_database();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let c = reqwest::Client::new();
    let rx = Receiver::start().await;
    let mut replicas = vec![
        start(&url, dirs[0].path(), &[]).await,
        start(&url, dirs[1].path(), &[]).await,
    ];
    let feedback = ["feedback.submitted", "feedback.linked", "feedback.reviewed"];
    // Several endpoints over two orgs: (hook, org, events, secret).
    let hooks: Vec<(&str, &str, Vec<&str>, String)> = vec![
        (
            "a0",
            "acme",
            feedback.to_vec(),
            "secret-of-hook-a0-0123".into(),
        ),
        (
            "a1",
            "acme",
            vec!["feedback.submitted", "feedback.reviewed"],
            "secret-of-hook-a1-0123".into(),
        ),
        (
            "a2",
            "acme",
            feedback.to_vec(),
            "secret-of-hook-a2-0123".into(),
        ),
        (
            "b0",
            "beta",
            feedback.to_vec(),
            "secret-of-hook-b0-0123".into(),
        ),
    ];
    for (i, (hook, org, events, secret)) in hooks.iter().enumerate() {
        let r = &replicas[i % replicas.len()];
        register(&c, r, org, &rx.url(hook), events, secret).await;
    }
    for org in ["acme", "beta"] {
        let (st, body) = post(
            &c,
            replicas[0].api("/adapters"),
            &token(org),
            &json!({"id": "ad-shared", "base_model": "m"}),
        )
        .await;
        assert_eq!(st, 201, "{body}");
    }
    let mut items: HashMap<&str, Vec<String>> = HashMap::new();
    for round in 0..2 {
        if round == 1 {
            replicas.push(start(&url, dirs[2].path(), &[]).await);
        }
        // A burst through every replica at once, both orgs.
        let mut tasks = Vec::new();
        for (i, r) in replicas.iter().enumerate() {
            for org in ["acme", "beta"] {
                for n in 0..4 {
                    let (c, base) = (c.clone(), r.base.clone());
                    let tag = format!("r{round}-p{i}-{org}-{n}");
                    tasks.push(tokio::spawn(async move {
                        (org, write_item(&c, &base, org, &tag).await)
                    }));
                }
            }
        }
        for t in tasks {
            let (org, id) = t.await.unwrap();
            items.entry(org).or_default().push(id);
        }
        for (hook, org, events, _) in &hooks {
            let want = items[org].len() * events.len();
            until(&format!("{want} events at {hook}"), || {
                rx.events(hook).len() == want
            })
            .await;
        }
    }
    // Late duplicates, if any, would come now.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let hits = rx.hits();
    for (hook, org, events, secret) in &hooks {
        let mine: Vec<&Hit> = hits.iter().filter(|h| h.hook == *hook).collect();
        assert_eq!(
            mine.len(),
            items[org].len() * events.len(),
            "{hook}: every event exactly once (no replica sent one another was sending)"
        );
        for h in &mine {
            assert!(verify(secret, h), "{hook}: bad signature on {}", h.event_id);
            assert!(events.contains(&h.event_type.as_str()), "{hook}: {h:?}");
        }
    }
    for ((hook, item), versions) in arrivals(&hits) {
        assert!(
            versions.windows(2).all(|w| w[0] < w[1]),
            "{hook}: events of {item} out of order or repeated: {versions:?}"
        );
    }
    let seen = rx.seen.lock().unwrap();
    for (hook, most) in &seen.most_in_flight {
        assert_eq!(*most, 1, "{hook}: requests in flight at once");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_killed_while_holding_a_lease_is_taken_over_after_the_lease_lapses() {
    let Some(server) = PgServer::get() else {
        return;
    };
    let url = server.fresh_database();
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let c = reqwest::Client::new();
    let rx = Receiver::start().await;
    // The receiver keeps requests to hook h0 open: replica A's first request hangs (its
    // timeout is long), with A holding the endpoint's lease and renewing it meanwhile.
    rx.hold.send_replace(Some("h0".into()));
    let settings: &[(&str, &str)] = &[
        ("FEEDGRAPH__WEBHOOKS__LEASE_MS", "2000"),
        ("FEEDGRAPH__WEBHOOKS__TIMEOUT_MS", "300000"),
    ];
    let mut a = start(&url, dirs[0].path(), settings).await;
    let secret = "secret-of-hook-h0-0123";
    register(
        &c,
        &a,
        "acme",
        &rx.url("h0"),
        &["feedback.submitted", "feedback.linked", "feedback.reviewed"],
        secret,
    )
    .await;
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(write_item(&c, &a.base, "acme", &format!("killed-{n}")).await);
    }
    until("A's first request", || !rx.hits().is_empty()).await;
    // B runs beside A for several lease times: A renews its lease, so B sends nothing.
    let b = start(&url, dirs[1].path(), settings).await;
    tokio::time::sleep(Duration::from_millis(6000)).await;
    assert_eq!(
        rx.hits().len(),
        1,
        "a second replica delivered while the first held the lease: {:?}",
        rx.hits()
    );
    let held = rx.hits()[0].event_id.clone();
    // A dies holding the lease; requests are answered from now on.
    a.kill();
    rx.hold.send_replace(None);
    until("every event after the take-over", || {
        rx.events("h0").len() == 9
    })
    .await;
    let hits = rx.hits();
    assert!(
        hits[1..].iter().any(|h| h.event_id == held),
        "B sends the event A never got an answer for"
    );
    for h in &hits {
        assert!(verify(secret, h), "bad signature on {}", h.event_id);
    }
    // Per item, in order: the only repeat allowed is the one A left unanswered.
    for ((_, item), versions) in arrivals(&hits) {
        let mut first = Vec::new();
        for v in versions {
            if !first.contains(&v) {
                first.push(v);
            }
        }
        assert!(
            first.windows(2).all(|w| w[0] < w[1]),
            "events of {item} out of order: {first:?}"
        );
        assert_eq!(first.len(), 3, "{item}: {first:?}");
    }
    let repeats = hits.len() - 9;
    assert!(
        repeats <= 1,
        "only the unanswered event goes twice: {hits:?}"
    );
    assert!(
        ids.iter()
            .all(|id| hits.iter().any(|h| &h.feedback_id == id))
    );
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_stopped_gracefully_releases_its_lease_for_the_next_at_once() {
    let Some(server) = PgServer::get() else {
        return;
    };
    let url = server.fresh_database();
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let c = reqwest::Client::new();
    let rx = Receiver::start().await;
    // A's first request to h0 hangs while A holds the endpoint's lease, which is far longer
    // than the test's deadline: only a release lets another replica deliver in time.
    rx.hold.send_replace(Some("h0".into()));
    let settings: &[(&str, &str)] = &[
        ("FEEDGRAPH__WEBHOOKS__LEASE_MS", "600000"),
        ("FEEDGRAPH__WEBHOOKS__TIMEOUT_MS", "300000"),
    ];
    let mut a = start(&url, dirs[0].path(), settings).await;
    register(
        &c,
        &a,
        "acme",
        &rx.url("h0"),
        &["feedback.submitted", "feedback.linked", "feedback.reviewed"],
        "secret-of-hook-h0-0123",
    )
    .await;
    let id = write_item(&c, &a.base, "acme", "graceful").await;
    until("A's first request", || !rx.hits().is_empty()).await;
    // A is stopped gracefully with its request in flight; then B starts.
    a.terminate();
    rx.hold.send_replace(None);
    let b = start(&url, dirs[1].path(), settings).await;
    until("B delivers the item's three events", || {
        rx.events("h0").len() == 3
    })
    .await;
    assert!(rx.hits().iter().all(|h| h.feedback_id == id));
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_is_exclusive_expires_and_fences_a_stale_holder() {
    let Some(server) = PgServer::get() else {
        return;
    };
    let url = server.fresh_database();
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        data_dir: dir.path().to_owned(),
        ..Config::default()
    };
    config.storage.backend = feedgraph::store::BackendKind::Postgres;
    config.storage.postgres.url = url;
    tokio::task::spawn_blocking(move || {
        let service = feedgraph::service::Service::open(&config).unwrap();
        let ev = service.store().events();
        let a = ev
            .acquire_lease("acme", "wh-1", "A", 60_000)
            .unwrap()
            .unwrap();
        // Held: nobody else gets it, for this endpoint; another endpoint is free.
        assert!(
            ev.acquire_lease("acme", "wh-1", "B", 60_000)
                .unwrap()
                .is_none()
        );
        assert!(
            ev.acquire_lease("acme", "wh-2", "B", 60_000)
                .unwrap()
                .is_some()
        );
        assert!(
            ev.acquire_lease("beta", "wh-1", "B", 60_000)
                .unwrap()
                .is_some()
        );
        assert!(ev.renew_lease(&a, 60_000).unwrap());
        // Released: B takes it with a new epoch, and A's old lease is fenced off even
        // after B lets go again.
        ev.release_lease(&a).unwrap();
        let b = ev
            .acquire_lease("acme", "wh-1", "B", 60_000)
            .unwrap()
            .unwrap();
        assert!(b.epoch > a.epoch);
        assert!(!ev.renew_lease(&a, 60_000).unwrap());
        ev.release_lease(&b).unwrap();
        assert!(!ev.renew_lease(&a, 60_000).unwrap());
        // A lease that is not renewed lapses: a short one, then another taker gets it.
        let c = ev.acquire_lease("acme", "wh-1", "C", 200).unwrap().unwrap();
        assert!(
            ev.acquire_lease("acme", "wh-1", "D", 60_000)
                .unwrap()
                .is_none()
        );
        std::thread::sleep(Duration::from_millis(400));
        let d = ev
            .acquire_lease("acme", "wh-1", "D", 60_000)
            .unwrap()
            .unwrap();
        assert!(d.epoch > c.epoch);
        assert!(!ev.renew_lease(&c, 60_000).unwrap(), "C was taken over");
        // Deleting the endpoint drops its lease.
        assert!(!ev.delete_endpoint("acme", "wh-1").unwrap());
        assert!(
            ev.acquire_lease("acme", "wh-1", "E", 60_000)
                .unwrap()
                .is_some()
        );
    })
    .await
    .unwrap();
}
