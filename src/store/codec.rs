//! The one place that turns records into bytes and back.
//!
//! Every stored value is `[format version byte][bincode 2 body]`. The version byte lets a
//! later encoding change be a migration that reads old records, never a silent misread.
//!
//! Versions:
//! - 1: the first format.
//! - 2: `Feedback` gained `pii` (the PII findings), its last field. Every other stored type
//!   is encoded as in version 1. A version-1 feedback record reads as one with no findings
//!   (see [`Stored::decode_v1`]); it is written as version 2 the next time it changes.
//! - 3: `Feedback` gained `kind`, `label`, `provider` and `score_config` after `pii`. A
//!   version-1 or -2 feedback record reads as a `thumbs` item with none of them (see
//!   [`Stored::decode_v2`]). The `score_configs` tree is new in this version.
//! - 4: `Feedback` gained `erased_at` and `erased_by` (erasure tombstones) after the kind
//!   fields. Older feedback records read as never erased ([`Stored::decode_v3`]). The
//!   `erasures` tree is new in this version.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The format version written in front of every record by this build.
pub const FORMAT_VERSION: u8 = 4;

/// The oldest format version this build reads.
pub const OLDEST_READABLE_VERSION: u8 = 1;

/// A type stored through this codec, and how its older encodings read.
pub trait Stored: DeserializeOwned {
    /// Decodes a version-1 body. The default suits every type whose encoding did not change
    /// in version 2: the body is decoded as it is.
    fn decode_v1(body: &[u8]) -> Result<Self, CodecError> {
        decode_body(body)
    }

    /// Decodes a version-2 body; the default suits every type whose encoding did not
    /// change in version 3.
    fn decode_v2(body: &[u8]) -> Result<Self, CodecError> {
        decode_body(body)
    }

    /// Decodes a version-3 body; the default suits every type whose encoding did not
    /// change in version 4.
    fn decode_v3(body: &[u8]) -> Result<Self, CodecError> {
        decode_body(body)
    }
}

impl Stored for crate::model::Adapter {}
impl Stored for crate::model::ScoreConfig {}
impl Stored for crate::model::HistoryVersion {}
impl Stored for super::rules::IdempotencyRecord {}
impl Stored for super::Batch {}
impl Stored for super::outbox::Endpoint {}
impl Stored for super::outbox::OutboxEntry {}
impl Stored for super::outbox::Delivery {}
impl Stored for super::erasure::ErasureRecord {}

impl Stored for super::FeedbackRecord {
    /// Version 2 appended `Feedback::pii` to `Feedback`, the last field of
    /// `FeedbackRecord`: a version-1 body followed by the encoding of an empty list (the
    /// single length byte 0) is the version-2 body of the same record with no findings.
    /// Every byte of the old record is kept.
    fn decode_v1(body: &[u8]) -> Result<Self, CodecError> {
        let mut v2 = Vec::with_capacity(body.len() + 1);
        v2.extend_from_slice(body);
        v2.push(0);
        Self::decode_v2(&v2)
    }

    /// Version 3 appended `kind`, `label`, `provider` and `score_config` to `Feedback`: a
    /// version-2 body followed by `[0, 0, 0, 0]` (variant 0 = `thumbs`, then three `None`s)
    /// is the version-3 body of the same record. Every byte of the old record is kept.
    fn decode_v2(body: &[u8]) -> Result<Self, CodecError> {
        let mut v3 = Vec::with_capacity(body.len() + V3_FEEDBACK_TAIL.len());
        v3.extend_from_slice(body);
        v3.extend_from_slice(&V3_FEEDBACK_TAIL);
        Self::decode_v3(&v3)
    }

    /// Version 4 appended `erased_at` and `erased_by` (two options; `None` is one zero byte
    /// each) after the kind fields: a version-3 body plus two zero bytes is the same
    /// record, never erased.
    fn decode_v3(body: &[u8]) -> Result<Self, CodecError> {
        let mut v4 = Vec::with_capacity(body.len() + 2);
        v4.extend_from_slice(body);
        v4.extend_from_slice(&[0, 0]);
        decode_body(&v4)
    }
}

/// The encoding of the fields version 3 appended to `Feedback` for a record that has none
/// of them: kind `thumbs` (variant 0), no label, no provider, no score config.
const V3_FEEDBACK_TAIL: [u8; 4] = [0, 0, 0, 0];

