//! The validation pipeline: shape checks (which make a request invalid) and content rules
//! (which decide an item's status), with a plugin trait so teams can bring their own.
//!
//! Shape problems are errors: nothing is stored and the client hears a 400 naming the field.
//! Content rules never fail a request; they set `validation_status` and record every rule
//! that fired in `validation_reasons`. The verdict is the most severe status any rule asked
//! for (rejected > flagged > pending > approved). All lengths count Unicode scalar values
//! (`char`s) of the trimmed text, never bytes.
//!
//! Between the two, the PII detectors of [`pii`] screen the free text: values they find are
//! redacted, flagged (a `pii_<detector>` reason) or make the request invalid, per the
//! `[pii]` settings. [`Validator::validate`] runs all three steps.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::model::{
    FeedbackKind, FeedbackType, Metadata, NewFeedback, PiiFinding, ScoreConfig, ScoreDataType,
    ValidationReason, ValidationStatus,
};

pub mod pii;

pub use pii::{PiiConfig, PiiMode, PiiScanner};

/// A submission that breaks the request contract; maps to HTTP 400 (or 413 for size).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// A required field is absent or empty.
    #[error("missing required field '{field}'{hint}")]
    Missing {
        /// Field name.
        field: &'static str,
        /// Extra guidance, e.g. the allowed values.
        hint: &'static str,
    },
    /// A field has a value outside its domain.
    #[error("invalid value for '{field}': {reason}")]
    Invalid {
        /// Field name.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A field is longer than the configured limit.
    #[error("field '{field}' is too long: {actual} {unit}, the limit is {limit}")]
    TooLong {
        /// Field name.
        field: &'static str,
        /// Measured size.
        actual: usize,
        /// Configured maximum.
        limit: usize,
        /// `characters` or `bytes`.
        unit: &'static str,
    },
    /// A PII detector in `reject` mode found a value; the value itself is never echoed.
    #[error(
        "'{field}' contains {what} (PII detector '{detector}' refuses it); remove it and resend"
    )]
    Pii {
        /// Field name (`metadata` for anything inside metadata).
        field: &'static str,
        /// The detector's name, e.g. `payment_card`.
        detector: &'static str,
        /// What it found, e.g. `a payment card number`.
        what: &'static str,
    },
}

/// Size limits on submitted fields (configurable; defaults suit chat-sized answers).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FieldLimits {
    /// Maximum characters of question, answer, correction and comment.
    pub max_text_chars: usize,
    /// Maximum characters of identifier-like fields (user, session, model, adapter ids...).
    pub max_id_chars: usize,
    /// Maximum bytes of the metadata object as JSON text.
    pub max_metadata_bytes: usize,
}

impl Default for FieldLimits {
    fn default() -> Self {
        FieldLimits {
            max_text_chars: 32_768,
            max_id_chars: 256,
            max_metadata_bytes: 16 * 1024,
        }
    }
}

/// Thresholds of the quality rules that flag items for review.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QualityThresholds {
    /// Texts shorter than this (chars) are rejected (`text_too_short`), seed rule: 3.
    pub min_text_chars: usize,
    /// Questions and answers shorter than this are rejected, seed rule: 5.
    pub min_question_answer_chars: usize,
    /// A run of this many identical non-space characters rejects the item, seed rule: 10.
    pub max_repeated_run: usize,
    /// Below this share of letters among non-space characters a text is flagged.
    pub min_letter_ratio: f64,
    /// `min_letter_ratio` applies only to texts with at least this many non-space chars.
    pub letter_ratio_min_chars: usize,
    /// At or above this share of all-capital words a text is flagged as shouting.
    pub max_uppercase_ratio: f64,
    /// `max_uppercase_ratio` applies only to texts with at least this many words.
    pub shouting_min_words: usize,
}

impl Default for QualityThresholds {
    fn default() -> Self {
        QualityThresholds {
            min_text_chars: 3,
            min_question_answer_chars: 5,
            max_repeated_run: 10,
            min_letter_ratio: 0.25,
            letter_ratio_min_chars: 8,
            max_uppercase_ratio: 0.8,
            shouting_min_words: 4,
        }
    }
}

/// Largest accepted absolute `score` (ratings are small numbers; this keeps sums finite).
pub const MAX_SCORE: f64 = 1e9;

/// The default spam keywords (matched case-insensitively on word boundaries).
pub const DEFAULT_SPAM_KEYWORDS: &[&str] = &[
    "buy now",
    "click here",
    "free money",
    "viagra",
    "casino",
    "lottery winner",
    "crypto giveaway",
    "work from home",
    "limited time offer",
    "subscribe to my channel",
];

/// Validation settings: which plugin, its keyword list and thresholds, and field limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ValidationConfig {
    /// `basic` (default) or `noop`.
    pub plugin: String,
    /// Spam keywords or phrases for the basic plugin.
    pub spam_keywords: Vec<String>,
    /// Quality thresholds for the basic plugin.
    pub thresholds: QualityThresholds,
    /// Shape limits (apply whatever the plugin).
    pub limits: FieldLimits,
}

impl Default for ValidationConfig {
    fn default() -> Self {
        ValidationConfig {
            plugin: "basic".into(),
            spam_keywords: DEFAULT_SPAM_KEYWORDS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            thresholds: QualityThresholds::default(),
            limits: FieldLimits::default(),
        }
    }
}

/// A configuration that names no known plugin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown validation plugin '{0}' (expected basic or noop)")]
pub struct UnknownPlugin(pub String);

