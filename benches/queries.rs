//! Query engine benchmarks: parse + plan + execute + building every result row, on one
//! org's graph.
//!
//! Data: the directory in `FEEDGRAPH_BENCH_DATA` (org `FEEDGRAPH_BENCH_ORG`, default
//! `bench`), e.g. one `benches/run` loaded from a generated dump; without it, the fixtures
//! (org `acme`), which is what `cargo test --benches` uses so the benches never rot.
//! `$adapter` is the adapter with the most FEEDBACK_FOR edges.
//!
//! Run: `FEEDGRAPH_BENCH_DATA=target/bench/100k cargo bench --bench queries`

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};

use feedgraph::config::Config;
use feedgraph::service::{ByAdapterQuery, ImportRecord, Service};

/// The allocator the `feedgraph` binary runs with, so the engine is measured as deployed.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

include!("support/query_texts.rs");

/// The service to query, its org, and the temp dir that must outlive it.
fn open() -> (Service, String, Option<tempfile::TempDir>) {
    let mut config = Config::default();
    config.query.max_rows = 50_000_000;
    config.query.max_work = u64::MAX / 4;
    config.query.max_memory_bytes = u64::MAX / 4;
    config.query.max_memory_total_bytes = 0;
    config.query.timeout_ms = 600_000;
    config.query.max_depth = 30;
    match std::env::var_os("FEEDGRAPH_BENCH_DATA") {
        Some(dir) => {
            config.data_dir = dir.into();
            let org = std::env::var("FEEDGRAPH_BENCH_ORG").unwrap_or_else(|_| "bench".into());
            (Service::open(&config).expect("open bench data"), org, None)
        }
        None => {
            let tmp = tempfile::tempdir().expect("tempdir");
            config.data_dir = tmp.path().to_owned();
            let s = Service::open(&config).expect("open");
            let text = std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/fixtures/feedback.jsonl"
            ))
            .expect("fixtures");
            let records = text
                .lines()
                .enumerate()
                .map(|(i, l)| (i + 1, ImportRecord::parse(l).expect("fixture line")))
                .collect();
            s.import(None, "bench", records, 1000, |_| {})
                .expect("import");
            (s, "acme".into(), Some(tmp))
        }
    }
}

fn hottest_adapter(s: &Service, org: &str) -> String {
    let g = s.graph().org(org).expect("org has data");
    let best = (0..g.adapters().len() as u32)
        .max_by_key(|&a| g.adapter_feedback(a).count())
        .expect("at least one adapter");
    g.strings()
        .resolve(g.adapters()[best as usize].id)
        .to_owned()
}

fn bench(c: &mut Criterion) {
    let (s, org, _tmp) = open();
    let adapter = hottest_adapter(&s, &org);
    let mut params = serde_json::Map::new();
    params.insert("adapter".into(), adapter.clone().into());
    let mut counts = serde_json::Map::new();
    let mut group = c.benchmark_group("queries");
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(300));
    group.measurement_time(Duration::from_secs(2));
    // The seed's lineage query returns whole paths with every Feedback node's texts: at 1M
    // items that is over a million multi-kilobyte rows (tens of GiB as JSON values), more
    // than the machine's memory. Above 200k items it is measured with LIMIT 10000, which is
    // what the server's default max_rows allows anyway.
    let big = s
        .graph()
        .org(&org)
        .is_some_and(|g| g.feedback().len() > 200_000);
    let lineage_limited = format!("{SEED_LINEAGE} LIMIT 10000");
    let (lineage_name, lineage_query) = if big {
        ("seed_lineage_limit_10000", lineage_limited.as_str())
    } else {
        ("seed_lineage", SEED_LINEAGE)
    };
    for (name, q) in [
        ("q1", Q1),
        ("q2", Q2),
        ("q3_rows", Q3),
        ("q3_count", Q3_COUNT),
        ("q4", Q4),
        ("seed_by_adapter", SEED_BY_ADAPTER),
        ("seed_adapter_stats", SEED_STATS),
        (lineage_name, lineage_query),
        ("seed_shared_feedback", SEED_SHARED),
    ] {
        let rows = s.query(&org, q, &params).expect(name).rows.len();
        eprintln!("{name}: {rows} rows");
        counts.insert(name.into(), rows.into());
        group.bench_function(name, |b| {
            b.iter(|| s.query(&org, q, &params).expect(name).rows.len())
        });
    }
    group.bench_function("service_by_adapter_100", |b| {
        b.iter(|| {
            s.by_adapter(
                &org,
                &adapter,
                &ByAdapterQuery {
                    limit: Some(100),
                    ..Default::default()
                },
            )
            .expect("by adapter")
            .count
        })
    });
    group.finish();
    // benches/run compares these row counts with Kuzu's.
    if let Some(path) = std::env::var_os("FEEDGRAPH_BENCH_ROWS") {
        std::fs::write(path, serde_json::Value::Object(counts).to_string())
            .expect("write row counts");
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