/// Why a value could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The value is empty: not even a version byte.
    #[error("empty value")]
    Empty,
    /// The version byte names a format this build does not know.
    #[error(
        "unknown record format version {found} (this build reads versions {OLDEST_READABLE_VERSION} to {FORMAT_VERSION})"
    )]
    UnknownVersion {
        /// The byte found.
        found: u8,
    },
    /// The body did not decode as the expected type.
    #[error("undecodable record body: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    /// The value could not be encoded (should not happen for our types).
    #[error("unencodable record: {0}")]
    Encode(#[from] bincode::error::EncodeError),
    /// Bytes were left over after the record: it is not the type we expected.
    #[error("record has {0} trailing bytes")]
    Trailing(usize),
}

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Runs `$decode` (a bincode slice decode taking a configuration) with a byte limit that
/// scales with the input: `bincode::config::standard()` has none, and a corrupt length
/// prefix would then make bincode allocate whatever it says (a nine-byte string length can
/// ask for exabytes, which aborts the process). The decoder counts eight bytes per integer
/// and the full `len * size_of::<T>()` of a container up front, so an honest record never
/// claims more than a small multiple of its size; the limit is the first power of sixteen
/// at or above 64 times the input plus 64 KiB.
macro_rules! with_decode_limit {
    ($len:expr, $decode:expr) => {{
        let need = ($len as u64).saturating_mul(64).saturating_add(64 * 1024);
        if need <= 1 << 20 {
            $decode(config().with_limit::<{ 1 << 20 }>())
        } else if need <= 1 << 24 {
            $decode(config().with_limit::<{ 1 << 24 }>())
        } else if need <= 1 << 28 {
            $decode(config().with_limit::<{ 1 << 28 }>())
        } else if need <= 1 << 32 {
            $decode(config().with_limit::<{ 1 << 32 }>())
        } else {
            $decode(config().with_limit::<{ 1 << 36 }>())
        }
    }};
}

/// Encodes `value` with the current format version in front.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    // One buffer, written in place: no intermediate body vector to copy, and a starting
    // capacity that fits a typical record without regrowing.
    let mut out = Vec::with_capacity(512);
    out.push(FORMAT_VERSION);
    bincode::serde::encode_into_std_write(value, &mut out, config())?;
    Ok(out)
}