/// A submission whose shape is valid: required fields present, types and sizes in range.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidFeedback {
    /// Thumbs up or down.
    pub feedback_type: FeedbackType,
    /// Trimmed-nonempty question.
    pub question: String,
    /// Trimmed-nonempty answer.
    pub answer: String,
    /// Correction, `None` if absent or blank.
    pub correction: Option<String>,
    /// Comment, `None` if absent or blank.
    pub comment: Option<String>,
    /// End-user id.
    pub user_id: Option<String>,
    /// Interaction id.
    pub interaction_id: Option<String>,
    /// Session id.
    pub session_id: Option<String>,
    /// Model version.
    pub model_version: Option<String>,
    /// Adapter id.
    pub adapter_id: Option<String>,
    /// Adapter version.
    pub adapter_version: Option<String>,
    /// Finite rating.
    pub score: Option<f64>,
    /// Bounded JSON object.
    pub metadata: Metadata,
    /// The kind (thumbs when the submission named none).
    pub kind: FeedbackKind,
    /// The label of a `label` item.
    pub label: Option<String>,
    /// Model provider.
    pub provider: Option<String>,
    /// The score config the item was checked against.
    pub score_config: Option<String>,
}

impl ValidFeedback {
    /// The free-text fields that content rules look at, with their names.
    pub fn texts(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("question", Some(self.question.as_str())),
            ("answer", Some(self.answer.as_str())),
            ("correction", self.correction.as_deref()),
            ("comment", self.comment.as_deref()),
        ]
        .into_iter()
        .filter_map(|(n, t)| t.map(|t| (n, t)))
    }
}

/// A content check that decides an item's status. Implement this to add your own checks.
pub trait ValidationPlugin: Send + Sync + fmt::Debug {
    /// Short plugin name used in configuration.
    fn name(&self) -> &str;
    /// Every rule that fires on `item`; an empty list means approved.
    fn check(&self, item: &ValidFeedback) -> Vec<ValidationReason>;
}

/// Accepts everything: every item is approved.
#[derive(Debug, Default, Clone)]
pub struct NoopPlugin;

impl ValidationPlugin for NoopPlugin {
    fn name(&self) -> &str {
        "noop"
    }
    fn check(&self, _item: &ValidFeedback) -> Vec<ValidationReason> {
        Vec::new()
    }
}

/// The seed's rules plus our quality thresholds; see the module docs and README for each.
#[derive(Debug, Clone)]
pub struct BasicPlugin {
    keywords: Vec<String>,
    /// Every keyword in one automaton (ASCII case folded), so a text is scanned once rather
    /// than once per keyword. `None` only if it could not be built; then each keyword is
    /// searched on its own.
    finder: Option<aho_corasick::AhoCorasick>,
    t: QualityThresholds,
}

/// Every rule of the basic plugin, by name: spam and length rules reject, quality rules flag.
pub const BASIC_RULES: &[&str] = &[
    "text_too_short",
    "question_too_short",
    "answer_too_short",
    "repeated_characters",
    "spam_keyword",
    "negative_without_explanation",
    "correction_same_as_answer",
    "low_letter_ratio",
    "shouting",
];

impl BasicPlugin {
    /// A basic plugin with these keywords (matched case-insensitively) and thresholds.
    pub fn new(keywords: &[String], thresholds: QualityThresholds) -> Self {
        let keywords: Vec<String> = keywords
            .iter()
            .map(|k| k.trim().to_lowercase())
            .filter(|k| !k.is_empty())
            .collect();
        let finder = aho_corasick::AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .build(&keywords)
            .ok();
        BasicPlugin {
            keywords,
            finder,
            t: thresholds,
        }
    }

    /// The first keyword (in configured order) that `text` contains on word boundaries,
    /// ignoring case.
    fn spam_keyword(&self, text: &str) -> Option<&str> {
        if self.keywords.is_empty() {
            return None;
        }
        let lowered;
        // ASCII text can only hold ASCII keywords, and for those the automaton's ASCII
        // case folding is lower-casing: no copy needed.
        let hay = if text.is_ascii() {
            text
        } else {
            lowered = text.to_lowercase();
            lowered.as_str()
        };
        let Some(finder) = &self.finder else {
            // Without the automaton there is no case folding: search lower-cased text.
            let lower = text.to_lowercase();
            return self
                .keywords
                .iter()
                .find(|k| contains_word(&lower, k))
                .map(String::as_str);
        };
        let mut first: Option<usize> = None;
        for m in finder.find_overlapping_iter(hay) {
            let k = m.pattern().as_usize();
            if first.is_none_or(|f| k < f) && at_word_boundaries(hay, m.start(), m.end()) {
                first = Some(k);
            }
        }
        first.map(|k| self.keywords[k].as_str())
    }
}

fn reason(rule: &str, status: ValidationStatus, message: String) -> ValidationReason {
    ValidationReason {
        rule: rule.to_owned(),
        status,
        message,
    }
}

/// What the character rules of the basic plugin need from one text, in one pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TextStats {
    /// Length of the longest run of one repeated non-whitespace character, and that
    /// character.
    longest_run: (usize, char),
    /// Characters that are not whitespace.
    non_space: usize,
    /// Alphabetic characters.
    letters: usize,
    /// Words: maximal runs of two or more alphabetic characters. Counting words rather
    /// than letters keeps SQL keywords in a sentence fine.
    words: usize,
    /// Words without a lower-case letter.
    shouted_words: usize,
}

impl TextStats {
    fn of(text: &str) -> TextStats {
        let mut st = TextStats {
            longest_run: (0, ' '),
            non_space: 0,
            letters: 0,
            words: 0,
            shouted_words: 0,
        };
        let mut run = (0usize, '\0');
        // The word being read: its length in characters, and whether it has lower case.
        let mut word = (0usize, false);
        fn end_word(word: &mut (usize, bool), st: &mut TextStats) {
            if word.0 >= 2 {
                st.words += 1;
                if !word.1 {
                    st.shouted_words += 1;
                }
            }
            *word = (0, false);
        }
        for c in text.chars() {
            if c == run.1 {
                run.0 += 1;
            } else {
                run = (1, c);
            }
            if !c.is_whitespace() {
                st.non_space += 1;
                if run.0 > st.longest_run.0 {
                    st.longest_run = run;
                }
            }
            if c.is_alphabetic() {
                st.letters += 1;
                word.0 += 1;
                word.1 |= c.is_lowercase();
            } else {
                end_word(&mut word, &mut st);
            }
        }
        end_word(&mut word, &mut st);
        st
    }
}

