//! PII screening on ingest through the real server: each mode (redact, flag, reject, off),
//! the findings in `GET /feedback/{id}` and in Cypher as `f.pii`, idempotent replays of a
//! redacted submit, and the `[pii]` settings from TOML and the environment.

mod common;

use common::server::{TestServer, error_details};
use feedgraph::config::Config;
use feedgraph::http::auth::Role;
use feedgraph::validate::{PiiConfig, PiiMode};
use serde_json::{Value, json};

const KEY: &str = "sk-proj-4fT9aQ2LmZ8xYbN3cV7kR1sW6eJ0hU5g";
const CARD: &str = "4111 1111 1111 1111";
const MAIL: &str = "jane.doe@example.com";

fn item() -> Value {
    json!({
        "type": "negative",
        "question": "Why does my client fail to authenticate?",
        "answer": format!("Set OPENAI_API_KEY={KEY} in the environment."),
        "comment": format!("Never print keys. My card {CARD} was charged twice."),
        "metadata": {"contact": MAIL, "ticket": 42}
    })
}

fn with_pii(config: PiiConfig) -> impl FnOnce(&mut Config) {
    move |c: &mut Config| c.pii = config
}

/// The characters `start..end` of `text`.
fn span(text: &str, f: &Value) -> String {
    let start = f["start"].as_u64().unwrap() as usize;
    let end = f["end"].as_u64().unwrap() as usize;
    text.chars().skip(start).take(end - start).collect()
}

fn findings_of<'a>(fb: &'a Value, detector: &str) -> Vec<&'a Value> {
    fb["pii"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["detector"] == detector)
        .collect()
}

#[tokio::test]
async fn redact_mode_stores_placeholders_and_lists_where() {
    let s = TestServer::start_with(with_pii(PiiConfig::all(PiiMode::Redact))).await;
    let t = s.token("acme", "alice", Role::User);
    let (status, body) = s.post(&t, "/feedback", &item()).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        body["answer"],
        "Set OPENAI_API_KEY=[API_KEY] in the environment."
    );
    // Redaction alone does not change the status.
    assert_eq!(body["validation_status"], "approved", "{body}");
    let id = body["id"].as_str().unwrap();

    let (status, fb) = s.get(&t, &format!("/feedback/{id}")).await;
    assert_eq!(status, 200);
    let text = fb.to_string();
    for raw in [KEY, CARD, MAIL, "4111"] {
        assert!(!text.contains(raw), "{raw} in {text}");
    }
    assert_eq!(
        fb["comment"],
        "Never print keys. My card [CARD] was charged twice."
    );
    assert_eq!(fb["metadata"], json!({"contact": "[EMAIL]", "ticket": 42}));

    let key = findings_of(&fb, "api_key");
    assert_eq!(key.len(), 1, "{fb}");
    assert_eq!(key[0]["field"], "answer");
    assert_eq!(key[0]["action"], "redacted");
    assert_eq!(key[0]["path"], Value::Null);
    assert_eq!(span(fb["answer"].as_str().unwrap(), key[0]), "[API_KEY]");
    let card = findings_of(&fb, "payment_card");
    assert_eq!(card[0]["field"], "comment");
    assert_eq!(span(fb["comment"].as_str().unwrap(), card[0]), "[CARD]");
    let mail = findings_of(&fb, "email");
    assert_eq!(mail[0]["field"], "metadata");
    assert_eq!(mail[0]["path"], "/contact");
    assert_eq!(mail[0]["in_key"], false);
    assert_eq!(fb["pii"].as_array().unwrap().len(), 3, "{fb}");

    // Cypher reads the same findings as `f.pii`.
    let (status, r) = s
        .post(
            &t,
            "/graph/query",
            &json!({"query": "MATCH (f:Feedback) RETURN f.pii AS pii, f.answer AS answer"}),
        )
        .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["rows"][0][0], fb["pii"]);
    assert_eq!(r["rows"][0][1], fb["answer"]);
    s.stop().await;
}

#[tokio::test]
async fn flag_mode_keeps_the_text_and_flags_the_item_naming_the_detector() {
    let mut c = PiiConfig::all(PiiMode::Off);
    c.email = PiiMode::Flag;
    let s = TestServer::start_with(with_pii(c)).await;
    let t = s.token("acme", "alice", Role::User);
    let body = json!({
        "type": "positive",
        "question": "Who do I contact about billing?",
        "answer": format!("Write to {MAIL} and include your invoice number."),
    });
    let (status, created) = s.post(&t, "/feedback", &body).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["validation_status"], "flagged");
    let reasons = created["validation_reasons"].as_array().unwrap();
    assert_eq!(reasons.len(), 1, "{created}");
    assert_eq!(reasons[0]["rule"], "pii_email");
    assert_eq!(reasons[0]["status"], "flagged");
    let message = reasons[0]["message"].as_str().unwrap();
    assert!(
        message.contains("answer") && message.contains("email"),
        "{message}"
    );
    assert!(!message.contains(MAIL), "{message}");

    let id = created["id"].as_str().unwrap();
    let (_, fb) = s.get(&t, &format!("/feedback/{id}")).await;
    let answer = fb["answer"].as_str().unwrap();
    assert!(answer.contains(MAIL), "flag keeps the text: {answer}");
    let mail = findings_of(&fb, "email");
    assert_eq!(mail.len(), 1, "{fb}");
    assert_eq!(mail[0]["action"], "flagged");
    assert_eq!(span(answer, mail[0]), MAIL);
    // The finding names where, never what.
    assert!(!fb["pii"].to_string().contains(MAIL));

    let (_, flagged) = s.get(&t, "/feedback?status=flagged").await;
    assert_eq!(flagged["count"], 1);
    s.stop().await;
}

