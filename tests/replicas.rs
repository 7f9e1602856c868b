//! Several `feedgraph serve` processes over one real PostgreSQL (tests/support/postgres.rs):
//! writes on one replica reach the others' graphs through the change log, a transaction
//! that commits out of sequence order is not missed, claims spread over replicas take
//! each item exactly once, a SIGKILLed replica loses no acknowledged write and rebuilds
//! the same graph, a database restart answers 503 and then resumes, and placement.
//!
//! Waits poll with a deadline; no assertion depends on how long something took.

#[path = "support/postgres.rs"]
mod postgres;
#[path = "support/replica.rs"]
mod replica;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use feedgraph::config::Config;
use feedgraph::http::auth::{Role, mint};
use feedgraph::service::placement::Placement;
use feedgraph::store::{Batch, BatchState, FeedbackRecord, codec};
use postgres::PgServer;
use rand::Rng;
use replica::Replica;
use serde_json::{Value, json};

const SECRET: &str = "replica-test-secret-0123456789abcdef";
const DEADLINE: Duration = Duration::from_secs(60);

fn token(org: &str, roles: &[Role]) -> String {
    let mut c = Config::default();
    c.auth.secret = Some(SECRET.into());
    mint(&c, org, "tester", roles, 3600).expect("mint")
}

fn item(n: usize, tag: &str) -> Value {
    json!({
        "type": "positive",
        "question": format!("How do replicas stay in step, case {tag} {n}?"),
        "answer": format!("They follow the change log (answer {tag} {n})."),
    })
}

async fn send(req: reqwest::RequestBuilder, token: &str) -> (u16, Value) {
    match req.bearer_auth(token).send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.json().await.unwrap_or(Value::Null))
        }
        Err(_) => (0, Value::Null),
    }
}

async fn post(c: &reqwest::Client, url: String, token: &str, body: &Value) -> (u16, Value) {
    send(c.post(url).json(body), token).await
}

async fn get(c: &reqwest::Client, url: String, token: &str) -> (u16, Value) {
    send(c.get(url), token).await
}

/// Every item the replica's graph lists for the token's org: id -> (version, status, used).
async fn listing(
    c: &reqwest::Client,
    r: &Replica,
    token: &str,
) -> BTreeMap<String, (u64, String, bool)> {
    let mut out = BTreeMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = r.api("/feedback?limit=1000");
        if let Some(cur) = &cursor {
            url.push_str(&format!("&cursor={cur}"));
        }
        let (status, body) = get(c, url, token).await;
        assert_eq!(status, 200, "{body}");
        for f in body["feedback"].as_array().unwrap() {
            out.insert(
                f["id"].as_str().unwrap().to_owned(),
                (
                    f["version"].as_u64().unwrap_or(0),
                    f["validation_status"].as_str().unwrap_or("").to_owned(),
                    f["used_for_training"].as_bool().unwrap_or(false),
                ),
            );
        }
        match body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return out,
        }
    }
}

