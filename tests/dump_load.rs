//! The dump format: dump then load gives the same graph; a bad file loads nothing and
//! names the line.

mod common;

use feedgraph::graph::CanonicalGraph;
use feedgraph::service::dump::parse_dump;

/// The graph without the fields a restore legitimately renumbers (record versions and
/// update times: a load is one write per record).
fn comparable(mut g: CanonicalGraph) -> CanonicalGraph {
    for props in g.nodes.values_mut() {
        for k in ["version", "updated_at", "record_version", "source"] {
            props.remove(k);
        }
    }
    g
}

#[test]
fn dump_then_load_gives_the_same_graph() {
    let a = tempfile::tempdir().unwrap();
    let s = common::open(a.path());
    common::load_fixtures(&s);
    let mut first = Vec::new();
    let lines = s.dump("acme", &mut first).unwrap();
    assert!(lines > 150);
    let text = String::from_utf8(first.clone()).unwrap();

    let b = tempfile::tempdir().unwrap();
    let t = common::open(b.path());
    let summary = t
        .load_dump(
            "acme",
            parse_dump(&text).unwrap().into_iter().map(Ok),
            |_, _| {},
        )
        .unwrap();
    assert_eq!(summary.feedback, 150);
    let mut second = Vec::new();
    t.dump("acme", &mut second).unwrap();
    assert_eq!(
        String::from_utf8(second).unwrap(),
        text,
        "dump(load(dump)) == dump"
    );

    let ga = comparable(s.graph().canonical().remove("acme").unwrap());
    let gb = comparable(t.graph().canonical().remove("acme").unwrap());
    assert_eq!(ga.nodes, gb.nodes);
    let edges = |g: &CanonicalGraph| {
        g.edges
            .iter()
            .map(|e| (e.0, e.1.clone(), e.2.clone(), e.3))
            .collect::<Vec<_>>()
    };
    assert_eq!(edges(&ga), edges(&gb));
    // The graph built beside the writes equals one rebuilt from the store.
    assert_eq!(t.verify().unwrap(), None);
    drop(t);
    // The load is durable and rebuilds identically.
    let t = common::open(b.path());
    assert_eq!(
        comparable(t.graph().canonical().remove("acme").unwrap()).nodes,
        ga.nodes
    );
    assert_eq!(t.verify().unwrap(), None);
    // Records and history.
    let f = t.list("acme", &Default::default()).unwrap().items;
    assert_eq!(t.history("acme", &f[0].id).unwrap().len(), 1);
    // A second load into the same org goes to the live graph, and references what the
    // first one loaded.
    let more = [
        r#"{"kind":"adapter","id":"late_child","created_at":7}"#.to_owned(),
        r#"{"kind":"feedback","id":"late_1","type":"positive","validation_status":"approved","used_for_training":false,"model_version":null,"question":"q?","answer":"a.","created_at":8}"#.to_owned(),
        format!(
            r#"{{"kind":"derived_from","from":"late_child","to":"{}"}}"#,
            t.store().adapters_of("acme").unwrap()[0].id
        ),
        r#"{"kind":"feedback_for","from":"late_1","to":"late_child"}"#.to_owned(),
    ];
    let summary = t
        .load_dump(
            "acme",
            parse_dump(&more.join("\n")).unwrap().into_iter().map(Ok),
            |_, _| {},
        )
        .unwrap();
    assert_eq!((summary.adapters, summary.feedback), (1, 1));
    assert_eq!(t.verify().unwrap(), None);
    let g = t.graph().org("acme").unwrap();
    let row = g.adapter_row("late_child").unwrap();
    assert_eq!(g.adapter_feedback(row).count(), 1);
    drop(g);
}

#[test]
fn an_empty_dump_loads_nothing_and_makes_no_org() {
    let dir = tempfile::tempdir().unwrap();
    let s = common::open(dir.path());
    let summary = s
        .load_dump(
            "acme",
            parse_dump("\n\n").unwrap().into_iter().map(Ok),
            |_, _| {},
        )
        .unwrap();
    assert_eq!(summary, Default::default());
    assert!(s.graph().org("acme").is_none());
    assert_eq!(s.verify().unwrap(), None);
}

