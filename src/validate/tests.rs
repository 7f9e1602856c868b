//! Unit tests of the validation pipeline: shape checks, content rules, kinds and the
//! text statistics behind the quality thresholds.

use super::rules::{TextStats, contains_word};
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
