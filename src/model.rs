//! Domain types: feedback, adapters, edges, ids, validation outcomes and history versions.
//!
//! This module owns the shapes every other layer agrees on. It performs no I/O; the
//! store decides how these are encoded, the graph decides how they are indexed.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Milliseconds since the Unix epoch, the unit of every timestamp in feedgraph.
pub type Millis = u64;

/// The current wall-clock time in milliseconds since the Unix epoch.
pub fn now_millis() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}

/// Whether the user liked the answer (thumbs up) or not (thumbs down).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FeedbackType {
    /// Thumbs up: the answer was good.
    Positive,
    /// Thumbs down: the answer was wrong or unhelpful.
    Negative,
}

impl FeedbackType {
    /// The wire name (`positive` or `negative`).
    pub fn as_str(self) -> &'static str {
        match self {
            FeedbackType::Positive => "positive",
            FeedbackType::Negative => "negative",
        }
    }
}

impl FromStr for FeedbackType {
    type Err = UnknownVariant;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "positive" => Ok(FeedbackType::Positive),
            "negative" => Ok(FeedbackType::Negative),
            other => Err(UnknownVariant {
                kind: "feedback type",
                value: other.to_owned(),
                expected: "positive, negative",
            }),
        }
    }
}

impl fmt::Display for FeedbackType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a feedback item says about an answer. `thumbs` is the seed's kind and the default
/// when a submission names none; the others carry one required field each (see
/// `validate::Validator::check_shape`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum FeedbackKind {
    /// Thumbs up or down (`type` required).
    #[default]
    Thumbs,
    /// A numeric rating in `score`, optionally checked against a score config.
    Rating,
    /// Free text on an answer, in `comment`.
    Text,
    /// The output the user expected, in `correction` (the original is `answer`).
    Correction,
    /// A ground-truth label for the input, in `label`.
    Label,
}

impl FeedbackKind {
    /// Every kind, in wire-name order of the docs.
    pub const ALL: [FeedbackKind; 5] = [
        FeedbackKind::Thumbs,
        FeedbackKind::Rating,
        FeedbackKind::Text,
        FeedbackKind::Correction,
        FeedbackKind::Label,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            FeedbackKind::Thumbs => "thumbs",
            FeedbackKind::Rating => "rating",
            FeedbackKind::Text => "text",
            FeedbackKind::Correction => "correction",
            FeedbackKind::Label => "label",
        }
    }

    /// True for the seed's kind (what an item without `kind` is).
    pub fn is_thumbs(&self) -> bool {
        *self == FeedbackKind::Thumbs
    }
}

impl FromStr for FeedbackKind {
    type Err = UnknownVariant;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FeedbackKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownVariant {
                kind: "feedback kind",
                value: s.to_owned(),
                expected: "thumbs, rating, text, correction, label",
            })
    }
}

impl fmt::Display for FeedbackKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of validation, set by the server and changed only by review.
///
/// The derived order is by severity: `Approved < Pending < Flagged < Rejected`, so the
/// verdict of several rules is their maximum.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum ValidationStatus {
    /// Passed every check; eligible for training.
    Approved,
    /// A plugin has not decided yet.
    Pending,
    /// Needs a human to look at it before it can be used.
    Flagged,
    /// Failed a hard rule (spam, too short, repetition); never used for training.
    Rejected,
}

impl ValidationStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ValidationStatus::Approved => "approved",
            ValidationStatus::Pending => "pending",
            ValidationStatus::Flagged => "flagged",
            ValidationStatus::Rejected => "rejected",
        }
    }
}

impl FromStr for ValidationStatus {
    type Err = UnknownVariant;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "approved" => Ok(ValidationStatus::Approved),
            "pending" => Ok(ValidationStatus::Pending),
            "flagged" => Ok(ValidationStatus::Flagged),
            "rejected" => Ok(ValidationStatus::Rejected),
            other => Err(UnknownVariant {
                kind: "validation status",
                value: other.to_owned(),
                expected: "pending, approved, rejected, flagged",
            }),
        }
    }
}

impl fmt::Display for ValidationStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that does not name any variant of an enum; the message lists the valid ones.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} '{value}' (expected one of: {expected})")]
pub struct UnknownVariant {
    /// What was being parsed.
    pub kind: &'static str,
    /// The rejected input.
    pub value: String,
    /// The accepted values.
    pub expected: &'static str,
}

