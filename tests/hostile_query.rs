//! Hostile graph queries through the real server: values that grow without bound, work
//! hidden inside expressions, and clients that hang up. Each must be stopped with a 4xx that
//! names the limit, and the server must stay healthy for everyone else.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::server::{TestServer, error_details};
use feedgraph::config::Config;
use feedgraph::http::auth::Role;
use feedgraph::model::NewFeedback;
use feedgraph::service::ImportRecord;
use serde_json::{Value, json};

/// How long a test waits for something that should happen promptly. Not a performance
/// bound: without the behaviour under test it would take hours (or never happen).
const PATIENCE: Duration = Duration::from_secs(90);

/// The server with the default query limits and no rate limits.
async fn server_with(tweak: impl FnOnce(&mut Config)) -> TestServer {
    TestServer::start_with(|c| {
        c.rate_limit.enabled = false;
        tweak(c);
    })
    .await
}

/// Runs `query` as a user of `org`.
async fn query(server: &TestServer, org: &str, query: &str) -> (u16, Value) {
    let token = server.token(org, "mallory", Role::User);
    let body = json!({ "query": query });
    let send = server.post(&token, "/graph/query", &body);
    tokio::time::timeout(PATIENCE, send)
        .await
        .unwrap_or_else(|_| panic!("no answer within {PATIENCE:?} to {query}"))
}

/// The start of a body, for failure messages (an unbounded answer can be huge).
fn short(body: &Value) -> String {
    let text = body.to_string();
    match text.char_indices().nth(600) {
        Some((at, _)) => format!("{}... ({} bytes)", &text[..at], text.len()),
        None => text,
    }
}

/// Asserts a 400 whose details name `limit` (and return them).
fn assert_limit(status: u16, body: &Value, limit: &str) -> String {
    assert_eq!(status, 400, "{}", short(body));
    let details = error_details(body);
    assert!(
        details.contains(&format!("query limit {limit} exceeded")),
        "expected limit {limit}: {details}"
    );
    details
}

