//! Key layout of every tree. Keys begin with the org id and a NUL separator, so one org's
//! records form one contiguous, prefix-scannable range and tenants never interleave. Ids
//! never contain NUL (validation rejects control characters), so the layout is unambiguous.

/// Separator between key parts.
pub const SEP: u8 = 0;

/// History key tag for feedback records.
pub const KIND_FEEDBACK: u8 = b'F';
/// History key tag for adapter records.
pub const KIND_ADAPTER: u8 = b'A';
/// History key tag for training batches.
pub const KIND_BATCH: u8 = b'B';
/// History key tag for score configs.
pub const KIND_SCORE_CONFIG: u8 = b'S';

/// `org \0 batch_id(u64 big-endian)` — a training batch.
pub fn batch(org: &str, id: u64) -> Vec<u8> {
    let mut k = record(org, "");
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// `org \0 id` — the key of a feedback or adapter record in its tree.
pub fn record(org: &str, id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(org.len() + id.len() + 1);
    k.extend_from_slice(org.as_bytes());
    k.push(SEP);
    k.extend_from_slice(id.as_bytes());
    k
}

/// [`record`] written into `key` (cleared first), so a loop over ids reuses one buffer.
pub fn record_into(key: &mut Vec<u8>, org: &str, id: &str) {
    key.clear();
    key.extend_from_slice(org.as_bytes());
    key.push(SEP);
    key.extend_from_slice(id.as_bytes());
}

/// `org \0 user \0 key` — a used idempotency key.
pub fn idempotency(org: &str, user: &str, key: &str) -> Vec<u8> {
    let mut k = record(org, user);
    k.push(SEP);
    k.extend_from_slice(key.as_bytes());
    k
}

/// `org \0 kind id \0` — prefix of one record's history.
pub fn history_prefix(org: &str, kind: u8, id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(org.len() + id.len() + 3);
    k.extend_from_slice(org.as_bytes());
    k.push(SEP);
    k.push(kind);
    k.extend_from_slice(id.as_bytes());
    k.push(SEP);
    k
}

/// `org \0 kind id \0 version(u64 big-endian)` — one history version; big-endian keeps
/// versions in order under a prefix scan.
pub fn history(org: &str, kind: u8, id: &str, version: u64) -> Vec<u8> {
    let mut k = history_prefix(org, kind, id);
    k.extend_from_slice(&version.to_be_bytes());
    k
}

/// `org \0 endpoint \0` — prefix of one webhook endpoint's outbox entries or delivery log.
pub fn endpoint_prefix(org: &str, endpoint: &str) -> Vec<u8> {
    let mut k = record(org, endpoint);
    k.push(SEP);
    k
}

/// `org \0 endpoint \0 kind id \0 version(u64 big-endian)` — one outbox entry: one
/// record's events sort by version under the endpoint's prefix.
pub fn outbox(org: &str, endpoint: &str, kind: u8, id: &str, version: u64) -> Vec<u8> {
    let mut k = endpoint_prefix(org, endpoint);
    k.push(kind);
    k.extend_from_slice(id.as_bytes());
    k.push(SEP);
    k.extend_from_slice(&version.to_be_bytes());
    k
}

/// Splits `org \0 rest` into its parts (for scans and error messages).
pub fn split_org(key: &[u8]) -> Option<(&[u8], &[u8])> {
    let at = key.iter().position(|&b| b == SEP)?;
    Some((&key[..at], &key[at + 1..]))
}

/// A key rendered for humans: printable ASCII kept, other bytes as `\xNN`.
pub fn display(key: &[u8]) -> String {
    key.iter()
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                (b as char).to_string()
            } else {
                format!("\\x{b:02x}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orgs_do_not_share_prefixes() {
        // "acme" must not be a prefix of "acme2"'s keys once the separator is included.
        let a = record("acme", "x");
        let b = record("acme2", "x");
        assert!(!b.starts_with(&record("acme", "")));
        assert!(a.starts_with(&record("acme", "")));
    }

    #[test]
    fn history_versions_sort_numerically() {
        assert!(history("o", KIND_FEEDBACK, "f", 9) < history("o", KIND_FEEDBACK, "f", 10));
        assert!(history("o", KIND_FEEDBACK, "f", 255) < history("o", KIND_FEEDBACK, "f", 256));
        assert_eq!(display(&record("o", "f")), "o\\x00f");
        assert_eq!(split_org(&record("o", "f")), Some((&b"o"[..], &b"f"[..])));
    }
}