/// Free-form JSON attached to feedback, links and adapters.
///
/// It is a JSON object on the wire. Inside the store (a non-self-describing encoding) it is
/// kept as its JSON text, because bincode cannot carry arbitrary JSON values.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metadata(pub serde_json::Map<String, serde_json::Value>);

impl Metadata {
    /// True when there are no keys.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Size of the JSON text, used to bound metadata.
    pub fn encoded_len(&self) -> usize {
        serde_json::to_string(&self.0).map(|s| s.len()).unwrap_or(0)
    }
}

impl Serialize for Metadata {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            self.0.serialize(serializer)
        } else {
            let text = serde_json::to_string(&self.0).map_err(serde::ser::Error::custom)?;
            serializer.serialize_str(&text)
        }
    }
}

impl<'de> Deserialize<'de> for Metadata {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            Ok(Metadata(serde_json::Map::deserialize(deserializer)?))
        } else {
            let text = String::deserialize(deserializer)?;
            serde_json::from_str(&text)
                .map(Metadata)
                .map_err(serde::de::Error::custom)
        }
    }
}

/// One rule that fired during validation, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ValidationReason {
    /// Stable rule name, e.g. `answer_too_short`.
    pub rule: String,
    /// The status this rule asks for.
    pub status: ValidationStatus,
    /// Human-readable explanation naming the field and the threshold.
    pub message: String,
}

/// A feedback item as stored and returned.
///
/// Field order matters: the store encodes records positionally, and the fields the graph
/// index needs come first (up to `comment`), so that start-up decodes only that prefix
/// (see `store::FeedbackHeadRef`). Add fields only at the end, with a codec version bump.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Feedback {
    /// Time-ordered id, `feedback-<ULID>`.
    pub id: String,
    /// The tenant that owns the item (from the writer's token).
    pub org_id: String,
    /// Thumbs up or down.
    #[serde(rename = "type")]
    pub feedback_type: FeedbackType,
    /// Server-set outcome of validation.
    pub validation_status: ValidationStatus,
    /// Creation time, ms since epoch.
    pub created_at: Millis,
    /// Last change, ms since epoch.
    pub updated_at: Millis,
    /// Bumped on every change; equals the number of versions in the history.
    pub version: u64,
    /// True once a training batch has consumed the item.
    pub used_for_training: bool,
    /// The batch that consumed it; 0 when none (as the seed does).
    pub training_batch_id: u64,
    /// The model that produced the answer.
    pub model_version: Option<String>,
    /// The LoRA adapter that produced the answer, if any.
    pub adapter_id: Option<String>,
    /// The adapter's version.
    pub adapter_version: Option<String>,
    /// The end user who gave the feedback.
    pub user_id: Option<String>,
    /// Conversation or session the item belongs to.
    pub session_id: Option<String>,
    /// The LLM interaction (trace) the item is about.
    pub interaction_id: Option<String>,
    /// Optional numeric rating (e.g. 1-5 or 0.0-1.0).
    pub score: Option<f64>,
    /// For negative feedback: the answer the user expected.
    pub correction: Option<String>,
    /// Free-text comment.
    pub comment: Option<String>,
    /// Which rules decided the status.
    pub validation_reasons: Vec<ValidationReason>,
    /// The question the user asked.
    pub question: String,
    /// The model's answer.
    pub answer: String,
    /// Small JSON object of extra context.
    #[schema(value_type = Object)]
    pub metadata: Metadata,
    /// Personal data and secrets the PII detectors found on ingest: which detector, in
    /// which field, where, and whether it was redacted or kept and flagged; never the value.
    /// Empty for records stored before format version 2.
    pub pii: Vec<PiiFinding>,
    /// What kind of feedback this is; `thumbs` for records stored before format version 3.
    pub kind: FeedbackKind,
    /// For kind `label`: the ground-truth label of the input.
    pub label: Option<String>,
    /// The model provider that served the answer (e.g. `openai`), if the client said.
    pub provider: Option<String>,
    /// The score config (by name) the item's rating or label was checked against.
    pub score_config: Option<String>,
    /// When the item's content was erased (it is a tombstone since); `null` if never.
    #[serde(default)]
    pub erased_at: Option<Millis>,
    /// Who erased it (the admin's `sub`, `cli`, or `retention`); `null` if never.
    #[serde(default)]
    pub erased_by: Option<String>,
}

