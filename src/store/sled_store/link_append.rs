//! A new FEEDBACK_FOR edge written into a stored feedback record without decoding the
//! record's other edges or its item.
//!
//! A stored record is `[format version][lease][edge count][edges...][item]` (the fields
//! of [`FeedbackRecord`] in order; the count is a bincode varint). Adding an edge changes
//! the count, appends one edge after the last, and bumps the item's leading `updated_at`
//! and `version`; every other byte stays. [`RecordParts::read`] finds those places (the
//! edges are walked in place, strings borrowed) and [`RecordParts::with_link`] builds the
//! new value from the old bytes around them. The result is byte for byte the encoding of
//! the record with the edge pushed (the unit tests compare the two), so the stored format
//! does not change and every reader reads it as before.
//!
//! Before, a link decoded the whole record (each edge's metadata parsed into a map, every
//! string copied), cloned it, and encoded it again: a cost that grew with the item's edges.

use serde::{Deserialize, Serialize};

use super::super::{FeedbackRecord, Lease, LinkRef, codec};
use crate::model::{Feedback, FeedbackLink, FeedbackType, Millis, ValidationStatus};
use codec::CodecError;

/// The leading fields of a stored `Feedback`, up to `version`, in its field order: what a
/// link rewrites. A unit test keeps it in step with `Feedback`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(super) struct ItemHead<'a> {
    id: &'a str,
    org_id: &'a str,
    feedback_type: FeedbackType,
    validation_status: ValidationStatus,
    created_at: Millis,
    pub(super) updated_at: Millis,
    pub(super) version: u64,
}

/// A record's lease and its edges, read in place.
#[derive(Deserialize)]
struct LeaseAndEdges<'a> {
    lease: Option<Lease>,
    #[serde(borrow)]
    links: Vec<LinkRef<'a>>,
}

/// Where the parts of a stored current-format record lie, and what a link needs of them.
/// Offsets are into the record's body (the bytes after the version byte).
#[derive(Debug)]
pub(super) struct RecordParts<'a> {
    body: &'a [u8],
    /// The record's lease.
    pub(super) lease: Option<Lease>,
    /// The record's edges, borrowed from the stored bytes.
    pub(super) links: Vec<LinkRef<'a>>,
    /// The edge count's first byte and one past its last.
    count: (usize, usize),
    /// One past the last edge: where the item starts.
    item_at: usize,
    /// The item's leading fields.
    pub(super) head: ItemHead<'a>,
    /// One past the item's leading fields.
    head_end: usize,
}

