//! Paired-run driver: runs one benchmark query of `benches/queries.rs` (or the service's
//! by-adapter listing, `service_by_adapter_100`) a fixed number of times on a loaded data
//! directory and prints the median time of one run. A fixed count is what makes two builds
//! comparable by instruction counts (`valgrind --tool=callgrind
//! --toggle-collect='query_loop::main::{{closure}}'` counts only the runs), and alternating
//! two builds' drivers gives paired timings; BENCHMARKS.md has both.
//!
//! `FEEDGRAPH_BENCH_DATA=DIR FEEDGRAPH_BENCH_ADAPTER=ID cargo run --release --example
//! query_loop -- NAME ITERS` (org `FEEDGRAPH_BENCH_ORG`, default `bench`).

use std::time::Instant;

use feedgraph::config::Config;
use feedgraph::service::{ByAdapterQuery, Service, StatsQuery};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

include!("../benches/support/query_texts.rs");

/// The queries by the names `benches/queries.rs` gives them.
const QUERIES: &[(&str, &str)] = &[
    ("q1", Q1),
    ("q2", Q2),
    ("q3_rows", Q3),
    ("q3_count", Q3_COUNT),
    ("q4", Q4),
    ("seed_by_adapter", SEED_BY_ADAPTER),
    ("seed_adapter_stats", SEED_STATS),
    ("seed_lineage", SEED_LINEAGE),
    ("seed_shared_feedback", SEED_SHARED),
];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let name = args.get(1).cloned().unwrap_or_default();
    let iters: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(10);
    let mut config = Config::default();
    config.query.max_rows = 50_000_000;
    config.query.max_work = u64::MAX / 4;
    config.query.max_memory_bytes = u64::MAX / 4;
    config.query.max_memory_total_bytes = 0;
    config.query.timeout_ms = 600_000;
    config.query.max_depth = 30;
    config.data_dir = std::env::var_os("FEEDGRAPH_BENCH_DATA")
        .expect("FEEDGRAPH_BENCH_DATA")
        .into();
    let org = std::env::var("FEEDGRAPH_BENCH_ORG").unwrap_or_else(|_| "bench".into());
    let adapter = std::env::var("FEEDGRAPH_BENCH_ADAPTER").expect("FEEDGRAPH_BENCH_ADAPTER");
    let s = Service::open(&config).expect("open");
    let mut params = serde_json::Map::new();
    params.insert("adapter".into(), adapter.clone().into());
    let run = || -> usize {
        if name == "service_by_adapter_100" {
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
        } else if name == "service_by_adapter_family_100" {
            // Everything under the root of the adapter forest, 100 per page.
            let q = ByAdapterQuery {
                limit: Some(100),
                include_descendants: true,
                ..Default::default()
            };
            s.by_adapter(&org, "base_model", &q)
                .expect("by adapter")
                .count
        } else if name == "service_stats" {
            s.stats(&org, &StatsQuery::default())
                .expect("stats")
                .total_feedback as usize
        } else if name == "service_stats_adapter" {
            let q = StatsQuery {
                adapter: Some(adapter.clone()),
                ..Default::default()
            };
            s.stats(&org, &q).expect("stats").total_feedback as usize
        } else {
            let q = QUERIES
                .iter()
                .find(|(n, _)| *n == name)
                .expect("query name")
                .1;
            s.query(&org, q, &params).expect("query").rows.len()
        }
    };
    let rows = if iters > 0 { run() } else { 0 };
    let mut times = Vec::with_capacity(iters);
    for _ in 1..iters {
        let t = Instant::now();
        std::hint::black_box(run());
        times.push(t.elapsed().as_nanos() as u64);
    }
    times.sort_unstable();
    let med = times.get(times.len() / 2).copied().unwrap_or(0);
    println!(
        "{name} rows={rows} iters={iters} median_us={:.1}",
        med as f64 / 1000.0
    );
}