impl Feedback {
    /// Blanks every field that holds what an end user typed or that identifies them, and
    /// marks the item erased. The one list of content fields: a new text field is added
    /// here and in [`Feedback::CONTENT_FIELDS`]. Kept: id, org, type, status and reasons,
    /// times, version, training fields, model and adapter fields, score, PII findings
    /// (they never hold a value).
    pub fn erase_content(&mut self, at: Millis, by: &str) {
        self.question.clear();
        self.answer.clear();
        self.correction = None;
        self.comment = None;
        self.metadata = Metadata::default();
        self.user_id = None;
        self.session_id = None;
        self.interaction_id = None;
        self.erased_at = Some(at);
        self.erased_by = Some(by.to_owned());
    }

    /// The wire names of the fields [`Feedback::erase_content`] blanks: history entries
    /// that mention them lose those changes when the item is erased.
    pub const CONTENT_FIELDS: &'static [&'static str] = &[
        "question",
        "answer",
        "correction",
        "comment",
        "metadata",
        "user_id",
        "session_id",
        "interaction_id",
    ];

    /// True once the item's content was erased.
    pub fn is_erased(&self) -> bool {
        self.erased_at.is_some()
    }
}

/// A kind of personal data or secret that the ingest detectors look for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PiiDetector {
    /// An e-mail address.
    Email,
    /// A phone number in international (`+CC ...`) or a common national shape.
    Phone,
    /// A payment card number: 13 to 19 digits that pass the Luhn check.
    PaymentCard,
    /// An IBAN whose length fits its country and whose mod-97 check holds.
    Iban,
    /// An IPv4 or IPv6 address.
    IpAddress,
    /// An OpenAI-style API key (`sk-...`).
    ApiKey,
    /// An AWS access key id (`AKIA...`, `ASIA...`).
    AwsAccessKey,
    /// A JSON Web Token (three base64url parts, a header with `alg`).
    Jwt,
    /// A PEM private key block.
    PrivateKey,
}

impl PiiDetector {
    /// Every detector, in the order their settings are listed.
    pub const ALL: [PiiDetector; 9] = [
        PiiDetector::Email,
        PiiDetector::Phone,
        PiiDetector::PaymentCard,
        PiiDetector::Iban,
        PiiDetector::IpAddress,
        PiiDetector::ApiKey,
        PiiDetector::AwsAccessKey,
        PiiDetector::Jwt,
        PiiDetector::PrivateKey,
    ];

    /// The name used in configuration, findings and messages (`payment_card`).
    pub fn as_str(self) -> &'static str {
        match self {
            PiiDetector::Email => "email",
            PiiDetector::Phone => "phone",
            PiiDetector::PaymentCard => "payment_card",
            PiiDetector::Iban => "iban",
            PiiDetector::IpAddress => "ip_address",
            PiiDetector::ApiKey => "api_key",
            PiiDetector::AwsAccessKey => "aws_access_key",
            PiiDetector::Jwt => "jwt",
            PiiDetector::PrivateKey => "private_key",
        }
    }

    /// The typed placeholder a redacted value is replaced with (`[EMAIL]`).
    pub fn placeholder(self) -> &'static str {
        match self {
            PiiDetector::Email => "[EMAIL]",
            PiiDetector::Phone => "[PHONE]",
            PiiDetector::PaymentCard => "[CARD]",
            PiiDetector::Iban => "[IBAN]",
            PiiDetector::IpAddress => "[IP]",
            PiiDetector::ApiKey => "[API_KEY]",
            PiiDetector::AwsAccessKey => "[AWS_KEY]",
            PiiDetector::Jwt => "[JWT]",
            PiiDetector::PrivateKey => "[PRIVATE_KEY]",
        }
    }

    /// What the detector finds, for messages (`a payment card number`).
    pub fn describe(self) -> &'static str {
        match self {
            PiiDetector::Email => "an e-mail address",
            PiiDetector::Phone => "a phone number",
            PiiDetector::PaymentCard => "a payment card number",
            PiiDetector::Iban => "an IBAN",
            PiiDetector::IpAddress => "an IP address",
            PiiDetector::ApiKey => "an API key",
            PiiDetector::AwsAccessKey => "an AWS access key id",
            PiiDetector::Jwt => "a JSON Web Token",
            PiiDetector::PrivateKey => "a private key",
        }
    }
}

