//! The detector table (real-looking positives and near misses for every detector), the
//! modes, overlaps and the checksum helpers.

use super::checks::base64url_decode;
use super::*;
use PiiDetector as D;

fn scanner() -> PiiScanner {
    PiiScanner::new(&PiiConfig::all(PiiMode::Redact)).unwrap()
}

/// The detectors that fire on `text` with every detector on, and what they cover.
fn found(s: &PiiScanner, text: &str) -> Vec<(PiiDetector, String)> {
    s.scan(text)
        .into_iter()
        .map(|h| (h.detector, text[h.start..h.end].to_owned()))
        .collect()
}

/// (detector, text, the value it must find or "" for none of that detector).
/// Positives are real-looking values in sentences; negatives are near misses.
const TABLE: &[(PiiDetector, &str, &str)] = &[
    // E-mail.
    (
        D::Email,
        "write to jane.doe+feedback@example.co.uk today",
        "jane.doe+feedback@example.co.uk",
    ),
    (
        D::Email,
        "Contact: ops-team@mail.acme-corp.com.",
        "ops-team@mail.acme-corp.com",
    ),
    (
        D::Email,
        "(bob_99@sub.example.org)",
        "bob_99@sub.example.org",
    ),
    (D::Email, "ssh admin@localhost then exit", ""),
    (D::Email, "ping @channel about it", ""),
    (D::Email, "user@host.c is not routable", ""),
    (D::Email, "a version pin foo@1.2.3 in npm", ""),
    (D::Email, "two dots a..b@example.com", ""),
    // Phone.
    (D::Phone, "call +1 415 555 2671 now", "+1 415 555 2671"),
    (D::Phone, "tel: +44 20 7946 0958", "+44 20 7946 0958"),
    (
        D::Phone,
        "Berlin +49 (0)30 1234567 office",
        "+49 (0)30 1234567",
    ),
    (D::Phone, "E.164 form +14155552671.", "+14155552671"),
    (D::Phone, "US (415) 555-2671 ext", "(415) 555-2671"),
    (D::Phone, "or 415.555.2671 or", "415.555.2671"),
    (D::Phone, "UK 020 7946 0958 switchboard", "020 7946 0958"),
    (D::Phone, "mobile 07700 900123", "07700 900123"),
    (D::Phone, "FR 01 23 45 67 89", "01 23 45 67 89"),
    (D::Phone, "1234 5678 90 = 42 + 17", ""),
    (D::Phone, "released 2024-01-15 at noon", ""),
    (D::Phone, "on 01.02.2024 10:30 we met", ""),
    (D::Phone, "ISBN 978-3-16-148410-0", ""),
    (D::Phone, "order 4155552671 shipped", ""),
    (D::Phone, "short 555-1234 only", ""),
    (D::Phone, "math + 12 345", ""),
    (D::Phone, "area 123-555-2671 is not NANP", ""),
    // Payment cards (test numbers of the networks; Luhn-valid).
    (
        D::PaymentCard,
        "card 4111 1111 1111 1111 exp 12/29",
        "4111 1111 1111 1111",
    ),
    (
        D::PaymentCard,
        "MC 5500-0000-0000-0004.",
        "5500-0000-0000-0004",
    ),
    (D::PaymentCard, "amex 378282246310005", "378282246310005"),
    (
        D::PaymentCard,
        "ref 12 4111 1111 1111 1111",
        "4111 1111 1111 1111",
    ),
    (D::PaymentCard, "card 4111 1111 1111 1112 (typo)", ""),
    (D::PaymentCard, "zeros 0000 0000 0000 0000", ""),
    (
        D::PaymentCard,
        "id 1234567812345670 (Luhn-valid, no issuer)",
        "",
    ),
    (D::PaymentCard, "mixed 4111-1111 1111-1111", ""),
    (D::PaymentCard, "hash 4111111111111111abc", ""),
    (D::PaymentCard, "twelve 411111111111 digits", ""),
    (
        D::PaymentCard,
        "iban digits DE89 3704 0044 0532 0130 01",
        "",
    ),
    (
        D::PaymentCard,
        "amex prefix, wrong length 3782822463100003",
        "",
    ),
    // IBAN.
    (
        D::Iban,
        "pay to DE89 3704 0044 0532 0130 00 please",
        "DE89 3704 0044 0532 0130 00",
    ),
    (D::Iban, "GB82WEST12345698765432.", "GB82WEST12345698765432"),
    (D::Iban, "konto NL91ABNA0417164300", "NL91ABNA0417164300"),
    (
        D::Iban,
        "fr7630006000011234567890189 lower",
        "fr7630006000011234567890189",
    ),
    (D::Iban, "bad check DE89 3704 0044 0532 0130 01", ""),
    (D::Iban, "unknown XX89 3704 0044 0532 0130 00", ""),
    (D::Iban, "short DE89 3704 0044 0532 0130", ""),
    (D::Iban, "model GB82 is not an account", ""),
    // IP addresses.
    (D::IpAddress, "from 203.0.113.42, then", "203.0.113.42"),
    (
        D::IpAddress,
        "host 2001:db8:85a3::8a2e:370:7334 up",
        "2001:db8:85a3::8a2e:370:7334",
    ),
    (
        D::IpAddress,
        "mapped ::ffff:192.0.2.1 here",
        "::ffff:192.0.2.1",
    ),
    (D::IpAddress, "gw 192.168.1.1.", "192.168.1.1"),
    (D::IpAddress, "version 1.2.3.4.5 shipped", ""),
    (D::IpAddress, "tag v1.2.3.4 today", ""),
    (D::IpAddress, "Windows 10.0.19041.1 build", ""),
    (D::IpAddress, "octet 256.1.1.1 bad", ""),
    (D::IpAddress, "semver 1.2.3 only", ""),
    (D::IpAddress, "leading 01.02.03.04 zeros", ""),
    (D::IpAddress, "at 12:30:45 UTC", ""),
    (D::IpAddress, "mac 00:1A:2B:3C:4D:5E", ""),
    (D::IpAddress, "rust std::vec::Vec and a::b", ""),
    (D::IpAddress, "loopback ::1 alone", ""),
    // API keys.
    (
        D::ApiKey,
        "key=sk-proj-4fT9aQ2LmZ8xYbN3cV7kR1sW6eJ0hU5g here",
        "sk-proj-4fT9aQ2LmZ8xYbN3cV7kR1sW6eJ0hU5g",
    ),
    (
        D::ApiKey,
        "OPENAI_API_KEY sk-9aB8cD7eF6gH5iJ4kL3mN2oP1qR0sT",
        "sk-9aB8cD7eF6gH5iJ4kL3mN2oP1qR0sT",
    ),
    (D::ApiKey, "we use sk-learn for that", ""),
    (
        D::ApiKey,
        "a task-based flow with sk-2024-roadmap-planning-document",
        "",
    ),
    (D::ApiKey, "risk-assessment-framework-for-teams-2024", ""),
    (D::ApiKey, "sk-abcdefghijklmnopqrstuvwxyz letters only", ""),
    // AWS access key ids.
    (
        D::AwsAccessKey,
        "aws_access_key_id = AKIAIOSFODNN7EXAMPLE",
        "AKIAIOSFODNN7EXAMPLE",
    ),
    (
        D::AwsAccessKey,
        "session ASIAY34FZKBOKMUTVV7A.",
        "ASIAY34FZKBOKMUTVV7A",
    ),
    (D::AwsAccessKey, "AKIAIOSFODNN7EXAMPL short", ""),
    (D::AwsAccessKey, "AKIAIOSFODNN7EXAMPLEX long", ""),
    (D::AwsAccessKey, "akiaiosfodnn7example lower", ""),
    // JWTs.
    (
        D::Jwt,
        "Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    ),
    (
        D::Jwt,
        "unsigned eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0. end",
        "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.",
    ),
    (D::Jwt, "no alg eyJ0eXAiOiJKV1QifQ.eyJzdWIiOiJ4In0.c2ln", ""),
    (D::Jwt, "two parts eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0", ""),
    (D::Jwt, "not json eyJhbGciOi.eyJzdWIiOiJ4In0.c2ln", ""),
    // Private keys.
    (
        D::PrivateKey,
        "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\nthanks",
        "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----",
    ),
    (
        D::PrivateKey,
        "x -----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----",
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----",
    ),
    (
        D::PrivateKey,
        "cut -----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA",
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA",
    ),
    (
        D::PrivateKey,
        "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOC\n-----END PUBLIC KEY-----",
        "",
    ),
    (
        D::PrivateKey,
        "-----BEGIN CERTIFICATE-----\nMIIDdzCCAl+gAwIBAgIE\n-----END CERTIFICATE-----",
        "",
    ),
    (D::PrivateKey, "the words private key in prose", ""),
];

#[test]
fn the_detector_table() {
    let s = scanner();
    for &(detector, text, want) in TABLE {
        let got: Vec<String> = found(&s, text)
            .into_iter()
            .filter(|(d, _)| *d == detector)
            .map(|(_, v)| v)
            .collect();
        if want.is_empty() {
            assert!(
                got.is_empty(),
                "{detector} must not fire on {text:?}: {got:?}"
            );
        } else {
            assert_eq!(got, [want], "{detector} on {text:?}");
        }
    }
    // Every detector has positives and negatives.
    for d in PiiDetector::ALL {
        assert!(
            TABLE.iter().any(|&(x, _, w)| x == d && !w.is_empty()),
            "{d}"
        );
        assert!(TABLE.iter().any(|&(x, _, w)| x == d && w.is_empty()), "{d}");
    }
}

#[test]
fn a_detector_that_is_off_finds_nothing() {
    let mut c = PiiConfig::all(PiiMode::Off);
    let off = PiiScanner::new(&c).unwrap();
    assert!(off.is_off());
    c.email = PiiMode::Flag;
    let email_only = PiiScanner::new(&c).unwrap();
    for &(_, text, _) in TABLE {
        assert!(off.scan(text).is_empty(), "{text:?}");
        assert!(
            email_only.scan(text).iter().all(|h| h.detector == D::Email),
            "{text:?}"
        );
    }
}

#[test]
fn overlaps_go_to_the_more_specific_detector() {
    let s = scanner();
    // A card number is also a run of digits a phone pattern sees.
    assert_eq!(
        found(&s, "pay 4111 1111 1111 1111 now"),
        [(D::PaymentCard, "4111 1111 1111 1111".to_owned())]
    );
    // A JWT inside a private key block is part of the block.
    let text = "-----BEGIN PRIVATE KEY-----\neyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.\n-----END PRIVATE KEY-----";
    assert_eq!(found(&s, text), [(D::PrivateKey, text.to_owned())]);
    // Two values in one text are both found, in order.
    let two = found(&s, "a@example.com and 203.0.113.9");
    assert_eq!(two.len(), 2, "{two:?}");
    assert_eq!(two[0].0, D::Email);
    assert_eq!(two[1].0, D::IpAddress);
}

#[test]
fn the_project_fixtures_hold_nothing_the_defaults_act_on() {
    // Existing data and tests assume these texts are approved as they are.
    let s = PiiScanner::new(&PiiConfig::default()).unwrap();
    let fixtures = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/feedback.jsonl"
    ))
    .unwrap();
    for line in fixtures.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        for field in ["question", "answer", "correction", "comment"] {
            if let Some(t) = v.get(field).and_then(|t| t.as_str()) {
                assert!(s.scan(t).is_empty(), "{field} of {line}");
            }
        }
    }
}

