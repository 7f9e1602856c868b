//! The console dashboard answers from per-day counters kept on write: its series equal a
//! count made here from the loaded records themselves, after a bulk load, after live
//! writes (a new item, a new link, a review that does not move counts), and after a
//! restart rebuilds the graph.

mod common;

use std::collections::BTreeMap;

use feedgraph::service::Service;
use feedgraph::service::dump::parse_dump;
use feedgraph::service::overview::{DAY_MS, Dashboard};

const BASE: u64 = 1_780_000_000_000 - 1_780_000_000_000 % DAY_MS;

/// One feedback record of the oracle: created_at, positive, model, linked adapters.
struct Item {
    created_at: u64,
    positive: bool,
    model: Option<String>,
    adapters: Vec<String>,
}

fn items() -> Vec<Item> {
    (0..400u64)
        .map(|i| Item {
            // Twelve days, not in time order; some at the very end of a day.
            created_at: BASE + ((i * 5) % 12) * DAY_MS + (i * 7919) % DAY_MS,
            positive: i % 3 != 0,
            model: (i % 7 != 0).then(|| format!("model-{}", i % 4)),
            adapters: (0..(i % 3))
                .map(|k| format!("ad-{}", (i + k * 5) % 9))
                .collect(),
        })
        .collect()
}

fn dump(items: &[Item]) -> String {
    let mut lines = Vec::new();
    for a in 0..9 {
        lines.push(format!(
            r#"{{"kind":"adapter","id":"ad-{a}","created_at":1}}"#
        ));
    }
    for (i, it) in items.iter().enumerate() {
        let model = it
            .model
            .as_ref()
            .map_or("null".to_owned(), |m| format!("\"{m}\""));
        lines.push(format!(
            r#"{{"kind":"feedback","id":"fb-{i:04}","type":"{}","validation_status":"approved","used_for_training":false,"model_version":{model},"question":"Why plan?","answer":"To reuse.","created_at":{}}}"#,
            if it.positive { "positive" } else { "negative" },
            it.created_at
        ));
        for a in &it.adapters {
            lines.push(format!(
                r#"{{"kind":"feedback_for","from":"fb-{i:04}","to":"{a}"}}"#
            ));
        }
    }
    lines.join("\n")
}

/// (name, per-day counts, per-day positives) of the oracle's series, top `top` by total
/// then name.
type Line = (String, Vec<u64>, Vec<u64>);

fn oracle(items: &[Item], days: u64, top: usize) -> (Vec<u64>, Line, Vec<Line>, Vec<Line>) {
    let newest = items.iter().map(|i| i.created_at).max().unwrap();
    let last = newest - newest % DAY_MS;
    let first = last.saturating_sub(DAY_MS * (days - 1));
    let starts: Vec<u64> = (0..days).map(|d| first + d * DAY_MS).collect();
    let n = days as usize;
    let mut all = ("all".to_owned(), vec![0; n], vec![0; n]);
    let mut models: BTreeMap<String, Line> = BTreeMap::new();
    let mut adapters: BTreeMap<String, Line> = BTreeMap::new();
    for it in items.iter().filter(|i| i.created_at >= first) {
        let d = ((it.created_at - first) / DAY_MS) as usize;
        let add = |l: &mut Line| {
            l.1[d] += 1;
            l.2[d] += u64::from(it.positive);
        };
        add(&mut all);
        if let Some(m) = &it.model {
            add(models
                .entry(m.clone())
                .or_insert_with(|| (m.clone(), vec![0; n], vec![0; n])));
        }
        for a in &it.adapters {
            add(adapters
                .entry(a.clone())
                .or_insert_with(|| (a.clone(), vec![0; n], vec![0; n])));
        }
    }
    let rank = |m: BTreeMap<String, Line>| {
        let mut v: Vec<Line> = m.into_values().collect();
        v.sort_by(|a, b| {
            let (ta, tb) = (a.1.iter().sum::<u64>(), b.1.iter().sum::<u64>());
            tb.cmp(&ta).then(a.0.cmp(&b.0))
        });
        v.truncate(top);
        v
    };
    (starts, all, rank(adapters), rank(models))
}

fn lines(d: &Dashboard) -> (Vec<u64>, Line, Vec<Line>, Vec<Line>) {
    let line = |s: &feedgraph::service::overview::Series| {
        (s.name.clone(), s.count.clone(), s.positive.clone())
    };
    (
        d.days.clone(),
        line(&d.all),
        d.adapters.iter().map(line).collect(),
        d.models.iter().map(line).collect(),
    )
}

fn check(s: &Service, items: &[Item]) {
    for (days, top) in [(1, 3), (5, 2), (12, 10), (30, 4), (366, 1)] {
        let d = s.dashboard("acme", days as u32, top).unwrap();
        assert_eq!(lines(&d), oracle(items, days, top), "days={days} top={top}");
        assert_eq!(d.totals.total_feedback, items.len() as u64);
    }
}

#[test]
fn the_dashboard_equals_a_count_of_the_records() {
    let dir = tempfile::tempdir().unwrap();
    let s = common::open(dir.path());
    let mut items = items();
    s.load_dump(
        "acme",
        parse_dump(&dump(&items)).unwrap().into_iter().map(Ok),
        |_, _| {},
    )
    .unwrap();
    check(&s, &items);
    // Live writes: a newer item on a new day, linked to an adapter.
    let newest = BASE + 13 * DAY_MS + 5;
    let more = format!(
        "{}\n{}",
        format_args!(
            r#"{{"kind":"feedback","id":"fb-late","type":"negative","validation_status":"approved","used_for_training":false,"model_version":"model-9","question":"Why plan?","answer":"To reuse.","created_at":{newest}}}"#
        ),
        r#"{"kind":"feedback_for","from":"fb-late","to":"ad-3"}"#
    );
    s.load_dump(
        "acme",
        parse_dump(&more).unwrap().into_iter().map(Ok),
        |_, _| {},
    )
    .unwrap();
    items.push(Item {
        created_at: newest,
        positive: false,
        model: Some("model-9".into()),
        adapters: vec!["ad-3".into()],
    });
    check(&s, &items);
    // A link made through the API to an item of an earlier day.
    s.link(&common::actor("acme"), "fb-0001", Some("ad-8".into()), None)
        .unwrap();
    items[1].adapters.push("ad-8".into());
    check(&s, &items);
    drop(s);
    // Rebuilt at start-up from the store.
    let s = common::open(dir.path());
    check(&s, &items);
}