/// Finds `needle` (already lower-case) in `haystack_lower` at word boundaries.
fn contains_word(haystack_lower: &str, needle: &str) -> bool {
    let mut start = 0;
    while let Some(pos) = haystack_lower[start..].find(needle) {
        let at = start + pos;
        let end = at + needle.len();
        if at_word_boundaries(haystack_lower, at, end) {
            return true;
        }
        // Step one character forward (not one byte: stay on a char boundary).
        start = at
            + haystack_lower[at..]
                .chars()
                .next()
                .map_or(1, char::len_utf8);
    }
    false
}

/// Whether `text[start..end]` neither follows nor precedes a letter or digit.
fn at_word_boundaries(text: &str, start: usize, end: usize) -> bool {
    let before = text.get(..start).and_then(|t| t.chars().next_back());
    let after = text.get(end..).and_then(|t| t.chars().next());
    before.is_none_or(|c| !c.is_alphanumeric()) && after.is_none_or(|c| !c.is_alphanumeric())
}

fn normalized(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

impl ValidationPlugin for BasicPlugin {
    fn name(&self) -> &str {
        "basic"
    }

    fn check(&self, item: &ValidFeedback) -> Vec<ValidationReason> {
        use ValidationStatus::{Flagged, Rejected};
        let t = &self.t;
        let mut out = Vec::new();

        for (field, text) in [
            ("correction", item.correction.as_deref()),
            ("comment", item.comment.as_deref()),
        ] {
            if let Some(text) = text {
                let n = text.trim().chars().count();
                if n < t.min_text_chars {
                    out.push(reason(
                        "text_too_short",
                        Rejected,
                        format!(
                            "{field} has {n} characters, at least {} required",
                            t.min_text_chars
                        ),
                    ));
                }
            }
        }
        for (rule, field, text) in [
            ("question_too_short", "question", &item.question),
            ("answer_too_short", "answer", &item.answer),
        ] {
            let n = text.trim().chars().count();
            if n < t.min_question_answer_chars {
                out.push(reason(
                    rule,
                    Rejected,
                    format!(
                        "{field} has {n} characters, at least {} required",
                        t.min_question_answer_chars
                    ),
                ));
            }
        }
        // One pass over each text gathers what the character rules below need.
        let stats: Vec<(&str, TextStats)> = item
            .texts()
            .map(|(field, text)| (field, TextStats::of(text)))
            .collect();
        for (field, st) in &stats {
            let (run, c) = st.longest_run;
            if run >= t.max_repeated_run {
                out.push(reason(
                    "repeated_characters",
                    Rejected,
                    format!(
                        "{field} repeats '{c}' {run} times in a row (limit {})",
                        t.max_repeated_run - 1
                    ),
                ));
                break;
            }
        }
        for (field, text) in item.texts() {
            if let Some(k) = self.spam_keyword(text) {
                out.push(reason(
                    "spam_keyword",
                    Rejected,
                    format!("{field} contains the spam keyword '{k}'"),
                ));
                break;
            }
        }
        // A low rating explains itself by its score; thumbs down (and a negative label)
        // say nothing about what was wrong.
        if item.feedback_type == FeedbackType::Negative
            && item.kind != FeedbackKind::Rating
            && item.correction.is_none()
            && item.comment.is_none()
        {
            out.push(reason(
                "negative_without_explanation",
                Flagged,
                "negative feedback has neither a correction nor a comment".into(),
            ));
        }
        if let Some(correction) = &item.correction
            && normalized(correction) == normalized(&item.answer)
        {
            out.push(reason(
                "correction_same_as_answer",
                Flagged,
                "the correction repeats the answer it corrects".into(),
            ));
        }
        for (field, st) in &stats {
            let non_space = st.non_space;
            if non_space < t.letter_ratio_min_chars {
                continue;
            }
            let ratio = st.letters as f64 / non_space as f64;
            if ratio < t.min_letter_ratio {
                out.push(reason(
                    "low_letter_ratio",
                    Flagged,
                    format!(
                        "{field} is {:.0}% letters, below the {:.0}% threshold",
                        ratio * 100.0,
                        t.min_letter_ratio * 100.0
                    ),
                ));
                break;
            }
        }
        for (field, st) in &stats {
            let (shouted, words) = (st.shouted_words, st.words);
            if words >= t.shouting_min_words
                && shouted as f64 >= t.max_uppercase_ratio * words as f64
            {
                out.push(reason(
                    "shouting",
                    Flagged,
                    format!("{field} has {shouted} of {words} words in capitals"),
                ));
                break;
            }
        }
        out
    }
}

/// Shape checks plus the configured plugin; owned by the service.
#[derive(Debug)]
pub struct Validator {
    limits: FieldLimits,
    plugin: Box<dyn ValidationPlugin>,
    pii: PiiScanner,
}

/// The decision on one item: status plus the rules behind it.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// The most severe status any rule asked for; approved if none fired.
    pub status: ValidationStatus,
    /// Every rule that fired.
    pub reasons: Vec<ValidationReason>,
    /// Where the PII detectors fired (empty from [`Validator::judge`] alone).
    pub pii: Vec<PiiFinding>,
}

impl Validator {
    /// Builds the validator named by `config.plugin`.
    pub fn from_config(config: &ValidationConfig) -> Result<Self, UnknownPlugin> {
        let plugin: Box<dyn ValidationPlugin> = match config.plugin.as_str() {
            "basic" => Box::new(BasicPlugin::new(
                &config.spam_keywords,
                config.thresholds.clone(),
            )),
            "noop" => Box::new(NoopPlugin),
            other => return Err(UnknownPlugin(other.to_owned())),
        };
        Ok(Self::with_plugin(config.limits.clone(), plugin))
    }