impl fmt::Display for PiiDetector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What ingest did with a detected value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PiiAction {
    /// Replaced by the detector's placeholder before anything was stored.
    Redacted,
    /// Stored as sent; the item's status is flagged for review.
    Flagged,
}

/// Where a detector fired in a stored item. Offsets count Unicode scalar values (`char`s)
/// of the text as stored: for a redacted value they span its placeholder, for a flagged one
/// the value itself. The value is never recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PiiFinding {
    /// Which detector fired.
    pub detector: PiiDetector,
    /// `question`, `answer`, `correction`, `comment` or `metadata`.
    pub field: String,
    /// For `metadata`: the JSON pointer (RFC 6901) of the string, with every detected value
    /// in the keys along it shown as its placeholder; `null` for the other fields.
    pub path: Option<String>,
    /// For `metadata`: true when the value was found in the object key that `path` ends
    /// with rather than in the string value.
    pub in_key: bool,
    /// First character of the span.
    pub start: u32,
    /// One past the last character of the span.
    pub end: u32,
    /// Redacted or flagged.
    pub action: PiiAction,
}

/// A LoRA adapter (or a base model acting as a lineage root).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Adapter {
    /// Caller-chosen id, e.g. `themis_help_lora_v2`.
    pub id: String,
    /// Owning tenant.
    pub org_id: String,
    /// Adapter version label.
    pub version: Option<String>,
    /// The base model the adapter applies to.
    pub base_model: Option<String>,
    /// The parent adapter (DERIVED_FROM target), if any. At most one parent.
    pub derived_from: Option<String>,
    /// Extra JSON context.
    #[schema(value_type = Object)]
    pub metadata: Metadata,
    /// Creation time.
    pub created_at: Millis,
    /// How the adapter came to exist.
    pub source: LinkSource,
    /// Bumped on every change.
    pub record_version: u64,
}

/// Whether an edge or node was created implicitly (named by feedback) or by an explicit call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LinkSource {
    /// Created because a feedback item named the adapter.
    Auto,
    /// Created by an explicit request.
    Manual,
}

impl LinkSource {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            LinkSource::Auto => "auto",
            LinkSource::Manual => "manual",
        }
    }
}

/// The `(Feedback)-[:FEEDBACK_FOR]->(Adapter)` edge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeedbackLink {
    /// Feedback end.
    pub feedback_id: String,
    /// Adapter end.
    pub adapter_id: String,
    /// When the link was made.
    pub created_at: Millis,
    /// Auto (from `adapter_id` on submit) or manual (link endpoint).
    pub source: LinkSource,
    /// Extra JSON context (e.g. confidence).
    pub metadata: Metadata,
}

/// What kind of change a history version records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChangeAction {
    /// The record was created by a submit.
    Submit,
    /// The record was created by a bulk import.
    Import,
    /// A FEEDBACK_FOR edge was added.
    Link,
    /// A reviewer changed the validation status.
    Review,
    /// The item was leased to a training batch.
    Lease,
    /// A training batch committed the item.
    Commit,
    /// A lease was released.
    Abort,
    /// The item was marked used directly.
    MarkUsed,
    /// An adapter or a score config was created.
    Create,
    /// A score config got a new version.
    Update,
    /// The item's texts and personal fields were erased (the entry itself holds none).
    Erase,
}

/// One field's value before and after a change (`None` = absent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldChange {
    /// Field name as on the wire.
    pub field: String,
    /// Value before, rendered as JSON text.
    pub old: Option<String>,
    /// Value after, rendered as JSON text.
    pub new: Option<String>,
}

impl FieldChange {
    /// The change as clients see it: `old` and `new` as JSON values (the stored JSON text
    /// parsed), `null` when the field was absent.
    pub fn view(&self) -> FieldChangeView {
        let value = |v: &Option<String>| match v {
            None => serde_json::Value::Null,
            // Stored values are JSON text written by the store; a text that does not parse
            // (never written by this release) is shown as the string it is.
            Some(text) => serde_json::from_str(text)
                .unwrap_or_else(|_| serde_json::Value::String(text.clone())),
        };
        FieldChangeView {
            field: self.field.clone(),
            old: value(&self.old),
            new: value(&self.new),
        }
    }
}

/// One field's change as clients see it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct FieldChangeView {
    /// Field name as on the wire.
    pub field: String,
    /// Value before (any JSON value; null when the field was absent).
    pub old: serde_json::Value,
    /// Value after (any JSON value; null when the field was absent).
    pub new: serde_json::Value,
}

