//! The training loop over HTTP: claim, export (golden files), commit, abort, mark-used,
//! review with retraction impact, and the history of every change.

mod common;

use common::server::{TestServer, error_details};
use feedgraph::http::auth::Role;
use serde_json::{Value, json};

fn golden(name: &str, actual: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with UPDATE_GOLDEN=1 to create)",
            path.display()
        )
    });
    assert_eq!(actual, expected, "{name} differs from the golden file");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_match_golden_files_and_only_approved_items_are_claimed() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = common::open(dir.path());
        common::load_fixtures(&s);
    }
    let s = TestServer::start_in(dir, |c| c.rate_limit.enabled = false).await;
    let trainer = s.token("acme", "tina", Role::Trainer);
    let user = s.token("acme", "ursula", Role::User);

    assert_eq!(
        s.post(&user, "/training/batches", &json!({"limit": 10}))
            .await
            .0,
        403
    );
    let (status, claimed) = s
        .post(&trainer, "/training/batches", &json!({"limit": 1000}))
        .await;
    assert_eq!(status, 201, "{claimed}");
    let (_, stats) = s.get(&user, "/feedback/stats").await;
    assert_eq!(
        claimed["count"], stats["approved_count"],
        "every approved item, nothing else"
    );
    for f in claimed["feedback"].as_array().unwrap() {
        assert_eq!(f["validation_status"], "approved", "{f}");
    }
    let ids: Vec<&str> = claimed["feedback"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap())
        .collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "oldest first");
    let id = claimed["batch_id"].as_u64().unwrap();
    assert_eq!(claimed["state"], "leased");

    // A second claim finds nothing: everything approved is leased.
    let (status, empty) = s
        .post(&trainer, "/training/batches", &json!({"limit": 10}))
        .await;
    assert_eq!((status, empty["count"].as_u64()), (200, Some(0)));

    let export = |format: &'static str| {
        let req = s
            .client
            .get(s.url(&format!("/training/batches/{id}/export?format={format}")))
            .bearer_auth(&trainer);
        async move {
            let r = req.send().await.unwrap();
            assert_eq!(r.status().as_u16(), 200);
            assert_eq!(r.headers()["content-type"], "application/x-ndjson");
            let headers = r.headers().clone();
            (headers, r.text().await.unwrap())
        }
    };
    for (format, file) in [
        ("sft", "sft.jsonl"),
        ("dpo", "dpo.jsonl"),
        ("openai-dpo", "openai_dpo.jsonl"),
        ("kto", "kto.jsonl"),
    ] {
        let (headers, body) = export(format).await;
        for line in body.lines() {
            serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("{format}: {e}: {line}"));
        }
        golden(file, &body);
        if format == "kto" {
            let n = |h: &str| headers[h].to_str().unwrap().parse::<usize>().unwrap();
            assert_eq!(
                n("x-kto-desirable") + n("x-kto-undesirable"),
                body.lines().count()
            );
            assert_eq!(
                n("x-kto-desirable"),
                body.lines()
                    .filter(|l| l.contains("\"label\":true"))
                    .count()
            );
        }
    }
    let (_, sft) = export("sft").await;
    let (_, dpo) = export("dpo").await;
    assert!(dpo.lines().count() > 0 && dpo.lines().count() < sft.lines().count());

    // Commit and export again: the manifest gives the same lines.
    let (status, committed) = s
        .post(
            &trainer,
            &format!("/training/batches/{id}/commit"),
            &json!({"trained_adapter_id": "themis_help_lora_v4"}),
        )
        .await;
    assert_eq!(status, 200, "{committed}");
    assert_eq!(committed["manifest"].as_array().unwrap().len(), ids.len());
    assert_eq!(export("sft").await.1, sft);
    let (status, body) = s
        .get(
            &trainer,
            &format!("/training/batches/{id}/export?format=csv"),
        )
        .await;
    assert_eq!(status, 400);
    assert!(error_details(&body).contains("csv"));
    let (_, stats) = s.get(&user, "/feedback/stats").await;
    assert_eq!(stats["used_for_training"], committed["count"]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_commit_retraction_impact_and_history() {
    let s = TestServer::start_with(|c| c.rate_limit.enabled = false).await;
    let admin = s.token("acme", "ada", Role::Admin);
    let trainer = s.token("acme", "tina", Role::Trainer);
    let user = s.token("acme", "ursula", Role::User);

    // A flagged item enters the review queue.
    let (_, fb) = s
        .post(&user, "/feedback", &json!({"type": "negative", "question": "How do I drop a shard?", "answer": "Use DROP SHARD with the shard id."}))
        .await;
    assert_eq!(fb["validation_status"], "flagged");
    let id = fb["id"].as_str().unwrap().to_owned();
    let (_, queue) = s.get(&admin, "/feedback?status=flagged").await;
    assert_eq!(queue["feedback"][0]["id"], id.as_str());
    // Flagged items are never claimed.
    let (_, none) = s
        .post(&trainer, "/training/batches", &json!({"limit": 10}))
        .await;
    assert_eq!(none["count"], 0);

    let review =
        |status: &str| json!({"validation_status": status, "reason": "checked against the docs"});
    assert_eq!(
        s.patch(&user, &format!("/feedback/{id}"), &review("approved"))
            .await
            .0,
        403
    );
    let (status, body) = s
        .patch(&admin, &format!("/feedback/{id}"), &review("flagged"))
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = s
        .patch(
            &admin,
            &format!("/feedback/{id}"),
            &json!({"validation_status": "approved"}),
        )
        .await;
    assert_eq!(status, 400);
    assert!(error_details(&body).contains("reason"));
    let (status, body) = s
        .patch(&admin, &format!("/feedback/{id}"), &review("approved"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["changed"], true);
    assert_eq!(body["feedback"]["validation_status"], "approved");
    assert!(body.get("impact").is_none());

    // Claim, commit with a trained adapter, and derive a child adapter from it.
    let (status, claimed) = s
        .post(&trainer, "/training/batches", &json!({"limit": 10}))
        .await;
    assert_eq!(status, 201);
    let batch = claimed["batch_id"].as_u64().unwrap();
    let (status, _) = s
        .post(
            &trainer,
            &format!("/training/batches/{batch}/commit"),
            &json!({"trained_adapter_id": "lora_v9", "trained_adapter_version": "9.0"}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        s.post(
            &admin,
            "/adapters",
            &json!({"id": "lora_v10", "derived_from": "lora_v9"})
        )
        .await
        .0,
        201
    );
    let (_, b) = s.get(&trainer, &format!("/training/batches/{batch}")).await;
    assert_eq!(b["state"], "committed");
    assert_eq!(b["manifest"][0]["feedback_id"], id.as_str());
    assert_eq!(b["manifest"][0]["content_hash"].as_str().unwrap().len(), 16);
    let (_, trained) = s
        .get(&trainer, "/training/batches?trained_adapter_id=lora_v9")
        .await;
    assert_eq!(trained["count"], 1);
    assert_eq!(trained["batches"][0]["batch_id"], batch);
    let (_, none) = s.get(&trainer, "/training/batches?state=leased").await;
    assert_eq!(none["count"], 0);
    assert_eq!(
        s.get(&trainer, "/training/batches?state=cooking").await.0,
        400
    );
    // A committed batch cannot be aborted; committing again changes nothing.
    assert_eq!(
        s.post(
            &trainer,
            &format!("/training/batches/{batch}/abort"),
            &json!({})
        )
        .await
        .0,
        409
    );
    assert_eq!(
        s.post(
            &trainer,
            &format!("/training/batches/{batch}/commit"),
            &json!({})
        )
        .await
        .0,
        200
    );

    // Rejecting it now reports where the data went.
    let (status, body) = s
        .patch(&admin, &format!("/feedback/{id}"), &review("rejected"))
        .await;
    assert_eq!(status, 200, "{body}");
    let impact = &body["impact"];
    assert_eq!(impact["batches"][0]["batch_id"], batch);
    assert_eq!(impact["batches"][0]["state"], "committed");
    assert_eq!(impact["trained_adapters"], json!(["lora_v9"]));
    assert_eq!(impact["derived_adapters"], json!(["lora_v10"]));
    let (_, again) = s.get(&user, &format!("/feedback/{id}/impact")).await;
    assert_eq!(&again, impact);

    // History: every change, in order.
    let (status, h) = s.get(&user, &format!("/feedback/{id}/history")).await;
    assert_eq!(status, 200);
    let actions: Vec<&str> = h["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["submit", "review", "lease", "commit", "review"]);
    let versions: Vec<u64> = h["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, [1, 2, 3, 4, 5]);
    assert_eq!(h["versions"][1]["actor"], "ada");
    assert_eq!(h["versions"][3]["actor"], "tina");

    // Abort returns items to the pool, and the history says so.
    let (_, fb2) = s
        .post(&user, "/feedback", &json!({"type": "positive", "question": "How do I add a node?", "answer": "Run JOIN CLUSTER on the new node."}))
        .await;
    let id2 = fb2["id"].as_str().unwrap().to_owned();
    let (_, c2) = s
        .post(&trainer, "/training/batches", &json!({"limit": 10}))
        .await;
    let b2 = c2["batch_id"].as_u64().unwrap();
    let (status, aborted) = s
        .post(
            &trainer,
            &format!("/training/batches/{b2}/abort"),
            &json!({}),
        )
        .await;
    assert_eq!((status, aborted["state"].as_str()), (200, Some("aborted")));
    assert_eq!(
        s.post(
            &trainer,
            &format!("/training/batches/{b2}/commit"),
            &json!({})
        )
        .await
        .0,
        409
    );
    let (_, c3) = s
        .post(&trainer, "/training/batches", &json!({"limit": 10}))
        .await;
    assert_eq!(c3["feedback"][0]["id"], id2.as_str(), "back in the pool");
    let (_, h2) = s.get(&user, &format!("/feedback/{id2}/history")).await;
    let actions: Vec<&str> = h2["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["submit", "lease", "abort", "lease"]);

    // mark-used records the items as a new committed batch with an id from the org's
    // counter, and reports each id.
    let b3 = c3["batch_id"].as_u64().unwrap();
    let (_, fb4) = s
        .post(&user, "/feedback", &json!({"type": "positive", "question": "How do I list shards?", "answer": "SHOW SHARDS lists them with sizes."}))
        .await;
    let id4 = fb4["id"].as_str().unwrap();
    let (status, r) = s
        .post(
            &trainer,
            "/feedback/mark-used",
            &json!({"ids": [id4, id4, id, id2, "feedback-nope"]}),
        )
        .await;
    assert_eq!(status, 200, "{r}");
    let results: Vec<(&str, u64)> = r["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| (x["result"].as_str().unwrap(), x["status"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        results,
        [
            ("marked", 200),
            ("already_marked", 200),
            ("used_by_other_batch", 409),
            ("leased_to_other_batch", 409),
            ("not_found", 404)
        ]
    );
    assert_eq!(r["results"][2]["batch_id"], batch);
    assert_eq!(r["results"][3]["batch_id"], b3);
    let marked_batch = r["training_batch_id"].as_u64().unwrap();
    assert_eq!(
        marked_batch,
        b3 + 1,
        "the batch id comes from the org's counter"
    );
    let (_, f4) = s.get(&user, &format!("/feedback/{id4}")).await;
    assert_eq!(
        (
            f4["used_for_training"].as_bool(),
            f4["training_batch_id"].as_u64()
        ),
        (Some(true), Some(marked_batch))
    );
    let (status, mb) = s
        .get(&trainer, &format!("/training/batches/{marked_batch}"))
        .await;
    assert_eq!(status, 200, "{mb}");
    assert_eq!(mb["state"], "committed", "{mb}");
    assert_eq!(mb["manifest"][0]["feedback_id"], id4, "{mb}");
    assert_eq!(mb["manifest"].as_array().unwrap().len(), 1, "{mb}");
    // A client cannot name a batch id: two batches would share it.
    for named in [json!(0), json!(777), json!(b3)] {
        let (status, body) = s
            .post(
                &trainer,
                "/feedback/mark-used",
                &json!({"ids": [id4], "training_batch_id": named}),
            )
            .await;
        assert_eq!(status, 400, "{body}");
        assert!(
            error_details(&body).contains("'training_batch_id'"),
            "{body}"
        );
    }
    // Nothing markable: no batch is stored.
    let (status, none) = s
        .post(&trainer, "/feedback/mark-used", &json!({"ids": [id4]}))
        .await;
    assert_eq!(status, 200, "{none}");
    assert_eq!(none["training_batch_id"], Value::Null, "{none}");
    assert_eq!(
        none["results"][0]["result"], "used_by_other_batch",
        "{none}"
    );
    let (_, imp) = s.get(&user, &format!("/feedback/{id4}/impact")).await;
    assert_eq!(imp["batches"][0]["state"], "committed", "{imp}");
    assert_eq!(imp["batches"][0]["batch_id"], marked_batch, "{imp}");

    // A lease that runs out shows as expired (and the stored state separately).
    let (_, fb5) = s
        .post(&user, "/feedback", &json!({"type": "positive", "question": "How do I drain a node?", "answer": "Run DRAIN NODE and wait for zero shards."}))
        .await;
    assert_eq!(fb5["validation_status"], "approved");
    let (status, short) = s
        .post(
            &trainer,
            "/training/batches",
            &json!({"limit": 1, "lease_seconds": 1}),
        )
        .await;
    assert_eq!(status, 201, "{short}");
    assert_eq!(short["state"], "leased");
    let b5 = short["batch_id"].as_u64().unwrap();
    // Ids count up per org; mark-used took b3 + 1 and the empty mark-used b3 + 2.
    assert_eq!(
        b5,
        b3 + 3,
        "batch ids count up per org, shared with mark-used"
    );
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let raw = s
        .client
        .get(s.url(&format!("/training/batches/{b5}")))
        .bearer_auth(&trainer)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(raw.matches("\"state\"").count(), 1, "{raw}");
    let v: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(
        (v["state"].as_str(), v["stored_state"].as_str()),
        (Some("expired"), Some("leased"))
    );

    // Stats follow all of this.
    let (_, st) = s.get(&user, "/feedback/stats").await;
    assert_eq!(st["used_for_training"], 2);
    assert_eq!(
        s.get(&user, "/training/batches").await.0,
        403,
        "users do not see batches"
    );
    // The role is checked before the body is read: a user gets 403 even with a bad body.
    let r = s
        .client
        .post(s.url("/training/batches"))
        .bearer_auth(&user)
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    assert_eq!(st["rejected_count"], 1);
    s.stop().await;
}