    /// A validator with a custom plugin (and the default PII detectors).
    pub fn with_plugin(limits: FieldLimits, plugin: Box<dyn ValidationPlugin>) -> Self {
        Validator {
            limits,
            plugin,
            pii: default_scanner(),
        }
    }

    /// The same validator with the PII detectors of `config`.
    pub fn with_pii(self, config: &PiiConfig) -> Result<Self, pii::PiiPatternError> {
        Ok(Validator {
            pii: PiiScanner::new(config)?,
            ..self
        })
    }

    /// The PII detectors in use.
    pub fn pii(&self) -> &PiiScanner {
        &self.pii
    }

    /// The whole pipeline for a submission: shape checks, then PII screening (redacting,
    /// flagging or refusing per `[pii]`), then the plugin's rules on the text as it will be
    /// stored. Limits are checked again after redaction (a placeholder can be a character
    /// longer than a very short address).
    pub fn validate(&self, new: NewFeedback) -> Result<(ValidFeedback, Verdict), ValidationError> {
        self.validate_with(new, None)
    }

    /// [`Validator::validate`] for a submission whose `score_config` the caller looked up:
    /// `config` is the org's config of that name (`None` when it has none, which makes a
    /// named config a 400).
    pub fn validate_with(
        &self,
        new: NewFeedback,
        config: Option<&ScoreConfig>,
    ) -> Result<(ValidFeedback, Verdict), ValidationError> {
        let mut valid = self.check_shape_with(new, config)?;
        let screening = self.pii.screen(&mut valid)?;
        if !screening.findings.is_empty() {
            let l = &self.limits;
            for (field, text) in [
                ("question", Some(&valid.question)),
                ("answer", Some(&valid.answer)),
                ("correction", valid.correction.as_ref()),
                ("comment", valid.comment.as_ref()),
            ] {
                if let Some(text) = text {
                    optional_text(field, Some(text.clone()), l)?;
                }
            }
            valid.metadata = check_metadata("metadata", Some(valid.metadata.0), l)?;
        }
        let mut verdict = self.judge(&valid);
        let flags = screening.reasons();
        if !flags.is_empty() {
            verdict.status = verdict.status.max(ValidationStatus::Flagged);
            verdict.reasons.extend(flags);
        }
        verdict.pii = screening.findings;
        Ok((valid, verdict))
    }

    /// The active plugin's name.
    pub fn plugin_name(&self) -> &str {
        self.plugin.name()
    }

    /// The configured field limits.
    pub fn limits(&self) -> &FieldLimits {
        &self.limits
    }

    /// Checks the shape of a submission; the first problem found is the error.
    pub fn check_shape(&self, new: NewFeedback) -> Result<ValidFeedback, ValidationError> {
        self.check_shape_with(new, None)
    }

    /// [`Validator::check_shape`] with the score config the submission names (see
    /// [`Validator::validate_with`]). The kind decides the required fields:
    /// `rating` needs `score`, `text` needs `comment`, `correction` needs `correction`,
    /// `label` needs `label` (and only `label` items may carry one).
    pub fn check_shape_with(
        &self,
        new: NewFeedback,
        config: Option<&ScoreConfig>,
    ) -> Result<ValidFeedback, ValidationError> {
        let l = &self.limits;
        let kind = match new.kind.as_deref().map(str::trim) {
            None | Some("") => FeedbackKind::Thumbs,
            Some(s) => s
                .parse::<FeedbackKind>()
                .map_err(|e| ValidationError::Invalid {
                    field: "kind",
                    reason: e.to_string(),
                })?,
        };
        let stated_type = match new.feedback_type.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(s) => Some(
                s.parse::<FeedbackType>()
                    .map_err(|e| ValidationError::Invalid {
                        field: "type",
                        reason: e.to_string(),
                    })?,
            ),
        };
        if stated_type.is_none() && matches!(kind, FeedbackKind::Thumbs | FeedbackKind::Text) {
            return Err(ValidationError::Missing {
                field: "type",
                hint: " (positive or negative)",
            });
        }
        let question = required_text("question", new.question, l)?;
        let answer = required_text("answer", new.answer, l)?;
        let correction = optional_text("correction", new.correction, l)?;
        let comment = optional_text("comment", new.comment, l)?;
        let user_id = check_id("user_id", new.user_id, l)?;
        let interaction_id = check_id("interaction_id", new.interaction_id, l)?;
        let session_id = check_id("session_id", new.session_id, l)?;
        let model_version = check_id("model_version", new.model_version, l)?;
        let adapter_id = match check_id("adapter_id", new.adapter_id, l)? {
            Some(id) => Some(check_adapter_id("adapter_id", id)?),
            None => None,
        };
        let adapter_version = check_id("adapter_version", new.adapter_version, l)?;
        if let Some(score) = new.score
            && !(score.is_finite() && score.abs() <= MAX_SCORE)
        {
            return Err(ValidationError::Invalid {
                field: "score",
                reason: format!("must be a number between -{MAX_SCORE} and {MAX_SCORE}"),
            });
        }
        let metadata = check_metadata("metadata", new.metadata, l)?;
        let provider = check_id("provider", new.provider, l)?;
        let label = match optional_text("label", new.label, l)? {
            Some(v) if v.chars().count() > l.max_id_chars => {
                return Err(ValidationError::TooLong {
                    field: "label",
                    actual: v.chars().count(),
                    limit: l.max_id_chars,
                    unit: "characters",
                });
            }
            v => v.map(|v| v.trim().to_owned()),
        };
        let score_config = check_id("score_config", new.score_config, l)?;
        let config = match (&score_config, config) {
            (None, _) => None,
            (Some(name), Some(c)) if c.name == *name => Some(c),
            (Some(name), _) => {
                return Err(ValidationError::Invalid {
                    field: "score_config",
                    reason: format!("this org has no score config named '{name}'"),
                });
            }
        };
        let need = |field: &'static str, present: bool| {
            if present {
                Ok(())
            } else {
                Err(ValidationError::Missing {
                    field,
                    hint: kind_hint(kind),
                })
            }
        };
        match kind {
            FeedbackKind::Thumbs => {}
            FeedbackKind::Rating => need("score", new.score.is_some())?,
            FeedbackKind::Text => need("comment", comment.is_some())?,
            FeedbackKind::Correction => need("correction", correction.is_some())?,
            FeedbackKind::Label => need("label", label.is_some())?,
        }
        if label.is_some() && kind != FeedbackKind::Label {
            return Err(ValidationError::Invalid {
                field: "label",
                reason: format!("only kind 'label' carries a label (this item is '{kind}')"),
            });
        }
        if let Some(c) = config {
            check_against_config(kind, new.score, label.as_deref(), c)?;
        }
        let feedback_type = match (stated_type, kind) {
            (Some(t), _) => t,
            (None, FeedbackKind::Thumbs | FeedbackKind::Text) => {
                return Err(ValidationError::Missing {
                    field: "type",
                    hint: " (positive or negative)",
                });
            }
            (None, FeedbackKind::Rating) => match (config, new.score) {
                (Some(c), Some(score)) => c.polarity(score),
                _ => None,
            }
            .ok_or(ValidationError::Missing {
                field: "type",
                hint: " (positive or negative; a rating may leave it out only when its \
                           score_config has a threshold)",
            })?,
            (None, FeedbackKind::Correction) => FeedbackType::Negative,
            (None, FeedbackKind::Label) => FeedbackType::Positive,
        };
        Ok(ValidFeedback {
            kind,
            label,
            provider,
            score_config,
            feedback_type,
            question,
            answer,
            correction,
            comment,
            user_id,
            interaction_id,
            session_id,
            model_version,
            adapter_id,
            adapter_version,
            score: new.score,
            metadata,
        })
    }

    /// Runs the plugin and folds its reasons into a verdict.
    pub fn judge(&self, item: &ValidFeedback) -> Verdict {
        let reasons = self.plugin.check(item);
        let status = reasons
            .iter()
            .map(|r| r.status)
            .max()
            .unwrap_or(ValidationStatus::Approved);
        Verdict {
            status,
            reasons,
            pii: Vec::new(),
        }
    }
}

