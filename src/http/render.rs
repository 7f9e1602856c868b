//! JSON bodies of feedback pages written straight from items read in place.
//!
//! `GET /feedback` and `GET /feedback/by-adapter/{id}` answer up to 1,000 items. Building
//! an owned `Feedback` per item and serialising it through serde costs more than reading
//! it: this module writes the same bytes serde_json writes for `Feedback` (field order,
//! escaping, `null`s, number formats) from a [`FeedbackView`], into one buffer. The unit
//! tests compare the two writers on items with every field set, escapes and unicode.
//!
//! Strings are escaped as serde_json does (`"`, `\`, and the control characters below
//! 0x20, with the short forms `\b \t \n \f \r` and `\u00xx` otherwise; everything else as
//! is), scanning eight bytes at a time for the rare byte that needs it. Metadata is copied
//! when it is the empty object and otherwise parsed and written by serde_json, as before.

use crate::model::PiiAction;
use crate::store::codec::CodecError;
use crate::store::view::{FeedbackView, MetadataView};

/// Room reserved per item before a page is written (a typical item is under 1 KiB).
pub const ITEM_BYTES_HINT: usize = 768;

/// Appends `s` as a JSON string (quoted and escaped exactly as serde_json does).
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    let b = s.as_bytes();
    out.reserve(b.len() + 2);
    out.push(b'"');
    let mut start = 0;
    let mut i = 0;
    while i < b.len() {
        if let Some(word) = b.get(i..i + 8)
            && let Ok(word) = <[u8; 8]>::try_from(word)
            && !needs_escape(u64::from_le_bytes(word))
        {
            i += 8;
            continue;
        }
        let c = b[i];
        let short: &[u8] = match c {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            0x0C => b"\\f",
            b'\r' => b"\\r",
            0x00..=0x1F => b"",
            _ => {
                i += 1;
                continue;
            }
        };
        out.extend_from_slice(&b[start..i]);
        if short.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[(c >> 4) as usize]);
            out.push(HEX[(c & 0xF) as usize]);
        } else {
            out.extend_from_slice(short);
        }
        i += 1;
        start = i;
    }
    out.extend_from_slice(&b[start..]);
    out.push(b'"');
}

/// True when one of the eight bytes of `w` may need escaping (a control character, `"` or
/// `\`). Exact when false; a true may be a false alarm (the caller then looks byte by
/// byte), never a miss.
#[inline]
fn needs_escape(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let below_space = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
    (below_space | zero(w ^ (ONES * u64::from(b'"'))) | zero(w ^ (ONES * u64::from(b'\\')))) != 0
}

/// Appends `n` in decimal.
pub fn write_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[at..]);
}

fn write_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => write_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

fn write_bool(out: &mut Vec<u8>, b: bool) {
    out.extend_from_slice(if b { b"true" } else { b"false" });
}

fn action_str(a: PiiAction) -> &'static str {
    match a {
        PiiAction::Redacted => "redacted",
        PiiAction::Flagged => "flagged",
    }
}

