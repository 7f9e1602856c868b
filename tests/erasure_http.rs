//! Erasure over HTTP: item, user and session scopes; after each, no read path (get, list,
//! by-adapter, history, export, Cypher, the idempotent replay) shows the erased text;
//! counts, links and the batch manifest stay as they were; receipts are listed. Also the
//! CLI's `feedgraph erase` on a stopped server's data directory.

mod common;

use common::server::{TestServer, error_details};
use feedgraph::http::auth::Role;
use serde_json::{Value, json};

fn marker(tag: &str) -> String {
    format!("ERZ{tag}{:016x}", rand::random::<u64>())
}

/// An item whose every text field and metadata carry `m`.
fn body(m: &str, user: &str, session: &str, adapter: &str, negative: bool) -> Value {
    let mut b = json!({
        "type": if negative { "negative" } else { "positive" },
        "question": format!("What does {m} mean in this question?"),
        "answer": format!("It is the answer about {m} given here."),
        "user_id": user,
        "session_id": session,
        "interaction_id": format!("trace-{m}"),
        "model_version": "m-1",
        "adapter_id": adapter,
        "metadata": {"note": format!("meta {m}"), "nested": {"deep": m}},
    });
    if negative {
        b["correction"] = json!(format!("The right answer mentions {m} properly."));
        b["comment"] = json!(format!("Comment that names {m} again."));
    }
    b
}

async fn submit(s: &TestServer, token: &str, b: &Value, key: Option<&str>) -> Value {
    let mut req = s.client.post(s.url("/feedback")).bearer_auth(token).json(b);
    if let Some(k) = key {
        req = req.header("Idempotency-Key", k);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status().as_u16(), 201);
    r.json().await.unwrap()
}

fn text_of(v: &Value) -> String {
    v.to_string()
}

/// Every read path an erased item can show up on, as one text.
async fn every_read(s: &TestServer, t: &str, admin: &str, ids: &[&str], batch: u64) -> String {
    let mut all = String::new();
    for id in ids {
        let (st, b) = s.get(t, &format!("/feedback/{id}")).await;
        assert_eq!(st, 200);
        all += &text_of(&b);
        let (st, b) = s.get(t, &format!("/feedback/{id}/history")).await;
        assert_eq!(st, 200, "{b}");
        all += &text_of(&b);
    }
    all += &text_of(&s.get(t, "/feedback?limit=1000").await.1);
    for a in ["ad-1", "ad-2", "ad-3"] {
        all += &text_of(&s.get(t, &format!("/feedback/by-adapter/{a}")).await.1);
    }
    let (st, q) = s
        .post(
            t,
            "/graph/query",
            &json!({"query": "MATCH (f:Feedback) RETURN f.id, f.question, f.answer, f.correction, \
                     f.comment, f.metadata, f.user_id, f.session_id, f.interaction_id"}),
        )
        .await;
    assert_eq!(st, 200, "{q}");
    all += &text_of(&q);
    all += &link_metadata(s, t).await;
    for format in ["sft", "dpo", "kto"] {
        let r = s
            .client
            .get(s.url(&format!("/training/batches/{batch}/export?format={format}")))
            .bearer_auth(admin)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        all += &r.text().await.unwrap();
    }
    all += &text_of(&s.get(admin, &format!("/training/batches/{batch}")).await.1);
    all
}

/// Every FEEDBACK_FOR edge's metadata, through Cypher.
async fn link_metadata(s: &TestServer, t: &str) -> String {
    let (st, q) = s
        .post(
            t,
            "/graph/query",
            &json!({"query": "MATCH (f:Feedback)-[r:FEEDBACK_FOR]->(a:Adapter) RETURN f.id, a.id, r.metadata"}),
        )
        .await;
    assert_eq!(st, 200, "{q}");
    text_of(&q)
}