/// What a kind requires, for the 400 naming a missing field.
fn kind_hint(kind: FeedbackKind) -> &'static str {
    match kind {
        FeedbackKind::Thumbs => "",
        FeedbackKind::Rating => " (kind 'rating' needs a numeric score)",
        FeedbackKind::Text => " (kind 'text' needs the text in comment)",
        FeedbackKind::Correction => " (kind 'correction' needs the corrected output in correction)",
        FeedbackKind::Label => " (kind 'label' needs the label)",
    }
}

/// Checks a rating's score or a label against the score config it names.
fn check_against_config(
    kind: FeedbackKind,
    score: Option<f64>,
    label: Option<&str>,
    c: &ScoreConfig,
) -> Result<(), ValidationError> {
    let wrong_kind = |expected: &str| ValidationError::Invalid {
        field: "score_config",
        reason: format!(
            "'{}' is a {} config, for kind '{expected}' items (this item is '{kind}')",
            c.name,
            c.data_type.as_str()
        ),
    };
    match c.data_type {
        ScoreDataType::Numeric | ScoreDataType::Boolean => {
            if kind != FeedbackKind::Rating {
                return Err(wrong_kind("rating"));
            }
            let Some(score) = score else { return Ok(()) };
            if c.data_type == ScoreDataType::Boolean {
                if score != 0.0 && score != 1.0 {
                    return Err(ValidationError::Invalid {
                        field: "score",
                        reason: format!(
                            "'{}' is boolean: score must be 0 (false) or 1 (true), got {score}",
                            c.name
                        ),
                    });
                }
                return Ok(());
            }
            let (lo, hi) = (c.min.unwrap_or(f64::MIN), c.max.unwrap_or(f64::MAX));
            if score < lo || score > hi {
                return Err(ValidationError::Invalid {
                    field: "score",
                    reason: format!(
                        "{score} is outside the range of '{}' ({} to {})",
                        c.name,
                        c.min.map_or("any".into(), |v| v.to_string()),
                        c.max.map_or("any".into(), |v| v.to_string()),
                    ),
                });
            }
            Ok(())
        }
        ScoreDataType::Categorical => {
            if kind != FeedbackKind::Label {
                return Err(wrong_kind("label"));
            }
            match label {
                Some(l) if !c.categories.iter().any(|x| x == l) => Err(ValidationError::Invalid {
                    field: "label",
                    reason: format!(
                        "'{l}' is not a category of '{}' (allowed: {})",
                        c.name,
                        c.categories.join(", ")
                    ),
                }),
                _ => Ok(()),
            }
        }
    }
}

/// The scanner of the default `[pii]` settings. Its patterns are constants that the unit
/// tests compile; should one ever fail, screening is off rather than the process down.
fn default_scanner() -> PiiScanner {
    PiiScanner::new(&PiiConfig::default()).unwrap_or_else(|e| {
        tracing::error!("{e}; PII screening is off");
        PiiScanner::disabled()
    })
}

fn required_text(
    field: &'static str,
    value: Option<String>,
    l: &FieldLimits,
) -> Result<String, ValidationError> {
    match optional_text(field, value, l)? {
        Some(v) => Ok(v),
        None => Err(ValidationError::Missing { field, hint: "" }),
    }
}

