//! PII detection on ingest: detectors for personal data and secrets in the free-text fields
//! of a submission (question, answer, correction, comment, and every string and object key
//! inside metadata), and what to do with each: redact, flag, reject or nothing.
//!
//! Each detector finds candidates with a pattern (the `regex` crate: finite automata, so
//! linear in the text whatever it holds) or a hand-written scan, then confirms them with the
//! value's own rules: Luhn for card numbers, the per-country length and mod-97 check for
//! IBANs, the address grammar for IP addresses, a JSON header with `alg` for JWTs. Before a
//! detector runs, one pass over the text's bytes asks whether it could match at all (an
//! `@` for e-mail, seven digits for a phone number, `eyJ` for a JWT...), so ordinary text
//! costs one byte scan and a few substring searches.
//!
//! Where detections overlap, the more specific detector wins (a private key over a JWT
//! inside it, a card number over the phone number its digits would also make).
//!
//! The screening never records a detected value: findings carry the detector, the field,
//! the span in the stored text and the action; error messages and flag reasons name the
//! detector and the field.

use std::collections::BTreeMap;

use regex::Regex;
use serde::{Deserialize, Serialize};

use super::{ValidFeedback, ValidationError};
use crate::model::{PiiAction, PiiDetector, PiiFinding, ValidationReason, ValidationStatus};

/// What to do when a detector fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PiiMode {
    /// The detector does not run.
    Off,
    /// Store the text as sent; the item is flagged (rule `pii_<detector>`) for review.
    Flag,
    /// Replace the value with the detector's placeholder (`[EMAIL]`) before storing.
    Redact,
    /// Refuse the submission (400 naming the detector and the field); nothing is stored.
    Reject,
}

/// The `[pii]` settings: a mode per detector, and how many findings an item lists.
///
/// Defaults: secrets (API keys, AWS key ids, JWTs, private keys), payment cards and IBANs
/// are redacted: their shapes and checksums make false positives rare, and a store of
/// feedback has no use for them (a card number would put it in PCI scope). E-mail addresses
/// and phone numbers are flagged: they are personal data, but an answer may rightly quote a
/// support address or a switchboard number, and phone shapes are heuristic, so a reviewer
/// decides (flagged items are not claimed for training until then). IP addresses are off:
/// in technical questions they are mostly documentation and private addresses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PiiConfig {
    /// E-mail addresses (default `flag`).
    pub email: PiiMode,
    /// Phone numbers (default `flag`).
    pub phone: PiiMode,
    /// Payment card numbers, Luhn-checked (default `redact`).
    pub payment_card: PiiMode,
    /// IBANs, length- and mod-97-checked (default `redact`).
    pub iban: PiiMode,
    /// IPv4 and IPv6 addresses (default `off`).
    pub ip_address: PiiMode,
    /// OpenAI-style `sk-...` keys (default `redact`).
    pub api_key: PiiMode,
    /// AWS access key ids `AKIA...`/`ASIA...` (default `redact`).
    pub aws_access_key: PiiMode,
    /// JSON Web Tokens (default `redact`).
    pub jwt: PiiMode,
    /// PEM private key blocks (default `redact`).
    pub private_key: PiiMode,
    /// Most findings listed on one item (default 100). Values beyond it are still redacted
    /// or flagged; only the list stops growing, so a text full of addresses cannot bloat
    /// its record.
    pub max_findings: usize,
}

impl Default for PiiConfig {
    fn default() -> Self {
        PiiConfig {
            email: PiiMode::Flag,
            phone: PiiMode::Flag,
            payment_card: PiiMode::Redact,
            iban: PiiMode::Redact,
            ip_address: PiiMode::Off,
            api_key: PiiMode::Redact,
            aws_access_key: PiiMode::Redact,
            jwt: PiiMode::Redact,
            private_key: PiiMode::Redact,
            max_findings: 100,
        }
    }
}

impl PiiConfig {
    /// Every detector set to `mode` (tests and benchmarks).
    pub fn all(mode: PiiMode) -> Self {
        PiiConfig {
            email: mode,
            phone: mode,
            payment_card: mode,
            iban: mode,
            ip_address: mode,
            api_key: mode,
            aws_access_key: mode,
            jwt: mode,
            private_key: mode,
            ..PiiConfig::default()
        }
    }

    /// The mode of `detector`.
    pub fn mode(&self, detector: PiiDetector) -> PiiMode {
        match detector {
            PiiDetector::Email => self.email,
            PiiDetector::Phone => self.phone,
            PiiDetector::PaymentCard => self.payment_card,
            PiiDetector::Iban => self.iban,
            PiiDetector::IpAddress => self.ip_address,
            PiiDetector::ApiKey => self.api_key,
            PiiDetector::AwsAccessKey => self.aws_access_key,
            PiiDetector::Jwt => self.jwt,
            PiiDetector::PrivateKey => self.private_key,
        }
    }
}

