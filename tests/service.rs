//! Service-level tests: every operation and every filter, against a real store in a
//! temporary directory.

mod common;

use std::collections::{BTreeSet, HashMap};

use common::{actor, item, load_fixtures, open};
use feedgraph::model::{ChangeAction, FeedbackType, LinkSource, NewFeedback, ValidationStatus};
use feedgraph::service::{ByAdapterQuery, ListQuery, NewAdapter, ServiceError, StatsQuery};
use feedgraph::store::AdapterOutcome;

const Q: &str = "How do I enable sharding in ThemisDB?";
const A: &str = "Use the SHARD BY clause in CREATE COLLECTION.";

fn all(
    service: &feedgraph::service::Service,
    org: &str,
    q: ListQuery,
) -> Vec<feedgraph::model::Feedback> {
    let mut out = Vec::new();
    let mut q = ListQuery {
        limit: Some(7),
        ..q
    };
    loop {
        let page = service.list(org, &q).unwrap();
        out.extend(page.items);
        match page.next_cursor {
            Some(c) => q.cursor = Some(c),
            None => return out,
        }
    }
}

#[test]
fn submit_get_and_history() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let mut new = item(Q, A);
    new.user_id = Some("user123".into());
    new.model_version = Some("llama-2-7b".into());
    new.score = Some(4.5);
    let fb = s.submit(&actor("acme"), new).unwrap();
    assert!(fb.id.starts_with("feedback-"));
    assert_eq!(fb.validation_status, ValidationStatus::Approved);
    assert_eq!(fb.version, 1);
    assert_eq!(fb.training_batch_id, 0);
    assert!(!fb.used_for_training);
    assert_eq!(s.get("acme", &fb.id).unwrap(), fb);

    let history = s.history("acme", &fb.id).unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].action, ChangeAction::Submit);
    assert_eq!(history[0].actor, "tester");
    assert!(history[0].changes.iter().any(|c| c.field == "question"));
    assert!(matches!(
        s.get("acme", "feedback-nope"),
        Err(ServiceError::NotFound { .. })
    ));
}

#[test]
fn invalid_submissions_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let bad = [
        NewFeedback::default(),
        NewFeedback {
            feedback_type: Some("meh".into()),
            ..item(Q, A)
        },
        NewFeedback {
            answer: None,
            ..item(Q, A)
        },
        NewFeedback {
            adapter_id: Some("a b".into()),
            ..item(Q, A)
        },
    ];
    for new in bad {
        assert!(matches!(
            s.submit(&actor("acme"), new),
            Err(ServiceError::Invalid(_))
        ));
    }
    assert!(matches!(
        s.submit(&actor(""), item(Q, A)),
        Err(ServiceError::BadRequest(_))
    ));
    assert!(
        s.list("acme", &ListQuery::default())
            .unwrap()
            .items
            .is_empty()
    );
    assert_eq!(
        s.stats("acme", &StatsQuery::default())
            .unwrap()
            .total_feedback,
        0
    );
}

#[test]
fn rejected_and_flagged_items_are_stored_with_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let fb = s.submit(&actor("acme"), item("Why?", A)).unwrap();
    assert_eq!(fb.validation_status, ValidationStatus::Rejected);
    assert_eq!(fb.validation_reasons[0].rule, "question_too_short");
    let neg = NewFeedback {
        feedback_type: Some("negative".into()),
        ..item(Q, A)
    };
    let fb = s.submit(&actor("acme"), neg).unwrap();
    assert_eq!(fb.validation_status, ValidationStatus::Flagged);
    assert_eq!(
        s.get("acme", &fb.id).unwrap().validation_reasons,
        fb.validation_reasons
    );
}

#[test]
fn adapter_named_on_submit_is_created_and_linked() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let fb = s
        .submit(
            &actor("acme"),
            NewFeedback {
                adapter_id: Some("themis_help_lora".into()),
                adapter_version: Some("v1.0".into()),
                ..item(Q, A)
            },
        )
        .unwrap();
    let adapter = s.get_adapter("acme", "themis_help_lora").unwrap();
    assert_eq!(adapter.source, LinkSource::Auto);
    let links = s.links_of("acme", &fb.id).unwrap();
    assert_eq!(links.len(), 1);
    assert_eq!(links[0].source, LinkSource::Auto);
    let by = s
        .by_adapter("acme", "themis_help_lora", &ByAdapterQuery::default())
        .unwrap();
    assert_eq!(by.total_linked, 1);
    assert_eq!(by.count, 1);
    assert_eq!(by.feedback[0].id, fb.id);
}

