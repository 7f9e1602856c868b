//! Feedback items read in place from their stored bytes, for pages that only render them.
//!
//! A page of 100 items that is turned straight into JSON does not need owned records: a
//! [`FeedbackView`] borrows every string from the stored value, keeps the metadata as the
//! JSON text the store holds, and skips the record's edges without building them. The same
//! view can be taken of an owned [`Feedback`] (backends that cannot read in place, and
//! records in an older format), so a renderer has one input whatever the source.

use serde::Deserialize;
use serde::de::{Deserializer, SeqAccess, Visitor};

use super::{Lease, LinkRef};
use crate::model::{
    Feedback, FeedbackKind, FeedbackType, Metadata, Millis, PiiAction, PiiDetector,
    ValidationStatus,
};

/// A validation reason read in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct ReasonView<'a> {
    /// Rule name.
    pub rule: &'a str,
    /// The status the rule asks for.
    pub status: ValidationStatus,
    /// Explanation.
    pub message: &'a str,
}

/// A PII finding read in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct PiiView<'a> {
    /// Which detector fired.
    pub detector: PiiDetector,
    /// The field it fired in.
    pub field: &'a str,
    /// For metadata: the JSON pointer.
    pub path: Option<&'a str>,
    /// Found in a key rather than a value.
    pub in_key: bool,
    /// First character of the span.
    pub start: u32,
    /// One past the last character.
    pub end: u32,
    /// Redacted or flagged.
    pub action: PiiAction,
}

/// An item's metadata: the JSON text the store keeps, or an owned map.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MetadataView<'a> {
    /// The stored JSON text (a JSON object written by `serde_json` from a map).
    Text(&'a str),
    /// An owned map (a view of an owned [`Feedback`]).
    Map(&'a Metadata),
}

impl<'de: 'a, 'a> Deserialize<'de> for MetadataView<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // The store keeps metadata as its JSON text (see `Metadata`'s `Serialize`).
        <&'de str>::deserialize(deserializer).map(MetadataView::Text)
    }
}

/// Every field of a stored [`Feedback`], in its order, read in place: strings borrow from
/// the stored bytes. A unit test keeps it in step with `Feedback`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct FeedbackView<'a> {
    /// Id.
    pub id: &'a str,
    /// Org.
    pub org_id: &'a str,
    /// Type.
    pub feedback_type: FeedbackType,
    /// Status.
    pub validation_status: ValidationStatus,
    /// Created.
    pub created_at: Millis,
    /// Updated.
    pub updated_at: Millis,
    /// Version.
    pub version: u64,
    /// Used.
    pub used_for_training: bool,
    /// Batch.
    pub training_batch_id: u64,
    /// Model.
    pub model_version: Option<&'a str>,
    /// Adapter.
    pub adapter_id: Option<&'a str>,
    /// Adapter version.
    pub adapter_version: Option<&'a str>,
    /// User.
    pub user_id: Option<&'a str>,
    /// Session.
    pub session_id: Option<&'a str>,
    /// Interaction.
    pub interaction_id: Option<&'a str>,
    /// Score.
    pub score: Option<f64>,
    /// Correction.
    pub correction: Option<&'a str>,
    /// Comment.
    pub comment: Option<&'a str>,
    /// Validation reasons.
    #[serde(borrow)]
    pub validation_reasons: Vec<ReasonView<'a>>,
    /// Question.
    pub question: &'a str,
    /// Answer.
    pub answer: &'a str,
    /// Metadata.
    #[serde(borrow)]
    pub metadata: MetadataView<'a>,
    /// PII findings.
    #[serde(borrow)]
    pub pii: Vec<PiiView<'a>>,
    /// Kind.
    pub kind: FeedbackKind,
    /// Label.
    pub label: Option<&'a str>,
    /// Provider.
    pub provider: Option<&'a str>,
    /// Score config.
    pub score_config: Option<&'a str>,
    /// Erased at.
    pub erased_at: Option<Millis>,
    /// Erased by.
    pub erased_by: Option<&'a str>,
}

impl<'a> From<&'a Feedback> for FeedbackView<'a> {
    fn from(f: &'a Feedback) -> Self {
        FeedbackView {
            id: &f.id,
            org_id: &f.org_id,
            feedback_type: f.feedback_type,
            validation_status: f.validation_status,
            created_at: f.created_at,
            updated_at: f.updated_at,
            version: f.version,
            used_for_training: f.used_for_training,
            training_batch_id: f.training_batch_id,
            model_version: f.model_version.as_deref(),
            adapter_id: f.adapter_id.as_deref(),
            adapter_version: f.adapter_version.as_deref(),
            user_id: f.user_id.as_deref(),
            session_id: f.session_id.as_deref(),
            interaction_id: f.interaction_id.as_deref(),
            score: f.score,
            correction: f.correction.as_deref(),
            comment: f.comment.as_deref(),
            validation_reasons: f
                .validation_reasons
                .iter()
                .map(|r| ReasonView {
                    rule: &r.rule,
                    status: r.status,
                    message: &r.message,
                })
                .collect(),
            question: &f.question,
            answer: &f.answer,
            metadata: MetadataView::Map(&f.metadata),
            pii: f
                .pii
                .iter()
                .map(|p| PiiView {
                    detector: p.detector,
                    field: &p.field,
                    path: p.path.as_deref(),
                    in_key: p.in_key,
                    start: p.start,
                    end: p.end,
                    action: p.action,
                })
                .collect(),
            kind: f.kind,
            label: f.label.as_deref(),
            provider: f.provider.as_deref(),
            score_config: f.score_config.as_deref(),
            erased_at: f.erased_at,
            erased_by: f.erased_by.as_deref(),
        }
    }
}

/// The record's edges, read and dropped: a page renders the item only.
struct SkippedLinks;

impl<'de> Deserialize<'de> for SkippedLinks {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Skip;
        impl<'de> Visitor<'de> for Skip {
            type Value = SkippedLinks;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list of edges")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<SkippedLinks, A::Error> {
                while seq.next_element::<LinkRef<'de>>()?.is_some() {}
                Ok(SkippedLinks)
            }
        }
        deserializer.deserialize_seq(Skip)
    }
}

/// A whole stored [`super::FeedbackRecord`] in the current format, read in place, its
/// edges skipped.
#[derive(Deserialize)]
pub(crate) struct RecordView<'a> {
    /// The lease (read to move past it).
    #[allow(dead_code)]
    lease: Option<Lease>,
    /// The edges (skipped).
    #[allow(dead_code)]
    links: SkippedLinks,
    /// The item.
    #[serde(borrow)]
    pub(crate) feedback: FeedbackView<'a>,
}