/// A detector pattern that did not compile (a bug in this module, never input).
#[derive(Debug, thiserror::Error)]
#[error("PII detector pattern does not compile: {0}")]
pub struct PiiPatternError(#[from] regex::Error);

/// One detected value: its detector and byte span in the scanned text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    /// The detector that fired.
    pub detector: PiiDetector,
    /// Byte offset of the first byte.
    pub start: usize,
    /// Byte offset one past the last byte.
    pub end: usize,
}

/// The candidate patterns, compiled once.
#[derive(Debug, Clone)]
struct Patterns {
    email: Regex,
    phone: Regex,
    iban: Regex,
    ipv4: Regex,
    ipv6: Regex,
    api_key: Regex,
    aws: Regex,
    jwt: Regex,
    pem_begin: Regex,
}

impl Patterns {
    fn new() -> Result<Self, PiiPatternError> {
        Ok(Patterns {
            email: Regex::new(
                r"[A-Za-z0-9._%+\-_]+@[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?)+",
            )?,
            phone: Regex::new(
                r"\+?(?:\([0-9]{1,5}\)|[0-9]{1,8})(?:[ .\-]?(?:\([0-9]{1,5}\)|[0-9]{1,8})){0,7}",
            )?,
            iban: Regex::new(r"[A-Za-z]{2}[0-9]{2}")?,
            ipv4: Regex::new(r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}")?,
            ipv6: Regex::new(r"[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?:\.[0-9]{1,3}){0,3}")?,
            api_key: Regex::new(r"sk-[A-Za-z0-9_\-]{20,}")?,
            aws: Regex::new(r"(?:AKIA|ASIA)[A-Z0-9]{16}")?,
            jwt: Regex::new(r"eyJ[A-Za-z0-9_\-]{2,}\.[A-Za-z0-9_\-]{2,}\.[A-Za-z0-9_\-]*")?,
            pem_begin: Regex::new(r"-----BEGIN ((?:[A-Z0-9]+ )*)PRIVATE KEY-----")?,
        })
    }
}

/// The configured detectors, ready to scan. Cheap to share (`Sync`).
#[derive(Debug, Clone)]
pub struct PiiScanner {
    modes: [PiiMode; PiiDetector::ALL.len()],
    max_findings: usize,
    /// `None` only in [`PiiScanner::disabled`].
    patterns: Option<Patterns>,
}

/// The order in which overlapping detections are kept: the more specific first.
const PRIORITY: [PiiDetector; 9] = [
    PiiDetector::PrivateKey,
    PiiDetector::Jwt,
    PiiDetector::ApiKey,
    PiiDetector::AwsAccessKey,
    PiiDetector::Iban,
    PiiDetector::PaymentCard,
    PiiDetector::Email,
    PiiDetector::IpAddress,
    PiiDetector::Phone,
];

fn index(d: PiiDetector) -> usize {
    PiiDetector::ALL.iter().position(|x| *x == d).unwrap_or(0)
}

fn priority(d: PiiDetector) -> usize {
    PRIORITY
        .iter()
        .position(|x| *x == d)
        .unwrap_or(PRIORITY.len())
}

/// What one byte pass says a text could hold.
#[derive(Debug, Default, Clone, Copy)]
struct Shape {
    digits: usize,
    dots: usize,
    colons: usize,
    at: bool,
    dash: bool,
    letters: bool,
}

impl Shape {
    fn of(text: &str) -> Shape {
        let mut s = Shape::default();
        for &b in text.as_bytes() {
            match b {
                b'0'..=b'9' => s.digits += 1,
                b'.' => s.dots += 1,
                b':' => s.colons += 1,
                b'@' => s.at = true,
                b'-' => s.dash = true,
                b'A'..=b'Z' | b'a'..=b'z' => s.letters = true,
                _ => {}
            }
        }
        s
    }
}

/// The character before byte `i` of `text`, if any.
fn before(text: &str, i: usize) -> Option<char> {
    text.get(..i).and_then(|t| t.chars().next_back())
}

/// The character at byte `i` of `text`, if any.
fn at(text: &str, i: usize) -> Option<char> {
    text.get(i..).and_then(|t| t.chars().next())
}

/// The character after the one at byte `i`, if any.
fn second(text: &str, i: usize) -> Option<char> {
    text.get(i..).and_then(|t| t.chars().nth(1))
}

fn is_word(c: Option<char>) -> bool {
    c.is_some_and(|c| c.is_alphanumeric() || c == '_')
}

impl PiiScanner {
    /// Compiles the detectors `config` turns on.
    pub fn new(config: &PiiConfig) -> Result<Self, PiiPatternError> {
        let mut modes = [PiiMode::Off; PiiDetector::ALL.len()];
        for d in PiiDetector::ALL {
            modes[index(d)] = config.mode(d);
        }
        Ok(PiiScanner {
            modes,
            max_findings: config.max_findings,
            patterns: Some(Patterns::new()?),
        })
    }

    /// A scanner with every detector off, which compiles nothing.
    pub fn disabled() -> Self {
        PiiScanner {
            modes: [PiiMode::Off; PiiDetector::ALL.len()],
            max_findings: 0,
            patterns: None,
        }
    }