#[test]
fn luhn_and_base64url() {
    assert!(luhn(b"79927398713"));
    assert!(!luhn(b"79927398710"));
    assert_eq!(base64url_decode("eyJhIjoxfQ").unwrap(), br#"{"a":1}"#);
    assert!(base64url_decode("e").is_none());
    assert!(base64url_decode("a+b/").is_none());
}

#[test]
fn adversarial_inputs_stay_linear() {
    // Shapes that would make a backtracking matcher or a per-candidate rescan
    // quadratic: many BEGIN lines without an END, long digit runs, long dotted runs,
    // many '@'. The assertion is on the outcome; the test's run time is the check
    // that nothing blew up (each input is scanned once).
    let s = scanner();
    let n = 32_768;
    let begins = "-----BEGIN PRIVATE KEY-----".repeat(n / 27);
    let hits = s.scan(&begins);
    assert_eq!(hits.len(), 1);
    assert_eq!((hits[0].start, hits[0].end), (0, begins.len()));
    let digits = "1".repeat(n);
    assert!(s.scan(&digits).is_empty());
    let spaced = "4 ".repeat(n / 2);
    assert!(s.scan(&spaced).is_empty());
    let dots = "1.".repeat(n / 2);
    assert!(s.scan(&dots).is_empty());
    let ats = "a@".repeat(n / 2);
    assert!(s.scan(&ats).is_empty());
    let colons = "1:".repeat(n / 2);
    assert!(s.scan(&colons).is_empty());
    let keys = "sk-".repeat(n / 3);
    assert!(s.scan(&keys).is_empty());
}

fn valid(question: &str) -> ValidFeedback {
    ValidFeedback {
        feedback_type: crate::model::FeedbackType::Positive,
        question: question.into(),
        answer: "An answer long enough.".into(),
        correction: None,
        comment: None,
        user_id: None,
        interaction_id: None,
        session_id: None,
        model_version: None,
        adapter_id: None,
        adapter_version: None,
        score: None,
        metadata: crate::model::Metadata::default(),
        kind: crate::model::FeedbackKind::Thumbs,
        label: None,
        provider: None,
        score_config: None,
    }
}

#[test]
fn redaction_records_the_placeholder_span_in_chars() {
    let s = scanner();
    let mut item = valid("Ünïcode first, then mail jane@example.com ok");
    let out = s.screen(&mut item).unwrap();
    assert_eq!(item.question, "Ünïcode first, then mail [EMAIL] ok");
    let f = &out.findings[0];
    assert_eq!(
        (f.detector, f.field.as_str(), f.action),
        (D::Email, "question", PiiAction::Redacted)
    );
    let span: String = item
        .question
        .chars()
        .skip(f.start as usize)
        .take((f.end - f.start) as usize)
        .collect();
    assert_eq!(span, "[EMAIL]");
    assert!(out.reasons().is_empty());
}

#[test]
fn metadata_strings_and_keys_are_screened() {
    let mut c = PiiConfig::all(PiiMode::Redact);
    c.phone = PiiMode::Flag;
    let s = PiiScanner::new(&c).unwrap();
    let mut item = valid("A plain question here");
    let meta = serde_json::json!({
        "contact": {"mail": "x jane@example.com", "tel": ["+44 20 7946 0958"]},
        "bob@example.org": 1,
        "a/b": "ip 203.0.113.9",
    });
    item.metadata.0 = meta.as_object().unwrap().clone();
    let out = s.screen(&mut item).unwrap();
    let m = serde_json::Value::Object(item.metadata.0.clone());
    assert_eq!(m["contact"]["mail"], "x [EMAIL]");
    assert_eq!(m["contact"]["tel"][0], "+44 20 7946 0958");
    assert_eq!(m["[EMAIL]"], 1);
    assert_eq!(m["a/b"], "ip [IP]");
    let paths: Vec<(String, bool, PiiAction)> = out
        .findings
        .iter()
        .map(|f| (f.path.clone().unwrap(), f.in_key, f.action))
        .collect();
    assert!(
        paths.contains(&("/contact/mail".into(), false, PiiAction::Redacted)),
        "{paths:?}"
    );
    assert!(
        paths.contains(&("/contact/tel/0".into(), false, PiiAction::Flagged)),
        "{paths:?}"
    );
    assert!(
        paths.contains(&("/[EMAIL]".into(), true, PiiAction::Redacted)),
        "{paths:?}"
    );
    assert!(
        paths.contains(&("/a~1b".into(), false, PiiAction::Redacted)),
        "{paths:?}"
    );
    let reasons = out.reasons();
    assert_eq!(reasons.len(), 1);
    assert_eq!(reasons[0].rule, "pii_phone");
    assert!(
        !reasons[0].message.contains("7946"),
        "{}",
        reasons[0].message
    );
}

#[test]
fn reject_names_detector_and_field_never_the_value() {
    let c = PiiConfig {
        payment_card: PiiMode::Reject,
        ..PiiConfig::default()
    };
    let s = PiiScanner::new(&c).unwrap();
    let mut item = valid("A plain question here");
    item.comment = Some("my card 4111 1111 1111 1111".into());
    let err = s.screen(&mut item).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("comment") && msg.contains("payment_card"),
        "{msg}"
    );
    assert!(!msg.contains("4111"), "{msg}");
}
