//! Times the console dashboard (`Service::dashboard`, what `GET /console/dashboard` serves)
//! on a loaded data directory: opens it, calls the dashboard ITERS times and prints the
//! median. Open a copy of a benchmark directory: sled opens it for writing.
//!
//! `FEEDGRAPH_BENCH_DATA=DIR cargo run --release --example dashboard_loop -- DAYS ITERS`
//! (org `FEEDGRAPH_BENCH_ORG`, default `bench`; 6 adapters and models, as the console asks).

use std::time::Instant;

use feedgraph::config::Config;
use feedgraph::service::Service;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let days: u32 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(30);
    let iters: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(20);
    let config = Config {
        data_dir: std::env::var_os("FEEDGRAPH_BENCH_DATA")
            .expect("FEEDGRAPH_BENCH_DATA")
            .into(),
        ..Config::default()
    };
    let org = std::env::var("FEEDGRAPH_BENCH_ORG").unwrap_or_else(|_| "bench".into());
    let s = Service::open(&config).expect("open");
    let first = s.dashboard(&org, days, 6).expect("dashboard");
    let mut times = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t = Instant::now();
        std::hint::black_box(s.dashboard(&org, days, 6).expect("dashboard"));
        times.push(t.elapsed().as_nanos() as u64);
    }
    times.sort_unstable();
    let med = times.get(times.len() / 2).copied().unwrap_or(0);
    println!(
        "dashboard days={days} items={} adapters={} models={} iters={iters} median_us={:.1}",
        first.all.total(),
        first.adapters.len(),
        first.models.len(),
        med as f64 / 1000.0
    );
}
