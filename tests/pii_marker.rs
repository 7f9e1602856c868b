//! Nothing redacted is ever written: values of every detector, each holding a unique
//! marker, go through the real server in redact mode (in every text field, in metadata
//! values and keys, under an Idempotency-Key, replayed, then linked and reviewed so the
//! history holds the item's fields); after a clean stop every file of the data directory,
//! and every log line the process wrote, is scanned for the markers' bytes. A control value
//! in a field that is not screened must be found, so the scan is known to see stored text.

mod common;

use std::sync::{Arc, Mutex};

use common::disk::{contains, files};
use common::server::TestServer;
use feedgraph::http::auth::Role;
use feedgraph::validate::{PiiConfig, PiiMode};
use rand::Rng;
use serde_json::{Value, json};

/// Log lines of the whole test process, at every level.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn random(alphabet: &[u8], n: usize) -> String {
    let mut rng = rand::rng();
    (0..n)
        .map(|_| alphabet[rng.random_range(0..alphabet.len())] as char)
        .collect()
}

const DIGITS: &[u8] = b"0123456789";
const LOWER: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const B64URL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// A Luhn-valid 16-digit number starting with 4, in groups of four.
fn card() -> String {
    let mut d: Vec<u32> = std::iter::once(4)
        .chain(random(DIGITS, 14).bytes().map(|b| u32::from(b - b'0')))
        .collect();
    let sum: u32 = d
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &x)| {
            // Positions counted from the check digit that is still to come.
            if i % 2 == 0 {
                let y = x * 2;
                if y > 9 { y - 9 } else { y }
            } else {
                x
            }
        })
        .sum();
    d.push((10 - sum % 10) % 10);
    let s: String = d
        .iter()
        .map(|x| char::from_digit(*x, 10).unwrap())
        .collect();
    format!("{} {} {} {}", &s[0..4], &s[4..8], &s[8..12], &s[12..16])
}

/// A German IBAN with correct check digits, grouped by four.
fn iban() -> String {
    let bban = random(DIGITS, 18);
    // mod 97 of BBAN + "DE00" with D = 13, E = 14.
    let rem = format!("{bban}131400")
        .bytes()
        .fold(0u64, |r, b| (r * 10 + u64::from(b - b'0')) % 97);
    let check = 98 - rem;
    let s = format!("DE{check:02}{bban}");
    s.as_bytes()
        .chunks(4)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::test]