#[tokio::test]
async fn erasure_by_user_session_and_item_leaves_tombstones_and_receipts() {
    let s = TestServer::start().await;
    let user = s.token("acme", "alice", Role::User);
    let admin = s.token("acme", "root", Role::Admin);
    let (ma, mb, mc, md, me) = (
        marker("a"),
        marker("b"),
        marker("c"),
        marker("d"),
        marker("e"),
    );
    let a_body = body(&ma, "u-erase", "s-1", "ad-1", true);
    let a = submit(&s, &user, &a_body, Some("key-a")).await;
    let b = submit(&s, &user, &body(&mb, "u-erase", "s-2", "ad-2", false), None).await;
    let c = submit(&s, &user, &body(&mc, "u-keep", "s-1", "ad-1", true), None).await;
    let d = submit(&s, &user, &body(&md, "u-keep", "s-3", "ad-3", false), None).await;
    let e = submit(&s, &user, &body(&me, "u-other", "s-9", "ad-1", false), None).await;
    let id = |v: &Value| v["id"].as_str().unwrap().to_owned();
    let (ia, ib, ic, id_, ie) = (id(&a), id(&b), id(&c), id(&d), id(&e));

    // History that holds the fields: a link (writes the creation entry out) and a review.
    let (st, _) = s
        .post(
            &admin,
            &format!("/feedback/{ia}/link"),
            &json!({"adapter_id": "ad-3", "metadata": {"note": format!("link {ma}")}}),
        )
        .await;
    assert!(st == 200 || st == 201, "link: {st}");
    let link_note = format!("link {ma}");
    assert!(
        link_metadata(&s, &user).await.contains(&link_note),
        "the link's metadata is readable before erasure"
    );
    let (st, _) = s
        .patch(
            &admin,
            &format!("/feedback/{ia}"),
            &json!({"validation_status": "approved", "reason": "checked"}),
        )
        .await;
    assert_eq!(st, 200);
    // A committed batch with B in its manifest.
    let (st, claimed) = s
        .post(&admin, "/training/batches", &json!({"limit": 100}))
        .await;
    assert_eq!(st, 201, "{claimed}");
    let batch = claimed["batch_id"].as_u64().unwrap();
    let (st, committed) = s
        .post(
            &admin,
            &format!("/training/batches/{batch}/commit"),
            &json!({"trained_adapter_id": "ad-trained"}),
        )
        .await;
    assert_eq!(st, 200, "{committed}");
    let manifest_before =
        s.get(&admin, &format!("/training/batches/{batch}")).await.1["manifest"].clone();
    assert!(
        text_of(&manifest_before).contains(&ib),
        "B is in the manifest"
    );

    let stats_before = s.get(&user, "/feedback/stats").await.1;
    let linked_before: Vec<Value> = {
        let mut v = Vec::new();
        for ad in ["ad-1", "ad-2", "ad-3"] {
            v.push(
                s.get(&user, &format!("/feedback/by-adapter/{ad}")).await.1["total_linked"].clone(),
            );
        }
        v
    };
    let version_a = s.get(&user, &format!("/feedback/{ia}")).await.1["version"]
        .as_u64()
        .unwrap();
    let version_b = s.get(&user, &format!("/feedback/{ib}")).await.1["version"]
        .as_u64()
        .unwrap();
    assert!(
        version_a >= 3 && version_b >= 3,
        "link/lease/commit made versions"
    );

    // Before: every marker is visible, so the checks below can see text.
    let all = every_read(&s, &user, &admin, &[&ia, &ib, &ic, &id_, &ie], batch).await;
    for m in [&ma, &mb, &mc, &md, &me] {
        assert!(all.contains(m.as_str()), "{m} readable before erasure");
    }

    // Only an admin erases.
    let (st, _) = s
        .post(
            &user,
            "/erasures",
            &json!({"scope": "user", "value": "u-erase"}),
        )
        .await;
    assert_eq!(st, 403);
    let (st, b404) = s
        .post(&admin, "/feedback/feedback-nope/erase", &json!({}))
        .await;
    assert_eq!(st, 404);
    error_details(&b404);

    // User scope: A and B.
    let (st, r1) = s
        .post(
            &admin,
            "/erasures",
            &json!({"scope": "user", "value": "u-erase"}),
        )
        .await;
    assert_eq!(st, 201, "{r1}");
    assert_eq!(r1["scope"], "user");
    assert_eq!(r1["state"], "done");
    assert_eq!(r1["items"], 2);
    assert_eq!(r1["requested_by"], "root");
    assert!(r1["subject"].as_str().unwrap().starts_with("sha256:"));
    assert!(
        !text_of(&r1).contains("u-erase"),
        "the receipt holds no user id"
    );
    // Every version both items had before is scrubbed (the erase entries not counted).
    assert_eq!(r1["versions"], version_a + version_b, "{r1}");
    let mut ids = vec![ia.clone(), ib.clone()];
    ids.sort();
    assert_eq!(r1["item_ids"], json!(ids));

    let fa = s.get(&user, &format!("/feedback/{ia}")).await.1;
    assert_eq!(fa["question"], "");
    assert_eq!(fa["answer"], "");
    assert_eq!(fa["correction"], Value::Null);
    assert_eq!(fa["comment"], Value::Null);
    assert_eq!(fa["metadata"], json!({}));
    assert_eq!(fa["user_id"], Value::Null);
    assert_eq!(fa["session_id"], Value::Null);
    assert_eq!(fa["interaction_id"], Value::Null);
    assert_eq!(fa["erased_by"], "root");
    assert!(fa["erased_at"].as_u64().is_some());
    assert_eq!(fa["version"].as_u64().unwrap(), version_a + 1);
    assert_eq!(fa["type"], "negative");
    assert_eq!(fa["validation_status"], "approved");
    assert_eq!(fa["adapter_id"], "ad-1");
    let hist = s.get(&user, &format!("/feedback/{ia}/history")).await.1;
    let last = hist["versions"]
        .as_array()
        .or_else(|| hist.as_array())
        .and_then(|v| v.last().cloned())
        .unwrap_or_default();
    assert_eq!(last["action"], "erase", "{hist}");

    // The replay of A's submit shows the tombstone, not the text.
    let replay = submit(&s, &user, &a_body, Some("key-a")).await;
    assert_eq!(replay["id"], ia.as_str());
    assert!(!text_of(&replay).contains(&ma), "{replay}");

    // Session scope: s-1 now holds only C (A lost its session id).
    let (st, r2) = s
        .post(
            &admin,
            "/erasures",
            &json!({"scope": "session", "value": "s-1"}),
        )
        .await;
    assert_eq!(st, 201, "{r2}");
    assert_eq!(r2["items"], 1);
    assert_eq!(r2["item_ids"], json!([ic]));
    // Item scope.
    let (st, r3) = s
        .post(&admin, &format!("/feedback/{id_}/erase"), &json!({}))
        .await;
    assert_eq!(st, 201, "{r3}");
    assert_eq!(r3["scope"], "item");
    assert_eq!(r3["subject"], id_.as_str());
    assert_eq!(r3["items"], 1);
    // Erasing again is harmless: the item stays a tombstone at the same version.
    let version_d = s.get(&user, &format!("/feedback/{id_}")).await.1["version"].clone();
    let (st, again) = s
        .post(&admin, "/erasures", &json!({"scope": "item", "value": id_}))
        .await;
    assert_eq!(st, 201);
    assert_eq!(again["items"], 1);
    assert_eq!(
        s.get(&user, &format!("/feedback/{id_}")).await.1["version"],
        version_d
    );

    let all = every_read(&s, &user, &admin, &[&ia, &ib, &ic, &id_, &ie], batch).await;
    for m in [&ma, &mb, &mc, &md] {
        assert!(
            !all.contains(m.as_str()),
            "{m} still readable after erasure"
        );
    }
    assert!(
        all.contains(me.as_str()),
        "the item nobody erased keeps its text"
    );

    // Counts, links and the manifest are unchanged.
    assert_eq!(s.get(&user, "/feedback/stats").await.1, stats_before);
    for (i, ad) in ["ad-1", "ad-2", "ad-3"].iter().enumerate() {
        let now =
            s.get(&user, &format!("/feedback/by-adapter/{ad}")).await.1["total_linked"].clone();
        assert_eq!(now, linked_before[i], "links of {ad}");
    }
    let manifest_after =
        s.get(&admin, &format!("/training/batches/{batch}")).await.1["manifest"].clone();
    assert_eq!(manifest_after, manifest_before);

    // A link made to an erased item keeps no metadata either.
    let (st, _) = s
        .post(
            &admin,
            &format!("/feedback/{ia}/link"),
            &json!({"adapter_id": "ad-2", "metadata": {"note": format!("late {ma}")}}),
        )
        .await;
    assert_eq!(st, 201, "a link to an erased item is still made");
    let links = link_metadata(&s, &user).await;
    assert!(links.contains(&format!("\"{ia}\",\"ad-2\"")), "{links}");
    assert!(!links.contains(ma.as_str()), "{links}");

    // Receipts, newest first, paged.
    let (st, page) = s.get(&admin, "/erasures?limit=2").await;
    assert_eq!(st, 200, "{page}");
    assert_eq!(page["count"], 2);
    assert_eq!(page["erasures"][0]["id"], again["id"]);
    assert_eq!(page["erasures"][1]["id"], r3["id"]);
    let next = page["next_before"].as_str().unwrap().to_owned();
    let (_, rest) = s
        .get(&admin, &format!("/erasures?limit=2&before={next}"))
        .await;
    assert_eq!(rest["count"], 2);
    assert_eq!(rest["erasures"][0]["id"], r2["id"]);
    assert_eq!(rest["erasures"][1]["id"], r1["id"]);
    assert_eq!(rest["next_before"], Value::Null);
    let one = s
        .get(&admin, &format!("/erasures/{}", r1["id"].as_str().unwrap()))
        .await;
    assert_eq!(one, (200, r1.clone()));
    // Another org sees none of them.
    let other = s.token("globex", "root", Role::Admin);
    assert_eq!(s.get(&other, "/erasures").await.1["count"], 0);
    assert_eq!(
        s.get(&other, &format!("/erasures/{}", r1["id"].as_str().unwrap()))
            .await
            .0,
        404
    );
    s.stop().await;
}