#[test]
fn list_is_newest_first_and_pages_without_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let mut ids = Vec::new();
    for i in 0..30 {
        ids.push(
            s.submit(&actor("acme"), item(&format!("{Q} #{i}"), A))
                .unwrap()
                .id,
        );
    }
    ids.reverse();
    let page = s
        .list(
            "acme",
            &ListQuery {
                limit: Some(10),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(page.items.len(), 10);
    assert_eq!(page.limit, 10);
    assert_eq!(
        page.items.iter().map(|f| f.id.clone()).collect::<Vec<_>>(),
        ids[..10]
    );
    let everything: Vec<String> = all(&s, "acme", ListQuery::default())
        .into_iter()
        .map(|f| f.id)
        .collect();
    assert_eq!(everything, ids);
    assert_eq!(s.list("acme", &ListQuery::default()).unwrap().limit, 100);
    for bad in [0, 1001] {
        assert!(matches!(
            s.list(
                "acme",
                &ListQuery {
                    limit: Some(bad),
                    ..Default::default()
                }
            ),
            Err(ServiceError::BadRequest(_))
        ));
    }
}

#[test]
fn list_filters_match_a_scan_of_every_record() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    load_fixtures(&s);
    let everything = all(&s, "acme", ListQuery::default());
    assert_eq!(everything.len(), 150);
    let links: HashMap<String, BTreeSet<String>> = everything
        .iter()
        .map(|f| {
            let to = s
                .links_of("acme", &f.id)
                .unwrap()
                .into_iter()
                .map(|l| l.adapter_id)
                .collect();
            (f.id.clone(), to)
        })
        .collect();

    type Pred = Box<dyn Fn(&feedgraph::model::Feedback) -> bool>;
    let cases: Vec<(ListQuery, Pred)> = vec![
        (
            ListQuery {
                feedback_type: Some(FeedbackType::Negative),
                ..Default::default()
            },
            Box::new(|f| f.feedback_type == FeedbackType::Negative),
        ),
        (
            ListQuery {
                status: Some(ValidationStatus::Flagged),
                ..Default::default()
            },
            Box::new(|f| f.validation_status == ValidationStatus::Flagged),
        ),
        (
            ListQuery {
                status: Some(ValidationStatus::Rejected),
                ..Default::default()
            },
            Box::new(|f| f.validation_status == ValidationStatus::Rejected),
        ),
        (
            ListQuery {
                unused: true,
                status: Some(ValidationStatus::Approved),
                ..Default::default()
            },
            Box::new(|f| !f.used_for_training && f.validation_status == ValidationStatus::Approved),
        ),
        (
            ListQuery {
                model: Some("mistral-7b".into()),
                ..Default::default()
            },
            Box::new(|f| f.model_version.as_deref() == Some("mistral-7b")),
        ),
        (
            ListQuery {
                session: Some("acme-session-03".into()),
                ..Default::default()
            },
            Box::new(|f| f.session_id.as_deref() == Some("acme-session-03")),
        ),
        (
            ListQuery {
                adapter: Some("themis_help_lora_v3".into()),
                feedback_type: Some(FeedbackType::Positive),
                ..Default::default()
            },
            {
                let links = links.clone();
                Box::new(move |f| {
                    links[&f.id].contains("themis_help_lora_v3")
                        && f.feedback_type == FeedbackType::Positive
                })
            },
        ),
        (
            ListQuery {
                model: Some("no-such-model".into()),
                ..Default::default()
            },
            Box::new(|_| false),
        ),
    ];
    for (q, pred) in cases {
        let got: Vec<String> = all(&s, "acme", q.clone())
            .into_iter()
            .map(|f| f.id)
            .collect();
        let want: Vec<String> = everything
            .iter()
            .filter(|f| pred(f))
            .map(|f| f.id.clone())
            .collect();
        assert_eq!(got, want, "filter {q:?}");
        if !matches!(q.model.as_deref(), Some("no-such-model")) {
            assert!(!want.is_empty(), "fixtures should exercise {q:?}");
        }
    }
}