/// A history entry as clients see it (HTTP and CLI): field changes with JSON values, not
/// JSON text inside strings.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct HistoryEntry {
    /// The record version this change produced (1 = creation).
    pub version: u64,
    /// When, ms since epoch.
    pub at: Millis,
    /// Who (the `sub` of the token, or `cli`).
    pub actor: String,
    /// What kind of change.
    pub action: ChangeAction,
    /// Field-level changes.
    pub changes: Vec<FieldChangeView>,
}

impl HistoryVersion {
    /// The entry as clients see it.
    pub fn entry(&self) -> HistoryEntry {
        HistoryEntry {
            version: self.version,
            at: self.at,
            actor: self.actor.clone(),
            action: self.action,
            changes: self.changes.iter().map(FieldChange::view).collect(),
        }
    }

    /// [`HistoryVersion::entry`] as a JSON value.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self.entry()).unwrap_or(serde_json::Value::Null)
    }
}

/// One entry of a record's history: who changed what, when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryVersion {
    /// The record version this change produced (1 = creation).
    pub version: u64,
    /// When, ms since epoch.
    pub at: Millis,
    /// Who (the `sub` of the token, or `cli`).
    pub actor: String,
    /// What kind of change.
    pub action: ChangeAction,
    /// Field-level changes.
    pub changes: Vec<FieldChange>,
}

/// The data type of a score config: what a rating or label naming it may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ScoreDataType {
    /// A number in `[min, max]` (kind `rating`).
    Numeric,
    /// One of `categories` (kind `label`).
    Categorical,
    /// 0 (false) or 1 (true) in `score` (kind `rating`).
    Boolean,
}

impl ScoreDataType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ScoreDataType::Numeric => "numeric",
            ScoreDataType::Categorical => "categorical",
            ScoreDataType::Boolean => "boolean",
        }
    }
}

/// An org's typed scale for ratings or labels, by name. Every change is a new version with
/// a history entry, like every other record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ScoreConfig {
    /// The name submissions use in `score_config` (id alphabet).
    pub name: String,
    /// Owning tenant.
    pub org_id: String,
    /// Numeric, categorical or boolean.
    pub data_type: ScoreDataType,
    /// Numeric: the lowest allowed score.
    pub min: Option<f64>,
    /// Numeric: the highest allowed score.
    pub max: Option<f64>,
    /// Categorical: the allowed labels.
    pub categories: Vec<String>,
    /// Numeric or boolean: a score at or above it is `positive`, below it `negative`
    /// (used when a rating comes without `type`, and by the KTO export).
    pub threshold: Option<f64>,
    /// What the scale measures, for people.
    pub description: Option<String>,
    /// Bumped on every change; equals the number of versions in the history.
    pub version: u64,
    /// Creation time, ms.
    pub created_at: Millis,
    /// Last change, ms.
    pub updated_at: Millis,
}

impl ScoreConfig {
    /// The polarity a score has on this scale, when the scale says (a threshold, or a
    /// boolean's 1 = positive).
    pub fn polarity(&self, score: f64) -> Option<FeedbackType> {
        let threshold = match (self.threshold, self.data_type) {
            (Some(t), _) => t,
            (None, ScoreDataType::Boolean) => 1.0,
            (None, _) => return None,
        };
        Some(if score >= threshold {
            FeedbackType::Positive
        } else {
            FeedbackType::Negative
        })
    }
}

/// The caller of an operation: the tenant it acts in and the user it acts as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// Tenant (the token's `org`).
    pub org: String,
    /// User (the token's `sub`).
    pub user: String,
}

impl Actor {
    /// An actor for `user` in `org`.
    pub fn new(org: impl Into<String>, user: impl Into<String>) -> Self {
        Actor {
            org: org.into(),
            user: user.into(),
        }
    }
}