#[tokio::test]
async fn the_cli_erases_a_user_on_a_stopped_server() {
    let s = TestServer::start().await;
    let user = s.token("acme", "alice", Role::User);
    let m = marker("cli");
    let a = submit(&s, &user, &body(&m, "u-cli", "s-cli", "ad-1", true), None).await;
    let keep = submit(
        &s,
        &user,
        &body("KEPTTEXT", "u-stay", "s-x", "ad-1", false),
        None,
    )
    .await;
    let dir = s.stop_keep().await;

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_feedgraph"))
        .arg("--data-dir")
        .arg(dir.path())
        .args([
            "erase", "--org", "acme", "--user", "u-cli", "--actor", "ops",
        ])
        .envs(common::backend_env(dir.path()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let receipt: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(receipt["items"], 1);
    assert_eq!(receipt["requested_by"], "ops");
    assert_eq!(receipt["state"], "done");

    let s = TestServer::start_in(dir, |_| {}).await;
    let user = s.token("acme", "alice", Role::User);
    let admin = s.token("acme", "root", Role::Admin);
    let fa = s
        .get(&user, &format!("/feedback/{}", a["id"].as_str().unwrap()))
        .await
        .1;
    assert_eq!(fa["erased_by"], "ops");
    assert!(!text_of(&fa).contains(&m));
    let fk = s
        .get(
            &user,
            &format!("/feedback/{}", keep["id"].as_str().unwrap()),
        )
        .await
        .1;
    assert!(text_of(&fk).contains("KEPTTEXT"));
    let listed = s.get(&admin, "/erasures").await.1;
    assert_eq!(listed["erasures"][0]["id"], receipt["id"]);
    s.stop().await;
}

/// A link made to an erased item keeps no metadata (an erased item keeps no free text):
/// neither the answer, nor the graph, nor the stored edge shows what the request sent,
/// whichever way the store writes the link (the item's first update, or a later one).
#[tokio::test]
async fn a_link_to_an_erased_item_keeps_and_answers_no_metadata() {
    let s = TestServer::start().await;
    let user = s.token("acme", "alice", Role::User);
    let admin = s.token("acme", "root", Role::Admin);
    for relinked_before in [false, true] {
        let m = marker("l");
        let item = submit(&s, &user, &body(&m, "u-l", "s-l", "ad-1", false), None).await;
        let id = item["id"].as_str().unwrap().to_owned();
        if relinked_before {
            let (st, b) = s
                .post(
                    &user,
                    &format!("/feedback/{id}/link"),
                    &json!({"adapter_id": "ad-2"}),
                )
                .await;
            assert_eq!(st, 201, "{b}");
        }
        let (st, b) = s
            .post(&admin, &format!("/feedback/{id}/erase"), &json!({}))
            .await;
        assert!(st == 200 || st == 201, "{st} {b}");
        let secret = format!("after erasure {m}");
        let (st, answer) = s
            .post(
                &user,
                &format!("/feedback/{id}/link"),
                &json!({"adapter_id": "ad-3", "metadata": {"note": secret}}),
            )
            .await;
        assert_eq!(st, 201, "{answer}");
        assert!(
            !text_of(&answer).contains(&secret),
            "the answer shows metadata that is not stored: {answer}"
        );
        let in_graph = link_metadata(&s, &user).await;
        assert!(
            !in_graph.contains(&secret),
            "the graph holds it: {in_graph}"
        );
        // Stored as the graph has it: a fresh server reads the same.
        let (_, history) = s.get(&user, &format!("/feedback/{id}/history")).await;
        assert!(!text_of(&history).contains(&secret), "{history}");
    }
    s.stop().await;
}