/// The server still answers /healthz and another org's query.
async fn assert_healthy(server: &TestServer) {
    let r = server.get_open("/healthz").await;
    assert_eq!(r.status().as_u16(), 200);
    let (status, body) = query(server, "bystander", "RETURN 1 + 1 AS two").await;
    assert_eq!(status, 200, "{}", short(&body));
    assert_eq!(body["rows"], json!([[2]]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_list_returned_many_times_hits_the_memory_limit() {
    // Streamed results release rows once sent; with batches this large the whole result is
    // one batch, which the memory limit bounds (tests/graph_stream.rs covers streaming).
    let server = server_with(|c| {
        c.query.stream_batch_rows = usize::MAX;
        c.query.stream_batch_bytes = u64::MAX;
    })
    .await;
    let (status, body) = query(
        &server,
        "acme",
        "WITH range(1,1000000) AS r UNWIND range(1,60) AS i RETURN r",
    )
    .await;
    let details = assert_limit(status, &body, "max_memory");
    assert!(details.contains("query.max_memory_bytes"), "{details}");
    assert_healthy(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strings_and_lists_that_grow_hit_the_memory_limit() {
    let server = server_with(|_| {}).await;
    let mut q = String::from("WITH 'aaaaaaaaaa' AS s ");
    for _ in 0..7 {
        q.push_str("WITH s+s+s+s+s+s+s+s+s+s AS s ");
    }
    q.push_str("RETURN size(s)");
    let (status, body) = query(&server, "acme", &q).await;
    assert_limit(status, &body, "max_memory");
    let (status, body) = query(
        &server,
        "acme",
        "WITH range(1,1000000) AS r WITH r+r+r+r+r+r+r+r+r+r AS r RETURN size(r+r+r)",
    )
    .await;
    assert_limit(status, &body, "max_memory");
    // replace() that multiplies a string is charged before it is built.
    let h = "a".repeat(100);
    let q = format!(
        "RETURN size(replace(replace(replace(replace('aaaaaaaaaa','a','{h}'),'a','{h}'),'a','{h}'),'a','{h}'))"
    );
    let (status, body) = query(&server, "acme", &q).await;
    assert_limit(status, &body, "max_memory");
    assert_healthy(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_with_a_huge_span_does_not_overflow_or_allocate() {
    let server = server_with(|_| {}).await;
    for q in [
        "RETURN size(range(-9223372036854775807, 9223372036854775807))",
        "RETURN size(range(1, 9223372036854775807, 2))",
        "UNWIND range(9223372036854775807, -9223372036854775807, -1) AS x RETURN x LIMIT 1",
    ] {
        let (status, body) = query(&server, "acme", q).await;
        assert_limit(status, &body, "max_memory");
    }
    // Ranges near the ends of the integers still count right.
    let (status, body) = query(
        &server,
        "acme",
        "RETURN range(9223372036854775805, 9223372036854775807) AS up, \
         range(-9223372036854775807, -9223372036854775808, -1) AS down",
    )
    .await;
    assert_eq!(status, 200, "{}", short(&body));
    assert_eq!(
        body["rows"],
        json!([[
            [
                9223372036854775805i64,
                9223372036854775806i64,
                9223372036854775807i64
            ],
            [-9223372036854775807i64, i64::MIN]
        ]])
    );
    assert_healthy(&server).await;
}

/// Seeds `n` feedback items with long texts into org `acme` of a fresh data directory.
fn seeded_dir(n: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let service = common::open(dir.path());
    let records = (0..n)
        .map(|i| {
            let item = NewFeedback {
                feedback_type: Some("positive".into()),
                question: Some(format!(
                    "Question number {i}: {}",
                    "why is it so? ".repeat(30)
                )),
                answer: Some(format!(
                    "Answer number {i}: {}",
                    "because it is. ".repeat(30)
                )),
                adapter_id: Some(format!("lora_{}", i % 7)),
                ..Default::default()
            };
            (
                i + 1,
                ImportRecord::Feedback {
                    org: Some("acme".into()),
                    id: None,
                    created_at: None,
                    item: Box::new(item),
                },
            )
        })
        .collect();
    service
        .import(None, "seed", records, 1000, |_| {})
        .expect("seed");
    drop(service);
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collecting_a_cross_product_of_nodes_hits_the_memory_limit() {
    let server = TestServer::start_in(seeded_dir(600), |c| {
        c.rate_limit.enabled = false;
        c.query.max_rows = 10_000_000;
        // One batch for the whole result, as for a_big_list_returned_many_times_hits_the_memory_limit.
        c.query.stream_batch_rows = usize::MAX;
        c.query.stream_batch_bytes = u64::MAX;
    })
    .await;
    let (status, body) = query(&server, "acme", "MATCH (a) RETURN count(a) AS n").await;
    assert_eq!(status, 200, "{}", short(&body));
    assert!(
        body["rows"][0][0].as_u64().unwrap() >= 600,
        "{}",
        short(&body)
    );
    let (status, body) = query(&server, "acme", "MATCH (a),(b) RETURN collect(a)").await;
    assert_limit(status, &body, "max_memory");
    // The same nodes as rows (the row limit set out of the way): the size of the result
    // is charged row by row.
    let (status, body) = query(&server, "acme", "MATCH (a:Feedback),(b:Feedback) RETURN a").await;
    assert_limit(status, &body, "max_memory");
    // A modest query on the same data still answers, and reports its memory.
    let (status, body) = query(
        &server,
        "acme",
        "MATCH (f:Feedback) RETURN f ORDER BY f.id LIMIT 5",
    )
    .await;
    assert_eq!(status, 200, "{}", short(&body));
    assert_eq!(body["rows"].as_array().unwrap().len(), 5);
    assert!(
        body["stats"]["memory_bytes"].as_u64().unwrap() > 0,
        "{}",
        short(&body)
    );
    assert_healthy(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_inside_expressions_counts_against_max_work() {
    // A generous clock: only the work limit can stop this.
    let server = server_with(|c| c.query.timeout_ms = 3_600_000).await;
    let (status, body) = query(
        &server,
        "acme",
        "RETURN size([x IN range(1,15000) WHERE size([y IN range(1,15000) WHERE y = x]) > 0])",
    )
    .await;
    assert_limit(status, &body, "max_work");
    // The same over a list built once: only the comprehensions' own loops do work.
    let (status, body) = query(
        &server,
        "acme",
        "WITH range(1,15000) AS r RETURN size([x IN r WHERE size([y IN r WHERE y = x]) > 0])",
    )
    .await;
    assert_limit(status, &body, "max_work");
    // Expression work shows in the stats of a query that succeeds.
    let (status, body) = query(
        &server,
        "acme",
        "RETURN size([x IN range(1,1000) WHERE x % 2 = 0]) AS n",
    )
    .await;
    assert_eq!(status, 200, "{}", short(&body));
    assert_eq!(body["rows"], json!([[500]]));
    assert!(
        body["stats"]["work"].as_u64().unwrap() >= 2000,
        "{}",
        short(&body)
    );
    assert_healthy(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deadline_is_checked_inside_expressions() {
    // Unlimited work: only the clock can stop this, and it would run for hours.
    let server = server_with(|c| {
        c.query.timeout_ms = 300;
        c.query.max_work = u64::MAX / 4;
    })
    .await;
    // The lists are built once; then only the loops of the comprehensions and quantifiers
    // run, and only they can look at the clock.
    for q in [
        "WITH range(1,1000000) AS r RETURN size([x IN r WHERE size([y IN r WHERE y = x]) > 0])",
        "WITH range(1,1000000) AS r RETURN any(x IN r WHERE any(y IN r WHERE y = -x))",
        "RETURN size([x IN range(1,1000000) WHERE size([y IN range(1,1000000) WHERE y = x]) > 0])",
    ] {
        let (status, body) = query(&server, "acme", q).await;
        assert_limit(status, &body, "timeout");
    }
    assert_healthy(&server).await;
}

/// Sends `body` to POST /graph/query on a raw connection and returns it unread.
fn send_raw(server: &TestServer, token: &str, query: &str) -> std::net::TcpStream {
    let addr = server.base.trim_start_matches("http://").to_owned();
    let body = json!({ "query": query }).to_string();
    let request = format!(
        "POST /api/v1/llm/graph/query HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_up_cancels_its_query() {
    // One query per org at a time, no effective time or work limit: the slow query holds
    // the org's only slot until it stops, and nothing but cancellation stops it.
    let server = server_with(|c| {
        c.query.max_concurrent_per_org = 1;
        c.query.timeout_ms = 3_600_000;
        c.query.max_work = u64::MAX / 4;
    })
    .await;
    let token = server.token("acme", "quitter", Role::User);
    let slow = "WITH range(1,1000000) AS r RETURN any(x IN r WHERE any(y IN r WHERE y = -x))";
    let send_slow = || {
        let stream = send_raw(&server, &token, slow);
        stream
            .set_read_timeout(Some(Duration::from_millis(1)))
            .unwrap();
        stream
    };
    let mut stream = send_slow();
    // Wait until it runs: the org's slot is taken.
    let started = Instant::now();
    loop {
        let (status, body) = query(&server, "acme", "RETURN 1").await;
        if status == 429 {
            assert!(
                error_details(&body).contains("max_concurrent_per_org"),
                "{}",
                short(&body)
            );
            break;
        }
        assert_eq!(status, 200, "{}", short(&body));
        assert!(started.elapsed() < PATIENCE, "the slow query never started");
        // A probe that held the slot when the slow query came made it a 429: its answer
        // waits on the stream. The slow query never answers while it runs, so send it
        // again.
        let mut first = [0u8; 1];
        if matches!(stream.peek(&mut first), Ok(n) if n > 0) {
            stream = send_slow();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Other orgs are not affected.
    let (status, body) = query(&server, "globex", "RETURN 2").await;
    assert_eq!(status, 200, "{}", short(&body));
    // Hang up; the query must stop and give its slot back.
    drop(stream);
    let hung_up = Instant::now();
    loop {
        let (status, body) = query(&server, "acme", "RETURN 1 AS one").await;
        if status == 200 {
            assert_eq!(body["rows"], json!([[1]]));
            break;
        }
        assert_eq!(status, 429, "{}", short(&body));
        assert!(
            hung_up.elapsed() < PATIENCE,
            "the query of a client that hung up kept running"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_healthy(&server).await;
}

/// Slow queries sent on raw connections, each resent if the server answered it (it was
/// refused while a probe held a slot): a running slow query never answers.
struct SlowQueries<'s> {
    server: &'s TestServer,
    streams: Vec<(String, std::net::TcpStream)>,
}

impl<'s> SlowQueries<'s> {
    const TEXT: &'static str =
        "WITH range(1,1000000) AS r RETURN any(x IN r WHERE any(y IN r WHERE y = -x))";

    fn send(&mut self, org: &str) {
        let token = self.server.token(org, "hog", Role::User);
        let stream = send_raw(self.server, &token, Self::TEXT);
        stream
            .set_read_timeout(Some(Duration::from_millis(1)))
            .unwrap();
        self.streams.push((org.to_owned(), stream));
    }

    /// Sends again every slow query that was answered instead of running.
    fn resend_answered(&mut self) {
        let mut answered = Vec::new();
        self.streams.retain(|(org, stream)| {
            let mut first = [0u8; 1];
            let done = matches!(stream.peek(&mut first), Ok(n) if n > 0);
            if done {
                answered.push(org.clone());
            }
            !done
        });
        for org in answered {
            self.send(&org);
        }
    }

    /// Probes with `RETURN 1` as `org` until it is refused with `limit`.
    async fn wait_until_refused(&mut self, org: &str, limit: &str) {
        let started = Instant::now();
        loop {
            let (status, body) = query(self.server, org, "RETURN 1").await;
            if status == 429 {
                let details = error_details(&body);
                if details.contains(limit) {
                    return;
                }
            } else {
                assert_eq!(status, 200, "{}", short(&body));
            }
            assert!(
                started.elapsed() < PATIENCE,
                "{org} was never refused with {limit}"
            );
            self.resend_answered();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_orgs_cannot_take_the_servers_last_query_slots() {
    // Four queries at once in all, the last one kept for orgs running none; four per org.
    let server = server_with(|c| {
        c.query.max_concurrent_per_org = 4;
        c.query.max_concurrent_total = 4;
        c.query.timeout_ms = 3_600_000;
        c.query.max_work = u64::MAX / 4;
    })
    .await;
    let mut slow = SlowQueries {
        server: &server,
        streams: Vec::new(),
    };
    for _ in 0..3 {
        slow.send("acme");
    }
    // With three of its queries running, acme is refused the fourth slot by the server-wide
    // limit, though it is under its own.
    slow.wait_until_refused("acme", "max_concurrent_total")
        .await;
    // An org running nothing gets in.
    let (status, body) = query(&server, "globex", "RETURN 2 AS two").await;
    assert_eq!(status, 200, "{}", short(&body));
    assert_eq!(body["rows"], json!([[2]]));
    // Once it takes the last slot, nobody else does.
    slow.send("globex");
    slow.wait_until_refused("initech", "max_concurrent_total")
        .await;
    let (status, body) = query(&server, "globex", "RETURN 1").await;
    assert_eq!(status, 429, "{}", short(&body));
    // Hanging up frees every slot.
    drop(slow);
    let hung_up = Instant::now();
    for org in ["initech", "acme", "globex"] {
        loop {
            let (status, body) = query(&server, org, "RETURN 1 AS one").await;
            if status == 200 {
                assert_eq!(body["rows"], json!([[1]]));
                break;
            }
            assert_eq!(status, 429, "{}", short(&body));
            assert!(hung_up.elapsed() < PATIENCE, "a slot was never given back");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert_healthy(&server).await;
}

/// The value of an unlabelled sample in the server's `/metrics`.
async fn metric(server: &TestServer, name: &str) -> f64 {
    let text = server.get_open("/metrics").await.text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_together_cannot_hold_more_than_the_servers_memory_pool() {
    // Each query may hold 256 MiB, all of them together 40 MiB, one org 30 MiB, and every
    // query its first MiB without drawing on the pool. A list of a million values is
    // about 24-32 MB of the estimate: one fits, two do not.
    let server = server_with(|c| {
        c.query.max_memory_total_bytes = 40 << 20;
        c.query.timeout_ms = 3_600_000;
        c.query.max_work = u64::MAX / 4;
    })
    .await;
    let big = "WITH range(1,1000000) AS r RETURN size(r) AS n";
    let (status, body) = query(&server, "globex", big).await;
    assert_eq!(status, 200, "alone it fits: {}", short(&body));
    assert_eq!(body["rows"], json!([[1000000]]));
    let reserved = "feedgraph_query_memory_reserved_bytes";
    assert_eq!(
        metric(&server, reserved).await,
        0.0,
        "a finished query gave all back"
    );

    // A slow query (another org's) holds its million values for as long as its client stays.
    let mut slow = SlowQueries {
        server: &server,
        streams: Vec::new(),
    };
    slow.send("acme");
    let started = Instant::now();
    let details = loop {
        let (status, body) = query(&server, "globex", big).await;
        if status == 429 {
            break error_details(&body);
        }
        assert_eq!(status, 200, "{}", short(&body));
        assert!(started.elapsed() < PATIENCE, "the pool never refused");
        slow.resend_answered();
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        details.contains("max_memory_total") && details.contains("query.max_memory_total_bytes"),
        "{details}"
    );
    assert!(metric(&server, reserved).await >= 20.0 * 1024.0 * 1024.0);
    assert!(
        details.contains("the server's running queries"),
        "{details}"
    );
    // Small queries still run beside it, and a medium one fits in what is left.
    let (status, body) = query(&server, "globex", "RETURN 1 AS one").await;
    assert_eq!(status, 200, "{}", short(&body));
    let medium = "WITH range(1,250000) AS r RETURN size(r) AS n";
    let (status, body) = query(&server, "globex", medium).await;
    assert_eq!(status, 200, "{}", short(&body));
    // The slow query's own org may hold three quarters of the pool (30 MiB), not all of
    // it: a second big query of acme is refused by the org's share, and a small one runs.
    let (status, body) = query(&server, "acme", big).await;
    assert_eq!(status, 429, "{}", short(&body));
    let details = error_details(&body);
    assert!(details.contains("this org's running queries"), "{details}");
    let (status, body) = query(&server, "acme", "RETURN 1 AS one").await;
    assert_eq!(status, 200, "{}", short(&body));

    // Hanging up ends the slow query and gives its memory back.
    drop(slow);
    let hung_up = Instant::now();
    loop {
        let (status, body) = query(&server, "globex", big).await;
        if status == 200 {
            assert_eq!(body["rows"], json!([[1000000]]));
            break;
        }
        assert_eq!(status, 429, "{}", short(&body));
        assert!(
            hung_up.elapsed() < PATIENCE,
            "the memory was never given back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(metric(&server, reserved).await, 0.0);
    assert_healthy(&server).await;
}
