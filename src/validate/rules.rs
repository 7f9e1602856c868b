//! The built-in content rules: [`NoopPlugin`] (approve everything) and [`BasicPlugin`] (the
//! seed's rules plus the quality thresholds), and the one-pass text statistics they read.

use super::{QualityThresholds, ValidFeedback, ValidationPlugin};
use crate::model::{FeedbackKind, FeedbackType, ValidationReason, ValidationStatus};

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
    pub(super) fn spam_keyword(&self, text: &str) -> Option<&str> {
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
pub(super) struct TextStats {
    /// Length of the longest run of one repeated non-whitespace character, and that
    /// character.
    pub(super) longest_run: (usize, char),
    /// Characters that are not whitespace.
    pub(super) non_space: usize,
    /// Alphabetic characters.
    pub(super) letters: usize,
    /// Words: maximal runs of two or more alphabetic characters. Counting words rather
    /// than letters keeps SQL keywords in a sentence fine.
    pub(super) words: usize,
    /// Words without a lower-case letter.
    pub(super) shouted_words: usize,
}

impl TextStats {
    pub(super) fn of(text: &str) -> TextStats {
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
pub(super) fn contains_word(haystack_lower: &str, needle: &str) -> bool {
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