fn optional_text(
    field: &'static str,
    value: Option<String>,
    l: &FieldLimits,
) -> Result<Option<String>, ValidationError> {
    let Some(v) = value else { return Ok(None) };
    if v.trim().is_empty() {
        return Ok(None);
    }
    let n = v.chars().count();
    if n > l.max_text_chars {
        return Err(ValidationError::TooLong {
            field,
            actual: n,
            limit: l.max_text_chars,
            unit: "characters",
        });
    }
    if v.contains('\0') {
        return Err(ValidationError::Invalid {
            field,
            reason: "contains a NUL character".into(),
        });
    }
    Ok(Some(v))
}

/// The characters an id may hold besides ASCII letters and digits. Ids are keys, appear in
/// URLs and are compared by eye: ASCII only, so there are no invisible (zero-width, bidi
/// control) or look-alike (full-width, Cyrillic) characters, no whitespace, no backslash.
pub const ID_PUNCTUATION: &str = "-_.:@/+";

/// Checks an identifier-like field: bounded, in the id alphabet; blank means absent.
pub fn check_id(
    field: &'static str,
    value: Option<String>,
    l: &FieldLimits,
) -> Result<Option<String>, ValidationError> {
    let Some(v) = value else { return Ok(None) };
    let v = v.trim().to_owned();
    if v.is_empty() {
        return Ok(None);
    }
    check_id_text(field, &v, l)?;
    Ok(Some(v))
}

/// Checks an id that is already trimmed and non-empty: its length in characters and the id
/// alphabet (ASCII letters, digits and [`ID_PUNCTUATION`]; not `.` or `..` as a whole).
/// Allocates nothing unless it fails (bulk loads call it per line).
pub fn check_id_text(field: &'static str, v: &str, l: &FieldLimits) -> Result<(), ValidationError> {
    let n = v.chars().count();
    if n > l.max_id_chars {
        return Err(ValidationError::TooLong {
            field,
            actual: n,
            limit: l.max_id_chars,
            unit: "characters",
        });
    }
    check_id_alphabet(field, v)
}

/// The id alphabet on its own (see [`ID_PUNCTUATION`]). The offending character is named
/// by its code point, never echoed raw unless it is visible ASCII.
pub fn check_id_alphabet(field: &'static str, v: &str) -> Result<(), ValidationError> {
    if v == "." || v == ".." {
        return Err(ValidationError::Invalid {
            field,
            reason: "'.' and '..' are not valid ids".into(),
        });
    }
    match v
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || ID_PUNCTUATION.contains(*c)))
    {
        None => Ok(()),
        Some(c) => Err(ValidationError::Invalid {
            field,
            reason: format!(
                "contains {}; ids may use ASCII letters, digits and {ID_PUNCTUATION}",
                describe_char(c)
            ),
        }),
    }
}

/// `U+XXXX`, with the character itself only when it is visible ASCII.
fn describe_char(c: char) -> String {
    let code = format!("U+{:04X}", u32::from(c));
    match c {
        ' ' => format!("{code} (space)"),
        c if c.is_ascii_graphic() => format!("'{c}' ({code})"),
        c if c.is_control() => format!("{code} (a control character)"),
        _ => code,
    }
}

/// Adapter ids appear in URL paths and Cypher literals: the id alphabet without '/'.
pub fn check_adapter_id(field: &'static str, id: String) -> Result<String, ValidationError> {
    check_id_alphabet(field, &id)?;
    if id.contains('/') {
        return Err(ValidationError::Invalid {
            field,
            reason: format!("'{id}' contains '/', which adapter ids may not hold"),
        });
    }
    Ok(id)
}