    /// The mode of `detector`.
    pub fn mode(&self, detector: PiiDetector) -> PiiMode {
        self.modes[index(detector)]
    }

    fn on(&self, d: PiiDetector) -> bool {
        self.mode(d) != PiiMode::Off
    }

    /// True when every detector is off (screening is then skipped).
    pub fn is_off(&self) -> bool {
        self.modes.iter().all(|m| *m == PiiMode::Off)
    }

    /// Every value the enabled detectors find in `text`, without overlaps, in text order.
    pub fn scan(&self, text: &str) -> Vec<Hit> {
        let mut hits = Vec::new();
        let Some(p) = &self.patterns else {
            return hits;
        };
        if text.len() < 3 || self.is_off() {
            return hits;
        }
        let shape = Shape::of(text);
        use PiiDetector as D;
        if self.on(D::PrivateKey) && shape.dash && text.contains("-----BEGIN ") {
            Self::private_keys(p, text, &mut hits);
        }
        if self.on(D::Jwt) && shape.dots >= 2 && text.contains("eyJ") {
            Self::jwts(p, text, &mut hits);
        }
        if self.on(D::ApiKey) && shape.dash && text.contains("sk-") {
            Self::api_keys(p, text, &mut hits);
        }
        if self.on(D::AwsAccessKey) && (text.contains("AKIA") || text.contains("ASIA")) {
            Self::aws_keys(p, text, &mut hits);
        }
        if self.on(D::PaymentCard) && shape.digits >= 13 {
            cards(text, &mut hits);
        }
        // The shortest IBANs (Norway) hold 13 digits; BBANs with letters still hold 8+.
        if self.on(D::Iban) && shape.digits >= 8 && shape.letters {
            Self::ibans(p, text, &mut hits);
        }
        if self.on(D::Email) && shape.at {
            Self::emails(p, text, &mut hits);
        }
        if self.on(D::IpAddress) {
            if shape.dots >= 3 && shape.digits >= 4 {
                Self::ipv4s(p, text, &mut hits);
            }
            if shape.colons >= 2 {
                Self::ipv6s(p, text, &mut hits);
            }
        }
        if self.on(D::Phone) && shape.digits >= 7 {
            Self::phones(p, text, &mut hits);
        }
        resolve_overlaps(hits)
    }

    fn private_keys(p: &Patterns, text: &str, out: &mut Vec<Hit>) {
        let mut from = 0;
        while let Some(c) = p.pem_begin.captures_at(text, from) {
            let (Some(all), label) = (c.get(0), c.get(1).map_or("", |m| m.as_str())) else {
                break;
            };
            let end_marker = format!("-----END {label}PRIVATE KEY-----");
            // A block without its end (a truncated paste) is redacted to the end of the
            // text: what follows a key's first line is key material.
            let end = text[all.end()..]
                .find(&end_marker)
                .map_or(text.len(), |i| all.end() + i + end_marker.len());
            out.push(Hit {
                detector: PiiDetector::PrivateKey,
                start: all.start(),
                end,
            });
            from = end;
            if from >= text.len() {
                break;
            }
        }
    }

    fn jwts(p: &Patterns, text: &str, out: &mut Vec<Hit>) {
        for m in p.jwt.find_iter(text) {
            let b = before(text, m.start());
            if is_word(b) || matches!(b, Some('-' | '.')) || is_word(at(text, m.end())) {
                continue;
            }
            let header = m.as_str().split('.').next().unwrap_or("");
            if jwt_header_has_alg(header) {
                out.push(hit(PiiDetector::Jwt, m.start(), m.end()));
            }
        }
    }

    fn api_keys(p: &Patterns, text: &str, out: &mut Vec<Hit>) {
        for m in p.api_key.find_iter(text) {
            let b = before(text, m.start());
            if is_word(b) || b == Some('-') || is_word(at(text, m.end())) {
                continue;
            }
            // A key has a long random part: some segment of 20 or more characters that
            // mixes letters and digits. Hyphenated prose ("sk-2024-roadmap-...") has none.
            let random = m.as_str()[3..].split('-').any(|seg| {
                seg.len() >= 20
                    && seg.bytes().any(|c| c.is_ascii_digit())
                    && seg.bytes().any(|c| c.is_ascii_alphabetic())
            });
            if random {
                out.push(hit(PiiDetector::ApiKey, m.start(), m.end()));
            }
        }
    }

    fn aws_keys(p: &Patterns, text: &str, out: &mut Vec<Hit>) {
        for m in p.aws.find_iter(text) {
            if is_word(before(text, m.start())) || is_word(at(text, m.end())) {
                continue;
            }
            out.push(hit(PiiDetector::AwsAccessKey, m.start(), m.end()));
        }
    }

