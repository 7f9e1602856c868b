//! HTTP load: durable `POST /feedback` at several connection counts (throughput, p50, p99),
//! `GET /feedback/{id}` and `GET /feedback/by-adapter/{id}` under the same load, and the
//! ceiling of the same machine: an axum handler that only checks the token and returns 201.
//!
//! Full run: `cargo bench --bench http_load -- [--secs 5] [--rounds 5] [--conns 1,16,64,256]
//! [--only POST]` (`--only` keeps the rows whose label contains the text, e.g. to profile
//! one of them). The ceiling and the durable submits alternate in `--rounds` rounds that
//! share each row's `--secs`, so a slow spell of a shared machine weighs on both rows alike
//! and their ratio stays comparable.
//! Under `cargo test` it runs a short smoke version so it never rots.
//! `FEEDGRAPH_BENCH_SERVER=PATH` loads another build's `feedgraph` binary instead of this
//! build's (to compare two builds with the same client).
//!
//! The server runs as a separate `feedgraph serve` process (release build under
//! `cargo bench`); the load client is this process (closed loop: each connection sends its
//! next request when the previous answer arrived). On a 2-core machine both share the cores.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use feedgraph::config::Config;
use feedgraph::http::auth::{Authenticator, Role, mint};

struct Opts {
    secs: f64,
    /// Rounds in which the ceiling and the durable submits alternate.
    rounds: usize,
    conns: Vec<usize>,
    /// Run only the rows whose label contains this (e.g. `POST`, `ceiling`, `GET`).
    only: Option<String>,
}

impl Opts {
    fn wants(&self, what: &str) -> bool {
        self.only.as_deref().is_none_or(|o| what.contains(o))
    }
}

fn opts() -> Opts {
    let args: Vec<String> = std::env::args().collect();
    let bench = args.iter().any(|a| a == "--bench");
    let mut o = if bench {
        Opts {
            secs: 5.0,
            rounds: 5,
            conns: vec![1, 16, 64, 256],
            only: None,
        }
    } else {
        Opts {
            secs: 0.3,
            rounds: 2,
            conns: vec![1, 4],
            only: None,
        }
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--only" => o.only = it.next().cloned(),
            "--secs" => o.secs = it.next().and_then(|v| v.parse().ok()).unwrap_or(o.secs),
            "--rounds" => {
                o.rounds = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(o.rounds)
                    .max(1)
            }
            "--conns" => {
                o.conns = it
                    .next()
                    .map(|v| v.split(',').filter_map(|n| n.parse().ok()).collect())
                    .unwrap_or(o.conns)
            }
            _ => {}
        }
    }
    o
}

struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

fn spawn(args: &[&str], dir: &std::path::Path) -> Server {
    let mut child = Command::new(args[0])
        .args(&args[1..])
        .env("FEEDGRAPH__RATE_LIMIT__ENABLED", "false")
        .env("FEEDGRAPH__DATA_DIR", dir)
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn server");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = lines.next().expect("a line").expect("readable");
    let base = first.rsplit(' ').next().expect("address").trim().to_owned();
    std::thread::spawn(move || for _ in lines {});
    Server { child, base }
}

/// Builds request number `n` of connection `c`.
type MakeRequest =
    Arc<dyn Fn(&reqwest::Client, usize, usize) -> reqwest::RequestBuilder + Send + Sync>;

#[derive(Default)]
struct Run {
    ok: usize,
    errors: usize,
    lat_us: Vec<u32>,
    secs: f64,
}

impl Run {
    /// Adds another run of the same row (a later round).
    fn add(&mut self, other: Run) {
        self.ok += other.ok;
        self.errors += other.errors;
        self.lat_us.extend(other.lat_us);
        self.secs += other.secs;
    }

    fn row(&mut self, what: &str, conns: usize) -> String {
        self.lat_us.sort_unstable();
        let p = |q: f64| {
            if self.lat_us.is_empty() {
                0.0
            } else {
                self.lat_us[((self.lat_us.len() - 1) as f64 * q) as usize] as f64 / 1000.0
            }
        };
        format!(
            "| {what} | {conns} | {:.0} | {:.2} | {:.2} | {} |",
            self.ok as f64 / self.secs,
            p(0.5),
            p(0.99),
            self.errors
        )
    }
}

/// Drives `conns` connections for `secs`; `make` builds request number `n` of a connection.
async fn drive(conns: usize, secs: f64, expect: u16, make: MakeRequest) -> Run {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for c in 0..conns {
        let make = make.clone();
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .build()
                .expect("client");
            let mut run = Run::default();
            let mut n = 0;
            while Instant::now() < deadline {
                let t = Instant::now();
                let r = make(&client, c, n).send().await;
                n += 1;
                match r {
                    Ok(r) if r.status().as_u16() == expect => {
                        let _ = r.bytes().await;
                        run.ok += 1;
                        run.lat_us
                            .push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    }
                    _ => run.errors += 1,
                }
            }
            run
        }));
    }
    let mut total = Run {
        secs,
        ..Run::default()
    };
    for t in tasks {
        let r = t.await.expect("task");
        total.ok += r.ok;
        total.errors += r.errors;
        total.lat_us.extend(r.lat_us);
    }
    total
}

