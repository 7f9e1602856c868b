//! HTTP load: durable `POST /feedback` at several connection counts (throughput, p50, p99)
//! beside the ceiling of the same machine (an axum handler that only checks the token and
//! returns 201), then the reads and links of a loaded org under the same closed-loop load:
//! `GET /feedback/{id}`, `GET /feedback/by-adapter/{hottest}` (100 items), the same from
//! `base_model` with `include_descendants=true`, `GET /feedback/stats`,
//! `GET /adapters/{hottest}/lineage`, and durable `POST /feedback/{id}/link`.
//!
//! The two by-adapter rows ask for the listing's first page again and again, so after the
//! first request the server answers them from its kept items (`pages.cache_bytes`): they
//! say what a repeated page costs. The two `(cursor walk)` rows say what a page not kept
//! in memory costs: the listing is cut into one stretch per connection (at ids spread
//! evenly over the hottest adapter's items), and each connection follows the
//! `next_cursor` of its previous page through its own stretch, again and again, so an item
//! comes round again only after the whole listing was read (more than the default cache
//! holds at 1M; at 100k the hottest adapter's items fit in it). Such a walk makes the
//! hottest adapter's run due (`service::runs`), so after its first second or so its items
//! come from the run rather than the store. The share of items the server found kept,
//! read from runs and read from the store during a walk row (its
//! `feedgraph_page_item_cache_hits`/`_misses` and `feedgraph_page_run_hits`) is printed to
//! stderr.
//!
//! Full run: `cargo bench --bench http_load -- [--secs 5] [--rounds 5] [--conns 1,16,64,256]
//! [--read-secs S] [--read-conns 1,16,64] [--only TEXT] [--targets URL,URL...]`. `--only`
//! keeps the rows whose
//! label contains the text (e.g. `POST`, `ceiling`, `GET`, `by-adapter`, `link`), to profile
//! one of them. The ceiling and the durable submits alternate in `--rounds` rounds that share
//! each row's `--secs`, so a slow spell of a shared machine weighs on both rows alike and
//! their ratio stays comparable. The read and link rows run `--read-secs` each (default
//! `--secs`) at `--read-conns`.
//! Under `cargo test` it runs a short smoke version so it never rots.
//!
//! Data: `FEEDGRAPH_BENCH_DATA=DIR` serves that directory (e.g. the one `benches/run` loaded)
//! and reads org `FEEDGRAPH_BENCH_ORG` (default `bench`); without it, a temp directory with
//! the fixtures imported (org `acme`). `$hottest` is `FEEDGRAPH_BENCH_ADAPTER`, or else the
//! adapter with the most FEEDBACK_FOR edges, asked of the server. The submits go to another
//! org (`loadtest`), so they leave the read rows' data as loaded; the link rows run last,
//! since every link adds an edge to the loaded org (to adapters `bench_link_*` they create).
//! `FEEDGRAPH_BENCH_SERVER=PATH` loads another build's `feedgraph` binary instead of this
//! build's (to compare two builds with the same client).
//!
//! `--targets URL,URL...` measures servers started by someone else (e.g. `benches/pg_run`:
//! sled, or several PostgreSQL replicas over one database) instead of spawning one: no
//! server and no ceiling row are started, connection `c` of every row sends to target
//! `c % n` (so the load is split evenly between replicas), and the tokens are minted from
//! the configuration in the environment (`FEEDGRAPH__AUTH__SECRET_FILE`: the targets' shared
//! secret).
//!
//! The server runs as a separate `feedgraph serve` process (release build under
//! `cargo bench`); the load client is this process (closed loop: each connection sends its
//! next request when the previous answer arrived). On a 2-core machine both share the cores.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use feedgraph::config::Config;
use feedgraph::http::auth::{Authenticator, Role, mint};

/// The org the durable submits write to (never the org the read rows read).
const WRITE_ORG: &str = "loadtest";

