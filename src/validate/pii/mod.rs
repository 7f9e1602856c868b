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

mod checks;
#[cfg(test)]
mod tests;

use crate::model::{PiiAction, PiiDetector, PiiFinding, ValidationReason, ValidationStatus};
pub use checks::luhn;
use checks::{cards, iban_at, ipv4_ok, jwt_header_has_alg, phone_shape};

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