    fn ibans(p: &Patterns, text: &str, out: &mut Vec<Hit>) {
        for m in p.iban.find_iter(text) {
            if is_word(before(text, m.start())) {
                continue;
            }
            if let Some(end) = iban_at(text, m.start()) {
                out.push(hit(PiiDetector::Iban, m.start(), end));
            }
        }
    }

    fn emails(p: &Patterns, text: &str, out: &mut Vec<Hit>) {
        for m in p.email.find_iter(text) {
            let s = m.as_str();
            // Leading dots belong to the sentence, not the address.
            let lead = s.len() - s.trim_start_matches('.').len();
            let (start, s) = (m.start() + lead, &s[lead..]);
            let Some(atpos) = s.find('@') else { continue };
            let (local, domain) = (&s[..atpos], &s[atpos + 1..]);
            if local.is_empty() || local.ends_with('.') || local.contains("..") {
                continue;
            }
            // Drop trailing labels until the last one is a real top-level domain
            // (alphabetic, two or more letters), keeping at least two labels.
            let mut domain = domain;
            loop {
                let Some((head, tld)) = domain.rsplit_once('.') else {
                    domain = "";
                    break;
                };
                if tld.len() >= 2 && tld.bytes().all(|c| c.is_ascii_alphabetic()) {
                    break;
                }
                domain = head;
            }
            if domain.is_empty() {
                continue;
            }
            let end = start + atpos + 1 + domain.len();
            if is_word(before(text, start)) {
                continue;
            }
            out.push(hit(PiiDetector::Email, start, end));
        }
    }

    fn ipv4s(p: &Patterns, text: &str, out: &mut Vec<Hit>) {
        for m in p.ipv4.find_iter(text) {
            let b = before(text, m.start());
            let a = at(text, m.end());
            // Part of a longer dotted run (a version string such as 1.2.3.4.5) or of a
            // word (v1.2.3.4) is not an address.
            if is_word(b) || b == Some('.') || is_word(a) {
                continue;
            }
            if a == Some('.') && second(text, m.end()).is_some_and(|c| c.is_ascii_digit()) {
                continue;
            }
            if ipv4_ok(m.as_str()) {
                out.push(hit(PiiDetector::IpAddress, m.start(), m.end()));
            }
        }
    }

    fn ipv6s(p: &Patterns, text: &str, out: &mut Vec<Hit>) {
        for m in p.ipv6.find_iter(text) {
            let s = m.as_str();
            let b = before(text, m.start());
            let a = at(text, m.end());
            if is_word(b) || matches!(b, Some(':' | '.')) || is_word(a) || a == Some(':') {
                continue;
            }
            // At least two non-empty groups and a decimal digit: `::1` and `fe80::` are
            // not anybody's address, and `beef::cafe` is more likely code than a host.
            let groups = s.split(':').filter(|g| !g.is_empty()).count();
            if groups < 2 || !s.bytes().any(|c| c.is_ascii_digit()) {
                continue;
            }
            if s.parse::<std::net::Ipv6Addr>().is_ok() {
                out.push(hit(PiiDetector::IpAddress, m.start(), m.end()));
            }
        }
    }

    fn phones(p: &Patterns, text: &str, out: &mut Vec<Hit>) {
        for m in p.phone.find_iter(text) {
            let b = before(text, m.start());
            let a = at(text, m.end());
            if is_word(b) || matches!(b, Some('.' | '-' | '/' | '+' | '@')) {
                continue;
            }
            if is_word(a) || matches!(a, Some('@' | '/')) {
                continue;
            }
            // Followed by `:` or `.` and a digit: a time or a longer dotted number.
            if matches!(a, Some(':' | '.' | ',' | '-'))
                && second(text, m.end()).is_some_and(|c| c.is_ascii_digit())
            {
                continue;
            }
            if phone_shape(m.as_str()) {
                out.push(hit(PiiDetector::Phone, m.start(), m.end()));
            }
        }
    }

    /// Screens a submission in place: every text field and every metadata string and key.
    /// Redacted values are replaced; a value whose detector rejects fails the submission
    /// (naming detector and field); flagged values are kept and reported as reasons.
    pub fn screen(&self, item: &mut ValidFeedback) -> Result<Screening, ValidationError> {
        let mut s = Screening::default();
        if self.is_off() {
            return Ok(s);
        }
        let mut limit = Limit {
            left: self.max_findings,
        };
        for (field, text) in [
            ("question", Some(&mut item.question)),
            ("answer", Some(&mut item.answer)),
            ("correction", item.correction.as_mut()),
            ("comment", item.comment.as_mut()),
        ] {
            let Some(text) = text else { continue };
            let hits = self.scan(text);
            if hits.is_empty() {
                continue;
            }
            self.reject_any(field, &hits)?;
            let (stored, spans) = self.apply(text, &hits);
            for (h, start, end, action) in spans {
                s.record(
                    &mut limit, field, h.detector, None, false, start, end, action,
                );
            }
            *text = stored;
        }
        // Metadata is rebuilt (keys may change) only when something in it is found.
        if !item.metadata.is_empty() && self.map_has_hits(&item.metadata.0) {
            let map = std::mem::take(&mut item.metadata.0);
            item.metadata.0 = self.screen_map(map, "", &mut s, &mut limit)?;
        }
        Ok(s)
    }