/// Appends one item as the JSON object serde_json writes for `Feedback`. Fails only when
/// stored metadata is not JSON (a corrupt record, as reading it into `Feedback` would).
pub fn write_feedback(out: &mut Vec<u8>, f: &FeedbackView<'_>) -> Result<(), CodecError> {
    out.reserve(ITEM_BYTES_HINT);
    out.extend_from_slice(b"{\"id\":");
    write_str(out, f.id);
    out.extend_from_slice(b",\"org_id\":");
    write_str(out, f.org_id);
    out.extend_from_slice(b",\"type\":\"");
    out.extend_from_slice(f.feedback_type.as_str().as_bytes());
    out.extend_from_slice(b"\",\"validation_status\":\"");
    out.extend_from_slice(f.validation_status.as_str().as_bytes());
    out.extend_from_slice(b"\",\"created_at\":");
    write_u64(out, f.created_at);
    out.extend_from_slice(b",\"updated_at\":");
    write_u64(out, f.updated_at);
    out.extend_from_slice(b",\"version\":");
    write_u64(out, f.version);
    out.extend_from_slice(b",\"used_for_training\":");
    write_bool(out, f.used_for_training);
    out.extend_from_slice(b",\"training_batch_id\":");
    write_u64(out, f.training_batch_id);
    out.extend_from_slice(b",\"model_version\":");
    write_opt_str(out, f.model_version);
    out.extend_from_slice(b",\"adapter_id\":");
    write_opt_str(out, f.adapter_id);
    out.extend_from_slice(b",\"adapter_version\":");
    write_opt_str(out, f.adapter_version);
    out.extend_from_slice(b",\"user_id\":");
    write_opt_str(out, f.user_id);
    out.extend_from_slice(b",\"session_id\":");
    write_opt_str(out, f.session_id);
    out.extend_from_slice(b",\"interaction_id\":");
    write_opt_str(out, f.interaction_id);
    out.extend_from_slice(b",\"score\":");
    // serde_json's own number format (and `null` for a non-finite value).
    serde_json::to_writer(&mut *out, &f.score).map_err(other)?;
    out.extend_from_slice(b",\"correction\":");
    write_opt_str(out, f.correction);
    out.extend_from_slice(b",\"comment\":");
    write_opt_str(out, f.comment);
    out.extend_from_slice(b",\"validation_reasons\":[");
    for (i, r) in f.validation_reasons.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"rule\":");
        write_str(out, r.rule);
        out.extend_from_slice(b",\"status\":\"");
        out.extend_from_slice(r.status.as_str().as_bytes());
        out.extend_from_slice(b"\",\"message\":");
        write_str(out, r.message);
        out.push(b'}');
    }
    out.extend_from_slice(b"],\"question\":");
    write_str(out, f.question);
    out.extend_from_slice(b",\"answer\":");
    write_str(out, f.answer);
    out.extend_from_slice(b",\"metadata\":");
    match f.metadata {
        MetadataView::Text("{}") => out.extend_from_slice(b"{}"),
        MetadataView::Text(text) => {
            let map: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(text).map_err(other)?;
            serde_json::to_writer(&mut *out, &map).map_err(other)?;
        }
        MetadataView::Map(m) => serde_json::to_writer(&mut *out, &m.0).map_err(other)?,
    }
    out.extend_from_slice(b",\"pii\":[");
    for (i, p) in f.pii.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"detector\":\"");
        out.extend_from_slice(p.detector.as_str().as_bytes());
        out.extend_from_slice(b"\",\"field\":");
        write_str(out, p.field);
        out.extend_from_slice(b",\"path\":");
        write_opt_str(out, p.path);
        out.extend_from_slice(b",\"in_key\":");
        write_bool(out, p.in_key);
        out.extend_from_slice(b",\"start\":");
        write_u64(out, u64::from(p.start));
        out.extend_from_slice(b",\"end\":");
        write_u64(out, u64::from(p.end));
        out.extend_from_slice(b",\"action\":\"");
        out.extend_from_slice(action_str(p.action).as_bytes());
        out.extend_from_slice(b"\"}");
    }
    out.extend_from_slice(b"],\"kind\":\"");
    out.extend_from_slice(f.kind.as_str().as_bytes());
    out.extend_from_slice(b"\",\"label\":");
    write_opt_str(out, f.label);
    out.extend_from_slice(b",\"provider\":");
    write_opt_str(out, f.provider);
    out.extend_from_slice(b",\"score_config\":");
    write_opt_str(out, f.score_config);
    out.extend_from_slice(b",\"erased_at\":");
    match f.erased_at {
        Some(at) => write_u64(out, at),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"erased_by\":");
    write_opt_str(out, f.erased_by);
    out.push(b'}');
    Ok(())
}

