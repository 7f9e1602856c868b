//! The value checks behind the detectors: card numbers (grouping, Luhn, issuer prefixes),
//! IBANs (per-country length and mod 97), IPv4 addresses, phone-number shapes and JWT
//! headers. Each confirms a candidate the patterns found, so look-alikes are not reported.

use super::{Hit, hit};
use crate::model::PiiDetector;

/// Payment card numbers: runs of digit groups separated by single spaces or dashes; within
/// a run, the leftmost longest 13 to 19 digits (whole groups, one kind of separator) whose
/// prefix and length fit a card network, are not one repeated digit and pass Luhn.
pub(super) fn cards(text: &str, out: &mut Vec<Hit>) {
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
pub(super) fn card_in(b: &[u8], groups: &[(usize, usize, u8)], g: usize) -> Option<usize> {
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

pub(super) fn card_ok(digits: &[u8]) -> bool {
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
pub(super) fn issuer_ok(digits: &[u8]) -> bool {
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
pub(super) const IBAN_LENGTHS: &[(&str, usize)] = &[
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
pub(super) fn iban_at(text: &str, start: usize) -> Option<usize> {
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

pub(super) fn ipv4_ok(s: &str) -> bool {
    // No leading zeros (`010` is octal to some parsers and no address to us).
    s.split('.').all(|p| p.len() == 1 || !p.starts_with('0'))
        && s.parse::<std::net::Ipv4Addr>().is_ok()
}

/// Whether a candidate from the phone pattern has a phone number's shape: international
/// (`+` and 8 to 15 digits), North American (`(415) 555-2671`, `415.555.2671`, optional
/// leading `1`), or national with a trunk `0` (`020 7946 0958`, `030 1234567`,
/// `01 23 45 67 89`: 9 to 12 digits, or 10 to 15 after `00`), written in groups with one
/// kind of separator. A bare digit run is not a phone number unless it starts with `+`.
pub(super) fn phone_shape(s: &str) -> bool {
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

pub(super) fn jwt_header_has_alg(header: &str) -> bool {
    let Some(bytes) = base64url_decode(header) else {
        return false;
    };
    serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&bytes)
        .is_ok_and(|m| m.get("alg").is_some_and(serde_json::Value::is_string))
}

/// Decodes unpadded base64url; `None` on a character outside the alphabet or a length
/// that no encoding produces.
pub(super) fn base64url_decode(s: &str) -> Option<Vec<u8>> {
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
