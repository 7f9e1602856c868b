//! Retention with a configurable clock: `feedgraph retention` erases the content of an
//! org's items older than its policy's age, sparing items of committed batches, and
//! leaves a receipt; a second run finds nothing; the server's background run does the
//! same for new items; an org without a policy is untouched.

mod common;

use std::time::{Duration, Instant};

use common::server::TestServer;
use feedgraph::http::auth::Role;
use feedgraph::service::erasure::RetentionPolicy;
use serde_json::{Value, json};

const DAY_MS: u64 = 86_400_000;

fn item(text: &str) -> Value {
    json!({
        "type": "positive",
        "question": format!("What about {text} today?"),
        "answer": format!("The answer about {text} is here."),
        "user_id": "u1",
    })
}

async fn submit(s: &TestServer, t: &str, text: &str) -> String {
    let (st, b) = s.post(t, "/feedback", &item(text)).await;
    assert_eq!(st, 201, "{b}");
    b["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn retention_erases_old_items_from_the_cli_and_in_the_background() {
    let s = TestServer::start().await;
    let user = s.token("acme", "alice", Role::User);
    let admin = s.token("acme", "root", Role::Admin);
    let other = s.token("globex", "alice", Role::User);
    let a = submit(&s, &user, "alpha").await;
    let b = submit(&s, &user, "bravo").await;
    // B is trained on (committed batch); A is leased then given back.
    let (st, claimed) = s
        .post(&admin, "/training/batches", &json!({"limit": 1}))
        .await;
    assert_eq!(st, 201);
    let batch = claimed["batch_id"].as_u64().unwrap();
    assert_eq!(claimed["feedback"][0]["id"], a.as_str(), "oldest first");
    let (st, _) = s
        .post(
            &admin,
            &format!("/training/batches/{batch}/abort"),
            &json!({}),
        )
        .await;
    assert_eq!(st, 200);
    let (st, _) = s
        .post(&admin, "/feedback/mark-used", &json!({"ids": [b]}))
        .await;
    assert_eq!(st, 200);
    let c = submit(&s, &user, "charlie").await;
    let g = submit(&s, &other, "golf").await;
    let dir = s.stop_keep().await;

    let run = |extra: &[(&str, String)]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_feedgraph"));
        cmd.arg("--data-dir")
            .arg(dir.path())
            .args(["retention", "--org", "acme"])
            .env("FEEDGRAPH__RETENTION__ORGS__ACME__MAX_AGE_DAYS", "30")
            .envs(common::backend_env(dir.path()));
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    // Today nothing is 30 days old.
    assert_eq!(run(&[]), "");
    // 31 days on: A and C are erased, B (used by a batch) is spared.
    let later = [(
        "FEEDGRAPH__RETENTION__TEST_CLOCK_OFFSET_MS",
        (31 * DAY_MS).to_string(),
    )];
    let receipt: Value = serde_json::from_str(&run(&later)).unwrap();
    assert_eq!(receipt["scope"], "retention");
    assert_eq!(receipt["requested_by"], "retention");
    let mut expect = vec![a.clone(), c.clone()];
    expect.sort();
    assert_eq!(receipt["item_ids"], json!(expect));
    assert_eq!(receipt["items"], 2);
    assert!(
        receipt["subject"]
            .as_str()
            .unwrap()
            .starts_with("created_before:")
    );
    // A second run finds nothing new.
    assert_eq!(run(&later), "");

    // In the background: a server with the policy and the clock moved on.
    let s = TestServer::start_in(dir, |c| {
        c.retention.interval_secs = 1;
        c.retention.test_clock_offset_ms = 31 * DAY_MS;
        c.retention.orgs.insert(
            "acme".into(),
            RetentionPolicy {
                max_age_days: 30,
                spare_committed: true,
            },
        );
    })
    .await;
    let user = s.token("acme", "alice", Role::User);
    let admin = s.token("acme", "root", Role::Admin);
    let other = s.token("globex", "alice", Role::User);
    let d = submit(&s, &user, "delta").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let f = s.get(&user, &format!("/feedback/{d}")).await.1;
        if f["erased_by"] == "retention" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the background run never erased {d}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let fa = s.get(&user, &format!("/feedback/{a}")).await.1;
    assert_eq!(fa["question"], "");
    let fb = s.get(&user, &format!("/feedback/{b}")).await.1;
    assert!(
        fb["question"].as_str().unwrap().contains("bravo"),
        "spared: {fb}"
    );
    let fg = s.get(&other, &format!("/feedback/{g}")).await.1;
    assert!(
        fg["question"].as_str().unwrap().contains("golf"),
        "no policy: {fg}"
    );
    let listed = s.get(&admin, "/erasures").await.1;
    assert_eq!(listed["count"], 2, "{listed}");
    s.stop().await;
}