/// A JSON failure as the decode error reading the record into `Feedback` would give.
fn other(e: serde_json::Error) -> CodecError {
    CodecError::Decode(bincode::error::DecodeError::OtherString(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        Feedback, FeedbackKind, FeedbackType, Metadata, PiiDetector, PiiFinding, ValidationReason,
        ValidationStatus,
    };

    /// Every byte below 0x80, a few multi-byte characters, and runs long enough to take the
    /// eight-byte scan on both sides of an escape.
    fn nasty() -> String {
        let mut s = String::new();
        for b in 0u8..0x80 {
            s.push(b as char);
        }
        s.push_str("héllo wörld — ✓ 日本語 🦀 \u{7f}\u{80}\u{2028}\u{2029}\u{feff}");
        s.push_str("0123456789abcdef\"0123456789abcdef\\0123456789abcdef\n");
        s
    }

    fn full(erased: bool) -> Feedback {
        let mut f = Feedback::sample("feedback-01ABC\"\\\u{1}", "acme/ünï");
        f.feedback_type = FeedbackType::Negative;
        f.validation_status = ValidationStatus::Flagged;
        f.created_at = u64::MAX;
        f.updated_at = 0;
        f.version = 12_345_678_901;
        f.used_for_training = true;
        f.training_batch_id = 42;
        f.model_version = Some("llama-3 \"8b\"".into());
        f.adapter_id = Some("adapter\u{0}x".into());
        f.adapter_version = Some("v2\t".into());
        f.user_id = Some("user\u{1f}".into());
        f.session_id = Some("sess\r\n".into());
        f.interaction_id = Some("trace/\u{8}\u{c}".into());
        f.score = Some(0.1 + 0.2);
        f.correction = Some(nasty());
        f.comment = Some("<script>alert('x')</script> & \u{2028}".into());
        f.validation_reasons = vec![
            ValidationReason {
                rule: "answer_too_short".into(),
                status: ValidationStatus::Rejected,
                message: "answer has 3 chars \"min\" 10".into(),
            },
            ValidationReason {
                rule: "pii".into(),
                status: ValidationStatus::Flagged,
                message: nasty(),
            },
        ];
        f.question = nasty();
        f.answer = "a".repeat(1000) + &nasty() + &"b".repeat(7);
        let meta = serde_json::json!({
            "z": 1, "a": [1, 2.5, -0.0, 1e300, null, true, "x\"y\u{1}"],
            "nested": {"é": {"deep": "\u{7f}"}, "n": -9_007_199_254_740_993_i64},
            "big": 18_446_744_073_709_551_615_u64, "f": 1.234_567_890_123_456_7,
        });
        f.metadata = match meta {
            serde_json::Value::Object(m) => Metadata(m),
            _ => Metadata::default(),
        };
        f.pii = vec![
            PiiFinding {
                detector: PiiDetector::Email,
                field: "question".into(),
                path: None,
                in_key: false,
                start: 1,
                end: u32::MAX,
                action: PiiAction::Redacted,
            },
            PiiFinding {
                detector: PiiDetector::PaymentCard,
                field: "metadata".into(),
                path: Some("/a~1b/[EMAIL]".into()),
                in_key: true,
                start: 0,
                end: 8,
                action: PiiAction::Flagged,
            },
        ];
        f.kind = FeedbackKind::Label;
        f.label = Some("billing\u{1}".into());
        f.provider = Some("openai".into());
        f.score_config = Some("topic".into());
        if erased {
            f.erase_content(1_780_000_000_123, "admin\"sub");
        }
        f
    }

    fn rendered(f: &Feedback) -> String {
        let mut out = Vec::new();
        write_feedback(&mut out, &FeedbackView::from(f)).unwrap();
        String::from_utf8(out).unwrap()
    }

    /// The view read in place from the stored bytes renders as the owned record does.
    fn rendered_stored(f: &Feedback) -> String {
        let record = crate::store::FeedbackRecord {
            lease: Some(crate::store::Lease {
                batch_id: 3,
                expires_at: 9,
            }),
            links: vec![crate::model::FeedbackLink {
                feedback_id: f.id.clone(),
                adapter_id: "a1".into(),
                created_at: 5,
                source: crate::model::LinkSource::Manual,
                metadata: f.metadata.clone(),
            }],
            feedback: f.clone(),
        };
        let bytes = crate::store::codec::encode(&record).unwrap();
        let view: crate::store::view::RecordView<'_> =
            crate::store::codec::decode_current_borrowed(&bytes)
                .unwrap()
                .unwrap();
        assert!(matches!(view.feedback.metadata, MetadataView::Text(_)));
        let mut out = Vec::new();
        write_feedback(&mut out, &view.feedback).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn items_render_as_serde_json_writes_them() {
        let mut cases = vec![full(false), full(true), Feedback::sample("f-2", "o")];
        let mut sparse = Feedback::sample("f-3", "o");
        sparse.score = Some(f64::NAN);
        sparse.kind = FeedbackKind::Thumbs;
        cases.push(sparse);
        let mut whole = Feedback::sample("f-4", "o");
        whole.score = Some(5.0);
        cases.push(whole);
        for kind in FeedbackKind::ALL {
            let mut k = full(false);
            k.kind = kind;
            cases.push(k);
        }
        for d in PiiDetector::ALL {
            let mut k = full(false);
            k.pii[0].detector = d;
            cases.push(k);
        }
        for f in &cases {
            let expected = serde_json::to_string(f).unwrap();
            assert_eq!(rendered(f), expected);
            assert_eq!(rendered_stored(f), expected);
        }
    }

    #[test]
    fn strings_escape_as_serde_json_does() {
        let mut all = String::new();
        for c in (0u32..0x800)
            .chain([0xFFFF, 0x10_FFFF])
            .filter_map(char::from_u32)
        {
            all.push(c);
        }
        for s in [
            String::new(),
            "plain".into(),
            "\"".into(),
            "12345678\\".into(),
            "1234567\u{1}".into(),
            nasty(),
            all,
        ] {
            // Every offset, so each byte is met both in the eight-byte scan and after it.
            for start in 0..s.len().min(24) {
                let Some(tail) = s.get(start..) else { continue };
                let mut out = Vec::new();
                write_str(&mut out, tail);
                assert_eq!(
                    String::from_utf8(out).unwrap(),
                    serde_json::to_string(tail).unwrap()
                );
            }
        }
        for n in [0, 1, 9, 10, 99, 100, 12_345, u64::from(u32::MAX), u64::MAX] {
            let mut out = Vec::new();
            write_u64(&mut out, n);
            assert_eq!(out, n.to_string().into_bytes());
        }
    }

    #[test]
    fn the_eight_byte_scan_misses_no_byte_that_needs_escaping() {
        for b in 0u8..=255 {
            for pos in 0..8 {
                let mut w = [b'a'; 8];
                w[pos] = b;
                let flagged = needs_escape(u64::from_le_bytes(w));
                if b < 0x20 || b == b'"' || b == b'\\' {
                    assert!(flagged, "byte {b:#x} at {pos}");
                }
            }
        }
    }
}