fn body(c: usize, n: usize) -> String {
    format!(
        r#"{{"type":"positive","question":"How do I enable sharding in ThemisDB, connection {c} request {n}?","answer":"Use the SHARD BY clause in CREATE COLLECTION, then run REBALANCE so existing data moves onto the new shards.","user_id":"user{c}","model_version":"llama-2-7b","adapter_id":"adapter_{}","adapter_version":"v1"}}"#,
        n % 16
    )
}

async fn ceiling_server() {
    use axum::routing::post;
    let dir = std::env::var("FEEDGRAPH__DATA_DIR").expect("data dir");
    let config = Config {
        data_dir: dir.into(),
        ..Config::default()
    };
    let auth = Arc::new(Authenticator::from_config(&config).expect("auth"));
    let app = axum::Router::new().route(
        "/api/v1/llm/feedback",
        post(move |headers: axum::http::HeaderMap| {
            let auth = auth.clone();
            async move {
                let h = headers.get("authorization").and_then(|v| v.to_str().ok());
                match auth.verify_header(h) {
                    Ok(_) => axum::http::StatusCode::CREATED,
                    Err(_) => axum::http::StatusCode::UNAUTHORIZED,
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    println!(
        "ceiling listening on http://{}",
        listener.local_addr().expect("addr")
    );
    axum::serve(listener, app).await.expect("serve");
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    if std::env::args().any(|a| a == "--ceiling-server") {
        rt.block_on(ceiling_server());
        return;
    }
    let o = opts();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Config {
        data_dir: dir.path().to_owned(),
        ..Config::default()
    };
    // FEEDGRAPH_BENCH_SERVER runs another build's server (paired before/after runs).
    let server_exe = std::env::var("FEEDGRAPH_BENCH_SERVER")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_feedgraph").to_owned());
    let server = spawn(&[&server_exe, "serve", "--bind", "127.0.0.1:0"], dir.path());
    let exe = std::env::current_exe().expect("exe");
    let ceiling = spawn(
        &[exe.to_str().expect("path"), "--ceiling-server"],
        dir.path(),
    );
    let token = Arc::new(mint(&config, "bench", "loader", &[Role::Admin], 3600).expect("token"));

    rt.block_on(async {
        let c = reqwest::Client::new();
        for _ in 0..500 {
            if let Ok(r) = c.get(format!("{}/readyz", server.base)).send().await
                && r.status().is_success()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        println!("| request | connections | requests/s | p50 ms | p99 ms | errors |");
        println!("|---|---|---|---|---|---|");
        let rows = [
            ("ceiling: token check + 201", &ceiling.base),
            ("POST /feedback (durable)", &server.base),
        ];
        for &conns in &o.conns {
            let mut totals: Vec<Run> = rows.iter().map(|_| Run::default()).collect();
            for _ in 0..o.rounds {
                for ((what, base), total) in rows.iter().zip(totals.iter_mut()) {
                    if !o.wants(what) {
                        continue;
                    }
                    let (t, url) = (token.clone(), format!("{base}/api/v1/llm/feedback"));
                    let make: MakeRequest = Arc::new(move |cl, c, n| {
                        cl.post(&url)
                            .bearer_auth(t.as_str())
                            .header("content-type", "application/json")
                            .body(body(c, n))
                    });
                    let secs = o.secs / o.rounds as f64;
                    total.add(drive(conns, secs, 201, make).await);
                }
            }
            for ((what, _), total) in rows.iter().zip(totals.iter_mut()) {
                if o.wants(what) {
                    println!("{}", total.row(what, conns));
                }
            }
        }
        // Reads under load: ids from the store.
        let list: serde_json::Value = c
            .get(format!("{}/api/v1/llm/feedback?limit=1000", server.base))
            .bearer_auth(token.as_str())
            .send()
            .await
            .expect("list")
            .json()
            .await
            .expect("json");
        let ids: Arc<Vec<String>> = Arc::new(
            list["feedback"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|f| f["id"].as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
        );
        for &conns in &o.conns {
            if !o.wants("GET") {
                continue;
            }
            let (t, base, ids2) = (token.clone(), server.base.clone(), ids.clone());
            let make: MakeRequest = Arc::new(move |cl, c, n| {
                let id = &ids2[(c * 7919 + n) % ids2.len().max(1)];
                cl.get(format!("{base}/api/v1/llm/feedback/{id}"))
                    .bearer_auth(t.as_str())
            });
            println!(
                "{}",
                drive(conns, o.secs, 200, make)
                    .await
                    .row("GET /feedback/{id}", conns)
            );
            let (t, base) = (token.clone(), server.base.clone());
            let make: MakeRequest = Arc::new(move |cl, _c, n| {
                cl.get(format!(
                    "{base}/api/v1/llm/feedback/by-adapter/adapter_{}?limit=100",
                    n % 16
                ))
                .bearer_auth(t.as_str())
            });
            println!(
                "{}",
                drive(conns, o.secs, 200, make)
                    .await
                    .row("GET by-adapter (100 items)", conns)
            );
        }
    });
    drop(ceiling);
    drop(server);
}
