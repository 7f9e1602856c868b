//! Exports that use the kinds (issue 15), against golden files in tests/golden: KTO labels
//! from a rating's score config threshold, TRL preference pairs (chosen, rejected, margin)
//! from ratings of answers to one prompt, and prompt/label lines from label items. Labels
//! never reach the answer-quality formats.

mod common;

use common::server::TestServer;
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

fn item(q: &str, a: &str, extra: Value) -> Value {
    let mut v = json!({"question": q, "answer": a});
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    v
}

#[tokio::test]
async fn kind_exports_match_their_golden_files() {
    let s = TestServer::start_with(|c| c.rate_limit.enabled = false).await;
    let admin = s.token("acme", "root", Role::Admin);
    let user = s.token("acme", "ana", Role::User);
    let trainer = s.token("acme", "tina", Role::Trainer);
    let (status, body) = s
        .post(
            &admin,
            "/score-configs",
            &json!({"name": "stars", "data_type": "numeric", "min": 1, "max": 5, "threshold": 4}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let q_rot = "How do I rotate the API key of a project?";
    let q_bill = "Why was my card charged twice this month?";
    let items = [
        item(
            "What does the free plan include?",
            "Three projects and community support.",
            json!({"type": "positive"}),
        ),
        item(
            q_rot,
            "Open Settings, then Keys, and press Rotate.",
            json!({"kind": "rating", "score": 5, "score_config": "stars"}),
        ),
        item(
            q_rot,
            "Delete the project and create it again.",
            json!({"kind": "rating", "score": 1, "score_config": "stars"}),
        ),
        item(
            q_rot,
            "Ask support to rotate it for you.",
            json!({"kind": "rating", "score": 3, "score_config": "stars"}),
        ),
        item(
            "Can I export my data as CSV?",
            "Yes, from the Reports page.",
            json!({"kind": "rating", "type": "negative", "score": 4}),
        ),
        item(
            q_bill,
            "A retried payment can show as a second charge.",
            json!({"kind": "label", "label": "billing"}),
        ),
        item(
            "Where do I change my password?",
            "Under Profile, then Security.",
            json!({"kind": "text", "type": "positive", "comment": "Clear and quick."}),
        ),
        item(
            "Which regions host my data?",
            "Only us-east-1.",
            json!({"kind": "correction", "correction": "us-east-1 and eu-west-1, chosen per project."}),
        ),
    ];
    for i in &items {
        let (status, body) = s.post(&user, "/feedback", i).await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["validation_status"], "approved", "{body}");
    }
    let (status, claimed) = s
        .post(&trainer, "/training/batches", &json!({"limit": 100}))
        .await;
    assert_eq!(status, 201, "{claimed}");
    assert_eq!(claimed["count"], 8, "{claimed}");
    let id = claimed["batch_id"].as_u64().unwrap();
    let export = |format: &'static str| {
        let req = s
            .client
            .get(s.url(&format!("/training/batches/{id}/export?format={format}")))
            .bearer_auth(&trainer);
        async move {
            let r = req.send().await.unwrap();
            assert_eq!(r.status().as_u16(), 200, "{format}");
            let headers = r.headers().clone();
            (headers, r.text().await.unwrap())
        }
    };
    for (format, file, lines, skipped) in [
        ("kto", "kinds_kto.jsonl", 7, 1),
        ("preference", "preference.jsonl", 2, 5),
        ("labels", "labels.jsonl", 1, 7),
        ("sft", "kinds_sft.jsonl", 4, 4),
    ] {
        let (headers, body) = export(format).await;
        let parsed: Vec<Value> = body
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{format}: {e}: {l}")))
            .collect();
        assert_eq!(parsed.len(), lines, "{format}: {body}");
        let n = |h: &str| headers[h].to_str().unwrap().parse::<usize>().unwrap();
        assert_eq!(n("x-feedgraph-skipped"), skipped, "{format}");
        // TRL's column layouts: unpaired (prompt, completion, label), preference with a
        // margin (prompt, chosen, rejected, margin); labels are prompt/label.
        let want: &[&str] = match format {
            "kto" => &["completion", "label", "prompt"],
            "preference" => &["chosen", "margin", "prompt", "rejected"],
            "labels" => &["label", "prompt"],
            _ => &["messages"],
        };
        for line in &parsed {
            let mut keys: Vec<&str> = line
                .as_object()
                .unwrap()
                .keys()
                .map(|k| k.as_str())
                .collect();
            keys.sort_unstable();
            assert_eq!(keys, want, "{format}: {line}");
        }
        if format == "preference" {
            for line in &parsed {
                assert!(line["margin"].as_f64().unwrap() > 0.0, "{line}");
            }
        }
        if format == "kto" {
            assert_eq!((n("x-kto-desirable"), n("x-kto-undesirable")), (3, 4));
        }
        golden(file, &body);
    }
    // KTO reads a rating through its config's threshold as it is now: lowered to 3, the
    // answer rated 3 becomes desirable.
    let (status, body) = s
        .post(
            &admin,
            "/score-configs",
            &json!({"name": "stars", "data_type": "numeric", "min": 1, "max": 5, "threshold": 3}),
        )
        .await;
    assert_eq!(
        (status, &body["result"]),
        (200, &json!("updated")),
        "{body}"
    );
    let (headers, body) = export("kto").await;
    let support: Value = body
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|l| l["completion"] == "Ask support to rotate it for you.")
        .unwrap();
    assert_eq!(support["label"], true, "{body}");
    assert_eq!(headers["x-kto-desirable"], "4");
    let (status, _) = s
        .client
        .get(s.url(&format!("/training/batches/{id}/export?format=bogus")))
        .bearer_auth(&trainer)
        .send()
        .await
        .map(|r| (r.status().as_u16(), ()))
        .unwrap();
    assert_eq!(status, 400);
    s.stop().await;
}