    /// Whether any key or string inside `map` holds a value an enabled detector finds.
    fn map_has_hits(&self, map: &serde_json::Map<String, serde_json::Value>) -> bool {
        map.iter()
            .any(|(k, v)| !self.scan(k).is_empty() || self.value_has_hits(v))
    }

    fn value_has_hits(&self, v: &serde_json::Value) -> bool {
        use serde_json::Value;
        match v {
            Value::String(s) => !self.scan(s).is_empty(),
            Value::Array(items) => items.iter().any(|v| self.value_has_hits(v)),
            Value::Object(map) => self.map_has_hits(map),
            _ => false,
        }
    }

    fn reject_any(&self, field: &'static str, hits: &[Hit]) -> Result<(), ValidationError> {
        match hits
            .iter()
            .find(|h| self.mode(h.detector) == PiiMode::Reject)
        {
            Some(h) => Err(ValidationError::Pii {
                field,
                detector: h.detector.as_str(),
                what: h.detector.describe(),
            }),
            None => Ok(()),
        }
    }

    /// The text as stored (redacted values replaced) and each hit's span in it, in chars.
    #[allow(clippy::type_complexity)]
    fn apply(&self, text: &str, hits: &[Hit]) -> (String, Vec<(Hit, u32, u32, PiiAction)>) {
        let mut out = String::with_capacity(text.len());
        let mut spans = Vec::with_capacity(hits.len());
        let mut chars = 0usize;
        let mut from = 0;
        for h in hits {
            let gap = &text[from..h.start];
            out.push_str(gap);
            chars += gap.chars().count();
            let (piece, action) = match self.mode(h.detector) {
                PiiMode::Redact => (h.detector.placeholder(), PiiAction::Redacted),
                _ => (&text[h.start..h.end], PiiAction::Flagged),
            };
            let n = piece.chars().count();
            out.push_str(piece);
            spans.push((*h, offset(chars), offset(chars + n), action));
            chars += n;
            from = h.end;
        }
        out.push_str(&text[from..]);
        (out, spans)
    }

    /// `text` with every hit shown as its placeholder, whatever its mode (for paths).
    fn masked(text: &str, hits: &[Hit]) -> String {
        let mut out = String::with_capacity(text.len());
        let mut from = 0;
        for h in hits {
            out.push_str(&text[from..h.start]);
            out.push_str(h.detector.placeholder());
            from = h.end;
        }
        out.push_str(&text[from..]);
        out
    }

    fn screen_map(
        &self,
        map: serde_json::Map<String, serde_json::Value>,
        path: &str,
        s: &mut Screening,
        limit: &mut Limit,
    ) -> Result<serde_json::Map<String, serde_json::Value>, ValidationError> {
        let mut out = serde_json::Map::new();
        for (key, value) in map {
            let hits = self.scan(&key);
            let (stored_key, shown_key) = if hits.is_empty() {
                (key.clone(), key)
            } else {
                self.reject_any("metadata", &hits)?;
                let (stored, spans) = self.apply(&key, &hits);
                let shown = Self::masked(&key, &hits);
                let here = format!("{path}/{}", pointer_token(&shown));
                for (h, start, end, action) in spans {
                    s.record(
                        limit,
                        "metadata",
                        h.detector,
                        Some(here.clone()),
                        true,
                        start,
                        end,
                        action,
                    );
                }
                (stored, shown)
            };
            let here = format!("{path}/{}", pointer_token(&shown_key));
            let value = self.screen_value(value, &here, s, limit)?;
            // Two keys that redact to the same text: number the later ones.
            let mut k = stored_key;
            if out.contains_key(&k) {
                let base = k.clone();
                let mut n = 2;
                while out.contains_key(&k) {
                    k = format!("{base} #{n}");
                    n += 1;
                }
            }
            out.insert(k, value);
        }
        Ok(out)
    }

    fn screen_value(
        &self,
        value: serde_json::Value,
        path: &str,
        s: &mut Screening,
        limit: &mut Limit,
    ) -> Result<serde_json::Value, ValidationError> {
        use serde_json::Value;
        Ok(match value {
            Value::String(text) => {
                let hits = self.scan(&text);
                if hits.is_empty() {
                    Value::String(text)
                } else {
                    self.reject_any("metadata", &hits)?;
                    let (stored, spans) = self.apply(&text, &hits);
                    for (h, start, end, action) in spans {
                        s.record(
                            limit,
                            "metadata",
                            h.detector,
                            Some(path.to_owned()),
                            false,
                            start,
                            end,
                            action,
                        );
                    }
                    Value::String(stored)
                }
            }
            Value::Array(items) => Value::Array(
                items
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| self.screen_value(v, &format!("{path}/{i}"), s, limit))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(map) => Value::Object(self.screen_map(map, path, s, limit)?),
            other => other,
        })
    }
}