/// Decodes a value written by [`encode`] (by this build or, through its migration, by an
/// older one), checking the version byte and that every byte was consumed.
pub fn decode<T: Stored>(bytes: &[u8]) -> Result<T, CodecError> {
    let (&version, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    match version {
        FORMAT_VERSION => decode_body(body),
        1 => T::decode_v1(body),
        2 => T::decode_v2(body),
        3 => T::decode_v3(body),
        found => Err(CodecError::UnknownVersion { found }),
    }
}

/// Appends the encoding of `value` to `out`, without a version byte: a part of a
/// current-format body (a record assembled from parts, see `sled_store::link_append`).
pub fn encode_part_into<T: Serialize + ?Sized>(
    value: &T,
    out: &mut Vec<u8>,
) -> Result<(), CodecError> {
    bincode::serde::encode_into_std_write(value, out, config())?;
    Ok(())
}

/// Decodes the leading part of a current-format body (no version byte) as `T`, strings
/// borrowed from `body`, and returns it with the number of bytes it took.
pub fn decode_part_borrowed<'de, T: serde::Deserialize<'de>>(
    body: &'de [u8],
) -> Result<(T, usize), CodecError> {
    Ok(with_decode_limit!(body.len(), |c| {
        bincode::serde::borrow_decode_from_slice(body, c)
    })?)
}

/// Decodes a whole current-format body (no version byte) as `T`, checking that every
/// byte was consumed.
pub fn decode_part<T: DeserializeOwned>(body: &[u8]) -> Result<T, CodecError> {
    decode_body(body)
}

/// Decodes a current-format body, checking that every byte was consumed.
fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, CodecError> {
    let (value, read) = with_decode_limit!(body.len(), |c| {
        bincode::serde::decode_from_slice(body, c)
    })?;
    if read != body.len() {
        return Err(CodecError::Trailing(body.len() - read));
    }
    Ok(value)
}

/// Decodes the leading part of a record written by [`encode`] as `T`, ignoring the bytes
/// after it, with strings borrowed from `bytes` (reads a record's prefix without copying).
/// Every readable version shares the leading fields (versions only append), so old records
/// read in place too.
pub fn decode_prefix_borrowed<'de, T: serde::Deserialize<'de>>(
    bytes: &'de [u8],
) -> Result<T, CodecError> {
    let (&version, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    if !(OLDEST_READABLE_VERSION..=FORMAT_VERSION).contains(&version) {
        return Err(CodecError::UnknownVersion { found: version });
    }
    let (value, _) = with_decode_limit!(body.len(), |c| {
        bincode::serde::borrow_decode_from_slice(body, c)
    })?;
    Ok(value)
}

/// Decodes a whole record written by this build's format as `T`, with strings borrowed
/// from `bytes`, checking that every byte was consumed. `Ok(None)` for a record in an older
/// format (the caller reads it through [`decode`] and its migration instead).
pub fn decode_current_borrowed<'de, T: serde::Deserialize<'de>>(
    bytes: &'de [u8],
) -> Result<Option<T>, CodecError> {
    let (&version, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    if version != FORMAT_VERSION {
        return if (OLDEST_READABLE_VERSION..FORMAT_VERSION).contains(&version) {
            Ok(None)
        } else {
            Err(CodecError::UnknownVersion { found: version })
        };
    }
    let (value, read) = with_decode_limit!(body.len(), |c| {
        bincode::serde::borrow_decode_from_slice(body, c)
    })?;
    if read != body.len() {
        return Err(CodecError::Trailing(body.len() - read));
    }
    Ok(Some(value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Metadata;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Rec {
        a: String,
        b: Option<u64>,
        m: Metadata,
    }

    impl Stored for Rec {}
    impl Stored for String {}

    #[test]
    fn a_version_1_feedback_record_reads_with_no_findings() {
        use crate::model::{Feedback, PiiAction, PiiDetector, PiiFinding};
        let mut f = Feedback::sample("feedback-1", "acme");
        f.question = "What is a vector index?".into();
        f.comment = Some("kept as it was".into());
        let record = super::super::FeedbackRecord {
            lease: None,
            links: Vec::new(),
            feedback: f,
        };
        // Version 3 wrote the same fields without the two erasure options, version 2
        // also without the four kind fields, version 1 also without the `pii` list.
        let v4 = encode(&record).unwrap();
        assert_eq!(&v4[v4.len() - 7..], &[0; 7], "{v4:?}");
        let mut v3 = v4[..v4.len() - 2].to_vec();
        v3[0] = 3;
        let read: super::super::FeedbackRecord = decode(&v3).unwrap();
        assert_eq!(read, record);
        let mut v2 = v4[..v4.len() - 6].to_vec();
        v2[0] = 2;
        let read: super::super::FeedbackRecord = decode(&v2).unwrap();
        assert_eq!(read, record);
        let mut v1 = v4[..v4.len() - 7].to_vec();
        v1[0] = 1;
        let read: super::super::FeedbackRecord = decode(&v1).unwrap();
        assert_eq!(read, record);
        // A version-3 record of another kind round-trips.
        let mut rated = record.clone();
        rated.feedback.kind = crate::model::FeedbackKind::Label;
        rated.feedback.label = Some("billing".into());
        rated.feedback.provider = Some("openai".into());
        rated.feedback.score_config = Some("topic".into());
        let read: super::super::FeedbackRecord = decode(&encode(&rated).unwrap()).unwrap();
        assert_eq!(read, rated);
        // A record with findings round-trips in the current version.
        let mut with = record.clone();
        with.feedback.pii.push(PiiFinding {
            detector: PiiDetector::Email,
            field: "question".into(),
            path: None,
            in_key: false,
            start: 1,
            end: 8,
            action: PiiAction::Redacted,
        });
        let read: super::super::FeedbackRecord = decode(&encode(&with).unwrap()).unwrap();
        assert_eq!(read, with);
        // Other types read their version-1 bytes unchanged.
        let mut old = encode(&"text".to_owned()).unwrap();
        old[0] = 1;
        assert_eq!(decode::<String>(&old).unwrap(), "text");
        // A version from the future is refused.
        old[0] = FORMAT_VERSION + 1;
        assert!(matches!(
            decode::<String>(&old),
            Err(CodecError::UnknownVersion { .. })
        ));
    }

    #[test]
    fn round_trip_and_version_checks() {
        let mut m = serde_json::Map::new();
        m.insert("nested".into(), serde_json::json!({"x": [1, 2.5, null]}));
        let r = Rec {
            a: "héllo".into(),
            b: Some(7),
            m: Metadata(m),
        };
        let bytes = encode(&r).unwrap();
        assert_eq!(bytes[0], FORMAT_VERSION);
        assert_eq!(decode::<Rec>(&bytes).unwrap(), r);

        let mut wrong = bytes.clone();
        wrong[0] = 99;
        assert!(matches!(
            decode::<Rec>(&wrong),
            Err(CodecError::UnknownVersion { found: 99 })
        ));
        assert!(matches!(decode::<Rec>(&[]), Err(CodecError::Empty)));
        assert!(decode::<Rec>(&bytes[..bytes.len() - 3]).is_err());
        let mut long = bytes.clone();
        long.push(0);
        assert!(matches!(decode::<Rec>(&long), Err(CodecError::Trailing(1))));
    }

    #[test]
    fn corrupt_lengths_are_errors_not_allocations() {
        // A string whose varint length says 2^60 bytes: without a decode limit bincode
        // allocates that much up front and the process aborts.
        let mut bytes = vec![FORMAT_VERSION, 253];
        bytes.extend_from_slice(&(1u64 << 60).to_le_bytes());
        assert!(matches!(
            decode::<String>(&bytes),
            Err(CodecError::Decode(_))
        ));
        assert!(decode::<Rec>(&bytes).is_err());
        // The same for a sequence read in place.
        assert!(decode_prefix_borrowed::<Vec<(u64, u64)>>(&bytes).is_err());
        // A long honest value still decodes.
        let long = "x".repeat(3 << 20);
        assert_eq!(decode::<String>(&encode(&long).unwrap()).unwrap(), long);
    }
}