impl<'a> RecordParts<'a> {
    /// Reads a stored record's parts. `Ok(None)` for a record in an older format (the
    /// caller takes the decoding path, whose migration reads it).
    pub(super) fn read(bytes: &'a [u8]) -> Result<Option<RecordParts<'a>>, CodecError> {
        let (&version, body) = bytes.split_first().ok_or(CodecError::Empty)?;
        if version != codec::FORMAT_VERSION {
            return if (codec::OLDEST_READABLE_VERSION..codec::FORMAT_VERSION).contains(&version) {
                Ok(None)
            } else {
                Err(CodecError::UnknownVersion { found: version })
            };
        }
        let (_, count_at) = codec::decode_part_borrowed::<Option<Lease>>(body)?;
        let (edges, item_at) = codec::decode_part_borrowed::<LeaseAndEdges<'_>>(body)?;
        let rest = body.get(count_at..).ok_or(CodecError::Empty)?;
        let (count, count_len) = codec::decode_part_borrowed::<u64>(rest)?;
        if usize::try_from(count).ok() != Some(edges.links.len()) {
            // Cannot happen for a record that decoded; the caller's decoding path reports it.
            return Ok(None);
        }
        let item = body.get(item_at..).ok_or(CodecError::Empty)?;
        let (head, head_len) = codec::decode_part_borrowed::<ItemHead<'_>>(item)?;
        Ok(Some(RecordParts {
            body,
            lease: edges.lease,
            links: edges.links,
            count: (count_at, count_at + count_len),
            item_at,
            head,
            head_end: item_at + head_len,
        }))
    }

    /// Whether the record has an edge to `adapter_id`.
    pub(super) fn has_link(&self, adapter_id: &str) -> bool {
        self.links.iter().any(|l| l.adapter_id == adapter_id)
    }

    /// The stored value of this record with `link` appended to its edges, its version
    /// bumped and its `updated_at` moved to `at` if later (what an update does), and the
    /// offset in it where the item starts.
    pub(super) fn with_link(
        &self,
        link: &FeedbackLink,
        at: Millis,
    ) -> Result<(Vec<u8>, usize), CodecError> {
        let b = self.body;
        let mut out = Vec::with_capacity(b.len() + 64 + link.adapter_id.len() * 2);
        out.push(codec::FORMAT_VERSION);
        out.extend_from_slice(&b[..self.count.0]);
        codec::encode_part_into(&(self.links.len() as u64 + 1), &mut out)?;
        out.extend_from_slice(&b[self.count.1..self.item_at]);
        codec::encode_part_into(link, &mut out)?;
        let item_at = out.len();
        let head = ItemHead {
            updated_at: at.max(self.head.updated_at),
            version: self.head.version + 1,
            ..self.head
        };
        codec::encode_part_into(&head, &mut out)?;
        out.extend_from_slice(&b[self.head_end..]);
        Ok((out, item_at))
    }
}

/// Decodes the item of a value built by [`RecordParts::with_link`] (`item_at` as it
/// returned), with `lease` and the one edge `link`, for the graph index.
pub(super) fn item_for_graph(
    value: &[u8],
    item_at: usize,
    lease: Option<Lease>,
    link: &FeedbackLink,
) -> Result<FeedbackRecord, CodecError> {
    let feedback: Feedback = codec::decode_part(value.get(item_at..).ok_or(CodecError::Empty)?)?;
    Ok(FeedbackRecord {
        lease,
        links: vec![link.clone()],
        feedback,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{LinkSource, Metadata};

    fn edge(i: usize, meta: bool) -> FeedbackLink {
        let mut m = serde_json::Map::new();
        if meta {
            m.insert("confidence".into(), serde_json::json!(0.5 + i as f64));
        }
        FeedbackLink {
            feedback_id: "feedback-1".into(),
            adapter_id: format!("adapter_{i:05}"),
            created_at: 1_700_000_000_000 + i as u64,
            source: if i.is_multiple_of(2) {
                LinkSource::Auto
            } else {
                LinkSource::Manual
            },
            metadata: Metadata(m),
        }
    }

    fn record(edges: usize, version: u64, lease: bool) -> FeedbackRecord {
        let mut f = Feedback::sample("feedback-1", "acme");
        f.version = version;
        f.updated_at = 1_700_000_000_500;
        f.question = "What is a \u{e9}mbedding?".into();
        f.comment = Some("long enough".repeat(20));
        f.metadata
            .0
            .insert("k".into(), serde_json::json!([1, "two"]));
        FeedbackRecord {
            lease: lease.then_some(Lease {
                batch_id: 7,
                expires_at: 1_800_000_000_000,
            }),
            links: (0..edges).map(|i| edge(i, i.is_multiple_of(3))).collect(),
            feedback: f,
        }
    }

    /// What the decoding path stores for the same link (`rules::add_link` and the bump of
    /// `update_record`).
    fn by_decoding(r: &FeedbackRecord, link: &FeedbackLink, at: Millis) -> Vec<u8> {
        let mut next = r.clone();
        next.links.push(link.clone());
        next.feedback.version = r.feedback.version + 1;
        next.feedback.updated_at = at.max(r.feedback.updated_at);
        codec::encode(&next).unwrap()
    }

    #[test]
    fn an_appended_link_is_the_bytes_the_decoding_path_writes() {
        // Edge counts and versions across the varint widths (1 byte up to 250, 3 after),
        // with and without a lease, times before and after the item's `updated_at`.
        for edges in [0, 1, 2, 25, 249, 250, 251, 300] {
            for version in [1, 2, 249, 250, 251, 65_535, 65_536] {
                for lease in [false, true] {
                    for at in [1_700_000_000_000, 1_700_000_000_999] {
                        let r = record(edges, version, lease);
                        let stored = codec::encode(&r).unwrap();
                        let parts = RecordParts::read(&stored).unwrap().unwrap();
                        assert_eq!(parts.links.len(), edges);
                        assert_eq!(parts.head.version, version);
                        assert_eq!(parts.lease, r.lease);
                        let link = edge(10_000 + edges, edges.is_multiple_of(2));
                        assert!(!parts.has_link(&link.adapter_id));
                        let (value, item_at) = parts.with_link(&link, at).unwrap();
                        let want = by_decoding(&r, &link, at);
                        assert_eq!(value, want, "{edges} edges, version {version}");
                        let back: FeedbackRecord = codec::decode(&value).unwrap();
                        assert_eq!(back.links.len(), edges + 1);
                        let g = item_for_graph(&value, item_at, r.lease, &link).unwrap();
                        assert_eq!(g.feedback, back.feedback);
                        assert_eq!(g.links, vec![link.clone()]);
                    }
                }
            }
        }
    }

    #[test]
    fn existing_links_are_found_and_older_formats_are_left_to_the_decoder() {
        let r = record(5, 3, false);
        let stored = codec::encode(&r).unwrap();
        let parts = RecordParts::read(&stored).unwrap().unwrap();
        assert!(parts.has_link("adapter_00003"));
        assert!(!parts.has_link("adapter_00005"));
        // A version-3 record (no erasure fields): read by the migration, not here.
        let mut v3 = stored[..stored.len() - 2].to_vec();
        v3[0] = 3;
        assert!(RecordParts::read(&v3).unwrap().is_none());
        // A future version and garbage are errors, not panics.
        let mut future = stored.clone();
        future[0] = codec::FORMAT_VERSION + 1;
        assert!(RecordParts::read(&future).is_err());
        assert!(RecordParts::read(&[]).is_err());
        for cut in [1, 2, 5, stored.len() / 2] {
            let _ = RecordParts::read(&stored[..cut]);
        }
    }

    #[test]
    fn the_item_head_mirrors_feedback() {
        let f = record(0, 9, false).feedback;
        let bytes = codec::encode(&f).unwrap();
        let (head, _) = codec::decode_part_borrowed::<ItemHead<'_>>(&bytes[1..]).unwrap();
        assert_eq!(
            (
                head.id,
                head.org_id,
                head.feedback_type,
                head.validation_status
            ),
            (
                f.id.as_str(),
                f.org_id.as_str(),
                f.feedback_type,
                f.validation_status
            )
        );
        assert_eq!(
            (head.created_at, head.updated_at, head.version),
            (f.created_at, f.updated_at, f.version)
        );
    }
}