struct Opts {
    secs: f64,
    /// Rounds in which the ceiling and the durable submits alternate.
    rounds: usize,
    conns: Vec<usize>,
    /// Seconds of each read or link row.
    read_secs: f64,
    /// Connection counts of the read and link rows.
    read_conns: Vec<usize>,
    /// Run only the rows whose label contains this (e.g. `POST`, `ceiling`, `GET`).
    only: Option<String>,
    /// Servers started by someone else, sharing the load (empty: spawn one).
    targets: Vec<String>,
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
            read_secs: 5.0,
            read_conns: vec![1, 16, 64],
            only: None,
            targets: Vec::new(),
        }
    } else {
        Opts {
            secs: 0.3,
            rounds: 2,
            conns: vec![1, 4],
            read_secs: 0.15,
            read_conns: vec![1, 4],
            only: None,
            targets: Vec::new(),
        }
    };
    let mut read_secs = None;
    let list = |v: Option<&String>| -> Option<Vec<usize>> {
        v.map(|v| v.split(',').filter_map(|n| n.parse().ok()).collect())
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--only" => o.only = it.next().cloned(),
            "--targets" => {
                o.targets = it
                    .next()
                    .map(|v| {
                        v.split(',')
                            .filter(|t| !t.is_empty())
                            .map(|t| t.trim_end_matches('/').to_owned())
                            .collect()
                    })
                    .unwrap_or_default()
            }
            "--secs" => o.secs = it.next().and_then(|v| v.parse().ok()).unwrap_or(o.secs),
            "--rounds" => {
                o.rounds = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(o.rounds)
                    .max(1)
            }
            "--conns" => o.conns = list(it.next()).unwrap_or(o.conns),
            "--read-secs" => read_secs = it.next().and_then(|v| v.parse().ok()),
            "--read-conns" => o.read_conns = list(it.next()).unwrap_or(o.read_conns),
            _ => {}
        }
    }
    // Under `cargo bench` the read rows take `--secs` unless told otherwise.
    o.read_secs = read_secs.unwrap_or(if bench { o.secs } else { o.read_secs });
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

/// Called with connection `c`'s answer body after each expected status (a cursor walk
/// takes its next cursor from it).
type OnBody = Arc<dyn Fn(usize, &[u8]) + Send + Sync>;

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