#[test]
fn stats_count_like_a_scan() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    load_fixtures(&s);
    let everything = all(&s, "acme", ListQuery::default());
    let st = s.stats("acme", &StatsQuery::default()).unwrap();
    let count = |p: &dyn Fn(&feedgraph::model::Feedback) -> bool| {
        everything.iter().filter(|f| p(f)).count() as u64
    };
    assert_eq!(st.total_feedback, 150);
    assert_eq!(
        st.positive_count,
        count(&|f| f.feedback_type == FeedbackType::Positive)
    );
    assert_eq!(
        st.negative_count,
        count(&|f| f.feedback_type == FeedbackType::Negative)
    );
    assert_eq!(
        st.approved_count,
        count(&|f| f.validation_status == ValidationStatus::Approved)
    );
    assert_eq!(
        st.rejected_count,
        count(&|f| f.validation_status == ValidationStatus::Rejected)
    );
    assert_eq!(
        st.flagged_count,
        count(&|f| f.validation_status == ValidationStatus::Flagged)
    );
    assert_eq!(st.pending_validation, 0);
    assert_eq!(st.unused_for_training, 150);
    assert_eq!(st.used_for_training, 0);
    assert!((st.positive_ratio - st.positive_count as f64 / 150.0).abs() < 1e-12);
    let scores: Vec<f64> = everything.iter().filter_map(|f| f.score).collect();
    let mean = scores.iter().sum::<f64>() / scores.len() as f64;
    assert!((st.average_score.unwrap() - mean).abs() < 1e-9);

    let by_model = s
        .stats(
            "acme",
            &StatsQuery {
                model: Some("mistral-7b".into()),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        by_model.total_feedback,
        count(&|f| f.model_version.as_deref() == Some("mistral-7b"))
    );

    let by_adapter = s
        .stats(
            "acme",
            &StatsQuery {
                adapter: Some("sql_lora".into()),
                ..Default::default()
            },
        )
        .unwrap();
    let linked = everything
        .iter()
        .filter(|f| {
            s.links_of("acme", &f.id)
                .unwrap()
                .iter()
                .any(|l| l.adapter_id == "sql_lora")
        })
        .count() as u64;
    assert_eq!(by_adapter.total_feedback, linked);
    assert!(linked > 0);

    // Fixtures are from 2026-09/10; a fresh item is the only one in the last hour.
    s.submit(&actor("acme"), item(Q, A)).unwrap();
    let recent = s
        .stats(
            "acme",
            &StatsQuery {
                window_hours: Some(1),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(recent.total_feedback, 1);
    assert_eq!(recent.positive_ratio, 1.0);
    assert_eq!(
        s.stats("nobody", &StatsQuery::default())
            .unwrap()
            .total_feedback,
        0
    );
}

#[test]
fn link_is_idempotent_and_versioned() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let fb = s.submit(&actor("acme"), item(Q, A)).unwrap();
    let mut meta = serde_json::Map::new();
    meta.insert("confidence".into(), serde_json::json!(0.95));
    let first = s
        .link(
            &actor("acme"),
            &fb.id,
            Some("themis_help_lora_v2".into()),
            Some(meta.clone()),
        )
        .unwrap();
    assert!(first.created);
    assert_eq!(first.link.source, LinkSource::Manual);
    assert_eq!(first.link.metadata.0, meta);
    let again = s
        .link(
            &actor("acme"),
            &fb.id,
            Some("themis_help_lora_v2".into()),
            None,
        )
        .unwrap();
    assert!(!again.created);
    assert_eq!(again.link, first.link);
    let now = s.get("acme", &fb.id).unwrap();
    assert_eq!(now.version, 2);
    let history = s.history("acme", &fb.id).unwrap();
    assert_eq!(
        history.iter().map(|h| h.action).collect::<Vec<_>>(),
        [ChangeAction::Submit, ChangeAction::Link]
    );
    assert_eq!(history[1].version, 2);
    let by = s
        .by_adapter("acme", "themis_help_lora_v2", &ByAdapterQuery::default())
        .unwrap();
    assert_eq!(by.total_linked, 1);

    assert!(matches!(
        s.link(&actor("acme"), "feedback-missing", Some("x".into()), None),
        Err(ServiceError::NotFound { .. })
    ));
    assert!(matches!(
        s.link(&actor("acme"), &fb.id, None, None),
        Err(ServiceError::Invalid(_))
    ));
    // Another org cannot link acme's feedback.
    assert!(matches!(
        s.link(&actor("globex"), &fb.id, Some("x".into()), None),
        Err(ServiceError::NotFound { .. })
    ));
}

#[test]
fn by_adapter_counts_and_filters() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    load_fixtures(&s);
    let by = s
        .by_adapter("acme", "themis_help_lora_v2", &ByAdapterQuery::default())
        .unwrap();
    assert!(by.total_linked > 10);
    assert_eq!(by.count, by.feedback.len());
    assert_eq!(by.count, by.total_linked);
    let ids: Vec<&str> = by.feedback.iter().map(|f| f.id.as_str()).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(ids, sorted, "newest first");

    let paged = s
        .by_adapter(
            "acme",
            "themis_help_lora_v2",
            &ByAdapterQuery {
                limit: Some(5),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(paged.count, 5);
    assert_eq!(paged.total_linked, by.total_linked);
    let next = s
        .by_adapter(
            "acme",
            "themis_help_lora_v2",
            &ByAdapterQuery {
                limit: Some(5),
                cursor: paged.next_cursor.clone(),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(next.feedback[0].id, by.feedback[5].id);

    let unused = s
        .by_adapter(
            "acme",
            "themis_help_lora_v2",
            &ByAdapterQuery {
                unused: true,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(unused.count, by.count, "nothing is used yet");
    assert!(matches!(
        s.by_adapter("acme", "no_such_adapter", &ByAdapterQuery::default()),
        Err(ServiceError::NotFound { .. })
    ));
    assert!(matches!(
        s.by_adapter("globex", "themis_help_lora_v2", &ByAdapterQuery::default()),
        Err(ServiceError::NotFound { .. })
    ));
}

#[test]
fn find_by_session_is_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let mut ids = Vec::new();
    for i in 0..5 {
        let new = NewFeedback {
            session_id: Some(if i % 2 == 0 { "s-1" } else { "s-2" }.into()),
            ..item(&format!("{Q} {i}"), A)
        };
        ids.push(s.submit(&actor("acme"), new).unwrap().id);
    }
    let got: Vec<String> = s
        .find_by_session("acme", "s-1")
        .unwrap()
        .into_iter()
        .map(|f| f.id)
        .collect();
    assert_eq!(got, vec![ids[4].clone(), ids[2].clone(), ids[0].clone()]);
    assert!(s.find_by_session("globex", "s-1").unwrap().is_empty());
    assert!(s.find_by_session("acme", "s-3").unwrap().is_empty());
}

#[test]
fn tenants_never_see_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let fb = s
        .submit(
            &actor("acme"),
            NewFeedback {
                adapter_id: Some("shared_name".into()),
                session_id: Some("sess".into()),
                ..item(Q, A)
            },
        )
        .unwrap();
    assert!(matches!(
        s.get("globex", &fb.id),
        Err(ServiceError::NotFound { .. })
    ));
    assert!(
        s.list("globex", &ListQuery::default())
            .unwrap()
            .items
            .is_empty()
    );
    assert_eq!(
        s.stats("globex", &StatsQuery::default())
            .unwrap()
            .total_feedback,
        0
    );
    assert!(s.find_by_session("globex", "sess").unwrap().is_empty());
    assert!(
        s.by_adapter("globex", "shared_name", &ByAdapterQuery::default())
            .is_err()
    );
    assert!(matches!(
        s.history("globex", &fb.id),
        Err(ServiceError::NotFound { .. })
    ));
    // The same adapter id in another org is another adapter.
    s.submit(
        &actor("globex"),
        NewFeedback {
            adapter_id: Some("shared_name".into()),
            ..item(Q, A)
        },
    )
    .unwrap();
    assert_eq!(
        s.by_adapter("acme", "shared_name", &ByAdapterQuery::default())
            .unwrap()
            .total_linked,
        1
    );
}

#[test]
fn adapter_lineage_rules() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let a = actor("acme");
    let mk = |id: &str, parent: Option<&str>| NewAdapter {
        id: Some(id.into()),
        derived_from: parent.map(Into::into),
        ..Default::default()
    };
    assert_eq!(
        s.create_adapter(&a, mk("root", None)).unwrap().1,
        AdapterOutcome::Created
    );
    assert_eq!(
        s.create_adapter(&a, mk("child", Some("root"))).unwrap().1,
        AdapterOutcome::Created
    );
    assert_eq!(
        s.create_adapter(&a, mk("child", Some("root"))).unwrap().1,
        AdapterOutcome::Unchanged
    );
    assert!(matches!(
        s.create_adapter(&a, mk("orphan", Some("missing"))),
        Err(ServiceError::BadRequest(_))
    ));
    assert!(matches!(
        s.create_adapter(&a, mk("self", Some("self"))),
        Err(ServiceError::BadRequest(_))
    ));
    // root gaining child as a parent would close root -> child -> root.
    let err = s.create_adapter(&a, mk("root", Some("child"))).unwrap_err();
    assert!(matches!(err, ServiceError::BadRequest(_)), "{err}");
    assert!(err.to_string().contains("cycle"), "{err}");
    s.create_adapter(&a, mk("other_root", None)).unwrap();
    assert!(matches!(
        s.create_adapter(&a, mk("child", Some("other_root"))),
        Err(ServiceError::Conflict(_))
    ));
    assert!(
        s.get_adapter("acme", "orphan").is_err(),
        "nothing written on error"
    );
    // An auto-created adapter can gain its parent later.
    s.submit(
        &a,
        NewFeedback {
            adapter_id: Some("late".into()),
            ..item(Q, A)
        },
    )
    .unwrap();
    assert_eq!(
        s.create_adapter(&a, mk("late", Some("child"))).unwrap().1,
        AdapterOutcome::Updated
    );
    assert_eq!(
        s.get_adapter("acme", "late")
            .unwrap()
            .derived_from
            .as_deref(),
        Some("child")
    );
    assert_eq!(s.verify().unwrap(), None);
}

#[test]
fn fixtures_cover_every_rule_and_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    load_fixtures(&s);
    let mut statuses = BTreeSet::new();
    let mut rules = BTreeSet::new();
    for org in ["acme", "globex", "initech"] {
        for f in all(&s, org, ListQuery::default()) {
            statuses.insert(f.validation_status);
            rules.extend(f.validation_reasons.into_iter().map(|r| r.rule));
        }
    }
    for rule in feedgraph::validate::BASIC_RULES {
        assert!(rules.contains(*rule), "no fixture trips {rule}");
    }
    for st in [
        ValidationStatus::Approved,
        ValidationStatus::Rejected,
        ValidationStatus::Flagged,
    ] {
        assert!(statuses.contains(&st), "no fixture is {st}");
    }
}

#[test]
fn corrupt_records_are_errors_naming_the_key() {
    common::sled_only!("it corrupts a record in sled's trees");
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let fb = s.submit(&actor("acme"), item(Q, A)).unwrap();
    s.sled()
        .unwrap()
        .corrupt_feedback_for_tests("acme", &fb.id, &[1, 0xff, 0xff])
        .unwrap();
    let err = s.get("acme", &fb.id).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&fb.id) && msg.contains("feedback"), "{msg}");
    s.sled()
        .unwrap()
        .corrupt_feedback_for_tests("acme", &fb.id, &[42])
        .unwrap();
    let msg = s.get("acme", &fb.id).unwrap_err().to_string();
    assert!(msg.contains("version 42"), "{msg}");
    drop(s);
    // Re-opening rebuilds the graph from the store and must report, not panic.
    let err = feedgraph::service::Service::open(&common::config(dir.path())).unwrap_err();
    assert!(err.to_string().contains(&fb.id), "{err}");
}