/// Checks a metadata object against the byte limit.
pub fn check_metadata(
    field: &'static str,
    value: Option<serde_json::Map<String, serde_json::Value>>,
    l: &FieldLimits,
) -> Result<Metadata, ValidationError> {
    let m = Metadata(value.unwrap_or_default());
    let n = m.encoded_len();
    if n > l.max_metadata_bytes {
        return Err(ValidationError::TooLong {
            field,
            actual: n,
            limit: l.max_metadata_bytes,
            unit: "bytes",
        });
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ValidationStatus::*;

    fn validator() -> Validator {
        Validator::from_config(&ValidationConfig::default()).unwrap()
    }

    fn item(t: &str, q: &str, a: &str) -> NewFeedback {
        NewFeedback {
            feedback_type: Some(t.into()),
            question: Some(q.into()),
            answer: Some(a.into()),
            ..Default::default()
        }
    }

    fn judge(new: NewFeedback) -> Verdict {
        let v = validator();
        let valid = v.check_shape(new).unwrap();
        v.judge(&valid)
    }

    fn rules(v: &Verdict) -> Vec<&str> {
        v.reasons.iter().map(|r| r.rule.as_str()).collect()
    }

    const Q: &str = "How do I enable sharding?";
    const A: &str = "Use the SHARD BY clause when you create the collection.";

    #[test]
    fn a_clean_positive_item_is_approved() {
        let v = judge(item("positive", Q, A));
        assert_eq!(v.status, Approved);
        assert!(v.reasons.is_empty());
    }

    #[test]
    fn question_and_answer_boundary_is_five_chars() {
        assert_eq!(
            rules(&judge(item("positive", "abcd", A))),
            ["question_too_short"]
        );
        assert_eq!(judge(item("positive", "abcd", A)).status, Rejected);
        assert_eq!(judge(item("positive", "abcde", A)).status, Approved);
        assert_eq!(
            rules(&judge(item("positive", Q, "wxyz"))),
            ["answer_too_short"]
        );
        assert_eq!(judge(item("positive", Q, "vwxyz")).status, Approved);
    }

    #[test]
    fn lengths_count_characters_not_bytes() {
        // Four CJK characters are 12 bytes but only 4 characters: too short.
        assert_eq!(judge(item("positive", "分片怎么", A)).status, Rejected);
        assert_eq!(judge(item("positive", "分片怎么用", A)).status, Approved);
        // Surrounding whitespace does not count.
        assert_eq!(judge(item("positive", "  abcd  ", A)).status, Rejected);
    }

    #[test]
    fn short_text_boundary_is_three_chars() {
        let mut n = item("negative", Q, A);
        n.comment = Some("no".into());
        let v = judge(n.clone());
        assert_eq!(v.status, Rejected);
        assert!(rules(&v).contains(&"text_too_short"));
        n.comment = Some("bad".into());
        assert_eq!(judge(n.clone()).status, Approved);
        n.comment = Some("é!".into());
        assert_eq!(judge(n.clone()).status, Rejected);
        n.comment = Some("ééé".into());
        assert_eq!(judge(n).status, Approved);
    }

    #[test]
    fn repetition_boundary_is_ten() {
        let nine = format!("Answer {}", "a".repeat(9));
        let ten = format!("Answer {}", "a".repeat(10));
        assert_eq!(judge(item("positive", Q, &nine)).status, Approved);
        let v = judge(item("positive", Q, &ten));
        assert_eq!(v.status, Rejected);
        assert_eq!(rules(&v), ["repeated_characters"]);
        // Unicode: ten of one emoji in a row.
        let emoji = format!("Nice {}", "🎉".repeat(10));
        assert_eq!(judge(item("positive", Q, &emoji)).status, Rejected);
        let emoji9 = format!("Nice {}", "🎉".repeat(9));
        assert_eq!(judge(item("positive", Q, &emoji9)).status, Approved);
        // Whitespace runs (indentation in code) do not count.
        let indented = format!("fn main() {{\n{}println!(\"hi\");\n}}", " ".repeat(16));
        assert_eq!(judge(item("positive", Q, &indented)).status, Approved);
    }

    #[test]
    fn spam_keywords_are_case_insensitive_on_word_boundaries() {
        let v = judge(item("positive", Q, "Great answer, CLICK HERE for more"));
        assert_eq!(v.status, Rejected);
        assert_eq!(rules(&v), ["spam_keyword"]);
        // "casinos" is not the word "casino"; "occasion" does not contain a keyword word.
        assert_eq!(
            judge(item("positive", Q, "On occasion casinos appear")).status,
            Approved
        );
        let custom = Validator::from_config(&ValidationConfig {
            spam_keywords: vec!["Wombat".into()],
            ..Default::default()
        })
        .unwrap();
        let valid = custom
            .check_shape(item("positive", Q, "I like wombat facts"))
            .unwrap();
        assert_eq!(custom.judge(&valid).status, Rejected);
        let valid = custom
            .check_shape(item("positive", Q, "click here"))
            .unwrap();
        assert_eq!(custom.judge(&valid).status, Approved);
    }

    #[test]
    fn negative_needs_correction_or_comment() {
        let v = judge(item("negative", Q, A));
        assert_eq!(v.status, Flagged);
        assert_eq!(rules(&v), ["negative_without_explanation"]);
        let mut n = item("negative", Q, A);
        n.correction = Some("Use CREATE COLLECTION ... SHARD BY key.".into());
        assert_eq!(judge(n).status, Approved);
        let mut n = item("negative", Q, A);
        n.comment = Some("Outdated syntax".into());
        assert_eq!(judge(n).status, Approved);
        // Blank strings count as absent.
        let mut n = item("negative", Q, A);
        n.comment = Some("   ".into());
        assert_eq!(judge(n).status, Flagged);
    }

    #[test]
    fn quality_rules_flag() {
        let mut n = item("negative", Q, A);
        n.correction = Some(format!("  {}  ", A.to_uppercase()));
        let v = judge(n);
        assert_eq!(v.status, Flagged);
        assert!(rules(&v).contains(&"correction_same_as_answer"), "{v:?}");

        let v = judge(item("positive", Q, "1234 5678 90 = 42 + 17"));
        assert_eq!(rules(&v), ["low_letter_ratio"]);
        assert_eq!(v.status, Flagged);

        let v = judge(item("positive", "WHY IS THIS SO SLOW TODAY", A));
        assert_eq!(rules(&v), ["shouting"]);
        // Acronyms and SQL keywords inside a sentence are fine; short texts are not judged.
        assert_eq!(judge(item("positive", "What is SQL?", A)).status, Approved);
        assert_eq!(
            judge(item("positive", "Use CREATE INDEX ON users", A)).status,
            Approved
        );
        assert_eq!(judge(item("positive", "WHY NOT?", A)).status, Approved);
    }

    #[test]
    fn most_severe_rule_decides() {
        // Negative without explanation (flagged) and spam (rejected): rejected wins.
        let v = judge(item("negative", Q, "buy now and save"));
        assert_eq!(v.status, Rejected);
        assert!(rules(&v).contains(&"negative_without_explanation"));
        assert!(rules(&v).contains(&"spam_keyword"));
    }

    #[test]
    fn noop_plugin_approves_everything() {
        let v = Validator::from_config(&ValidationConfig {
            plugin: "noop".into(),
            ..Default::default()
        })
        .unwrap();
        let valid = v.check_shape(item("negative", "ab", "cd")).unwrap();
        assert_eq!(v.judge(&valid).status, Approved);
        assert_eq!(v.plugin_name(), "noop");
        assert!(
            Validator::from_config(&ValidationConfig {
                plugin: "ml".into(),
                ..Default::default()
            })
            .is_err()
        );
    }

    #[test]
    fn shape_errors_name_the_field() {
        let v = validator();
        let err = v.check_shape(NewFeedback::default()).unwrap_err();
        assert!(err.to_string().contains("'type'"), "{err}");
        let err = v.check_shape(item("meh", Q, A)).unwrap_err();
        assert!(err.to_string().contains("meh"), "{err}");
        let mut n = item("positive", Q, A);
        n.question = None;
        assert!(
            v.check_shape(n)
                .unwrap_err()
                .to_string()
                .contains("question")
        );
        let n = item("positive", Q, &"x".repeat(32_769));
        assert!(matches!(
            v.check_shape(n).unwrap_err(),
            ValidationError::TooLong {
                field: "answer",
                ..
            }
        ));
        let mut n = item("positive", Q, A);
        n.score = Some(f64::NAN);
        assert!(v.check_shape(n).is_err());
        let mut n = item("positive", Q, A);
        n.adapter_id = Some("a/b".into());
        assert!(v.check_shape(n).is_err());
        let mut n = item("positive", Q, A);
        n.user_id = Some("bad\nid".into());
        assert!(v.check_shape(n).is_err());
    }
    #[test]
    fn the_id_alphabet_table() {
        let l = FieldLimits::default();
        // (id, accepted as an id, accepted as an adapter id, text the refusal must hold)
        let cases: &[(&str, bool, bool, &str)] = &[
            ("lora_v2", true, true, ""),
            ("gpt-4o-2024-08-06", true, true, ""),
            ("1.2.0", true, true, ""),
            ("alice@example.com", true, true, ""),
            ("org:team+ops", true, true, ""),
            ("models/base", true, false, "'/'"),
            ("...", true, true, ""),
            (".", false, false, "'.' and '..'"),
            ("..", false, false, "'.' and '..'"),
            ("a\\b", false, false, "'\\' (U+005C)"),
            ("a b", false, false, "U+0020 (space)"),
            ("a\tb", false, false, "U+0009"),
            ("lora\u{200B}v2", false, false, "U+200B"),
            ("lora\u{202E}2v", false, false, "U+202E"),
            ("\u{FEFF}lora", false, false, "U+FEFF"),
            ("ｌｏｒａ", false, false, "U+FF4C"),
            ("lorа", false, false, "U+0430"),
            ("caf\u{E9}", false, false, "U+00E9"),
            ("a\u{0}b", false, false, "U+0000"),
        ];
        for &(id, as_id, as_adapter, text) in cases {
            let r = check_id_text("user_id", id, &l);
            assert_eq!(r.is_ok(), as_id, "{id:?} as an id: {r:?}");
            let a = check_adapter_id("adapter_id", id.to_owned());
            assert_eq!(a.is_ok(), as_adapter, "{id:?} as an adapter id: {a:?}");
            if let Err(e) = r.map(|_| ()).and(a.map(|_| ())) {
                let msg = e.to_string();
                assert!(msg.contains(text), "{id:?}: {msg}");
                assert!(msg.contains("_id'"), "{id:?}: no field in {msg}");
                // Nothing invisible or look-alike is echoed back.
                assert!(msg.is_ascii(), "{id:?}: {msg}");
                assert!(!msg.chars().any(|c| c.is_control()), "{id:?}: {msg}");
            }
        }
    }

    /// The reference: each keyword searched on its own in the lower-cased text, in order.
    fn naive_spam_keyword<'a>(keywords: &'a [String], text: &str) -> Option<&'a str> {
        let lower = text.to_lowercase();
        keywords
            .iter()
            .find(|k| contains_word(&lower, k))
            .map(String::as_str)
    }

    proptest::proptest! {
        /// The one-pass automaton finds the same keyword as searching each keyword alone,
        /// on texts built from keyword pieces, case changes, non-ASCII letters and
        /// boundaries.
        #[test]
        fn spam_keywords_match_the_one_by_one_search(
            pieces in proptest::collection::vec(
                proptest::sample::select(vec![
                    "buy", "BUY", "now", "Now", " ", "-", "x", "\u{e9}", "\u{c9}", "casino",
                    "CASINO", "9", "lottery", "winner", "K", "\u{212a}", "aa", "\u{130}",
                    "work from home", "Viagra", ".", "_",
                ]),
                0..12,
            ),
            extra in proptest::sample::select(vec!["", "aa", "\u{e9}t\u{e9}", "k", "Win"]),
        ) {
            let text: String = pieces.concat();
            let mut keywords: Vec<String> =
                DEFAULT_SPAM_KEYWORDS.iter().map(|k| (*k).to_owned()).collect();
            keywords.push(extra.to_owned());
            let plugin = BasicPlugin::new(&keywords, QualityThresholds::default());
            let configured: Vec<String> = keywords
                .iter()
                .map(|k| k.trim().to_lowercase())
                .filter(|k| !k.is_empty())
                .collect();
            proptest::prop_assert_eq!(
                plugin.spam_keyword(&text),
                naive_spam_keyword(&configured, &text)
            );
        }
    }
    /// The character rules' inputs computed one rule at a time, as the plugin once did.
    fn stats_one_by_one(text: &str) -> TextStats {
        let mut best = (0, ' ');
        let mut current = (0usize, '\0');
        for c in text.chars() {
            current = if c == current.1 {
                (current.0 + 1, c)
            } else {
                (1, c)
            };
            if !c.is_whitespace() && current.0 > best.0 {
                best = current;
            }
        }
        let words: Vec<&str> = text
            .split(|c: char| !c.is_alphabetic())
            .filter(|w| w.chars().count() >= 2)
            .collect();
        TextStats {
            longest_run: best,
            non_space: text.chars().filter(|c| !c.is_whitespace()).count(),
            letters: text.chars().filter(|c| c.is_alphabetic()).count(),
            words: words.len(),
            shouted_words: words
                .iter()
                .filter(|w| !w.chars().any(char::is_lowercase))
                .count(),
        }
    }

    proptest::proptest! {
        /// The one-pass statistics equal the rule-by-rule ones.
        #[test]
        fn text_stats_match_the_rule_by_rule_count(
            pieces in proptest::collection::vec(
                proptest::sample::select(vec![
                    "a", "A", "aaa", "AAA", " ", "  ", "\t", "!", "!!!", "9", "\u{e9}",
                    "\u{c9}", "\u{3b1}", "\u{391}", "\u{4e2d}", "\u{2003}", "SQL", "x",
                ]),
                0..20,
            ),
        ) {
            let text: String = pieces.concat();
            proptest::prop_assert_eq!(TextStats::of(&text), stats_one_by_one(&text));
        }
    }
}
