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

mod fields;
pub mod pii;
mod rules;
#[cfg(test)]
mod tests;

pub use fields::{
    ID_PUNCTUATION, check_adapter_id, check_id, check_id_alphabet, check_id_text, check_metadata,
};
use fields::{optional_text, required_text};
pub use pii::{PiiConfig, PiiMode, PiiScanner};
pub use rules::{BASIC_RULES, BasicPlugin, NoopPlugin};

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