async fn no_redacted_value_reaches_the_disk_or_the_logs() {
    let logs = Captured::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_env_filter("trace")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    // One value per detector, each unique to this run.
    let email = format!("mk{}@example.com", random(LOWER, 12));
    let email_key = format!("kk{}@example.org", random(LOWER, 12));
    let phone = format!("+44 20 {} {}", random(DIGITS, 4), random(DIGITS, 4));
    let card = card();
    let card2 = card_two();
    let iban = iban();
    let ipv4 = format!(
        "10.{}.{}.{}",
        rand::rng().random_range(10..250),
        rand::rng().random_range(10..250),
        rand::rng().random_range(10..250)
    );
    let ipv6 = format!(
        "2001:db8:{}:{}::{}",
        random(b"abcdef", 4),
        random(b"abcdef", 4),
        random(b"123456789", 3)
    );
    let api_key = format!("sk-a1{}", random(LOWER, 30));
    let aws = format!("AKIA{}", random(UPPER, 16));
    let jwt = format!(
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.{}",
        random(B64URL, 30)
    );
    let pem_body = random(B64URL, 48);
    let pem = format!("-----BEGIN PRIVATE KEY-----\n{pem_body}\n-----END PRIVATE KEY-----");
    let control = format!("ctl-{}", random(LOWER, 16));

    let s = TestServer::start_with(|c| c.pii = PiiConfig::all(PiiMode::Redact)).await;
    let user = s.token("acme", "alice", Role::User);
    let admin = s.token("acme", "root", Role::Admin);
    let body = json!({
        "type": "negative",
        "question": format!("Mail {email} or call {phone} about this?"),
        "answer": format!("Use key {api_key} with access key id {aws}."),
        "correction": format!("Send the token {jwt} and pay with {card}."),
        "comment": format!("{pem}\nrefund to {iban} from host {ipv4}"),
        "session_id": control,
        "adapter_id": "lora_pii",
        "metadata": {
            "host": format!("via {ipv6}"),
            email_key.clone(): "owner",
            "nested": {"cards": [card2.clone()]}
        }
    });
    // Sent as these exact bytes: the idempotency record must not keep a fingerprint of
    // them (an unkeyed hash of a body whose only unknown is a redacted phone number is a
    // guessing oracle), so the raw body's hash is one more marker.
    let raw = serde_json::to_vec(&body).unwrap();
    let raw_hash = feedgraph::store::stable_hash(&raw).to_le_bytes();
    let post = |key: &'static str| {
        s.client
            .post(s.url("/feedback"))
            .bearer_auth(&user)
            .header("Idempotency-Key", key)
            .header("content-type", "application/json")
            .body(raw.clone())
            .send()
    };
    let first = post("marker-1").await.unwrap();
    assert_eq!(first.status().as_u16(), 201);
    let first: Value = first.json().await.unwrap();
    let replay = post("marker-1").await.unwrap();
    assert!(replay.headers().get("idempotent-replayed").is_some());
    let id = first["id"].as_str().unwrap().to_owned();

    // Every detector fired and was redacted.
    let (_, fb) = s.get(&user, &format!("/feedback/{id}")).await;
    let mut detectors: Vec<&str> = fb["pii"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            assert_eq!(f["action"], "redacted", "{f}");
            f["detector"].as_str().unwrap()
        })
        .collect();
    detectors.sort_unstable();
    detectors.dedup();
    assert_eq!(detectors.len(), 9, "{fb}");

    // Changes that copy the record's fields into its history.
    let (status, r) = s
        .post(
            &user,
            &format!("/feedback/{id}/link"),
            &json!({"adapter_id": "lora_other"}),
        )
        .await;
    assert_eq!(status, 201, "{r}");
    let (status, r) = s
        .patch(
            &admin,
            &format!("/feedback/{id}"),
            &json!({"validation_status": "rejected", "reason": "checked"}),
        )
        .await;
    assert_eq!(status, 200, "{r}");
    let (_, history) = s.get(&user, &format!("/feedback/{id}/history")).await;
    assert!(history["count"].as_u64().unwrap() >= 3, "{history}");

    // A request that is refused before screening (a bad score) must not log its body.
    let mut bad = body.clone();
    bad["score"] = json!(api_key);
    let (status, _) = s.post(&user, "/feedback", &bad).await;
    assert_eq!(status, 400);

    let dir = s.stop_keep().await;

    let markers: Vec<(&str, String)> = vec![
        ("email", email.clone()),
        (
            "email local part",
            email.split('@').next().unwrap().to_owned(),
        ),
        (
            "email in a key",
            email_key.split('@').next().unwrap().to_owned(),
        ),
        ("phone", phone.clone()),
        ("phone digits", phone.replace(' ', "")),
        ("card", card.clone()),
        ("card digits", card.replace(' ', "")),
        ("card in metadata", card2.replace(' ', "")),
        ("iban", iban.replace(' ', "")),
        ("iban as sent", iban.clone()),
        ("ipv4", ipv4.clone()),
        ("ipv6", ipv6.clone()),
        ("api key", api_key[5..].to_owned()),
        ("aws", aws.clone()),
        ("jwt signature", jwt.rsplit('.').next().unwrap().to_owned()),
        ("pem body", pem_body.clone()),
    ];
    // What is stored on disk: the data directory on sled; on PostgreSQL the files of the
    // server's database (tables and indexes, after a checkpoint).
    let mut all = Vec::new();
    match common::postgres_files(dir.path()) {
        None => {
            all.extend(files(dir.path()));
            assert!(all.iter().any(|p| p.ends_with("db")), "{all:?}");
        }
        Some(cluster) => all.extend(files(&cluster)),
    }
    let mut seen_control = false;
    for path in &all {
        // The database server may remove a file (a recycled log segment) as we go.
        let Ok(bytes) = std::fs::read(path) else {
            continue;
        };
        for (what, m) in &markers {
            assert!(
                !contains(&bytes, m.as_bytes()),
                "{what} found in {}",
                path.display()
            );
        }
        assert!(
            !contains(&bytes, &raw_hash),
            "the raw body's hash is in {}",
            path.display()
        );
        seen_control |= contains(&bytes, control.as_bytes());
    }
    assert!(
        seen_control,
        "the control value must be on disk: the scan sees stored text"
    );

    let logs = logs.0.lock().unwrap().clone();
    assert!(!logs.is_empty(), "no log lines were captured");
    for (what, m) in &markers {
        assert!(!contains(&logs, m.as_bytes()), "{what} found in the logs");
    }
}

/// A second Luhn-valid card number (starting with 5), in groups of four.
fn card_two() -> String {
    let c = card();
    // Replace the leading 4 by 5 and fix the check digit: redo with a fresh prefix.
    let digits: String = format!("5{}", &c.replace(' ', "")[1..15]);
    let d: Vec<u32> = digits.bytes().map(|b| u32::from(b - b'0')).collect();
    let sum: u32 = d
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &x)| {
            if i % 2 == 0 {
                let y = x * 2;
                if y > 9 { y - 9 } else { y }
            } else {
                x
            }
        })
        .sum();
    let s = format!("{digits}{}", (10 - sum % 10) % 10);
    format!("{} {} {} {}", &s[0..4], &s[4..8], &s[8..12], &s[12..16])
}