/// A feedback submission as a client sends it, before validation and id assignment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewFeedback {
    /// `positive` or `negative`, kept as text so a bad value is a clear 400. Required for
    /// kinds `thumbs` and `text`; a `rating` without it takes it from its score config's
    /// threshold; `correction` defaults to `negative`, `label` to `positive`.
    #[serde(rename = "type")]
    #[schema(required = true, value_type = FeedbackType)]
    pub feedback_type: Option<String>,
    /// Required question.
    #[schema(required = true, value_type = String, pattern = "\\S")]
    pub question: Option<String>,
    /// Required answer.
    #[schema(required = true, value_type = String, pattern = "\\S")]
    pub answer: Option<String>,
    /// Optional end-user id.
    pub user_id: Option<String>,
    /// Optional interaction (trace) id.
    pub interaction_id: Option<String>,
    /// Optional session id.
    pub session_id: Option<String>,
    /// Optional correction.
    pub correction: Option<String>,
    /// Optional comment.
    pub comment: Option<String>,
    /// Optional model version.
    pub model_version: Option<String>,
    /// Optional adapter id; the adapter is created and linked on the fly.
    pub adapter_id: Option<String>,
    /// Optional adapter version.
    pub adapter_version: Option<String>,
    /// Optional numeric rating.
    pub score: Option<f64>,
    /// Optional JSON object.
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    /// `thumbs` (the default), `rating`, `text`, `correction` or `label`.
    #[schema(value_type = Option<FeedbackKind>)]
    pub kind: Option<String>,
    /// For kind `label`: the label (required there, refused elsewhere).
    pub label: Option<String>,
    /// Optional model provider (e.g. `openai`).
    pub provider: Option<String>,
    /// Optional score config name the rating or label is checked against.
    pub score_config: Option<String>,
}

/// A time-ordered feedback id generator (`feedback-<ULID>`): ids sort by creation time, and
/// are strictly increasing within one process even inside one millisecond.
#[derive(Default)]
pub struct IdGenerator {
    inner: parking_lot::Mutex<ulid::Generator>,
}

impl fmt::Debug for IdGenerator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IdGenerator")
    }
}

/// Prefix of every generated feedback id.
pub const FEEDBACK_ID_PREFIX: &str = "feedback-";

impl IdGenerator {
    /// A new generator.
    pub fn new() -> Self {
        Self::default()
    }

    /// The next id for an item created at `at` (ms). Falls back to a fresh random ULID if the
    /// monotonic counter would overflow inside one millisecond.
    pub fn next_at(&self, at: Millis) -> String {
        let time = std::time::UNIX_EPOCH + std::time::Duration::from_millis(at);
        let ulid = self
            .inner
            .lock()
            .generate_from_datetime(time)
            .unwrap_or_else(|_| ulid::Ulid::from_datetime(time));
        format!("{FEEDBACK_ID_PREFIX}{ulid}")
    }
}

#[cfg(test)]
impl Feedback {
    /// A test item: version 1, positive, approved, unused, empty texts, no optional field.
    pub(crate) fn sample(id: &str, org: &str) -> Feedback {
        Feedback {
            id: id.into(),
            org_id: org.into(),
            feedback_type: FeedbackType::Positive,
            validation_status: ValidationStatus::Approved,
            validation_reasons: Vec::new(),
            created_at: 1,
            updated_at: 1,
            version: 1,
            used_for_training: false,
            training_batch_id: 0,
            model_version: None,
            adapter_id: None,
            adapter_version: None,
            user_id: None,
            session_id: None,
            interaction_id: None,
            score: None,
            question: String::new(),
            answer: String::new(),
            correction: None,
            comment: None,
            metadata: Metadata::default(),
            pii: Vec::new(),
            kind: FeedbackKind::Thumbs,
            label: None,
            provider: None,
            score_config: None,
            erased_at: None,
            erased_by: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_time_ordered_and_unique() {
        let g = IdGenerator::new();
        let a = g.next_at(1_000);
        let b = g.next_at(1_000);
        let c = g.next_at(2_000);
        assert!(a < b && b < c, "{a} {b} {c}");
        assert!(a.starts_with(FEEDBACK_ID_PREFIX));
    }

    #[test]
    fn status_order_is_severity() {
        use ValidationStatus::*;
        assert!(Approved < Pending && Pending < Flagged && Flagged < Rejected);
        assert_eq!("flagged".parse::<ValidationStatus>(), Ok(Flagged));
        assert!("bogus".parse::<ValidationStatus>().is_err());
    }

    #[test]
    fn metadata_is_an_object_in_json() {
        let mut m = serde_json::Map::new();
        m.insert("k".into(), serde_json::json!(1));
        let text = serde_json::to_string(&Metadata(m)).unwrap();
        assert_eq!(text, r#"{"k":1}"#);
    }
}