#[test]
fn bad_dumps_load_nothing_and_name_the_line() {
    let good = [
        r#"{"kind":"adapter","id":"base_model","name":"Base","rank":16,"status":"active","created_at":1}"#,
        r#"{"kind":"adapter","id":"child","created_at":2}"#,
        r#"{"kind":"derived_from","from":"child","to":"base_model"}"#,
        r#"{"kind":"feedback","id":"f1","type":"positive","validation_status":"approved","used_for_training":false,"model_version":"m","question":"What is it?","answer":"It is a thing.","created_at":5}"#,
        r#"{"kind":"feedback_for","from":"f1","to":"child"}"#,
    ];
    let cases: Vec<(&str, Vec<String>, usize, &str)> = vec![
        ("syntax", vec![r#"{"kind":"adapter","id":"#.into()], 6, "EOF"),
        ("unknown kind", vec![r#"{"kind":"vertex","id":"x"}"#.into()], 6, "vertex"),
        ("unknown field", vec![r#"{"kind":"derived_from","from":"a","to":"b","weight":1}"#.into()], 6, "weight"),
        ("bad status", vec![r#"{"kind":"feedback","id":"f2","type":"positive","validation_status":"ok","used_for_training":false,"model_version":null,"question":"q","answer":"a","created_at":1}"#.into()], 6, "ok"),
        ("duplicate feedback", vec![good[3].into()], 6, "twice"),
        ("unknown adapter in edge", vec![r#"{"kind":"feedback_for","from":"f1","to":"ghost"}"#.into()], 6, "ghost"),
        ("unknown feedback in edge", vec![r#"{"kind":"feedback_for","from":"f9","to":"child"}"#.into()], 6, "f9"),
        ("second parent", vec![r#"{"kind":"derived_from","from":"child","to":"child"}"#.into()], 6, "one parent"),
        (
            "cycle",
            vec![
                r#"{"kind":"adapter","id":"x","created_at":1}"#.into(),
                r#"{"kind":"adapter","id":"y","created_at":1}"#.into(),
                r#"{"kind":"derived_from","from":"x","to":"y"}"#.into(),
                r#"{"kind":"derived_from","from":"y","to":"x"}"#.into(),
            ],
            0,
            "cycle",
        ),
    ];
    for (name, extra, line, text) in cases {
        let dir = tempfile::tempdir().unwrap();
        let s = common::open(dir.path());
        let mut lines: Vec<String> = good.iter().map(|s| s.to_string()).collect();
        lines.extend(extra);
        let text_all = lines.join("\n");
        let err = match parse_dump(&text_all) {
            Err(e) => e,
            Ok(records) => s
                .load_dump("acme", records.into_iter().map(Ok), |_, _| {})
                .unwrap_err(),
        };
        if line > 0 {
            assert_eq!(err.line, line, "{name}: {err}");
        }
        assert!(err.to_string().contains(text), "{name}: {err}");
        assert!(
            s.graph().org("acme").is_none(),
            "{name}: something was loaded"
        );
        assert!(s.store().adapters_of("acme").unwrap().is_empty(), "{name}");
        // The history entries written while checking were taken back (sled counts its
        // history tree; on PostgreSQL the load is one transaction that was rolled back).
        if let Some(sled) = s.sled() {
            assert_eq!(sled.history_entries(), 0, "{name}: history left behind");
        }
    }
    // And the good part alone loads.
    let dir = tempfile::tempdir().unwrap();
    let s = common::open(dir.path());
    let sum = s
        .load_dump(
            "acme",
            parse_dump(&good.join("\n")).unwrap().into_iter().map(Ok),
            |_, _| {},
        )
        .unwrap();
    assert_eq!(
        (
            sum.adapters,
            sum.derived_from,
            sum.feedback,
            sum.feedback_for
        ),
        (2, 1, 1, 1)
    );
    let a = s.get_adapter("acme", "base_model").unwrap();
    assert_eq!(a.metadata.0["rank"], 16);
    assert_eq!(s.lineage("acme", "child").unwrap()[0].id, "base_model");
}

#[test]
fn a_big_load_reports_its_progress_as_it_writes() {
    // More records than one chunk of a PostgreSQL load, so both backends report progress
    // before the end.
    let n = 120_000;
    let mut lines = vec![r#"{"kind":"adapter","id":"big","created_at":1}"#.to_owned()];
    for i in 0..n {
        lines.push(format!(
            r#"{{"kind":"feedback","id":"item_{i:06}","type":"positive","validation_status":"approved","used_for_training":false,"model_version":null,"question":"q?","answer":"a.","created_at":{}}}"#,
            10 + i
        ));
        lines.push(format!(
            r#"{{"kind":"feedback_for","from":"item_{i:06}","to":"big"}}"#
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let s = common::open(dir.path());
    let mut seen = Vec::new();
    let summary = s
        .load_dump(
            "acme",
            parse_dump(&lines.join("\n")).unwrap().into_iter().map(Ok),
            |written, total| seen.push((written, total)),
        )
        .unwrap();
    assert_eq!(summary.feedback, n);
    let total = n as u64 + 1;
    assert!(seen.iter().all(|&(_, t)| t == total), "{seen:?}");
    assert!(
        seen.windows(2).all(|w| w[0].0 <= w[1].0),
        "progress went back: {seen:?}"
    );
    assert_eq!(seen.last().map(|p| p.0), Some(total));
    assert!(
        seen.iter().any(|&(w, _)| w > 1 && w < total),
        "no progress between the adapters and the end: {seen:?}"
    );
    let g = s.graph().org("acme").unwrap();
    assert_eq!(g.adapter_feedback(g.adapter_row("big").unwrap()).count(), n);
}