/// When something in `fb` was redacted: the submitted content as stored (every field a
/// client sends, placeholders in place of the values), as text to fingerprint the request
/// by instead of its raw body. `None` when nothing was redacted.
pub fn redacted_request_text(fb: &crate::model::Feedback) -> Option<String> {
    if !fb.pii.iter().any(|f| f.action == PiiAction::Redacted) {
        return None;
    }
    let content = (
        "redacted-request/1",
        fb.feedback_type,
        &fb.question,
        &fb.answer,
        &fb.correction,
        &fb.comment,
        (&fb.user_id, &fb.interaction_id, &fb.session_id),
        (&fb.model_version, &fb.adapter_id, &fb.adapter_version),
        fb.score,
        &fb.metadata.0,
    );
    serde_json::to_string(&content).ok()
}

fn hit(detector: PiiDetector, start: usize, end: usize) -> Hit {
    Hit {
        detector,
        start,
        end,
    }
}

fn offset(chars: usize) -> u32 {
    u32::try_from(chars).unwrap_or(u32::MAX)
}

/// A JSON pointer token: `~` as `~0`, `/` as `~1`.
fn pointer_token(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// How many more findings an item may list.
struct Limit {
    left: usize,
}

/// What screening found in one submission.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Screening {
    /// Where each detector fired (at most `pii.max_findings`), in field order.
    pub findings: Vec<PiiFinding>,
    /// Detectors in `flag` mode that fired, with the fields they fired in.
    flagged: Vec<(PiiDetector, Vec<&'static str>)>,
}

impl Screening {
    #[allow(clippy::too_many_arguments)]
    fn record(
        &mut self,
        limit: &mut Limit,
        field: &'static str,
        detector: PiiDetector,
        path: Option<String>,
        in_key: bool,
        start: u32,
        end: u32,
        action: PiiAction,
    ) {
        if action == PiiAction::Flagged {
            match self.flagged.iter_mut().find(|(d, _)| *d == detector) {
                Some((_, fields)) => {
                    if !fields.contains(&field) {
                        fields.push(field);
                    }
                }
                None => self.flagged.push((detector, vec![field])),
            }
        }
        if limit.left == 0 {
            return;
        }
        limit.left -= 1;
        self.findings.push(PiiFinding {
            detector,
            field: field.to_owned(),
            path,
            in_key,
            start,
            end,
            action,
        });
    }

    /// One `pii_<detector>` reason (status flagged) per detector in `flag` mode that fired.
    pub fn reasons(&self) -> Vec<ValidationReason> {
        self.flagged
            .iter()
            .map(|(d, fields)| ValidationReason {
                rule: format!("pii_{}", d.as_str()),
                status: ValidationStatus::Flagged,
                message: format!(
                    "{} contains {} (PII detector '{}'); stored as sent for review",
                    fields.join(", "),
                    d.describe(),
                    d.as_str()
                ),
            })
            .collect()
    }
}

/// Keeps the hits that do not overlap a more specific one, in text order.
fn resolve_overlaps(mut hits: Vec<Hit>) -> Vec<Hit> {
    if hits.len() <= 1 {
        return hits;
    }
    hits.sort_by_key(|h| (priority(h.detector), h.start, usize::MAX - h.end));
    // Kept spans by start; they never overlap, so neighbours decide.
    let mut kept: BTreeMap<usize, Hit> = BTreeMap::new();
    for h in hits {
        let clash_before = kept
            .range(..=h.start)
            .next_back()
            .is_some_and(|(_, k)| k.end > h.start);
        let clash_after = kept
            .range(h.start..)
            .next()
            .is_some_and(|(&s, _)| s < h.end);
        if !clash_before && !clash_after {
            kept.insert(h.start, h);
        }
    }
    kept.into_values().collect()
}

/// Payment card numbers: runs of digit groups separated by single spaces or dashes; within
/// a run, the leftmost longest 13 to 19 digits (whole groups, one kind of separator) whose
/// prefix and length fit a card network, are not one repeated digit and pass Luhn.
fn cards(text: &str, out: &mut Vec<Hit>) {
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_digit() || (i > 0 && (b[i - 1].is_ascii_alphanumeric())) {
            i += 1;
            continue;
        }
        // Read the run: groups (start, end) and the separator before each group.
        let mut groups: Vec<(usize, usize, u8)> = Vec::new();
        let mut j = i;
        let mut sep = 0u8;
        loop {
            let s = j;
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            groups.push((s, j, sep));
            if j + 1 < b.len() && (b[j] == b' ' || b[j] == b'-') && b[j + 1].is_ascii_digit() {
                sep = b[j];
                j += 1;
            } else {
                break;
            }
        }
        let run_end = j;
        // A run glued to a letter or followed by more digits after a dot is an
        // identifier or a decimal, not a card.
        let glued = run_end < b.len() && (b[run_end].is_ascii_alphanumeric() || b[run_end] == b'_');
        if !glued {
            let mut g = 0;
            while g < groups.len() {
                match card_in(b, &groups, g) {
                    Some(last) => {
                        out.push(hit(PiiDetector::PaymentCard, groups[g].0, groups[last].1));
                        g = last + 1;
                    }
                    None => g += 1,
                }
            }
        }
        i = run_end.max(i + 1);
    }
}