#[tokio::test]
async fn reject_mode_is_a_400_naming_detector_and_field_and_stores_nothing() {
    let c = PiiConfig {
        payment_card: PiiMode::Reject,
        iban: PiiMode::Reject,
        ..PiiConfig::default()
    };
    let s = TestServer::start_with(with_pii(c)).await;
    let t = s.token("acme", "alice", Role::User);

    let mut body = item();
    body["comment"] = json!("Please refund me.");
    body["metadata"] = json!({"card": format!("card {CARD}")});
    let (status, err) = s.post(&t, "/feedback", &body).await;
    assert_eq!(status, 400, "{err}");
    let details = error_details(&err);
    assert!(details.contains("payment_card"), "{details}");
    assert!(details.contains("'metadata'"), "{details}");
    assert!(!details.contains("4111"), "{details}");

    let mut body = item();
    body["comment"] = json!("Refund to DE89 3704 0044 0532 0130 00 please.");
    let (status, err) = s.post(&t, "/feedback", &body).await;
    assert_eq!(status, 400, "{err}");
    let details = error_details(&err);
    assert!(
        details.contains("iban") && details.contains("'comment'"),
        "{details}"
    );
    assert!(!details.contains("3704"), "{details}");

    let (_, list) = s.get(&t, "/feedback").await;
    assert_eq!(list["count"], 0, "nothing stored: {list}");

    // The same text with a near miss (bad IBAN check digits) is stored.
    body["comment"] = json!("Refund to DE89 3704 0044 0532 0130 01 please.");
    let (status, created) = s.post(&t, "/feedback", &body).await;
    assert_eq!(status, 201, "{created}");
    s.stop().await;
}

#[tokio::test]
async fn off_mode_stores_everything_as_sent() {
    let s = TestServer::start_with(with_pii(PiiConfig::all(PiiMode::Off))).await;
    let t = s.token("acme", "alice", Role::User);
    let (status, created) = s.post(&t, "/feedback", &item()).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap();
    let (_, fb) = s.get(&t, &format!("/feedback/{id}")).await;
    assert_eq!(fb["pii"], json!([]));
    assert!(fb["answer"].as_str().unwrap().contains(KEY));
    assert_eq!(fb["metadata"]["contact"], MAIL);
    s.stop().await;
}

#[tokio::test]
async fn an_idempotent_redacted_submit_replays_and_a_different_body_conflicts() {
    let s = TestServer::start().await;
    let t = s.token("acme", "alice", Role::User);
    let send = |body: Value| {
        let req = s
            .client
            .post(s.url("/feedback"))
            .bearer_auth(&t)
            .header("Idempotency-Key", "pii-1")
            .json(&body);
        async move {
            let r = req.send().await.unwrap();
            let replayed = r.headers().get("idempotent-replayed").is_some();
            (
                r.status().as_u16(),
                replayed,
                r.json::<Value>().await.unwrap(),
            )
        }
    };
    let (s1, r1, first) = send(item()).await;
    let (s2, r2, second) = send(item()).await;
    assert_eq!((s1, s2), (201, 201), "{first} {second}");
    assert!(!r1 && r2);
    assert_eq!(first["id"], second["id"]);
    let mut other = item();
    other["question"] = json!("Another question entirely?");
    let (s3, _, body) = send(other).await;
    assert_eq!(s3, 409, "{body}");
    s.stop().await;
}

#[test]
#[allow(clippy::result_large_err)]
fn pii_settings_come_from_toml_and_the_environment() {
    figment::Jail::expect_with(|jail| {
        jail.create_file(
            "pii.toml",
            "[pii]\nemail = \"reject\"\nip_address = \"flag\"\n",
        )?;
        jail.set_env("FEEDGRAPH__PII__PHONE", "off");
        let c = Config::load(Some(std::path::Path::new("pii.toml"))).map_err(|e| e.0)?;
        assert_eq!(c.pii.email, PiiMode::Reject);
        assert_eq!(c.pii.ip_address, PiiMode::Flag);
        assert_eq!(c.pii.phone, PiiMode::Off);
        assert_eq!(c.pii.jwt, PiiMode::Redact);
        jail.create_file("bad.toml", "[pii]\nemail = \"mask\"\n")?;
        assert!(Config::load(Some(std::path::Path::new("bad.toml"))).is_err());
        Ok(())
    });
}