/// Polls until every id of `ids` is in the replica's listing.
async fn await_listed(c: &reqwest::Client, r: &Replica, token: &str, ids: &[String]) {
    let until = Instant::now() + DEADLINE;
    loop {
        let have = listing(c, r, token).await;
        let missing: Vec<&String> = ids.iter().filter(|i| !have.contains_key(*i)).collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            Instant::now() < until,
            "replica {} never listed {} item(s), e.g. {:?}",
            r.base,
            missing.len(),
            missing.first()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn readyz(c: &reqwest::Client, r: &Replica) -> (u16, Value) {
    match c.get(format!("{}/readyz", r.base)).send().await {
        Ok(x) => {
            let s = x.status().as_u16();
            (s, x.json().await.unwrap_or(Value::Null))
        }
        Err(_) => (0, Value::Null),
    }
}

async fn raw_client(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_on_one_replica_reaches_the_others_with_two_and_three_replicas() {
    let Some(server) = PgServer::get() else {
        return;
    };
    let url = server.fresh_database();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let c = reqwest::Client::new();
    let user = token("acme", &[Role::User, Role::Admin]);
    let mut replicas = vec![
        Replica::start(&url, dirs[0].path(), SECRET, &[]).await,
        Replica::start(&url, dirs[1].path(), SECRET, &[]).await,
    ];
    for round in 0..2 {
        if round == 1 {
            // A third replica joins: it builds from the store, then follows.
            replicas.push(Replica::start(&url, dirs[2].path(), SECRET, &[]).await);
        }
        let mut ids = Vec::new();
        for (i, r) in replicas.iter().enumerate() {
            let (status, body) = post(&c, r.api("/feedback"), &user, &item(i, "spread")).await;
            assert_eq!(status, 201, "{body}");
            let id = body["id"].as_str().unwrap().to_owned();
            // Read-your-writes: the writer lists it at once.
            let own = listing(&c, r, &user).await;
            assert!(
                own.contains_key(&id),
                "replica {i} does not list its own write"
            );
            ids.push(id);
        }
        for r in &replicas {
            await_listed(&c, r, &user, &ids).await;
        }
        // An update (a link, bumping the record's version) made on one replica shows on
        // every other replica's by-adapter listing.
        let adapter = format!("adapter-{round}");
        let (status, body) = post(
            &c,
            replicas[1].api(&format!("/feedback/{}/link", ids[0])),
            &user,
            &json!({"adapter_id": adapter}),
        )
        .await;
        assert!(status == 200 || status == 201, "{status} {body}");
        for r in &replicas {
            let until = Instant::now() + DEADLINE;
            loop {
                let (status, body) =
                    get(&c, r.api(&format!("/feedback/by-adapter/{adapter}")), &user).await;
                let linked = status == 200
                    && body["feedback"]
                        .as_array()
                        .is_some_and(|a| a.iter().any(|f| f["id"] == ids[0].as_str()));
                if linked {
                    break;
                }
                assert!(Instant::now() < until, "{} never showed the link", r.base);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    // Every replica reports how far behind it is.
    for r in &replicas {
        let (status, body) = readyz(&c, r).await;
        assert_eq!(status, 200, "{body}");
        assert!(body["replication"]["changes_behind"].is_u64(), "{body}");
        assert!(body["replication"]["ms_behind"].is_u64(), "{body}");
    }
    // ... and their graphs agree.
    let first = listing(&c, &replicas[0], &user).await;
    for r in &replicas[1..] {
        let until = Instant::now() + DEADLINE;
        while listing(&c, r, &user).await != first {
            assert!(Instant::now() < until, "{} differs from replica 0", r.base);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_transaction_that_commits_after_a_higher_sequence_number_is_still_followed() {
    let Some(server) = PgServer::get() else {
        return;
    };
    let url = server.fresh_database();
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Replica::start(&url, da.path(), SECRET, &[]).await;
    let b = Replica::start(&url, db.path(), SECRET, &[]).await;
    let c = reqwest::Client::new();
    let user = token("acme", &[Role::User]);

    let (status, body) = post(&c, a.api("/feedback"), &user, &item(0, "template")).await;
    assert_eq!(status, 201, "{body}");
    let template_id = body["id"].as_str().unwrap().to_owned();
    await_listed(&c, &b, &user, std::slice::from_ref(&template_id)).await;

    // A raw transaction writes a new record (taking the lower sequence number) and stays
    // open while a replica's submit takes a higher one and commits.
    let raw = raw_client(&url).await;
    let row = raw
        .query_one(
            "SELECT body FROM fg_feedback WHERE org_id = 'acme' AND id = $1",
            &[&template_id],
        )
        .await
        .unwrap();
    let mut record: FeedbackRecord = codec::decode(row.get::<_, &[u8]>(0)).unwrap();
    let late_id = "feedback-late-commit".to_owned();
    record.feedback.id = late_id.clone();
    record.links.clear();
    let body_bytes = codec::encode(&record).unwrap();
    raw.batch_execute("BEGIN").await.unwrap();
    raw.execute(
        "INSERT INTO fg_feedback (org_id, id, version, body) VALUES ('acme', $1, 1, $2)",
        &[&late_id, &body_bytes],
    )
    .await
    .unwrap();
    let seqs = raw
        .query_one("SELECT max(seq) FROM fg_changes WHERE id = $1", &[&late_id])
        .await
        .unwrap();
    let late_seq: i64 = seqs.get(0);

    let (status, body) = post(&c, a.api("/feedback"), &user, &item(1, "higher")).await;
    assert_eq!(status, 201, "{body}");
    let higher_id = body["id"].as_str().unwrap().to_owned();
    let check = raw_client(&url).await;
    let higher_seq: i64 = check
        .query_one(
            "SELECT max(seq) FROM fg_changes WHERE id = $1",
            &[&higher_id],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        late_seq < higher_seq,
        "the held transaction has the lower seq"
    );

    // Let B's follower finish two whole rounds after the higher commit (a follower that
    // tracked sequence numbers alone would move past the held one here).
    let rounds = |v: &Value| v["replication"]["rounds"].as_u64().unwrap_or(0);
    let start = rounds(&readyz(&c, &b).await.1);
    let until = Instant::now() + DEADLINE;
    while rounds(&readyz(&c, &b).await.1) < start + 2 {
        assert!(Instant::now() < until, "B's follower made no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    raw.batch_execute("COMMIT").await.unwrap();

    // Both replicas apply the late transaction, and the higher one.
    for r in [&a, &b] {
        await_listed(&c, r, &user, &[late_id.clone(), higher_id.clone()]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn placement_refuses_other_orgs_and_two_shards_answer_every_org() {
    let Some(server) = PgServer::get() else {
        return;
    };
    let url = server.fresh_database();
    let (d0, d1) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let shards = [
        Replica::start(
            &url,
            d0.path(),
            SECRET,
            &[("FEEDGRAPH__PLACEMENT__SHARD", "0/2")],
        )
        .await,
        Replica::start(
            &url,
            d1.path(),
            SECRET,
            &[("FEEDGRAPH__PLACEMENT__SHARD", "1/2")],
        )
        .await,
    ];
    let c = reqwest::Client::new();
    let orgs: Vec<String> = (0..8).map(|i| format!("tenant-{i}")).collect();
    let homes: Vec<usize> = orgs
        .iter()
        .map(|o| Placement::shard_of(o, 2) as usize)
        .collect();
    assert!(
        homes.contains(&0) && homes.contains(&1),
        "both shards get orgs"
    );
    for (org, &home) in orgs.iter().zip(&homes) {
        let t = token(org, &[Role::User]);
        let (status, body) = post(&c, shards[home].api("/feedback"), &t, &item(0, org)).await;
        assert_eq!(status, 201, "{org} on its shard: {body}");
        let id = body["id"].as_str().unwrap().to_owned();
        let other = &shards[1 - home];
        let (status, body) = post(&c, other.api("/feedback"), &t, &item(1, org)).await;
        assert_eq!(status, 421, "{org} on the other shard: {body}");
        let details = body["details"].as_str().unwrap_or("");
        assert!(
            details.contains(&format!("shard {}/2", 1 - home)) && details.contains(org.as_str()),
            "the refusal names the placement: {details}"
        );
        let (status, _) = get(&c, other.api("/feedback"), &t).await;
        assert_eq!(status, 421, "reads are refused too");
        // Exactly one replica answers the org, with its item.
        let (status, body) = get(&c, shards[home].api(&format!("/feedback/{id}")), &t).await;
        assert_eq!(status, 200, "{body}");
        await_listed(&c, &shards[home], &t, &[id]).await;
    }
    for (i, r) in shards.iter().enumerate() {
        let (_, body) = readyz(&c, r).await;
        assert_eq!(body["placement"], format!("shard {i}/2"), "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn claimers_spread_over_three_replicas_use_each_item_exactly_once() {
    const ITEMS: usize = 5000;
    const CLAIMERS: usize = 8;
    let Some(server) = PgServer::get() else {
        return;
    };
    let url = server.fresh_database();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut replicas = Vec::new();
    for d in &dirs {
        replicas.push(Replica::start(&url, d.path(), SECRET, &[]).await);
    }
    let replicas = Arc::new(replicas);
    let c = reqwest::Client::new();
    let user = token("train", &[Role::User, Role::Trainer]);
    // Items submitted in batches, spread over the replicas.
    for chunk in 0..ITEMS / 1000 {
        let items: Vec<Value> = (0..1000).map(|i| item(chunk * 1000 + i, "claim")).collect();
        let r = &replicas[chunk % replicas.len()];
        let (status, body) = post(
            &c,
            r.api("/feedback/batch"),
            &user,
            &json!({"items": items}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["created"], 1000, "{body}");
    }
    for r in replicas.iter() {
        let until = Instant::now() + DEADLINE;
        loop {
            let (_, stats) = get(&c, r.api("/feedback/stats"), &user).await;
            if stats["total_feedback"].as_u64() == Some(ITEMS as u64) {
                break;
            }
            assert!(Instant::now() < until, "{} never saw every item", r.base);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    let committed_items = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let outcomes = Arc::new(Mutex::new(HashMap::<&'static str, usize>::new()));
    let mut tasks = Vec::new();
    for n in 0..CLAIMERS {
        let (replicas, c, user) = (replicas.clone(), c.clone(), user.clone());
        let (committed_items, done, outcomes) =
            (committed_items.clone(), done.clone(), outcomes.clone());
        tasks.push(tokio::spawn(async move {
            let r = &replicas[n % replicas.len()];
            let mut abandoned: Vec<(u64, Instant)> = Vec::new();
            let until = Instant::now() + Duration::from_secs(600);
            while !done.load(Ordering::Acquire) {
                assert!(Instant::now() < until, "claims never used every item");
                let roll: f64 = rand::rng().random();
                // Some batches are left to expire (a 1 s lease), some aborted.
                let abandon = roll >= 0.85;
                let lease = if abandon { 1 } else { 120 };
                let (status, body) = post(
                    &c,
                    r.api("/training/batches"),
                    &user,
                    &json!({"limit": 40, "lease_seconds": lease}),
                )
                .await;
                let note = |k: &'static str| *outcomes.lock().unwrap().entry(k).or_default() += 1;
                match status {
                    201 => {}
                    200 => {
                        note("empty");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                    s => panic!("claim: {s} {body}"),
                }
                let id = body["batch_id"].as_u64().unwrap();
                if abandon {
                    note("abandoned");
                    abandoned.push((id, Instant::now() + Duration::from_millis(1500)));
                } else if roll < 0.15 {
                    let (s, b) = post(
                        &c,
                        r.api(&format!("/training/batches/{id}/abort")),
                        &user,
                        &json!({}),
                    )
                    .await;
                    assert_eq!(s, 200, "abort: {b}");
                    note("aborted");
                } else {
                    let (s, b) = post(
                        &c,
                        r.api(&format!("/training/batches/{id}/commit")),
                        &user,
                        &json!({}),
                    )
                    .await;
                    assert_eq!(s, 200, "commit: {b}");
                    note("committed");
                    let n = b["count"].as_u64().unwrap() as usize;
                    if committed_items.fetch_add(n, Ordering::AcqRel) + n >= ITEMS {
                        done.store(true, Ordering::Release);
                    }
                }
                // Now and then, try to commit a batch whose lease ran out: it commits if
                // nobody took its items meanwhile, else it is refused whole (409).
                if let Some(pos) = abandoned.iter().position(|(_, t)| *t <= Instant::now())
                    && rand::rng().random_bool(0.5)
                {
                    let (id, _) = abandoned.swap_remove(pos);
                    let (s, b) = post(
                        &c,
                        r.api(&format!("/training/batches/{id}/commit")),
                        &user,
                        &json!({}),
                    )
                    .await;
                    match s {
                        200 => {
                            note("late commit");
                            let n = b["count"].as_u64().unwrap() as usize;
                            if committed_items.fetch_add(n, Ordering::AcqRel) + n >= ITEMS {
                                done.store(true, Ordering::Release);
                            }
                        }
                        409 => note("late commit refused"),
                        s => panic!("late commit: {s} {b}"),
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    eprintln!("claim outcomes: {:?}", outcomes.lock().unwrap());
    assert_eq!(committed_items.load(Ordering::Acquire), ITEMS);

    // The store: every item used once, by a committed batch whose manifest lists it, and
    // no item in two committed manifests.
    let raw = raw_client(&url).await;
    let mut used_by: HashMap<String, u64> = HashMap::new();
    for row in raw
        .query("SELECT body FROM fg_feedback WHERE org_id = 'train'", &[])
        .await
        .unwrap()
    {
        let r: FeedbackRecord = codec::decode(row.get::<_, &[u8]>(0)).unwrap();
        assert!(r.feedback.used_for_training, "{} unused", r.feedback.id);
        used_by.insert(r.feedback.id.clone(), r.feedback.training_batch_id);
    }
    assert_eq!(used_by.len(), ITEMS);
    let mut in_manifest: HashMap<String, u64> = HashMap::new();
    for row in raw
        .query("SELECT body FROM fg_batches WHERE org_id = 'train'", &[])
        .await
        .unwrap()
    {
        let b: Batch = codec::decode(row.get::<_, &[u8]>(0)).unwrap();
        if b.state != BatchState::Committed {
            continue;
        }
        for m in &b.manifest {
            let before = in_manifest.insert(m.feedback_id.clone(), b.id);
            assert!(before.is_none(), "{} trained twice", m.feedback_id);
        }
    }
    assert_eq!(in_manifest, used_by.into_iter().collect());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn a_replica_killed_during_a_submit_burst_loses_nothing_acknowledged() {
    let Some(server) = PgServer::get() else {
        return;
    };
    let url = server.fresh_database();
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut a = Replica::start(&url, da.path(), SECRET, &[]).await;
    let b = Replica::start(&url, db.path(), SECRET, &[]).await;
    let c = reqwest::Client::new();
    let user = token("burst", &[Role::User]);
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let target = a.api("/feedback");
    let mut tasks = Vec::new();
    for w in 0..8 {
        let (c, user, acked, target) = (c.clone(), user.clone(), acked.clone(), target.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..10_000 {
                let (status, body) =
                    post(&c, target.clone(), &user, &item(i, &format!("w{w}"))).await;
                match status {
                    201 => acked
                        .lock()
                        .unwrap()
                        .push(body["id"].as_str().unwrap().to_owned()),
                    0 => return, // the replica is gone
                    s => panic!("submit: {s} {body}"),
                }
            }
        }));
    }
    let until = Instant::now() + DEADLINE;
    while acked.lock().unwrap().len() < 200 {
        assert!(Instant::now() < until, "the burst never got going");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    a.kill();
    for t in tasks {
        t.await.unwrap();
    }
    let acked: Vec<String> = acked.lock().unwrap().clone();
    // The surviving replica has every acknowledged write (it followed the log).
    await_listed(&c, &b, &user, &acked).await;
    // The killed replica, restarted, rebuilds the same graph as the one that followed.
    a.restart().await;
    await_listed(&c, &a, &user, &acked).await;
    let until = Instant::now() + DEADLINE;
    loop {
        let (la, lb) = (listing(&c, &a, &user).await, listing(&c, &b, &user).await);
        let (sa, sb) = (
            get(&c, a.api("/feedback/stats"), &user).await.1,
            get(&c, b.api("/feedback/stats"), &user).await.1,
        );
        if la == lb && sa == sb {
            break;
        }
        assert!(Instant::now() < until, "the rebuilt graph differs");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn a_database_restart_answers_503_acknowledges_only_commits_and_resumes() {
    let Some(server) = PgServer::private("restart") else {
        return;
    };
    let url = server.fresh_database();
    let d = tempfile::tempdir().unwrap();
    let r = Replica::start(&url, d.path(), SECRET, &[]).await;
    let c = reqwest::Client::new();
    let user = token("restart", &[Role::User]);
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let statuses = Arc::new(Mutex::new(HashMap::<u16, usize>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let target = r.api("/feedback");
    let mut tasks = Vec::new();
    for w in 0..4 {
        let (c, user, acked, target) = (c.clone(), user.clone(), acked.clone(), target.clone());
        let (statuses, stop) = (statuses.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Acquire) {
                i += 1;
                let (status, body) =
                    post(&c, target.clone(), &user, &item(i, &format!("r{w}"))).await;
                *statuses.lock().unwrap().entry(status).or_default() += 1;
                match status {
                    201 => acked
                        .lock()
                        .unwrap()
                        .push(body["id"].as_str().unwrap().to_owned()),
                    503 => tokio::time::sleep(Duration::from_millis(20)).await,
                    s => panic!("submit: {s} {body}"),
                }
            }
        }));
    }
    let count = |s: u16| statuses.lock().unwrap().get(&s).copied().unwrap_or(0);
    let until = Instant::now() + DEADLINE;
    while count(201) < 50 {
        assert!(Instant::now() < until, "no load");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let server = Arc::new(server);
    let s2 = server.clone();
    tokio::task::spawn_blocking(move || s2.stop())
        .await
        .unwrap();
    // While it is down: 503s, and not ready.
    let until = Instant::now() + DEADLINE;
    let before = count(503);
    while count(503) < before + 5 {
        assert!(Instant::now() < until, "no 503 while the database is down");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(readyz(&c, &r).await.0, 503);
    let acked_while_down = count(201);
    let s2 = server.clone();
    tokio::task::spawn_blocking(move || s2.start_again())
        .await
        .unwrap();
    // Service resumes on its own.
    let until = Instant::now() + DEADLINE;
    while count(201) < acked_while_down + 50 {
        assert!(Instant::now() < until, "service never resumed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Release);
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(readyz(&c, &r).await.0, 200);
    // Every acknowledged submit is stored (none was acknowledged without its COMMIT).
    let raw = raw_client(&url).await;
    let stored: HashSet<String> = raw
        .query("SELECT id FROM fg_feedback WHERE org_id = 'restart'", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    let acked = acked.lock().unwrap().clone();
    let lost: Vec<&String> = acked.iter().filter(|id| !stored.contains(*id)).collect();
    assert!(lost.is_empty(), "acknowledged but not stored: {lost:?}");
    eprintln!("statuses: {:?}", statuses.lock().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_commit_and_an_abort_of_one_batch_on_two_replicas_do_not_both_succeed() {
    let Some(server) = PgServer::get() else {
        return;
    };
    let url = server.fresh_database();
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Replica::start(&url, da.path(), SECRET, &[]).await;
    let b = Replica::start(&url, db.path(), SECRET, &[]).await;
    let c = reqwest::Client::new();
    let user = token("race", &[Role::User, Role::Trainer]);
    let items: Vec<Value> = (0..200).map(|i| item(i, "race")).collect();
    let (status, body) = post(
        &c,
        a.api("/feedback/batch"),
        &user,
        &json!({"items": items}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    for _ in 0..40 {
        let (status, body) = post(
            &c,
            a.api("/training/batches"),
            &user,
            &json!({"limit": 5, "lease_seconds": 600}),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        let id = body["batch_id"].as_u64().unwrap();
        let empty = json!({});
        let (commit, abort) = tokio::join!(
            post(
                &c,
                a.api(&format!("/training/batches/{id}/commit")),
                &user,
                &empty
            ),
            post(
                &c,
                b.api(&format!("/training/batches/{id}/abort")),
                &user,
                &empty
            ),
        );
        let mut got = [commit.0, abort.0];
        got.sort_unstable();
        assert_eq!(
            got,
            [200, 409],
            "batch {id}: commit {commit:?}, abort {abort:?}"
        );
        // The stored batch agrees with the winner.
        let (_, batch) = get(&c, a.api(&format!("/training/batches/{id}")), &user).await;
        let want = if commit.0 == 200 {
            "committed"
        } else {
            "aborted"
        };
        assert_eq!(batch["state"], want, "{batch}");
    }
}

/// A bulk load (`feedgraph load`, written with COPY in one transaction) reaches a running
/// replica through the change log like any other write: every loaded item appears in its
/// listing at the loaded version, with its edge to the adapter. A load that fails on a
/// record id already stored writes nothing, not even its adapters.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_follows_a_bulk_load() {
    const ITEMS: usize = 3000;
    let Some(server) = PgServer::get() else {
        return;
    };
    let url = server.fresh_database();
    let (dr, dl) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let replica = Replica::start(&url, dr.path(), SECRET, &[]).await;
    let mut lines = vec![
        r#"{"kind":"adapter","id":"bulk-base","created_at":1}"#.to_owned(),
        r#"{"kind":"adapter","id":"bulk-child","created_at":2}"#.to_owned(),
        r#"{"kind":"derived_from","from":"bulk-child","to":"bulk-base"}"#.to_owned(),
    ];
    let ids: Vec<String> = (0..ITEMS).map(|n| format!("bulk-{n:05}")).collect();
    for (n, id) in ids.iter().enumerate() {
        lines.push(format!(
            r#"{{"kind":"feedback","id":"{id}","type":"positive","validation_status":"approved","used_for_training":false,"model_version":"m","question":"Bulk question {n}?","answer":"Bulk answer {n}.","created_at":{}}}"#,
            n + 10
        ));
        lines.push(format!(
            r#"{{"kind":"feedback_for","from":"{id}","to":"bulk-child"}}"#
        ));
    }
    let file = dl.path().join("dump.jsonl");
    std::fs::write(&file, lines.join("\n")).unwrap();
    let load = |file: &std::path::Path, data: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_feedgraph"))
            .arg("--data-dir")
            .arg(data)
            .args(["load", "--org", "bulkorg"])
            .arg(file)
            .env("FEEDGRAPH__STORAGE__BACKEND", "postgres")
            .env("FEEDGRAPH__STORAGE__POSTGRES__URL", &url)
            .env("RUST_LOG", "error")
            .output()
            .expect("run feedgraph load")
    };
    let out = load(&file, &dl.path().join("data"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let c = reqwest::Client::new();
    let t = token("bulkorg", &[Role::User]);
    await_listed(&c, &replica, &t, &ids).await;
    let have = listing(&c, &replica, &t).await;
    assert_eq!(have.len(), ITEMS, "exactly the loaded items");
    let (status, body) = get(
        &c,
        replica.api("/feedback/by-adapter/bulk-base?include_descendants=true&limit=1"),
        &t,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["total_linked"], ITEMS,
        "the replica's graph has every loaded edge and the lineage: {body}"
    );

    // A second load naming an id already stored fails and writes nothing.
    let again = [
        r#"{"kind":"adapter","id":"bulk-other","created_at":1}"#.to_owned(),
        lines[3].clone(),
    ];
    let file2 = dl.path().join("again.jsonl");
    std::fs::write(&file2, again.join("\n")).unwrap();
    let out = load(&file2, &dl.path().join("data2"));
    assert!(!out.status.success(), "a load over a stored id fails");
    let db = raw_client(&url).await;
    let n: i64 = db
        .query_one(
            "SELECT count(*) FROM fg_adapters WHERE org_id = 'bulkorg' AND id = 'bulk-other'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "the failed load wrote nothing");
}