/// The last group of the longest card number starting at group `g`, if any.
fn card_in(b: &[u8], groups: &[(usize, usize, u8)], g: usize) -> Option<usize> {
    let mut best = None;
    let mut digits = 0;
    let sep = groups.get(g + 1).map_or(0, |x| x.2);
    for (k, &(s, e, before)) in groups.iter().enumerate().skip(g) {
        if k > g && before != sep {
            break;
        }
        digits += e - s;
        if digits > 19 {
            break;
        }
        if digits >= 13 {
            let number: Vec<u8> = groups[g..=k]
                .iter()
                .flat_map(|&(s, e, _)| b[s..e].iter().copied())
                .collect();
            if card_ok(&number) {
                best = Some(k);
            }
        }
    }
    best
}

fn card_ok(digits: &[u8]) -> bool {
    let Some(&first) = digits.first() else {
        return false;
    };
    if digits.iter().all(|&d| d == first) || !issuer_ok(digits) {
        return false;
    }
    luhn(digits)
}

/// Whether the number's prefix names a card network that issues numbers of its length:
/// Visa (4: 13, 16, 19), Mastercard (51-55, 2221-2720: 16), American Express (34, 37: 15),
/// Diners (300-305, 36, 38: 14 or 16), JCB (35: 16-19), Discover, UnionPay and Maestro
/// (50, 56-69: 13-19). A random Luhn-valid digit run (one in ten is) rarely fits.
fn issuer_ok(digits: &[u8]) -> bool {
    let n = digits.len();
    let prefix = |k: usize| -> u32 {
        digits[..k.min(n)]
            .iter()
            .fold(0, |acc, &d| acc * 10 + u32::from(d - b'0'))
    };
    match prefix(2) {
        40..=49 => matches!(n, 13 | 16 | 19),
        51..=55 => n == 16,
        22..=27 => (2221..=2720).contains(&prefix(4)) && n == 16,
        34 | 37 => n == 15,
        36 | 38 => matches!(n, 14 | 16),
        30 => (300..=305).contains(&prefix(3)) && matches!(n, 14 | 16),
        35 => (16..=19).contains(&n),
        50 | 56..=69 => (13..=19).contains(&n),
        _ => false,
    }
}

/// The Luhn check over ASCII digits.
pub fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (i, &c) in digits.iter().rev().enumerate() {
        let mut d = u32::from(c.wrapping_sub(b'0'));
        if d > 9 {
            return false;
        }
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    sum.is_multiple_of(10)
}

/// IBAN lengths by country (the SWIFT IBAN registry).
const IBAN_LENGTHS: &[(&str, usize)] = &[
    ("AD", 24),
    ("AE", 23),
    ("AL", 28),
    ("AT", 20),
    ("AZ", 28),
    ("BA", 20),
    ("BE", 16),
    ("BG", 22),
    ("BH", 22),
    ("BR", 29),
    ("BY", 28),
    ("CH", 21),
    ("CR", 22),
    ("CY", 28),
    ("CZ", 24),
    ("DE", 22),
    ("DK", 18),
    ("DO", 28),
    ("EE", 20),
    ("EG", 29),
    ("ES", 24),
    ("FI", 18),
    ("FO", 18),
    ("FR", 27),
    ("GB", 22),
    ("GE", 22),
    ("GI", 23),
    ("GL", 18),
    ("GR", 27),
    ("GT", 28),
    ("HR", 21),
    ("HU", 28),
    ("IE", 22),
    ("IL", 23),
    ("IQ", 23),
    ("IS", 26),
    ("IT", 27),
    ("JO", 30),
    ("KW", 30),
    ("KZ", 20),
    ("LB", 28),
    ("LC", 32),
    ("LI", 21),
    ("LT", 20),
    ("LU", 20),
    ("LV", 21),
    ("MC", 27),
    ("MD", 24),
    ("ME", 22),
    ("MK", 19),
    ("MR", 27),
    ("MT", 31),
    ("MU", 30),
    ("NL", 18),
    ("NO", 15),
    ("PK", 24),
    ("PL", 28),
    ("PS", 29),
    ("PT", 25),
    ("QA", 29),
    ("RO", 24),
    ("RS", 22),
    ("SA", 24),
    ("SC", 31),
    ("SE", 24),
    ("SI", 19),
    ("SK", 24),
    ("SM", 27),
    ("ST", 25),
    ("SV", 28),
    ("TL", 23),
    ("TN", 24),
    ("TR", 26),
    ("UA", 29),
    ("VA", 22),
    ("VG", 24),
    ("XK", 20),
];