/// Drives `conns` connections for `secs`; `make` builds request number `n` of a connection,
/// `on_body` (if any) reads each expected answer.
async fn drive(
    conns: usize,
    secs: f64,
    expect: u16,
    make: MakeRequest,
    on_body: Option<OnBody>,
) -> Run {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for c in 0..conns {
        let make = make.clone();
        let on_body = on_body.clone();
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
                        let body = r.bytes().await;
                        if let (Some(f), Ok(b)) = (&on_body, &body) {
                            f(c, b);
                        }
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

/// The directory the server serves and the org the read rows read (with the temp dir that
/// must outlive the server when there is one).
struct Data {
    dir: PathBuf,
    org: String,
    _tmp: Option<tempfile::TempDir>,
}

/// `FEEDGRAPH_BENCH_DATA` (org `FEEDGRAPH_BENCH_ORG`, default `bench`), or a temp directory
/// holding the fixtures, imported with the server binary's own `import` (org `acme`).
fn data(server_exe: &str) -> Data {
    if let Some(dir) = std::env::var_os("FEEDGRAPH_BENCH_DATA") {
        let org = std::env::var("FEEDGRAPH_BENCH_ORG").unwrap_or_else(|_| "bench".into());
        return Data {
            dir: dir.into(),
            org,
            _tmp: None,
        };
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/feedback.jsonl");
    let out = Command::new(server_exe)
        .args(["import", fixtures])
        .env("FEEDGRAPH__DATA_DIR", tmp.path())
        .env("RUST_LOG", "error")
        .output()
        .expect("run feedgraph import");
    assert!(
        out.status.success(),
        "importing the fixtures failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Data {
        dir: tmp.path().to_owned(),
        org: "acme".into(),
        _tmp: Some(tmp),
    }
}

const BY_ID: &str = "GET /feedback/{id}";
const BY_ADAPTER: &str = "GET /feedback/by-adapter/{hottest}?limit=100";
const BY_FAMILY: &str = "GET /feedback/by-adapter/base_model?limit=100&include_descendants=true";
const STATS: &str = "GET /feedback/stats";
const LINEAGE: &str = "GET /adapters/{hottest}/lineage";
const LINK: &str = "POST /feedback/{id}/link (durable)";
const WALK_ADAPTER: &str = "GET /feedback/by-adapter/{hottest}?limit=100 (cursor walk)";
const WALK_FAMILY: &str =
    "GET /feedback/by-adapter/base_model?limit=100&include_descendants=true (cursor walk)";
/// The labels of the rows on the loaded org, in the order they run.
const READ_ROWS: [&str; 8] = [
    BY_ID,
    BY_ADAPTER,
    BY_FAMILY,
    WALK_ADAPTER,
    WALK_FAMILY,
    STATS,
    LINEAGE,
    LINK,
];

/// A GET or POST of the loaded org, measured at each of `--read-conns`.
struct ReadRow {
    what: &'static str,
    expect: u16,
    make: MakeRequest,
    /// A cursor walk: `make` and `on_body` are built for each connection count instead.
    walk: Option<Walk>,
}

/// A cursor walk through a by-adapter listing. The listing is cut into `conns` stretches
/// at `starts[c * starts.len() / conns]` (ids newest first); connection `c` walks its own
/// stretch, from just below its start, following each page's `next_cursor`, and goes back
/// to its start once a page reaches the next stretch (or the listing's end). No two
/// connections read the same items (a faster one cannot trail a slower one through items
/// it just read), and an item comes round again only after every connection walked its
/// whole stretch: after the whole listing was read.
struct Walk {
    /// Each target's URL of the listing's first page.
    urls: Vec<String>,
    token: Arc<String>,
    starts: Arc<Vec<String>>,
}

impl Walk {
    /// The requests of a walk at `conns` connections, and the reader of their answers.
    fn at(&self, conns: usize) -> (MakeRequest, OnBody) {
        let n = self.starts.len();
        let start = |c: usize| self.starts.get(c * n / conns.max(1)).cloned();
        // Each connection's stretch: its start and the next connection's (None: the end).
        let bounds: Arc<Vec<(Option<String>, Option<String>)>> = Arc::new(
            (0..conns)
                .map(|c| (start(c), if c + 1 < conns { start(c + 1) } else { None }))
                .collect(),
        );
        let cursors: Arc<Vec<std::sync::Mutex<Option<String>>>> = Arc::new(
            bounds
                .iter()
                .map(|(from, _)| std::sync::Mutex::new(from.clone()))
                .collect(),
        );
        let (urls, token, cur) = (self.urls.clone(), self.token.clone(), cursors.clone());
        let make: MakeRequest = Arc::new(move |cl, c, _n| {
            let req = cl.get(&urls[c % urls.len()]).bearer_auth(token.as_str());
            let cursor = cur[c].lock().map(|g| g.clone()).unwrap_or_default();
            match cursor {
                Some(at) => req.query(&[("cursor", at)]),
                None => req,
            }
        });
        let on_body: OnBody = Arc::new(move |c, body| {
            let (from, to) = &bounds[c];
            let next =
                next_cursor(body).filter(|next| to.as_deref().is_none_or(|to| next.as_str() > to));
            if let Ok(mut g) = cursors[c].lock() {
                *g = next.or_else(|| from.clone());
            }
        });
        (make, on_body)
    }
}

/// The `next_cursor` of a page body (its last field; `None` on the last page).
fn next_cursor(body: &[u8]) -> Option<String> {
    const FIELD: &[u8] = b",\"next_cursor\":\"";
    let tail = &body[body.len().saturating_sub(512)..];
    let found = tail
        .windows(FIELD.len())
        .rposition(|w| w == FIELD)
        .and_then(|at| tail.get(at + FIELD.len()..))
        .and_then(|rest| Some(&rest[..rest.iter().position(|&b| b == b'"')?]));
    match found {
        Some(id) if !id.contains(&b'\\') => std::str::from_utf8(id).ok().map(str::to_owned),
        // An escaped or very long id, or none near the end (the last page): serde_json
        // reads the body.
        _ => {
            let v: serde_json::Value = serde_json::from_slice(body).ok()?;
            v["next_cursor"].as_str().map(str::to_owned)
        }
    }
}

/// The server's item cache hits and misses (every miss is then read from an adapter run
/// or the store), and its adapter run hits, so far, summed over `bases` (`None` if
/// `/metrics` does not answer).
async fn cache_counts(c: &reqwest::Client, bases: &[String]) -> Option<(f64, f64, f64)> {
    let (mut hits, mut misses, mut runs) = (0.0, 0.0, 0.0);
    for b in bases {
        let text = c
            .get(format!("{b}/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        for line in text.lines() {
            let mut parts = line.split_whitespace();
            let (Some(name), Some(v)) = (parts.next(), parts.next()) else {
                continue;
            };
            let v: f64 = v.parse().unwrap_or(0.0);
            match name {
                "feedgraph_page_item_cache_hits_total" => hits += v,
                "feedgraph_page_item_cache_misses_total" => misses += v,
                "feedgraph_page_run_hits_total" => runs += v,
                _ => {}
            }
        }
    }
    Some((hits, misses, runs))
}

/// Asks the server something the rows need; panics on failure (a bench's set-up).
async fn fetch_json(req: reqwest::RequestBuilder, what: &str) -> serde_json::Value {
    let r = req.send().await.expect(what);
    assert!(r.status().is_success(), "{what}: {}", r.status());
    r.json().await.expect(what)
}

/// The adapter with the most FEEDBACK_FOR edges in the token's org, asked with a query.
async fn hottest_adapter(c: &reqwest::Client, base: &str, token: &str) -> String {
    let body = serde_json::json!({
        "query": "MATCH (f:Feedback)-[:FEEDBACK_FOR]->(a:Adapter) \
                  RETURN a.id AS id, count(f) AS n ORDER BY n DESC, id DESC LIMIT 1"
    });
    let v = fetch_json(
        c.post(format!("{base}/api/v1/llm/graph/query"))
            .bearer_auth(token)
            .json(&body),
        "hottest adapter query",
    )
    .await;
    v["rows"][0][0]
        .as_str()
        .expect("the org has linked feedback")
        .to_owned()
}

/// The ids of the items linked to `adapter`, newest first (the starts of the walks).
async fn linked_ids(c: &reqwest::Client, base: &str, token: &str, adapter: &str) -> Vec<String> {
    let body = serde_json::json!({
        "query": "MATCH (f:Feedback)-[:FEEDBACK_FOR]->(a:Adapter) WHERE a.id = $a RETURN f.id",
        "params": {"a": adapter},
    });
    let v = fetch_json(
        c.post(format!("{base}/api/v1/llm/graph/query"))
            .bearer_auth(token)
            .json(&body),
        "linked ids query",
    )
    .await;
    let mut ids: Vec<String> = v["rows"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .filter_map(|r| r[0].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    ids.sort_unstable_by(|a, b| b.cmp(a));
    assert!(!ids.is_empty(), "adapter {adapter} has no linked feedback");
    ids
}

/// Up to 1000 feedback ids of the token's org (its newest page).
async fn feedback_ids(c: &reqwest::Client, base: &str, token: &str) -> Vec<String> {
    let list = fetch_json(
        c.get(format!("{base}/api/v1/llm/feedback?limit=1000"))
            .bearer_auth(token),
        "list feedback",
    )
    .await;
    let ids: Vec<String> = list["feedback"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|f| f["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    assert!(!ids.is_empty(), "the org to read holds no feedback");
    ids
}

/// The read rows, then the link row (last: it adds edges to the org the reads read).
/// Connection `c` of every row talks to `bases[c % bases.len()]`.
fn read_rows(
    bases: &Arc<Vec<String>>,
    token: &Arc<String>,
    hot: &str,
    ids: &Arc<Vec<String>>,
    starts: &Arc<Vec<String>>,
) -> Vec<ReadRow> {
    let get = |what: &'static str, path: String| -> ReadRow {
        let t = token.clone();
        let urls: Vec<String> = bases
            .iter()
            .map(|b| format!("{b}/api/v1/llm{path}"))
            .collect();
        ReadRow {
            what,
            expect: 200,
            make: Arc::new(move |cl, c, _n| cl.get(&urls[c % urls.len()]).bearer_auth(t.as_str())),
            walk: None,
        }
    };
    let walk = |what: &'static str, path: String| -> ReadRow {
        let mut row = get(what, path.clone());
        row.walk = Some(Walk {
            urls: bases
                .iter()
                .map(|b| format!("{b}/api/v1/llm{path}"))
                .collect(),
            token: token.clone(),
            starts: starts.clone(),
        });
        row
    };
    let (t, bs, ids2) = (token.clone(), bases.clone(), ids.clone());
    let by_id = ReadRow {
        what: BY_ID,
        expect: 200,
        walk: None,
        make: Arc::new(move |cl, c, n| {
            let id = &ids2[(c * 7919 + n) % ids2.len()];
            let b = &bs[c % bs.len()];
            cl.get(format!("{b}/api/v1/llm/feedback/{id}"))
                .bearer_auth(t.as_str())
        }),
    };
    // Every link is a new edge: item k % ids, adapter k / ids (a new adapter, made by its
    // first link), under a prefix of this run so a second run on the same data makes new
    // ones too.
    let next = Arc::new(AtomicUsize::new(0));
    let run = std::process::id();
    let (t, bs, ids2) = (token.clone(), bases.clone(), ids.clone());
    let link = ReadRow {
        what: LINK,
        expect: 201,
        walk: None,
        make: Arc::new(move |cl, c, _n| {
            let b = &bs[c % bs.len()];
            let k = next.fetch_add(1, Ordering::Relaxed);
            let id = &ids2[k % ids2.len()];
            let adapter = format!("bench_link_{run}_{}", k / ids2.len());
            cl.post(format!("{b}/api/v1/llm/feedback/{id}/link"))
                .bearer_auth(t.as_str())
                .header("content-type", "application/json")
                .body(format!(r#"{{"adapter_id":"{adapter}"}}"#))
        }),
    };
    vec![
        by_id,
        get(BY_ADAPTER, format!("/feedback/by-adapter/{hot}?limit=100")),
        get(
            BY_FAMILY,
            "/feedback/by-adapter/base_model?limit=100&include_descendants=true".into(),
        ),
        walk(
            WALK_ADAPTER,
            format!("/feedback/by-adapter/{hot}?limit=100"),
        ),
        walk(
            WALK_FAMILY,
            "/feedback/by-adapter/base_model?limit=100&include_descendants=true".into(),
        ),
        get(STATS, "/feedback/stats".into()),
        get(LINEAGE, format!("/adapters/{hot}/lineage")),
        link,
    ]
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
    // FEEDGRAPH_BENCH_SERVER runs another build's server (paired before/after runs).
    let server_exe = std::env::var("FEEDGRAPH_BENCH_SERVER")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_feedgraph").to_owned());
    let external = !o.targets.is_empty();
    let (data, config) = if external {
        // Servers someone else started: the tokens are minted from the environment's
        // configuration (their shared secret).
        let config = Config::load(None).expect("configuration from the environment");
        let org = std::env::var("FEEDGRAPH_BENCH_ORG").unwrap_or_else(|_| "bench".into());
        let data = Data {
            dir: config.data_dir.clone(),
            org,
            _tmp: None,
        };
        (data, config)
    } else {
        let data = data(&server_exe);
        let config = Config {
            data_dir: data.dir.clone(),
            ..Config::default()
        };
        (data, config)
    };
    // The servers this process started (stopped at the end), the targets of the rows on
    // the server, and the ceiling's address (none with `--targets`).
    let mut spawned = Vec::new();
    let (targets, ceiling_base) = if external {
        (o.targets.clone(), None)
    } else {
        let server = spawn(&[&server_exe, "serve", "--bind", "127.0.0.1:0"], &data.dir);
        let exe = std::env::current_exe().expect("exe");
        let ceiling = spawn(
            &[exe.to_str().expect("path"), "--ceiling-server"],
            &data.dir,
        );
        let both = (vec![server.base.clone()], Some(ceiling.base.clone()));
        spawned.push(ceiling);
        spawned.push(server);
        both
    };
    let targets = Arc::new(targets);
    // Minted after the server started: it creates the signing secret of a new directory.
    let write_token =
        Arc::new(mint(&config, WRITE_ORG, "loader", &[Role::Admin], 3600).expect("token"));
    let read_token =
        Arc::new(mint(&config, &data.org, "reader", &[Role::Admin], 3600).expect("token"));

    rt.block_on(async {
        let c = reqwest::Client::new();
        for base in targets.iter() {
            // Up to a minute: a 1M-item directory takes seconds to open on a busy machine.
            for _ in 0..3000 {
                if let Ok(r) = c.get(format!("{base}/readyz")).send().await
                    && r.status().is_success()
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        println!("| request | connections | requests/s | p50 ms | p99 ms | errors |");
        println!("|---|---|---|---|---|---|");
        let mut rows: Vec<(&str, Vec<String>)> = Vec::new();
        if let Some(b) = &ceiling_base {
            rows.push(("ceiling: token check + 201", vec![b.clone()]));
        }
        rows.push(("POST /feedback (durable)", targets.to_vec()));
        for &conns in &o.conns {
            let mut totals: Vec<Run> = rows.iter().map(|_| Run::default()).collect();
            for _ in 0..o.rounds {
                for ((what, bases), total) in rows.iter().zip(totals.iter_mut()) {
                    if !o.wants(what) {
                        continue;
                    }
                    let t = write_token.clone();
                    let urls: Vec<String> = bases
                        .iter()
                        .map(|b| format!("{b}/api/v1/llm/feedback"))
                        .collect();
                    let make: MakeRequest = Arc::new(move |cl, c, n| {
                        cl.post(&urls[c % urls.len()])
                            .bearer_auth(t.as_str())
                            .header("content-type", "application/json")
                            .body(body(c, n))
                    });
                    let secs = o.secs / o.rounds as f64;
                    total.add(drive(conns, secs, 201, make, None).await);
                }
            }
            for ((what, _), total) in rows.iter().zip(totals.iter_mut()) {
                if o.wants(what) {
                    println!("{}", total.row(what, conns));
                }
            }
        }

        let reads = {
            if !READ_ROWS.iter().any(|w| o.wants(w)) {
                return;
            }
            let hot = match std::env::var("FEEDGRAPH_BENCH_ADAPTER") {
                Ok(a) => a,
                Err(_) => hottest_adapter(&c, &targets[0], &read_token).await,
            };
            let ids = Arc::new(feedback_ids(&c, &targets[0], &read_token).await);
            let starts = if [WALK_ADAPTER, WALK_FAMILY].iter().any(|w| o.wants(w)) {
                linked_ids(&c, &targets[0], &read_token, &hot).await
            } else {
                Vec::new()
            };
            eprintln!(
                "http_load: reading org '{}' of {}, $hottest = {hot}",
                data.org,
                data.dir.display()
            );
            read_rows(&targets, &read_token, &hot, &ids, &Arc::new(starts))
        };
        // Every read row at every connection count first, the link row after them all.
        let (links, gets): (Vec<&ReadRow>, Vec<&ReadRow>) =
            reads.iter().partition(|r| r.what == LINK);
        for group in [gets, links] {
            for &conns in &o.read_conns {
                for row in &group {
                    if !o.wants(row.what) {
                        continue;
                    }
                    let Some(walk) = &row.walk else {
                        let make = row.make.clone();
                        let mut run = drive(conns, o.read_secs, row.expect, make, None).await;
                        println!("{}", run.row(row.what, conns));
                        continue;
                    };
                    let (make, on_body) = walk.at(conns);
                    let before = cache_counts(&c, &targets).await;
                    let mut run =
                        drive(conns, o.read_secs, row.expect, make, Some(on_body)).await;
                    println!("{}", run.row(row.what, conns));
                    if let (Some((h0, m0, r0)), Some((h1, m1, r1))) =
                        (before, cache_counts(&c, &targets).await)
                    {
                        let (h, m, r) = (h1 - h0, m1 - m0, r1 - r0);
                        eprintln!(
                            "http_load: {} at {conns}: {h:.0} items kept, {r:.0} from adapter runs, \
                             {:.0} read from the store ({:.1}% kept, {:.1}% from runs)",
                            row.what,
                            (m - r).max(0.0),
                            100.0 * h / (h + m).max(1.0),
                            100.0 * r / (h + m).max(1.0)
                        );
                    }
                }
            }
        }
    });
    drop(spawned);
}