/// The end (byte) of an IBAN starting at byte `start`, if one does: the country's length
/// in letters and digits (single spaces between them allowed), not glued to a following
/// word, and the mod-97 check equal to 1.
fn iban_at(text: &str, start: usize) -> Option<usize> {
    let b = text.as_bytes();
    let country = [
        b.get(start)?.to_ascii_uppercase(),
        b.get(start + 1)?.to_ascii_uppercase(),
    ];
    let len = IBAN_LENGTHS
        .iter()
        .find(|(c, _)| c.as_bytes() == country)
        .map(|&(_, n)| n)?;
    let mut chars: Vec<u8> = Vec::with_capacity(len);
    let mut i = start;
    while chars.len() < len {
        let c = *b.get(i)?;
        if c.is_ascii_alphanumeric() {
            chars.push(c.to_ascii_uppercase());
            i += 1;
        } else if c == b' '
            && chars.len().is_multiple_of(4)
            && b.get(i + 1)?.is_ascii_alphanumeric()
        {
            // Printed IBANs are grouped by four.
            i += 1;
        } else {
            return None;
        }
    }
    if b.get(i).is_some_and(|c| c.is_ascii_alphanumeric()) {
        return None;
    }
    // The national part is letters and digits; the check digits are digits.
    if !chars[2..4].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let rearranged = chars[4..].iter().chain(&chars[..4]);
    let mut rem = 0u32;
    for &c in rearranged {
        if c.is_ascii_digit() {
            rem = (rem * 10 + u32::from(c - b'0')) % 97;
        } else {
            rem = (rem * 100 + u32::from(c - b'A') + 10) % 97;
        }
    }
    (rem == 1).then_some(i)
}

fn ipv4_ok(s: &str) -> bool {
    // No leading zeros (`010` is octal to some parsers and no address to us).
    s.split('.').all(|p| p.len() == 1 || !p.starts_with('0'))
        && s.parse::<std::net::Ipv4Addr>().is_ok()
}

/// Whether a candidate from the phone pattern has a phone number's shape: international
/// (`+` and 8 to 15 digits), North American (`(415) 555-2671`, `415.555.2671`, optional
/// leading `1`), or national with a trunk `0` (`020 7946 0958`, `030 1234567`,
/// `01 23 45 67 89`: 9 to 12 digits, or 10 to 15 after `00`), written in groups with one
/// kind of separator. A bare digit run is not a phone number unless it starts with `+`.
fn phone_shape(s: &str) -> bool {
    let intl = s.starts_with('+');
    let body = s.trim_start_matches('+');
    // Tokenise: digit groups, whether each was in parentheses, and the separators.
    let mut groups: Vec<&str> = Vec::new();
    let mut seps: Vec<u8> = Vec::new();
    let mut paren_before = false;
    let b = body.as_bytes();
    let mut i = 0;
    let mut digits = 0;
    let mut first_paren = false;
    while i < b.len() {
        match b[i] {
            b'(' => {
                let Some(close) = body[i..].find(')').map(|k| i + k) else {
                    return false;
                };
                let g = &body[i + 1..close];
                if groups.is_empty() {
                    first_paren = true;
                }
                groups.push(g);
                digits += g.len();
                i = close + 1;
                paren_before = true;
            }
            c if c.is_ascii_digit() => {
                let s0 = i;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
                groups.push(&body[s0..i]);
                digits += i - s0;
                paren_before = false;
            }
            c => {
                // The separator right after a parenthesised group is free: `(415) 555-2671`.
                if !paren_before {
                    seps.push(c);
                }
                paren_before = false;
                i += 1;
            }
        }
    }
    if intl {
        return (8..=15).contains(&digits);
    }
    if groups.len() < 2 || seps.iter().any(|&c| c != seps[0]) {
        return false;
    }
    if groups.iter().any(|g| g.is_empty()) {
        return false;
    }
    let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
    let nanp = |g: &[&str]| {
        g.len() == 3
            && g[0].len() == 3
            && g[1].len() == 3
            && g[2].len() == 4
            && !g[0].starts_with(['0', '1'])
            && !g[1].starts_with(['0', '1'])
    };
    if nanp(&groups) || (groups.len() == 4 && groups[0] == "1" && nanp(&groups[1..])) {
        return true;
    }
    let first = groups[0];
    if !first.starts_with('0') || !(2..=5).contains(&first.len()) && !first_paren {
        return false;
    }
    if lens.iter().skip(1).any(|&n| !(2..=8).contains(&n)) || groups.len() > 6 {
        return false;
    }
    if first.starts_with("00") {
        (10..=15).contains(&digits)
    } else {
        (9..=12).contains(&digits)
    }
}

fn jwt_header_has_alg(header: &str) -> bool {
    let Some(bytes) = base64url_decode(header) else {
        return false;
    };
    serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&bytes)
        .is_ok_and(|m| m.get("alg").is_some_and(serde_json::Value::is_string))
}

/// Decodes unpadded base64url; `None` on a character outside the alphabet or a length
/// that no encoding produces.
fn base64url_decode(s: &str) -> Option<Vec<u8>> {
    if s.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
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
}
