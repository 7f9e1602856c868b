//! Streamed query results over HTTP: the streamed JSON equals the collected result, results
//! past the old row cap arrive whole in bounded memory, Arrow IPC read back equals the JSON
//! rows, errors midway are visible in the body, and a client that hangs up mid-result stops
//! its query.

mod common;

use std::time::{Duration, Instant};

use arrow_array::types::Int32Type;
use arrow_array::{
    Array, BooleanArray, DictionaryArray, Float64Array, Int64Array, NullArray, RecordBatch,
    StringArray,
};
use arrow_ipc::reader::StreamReader;
use arrow_schema::DataType;
use common::server::{TestServer, error_details};
use feedgraph::cypher::arrow::{ENCODING_JSON, ENCODING_KEY, MEDIA_TYPE};
use feedgraph::http::auth::Role;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Queries over the fixtures: the seed's four, the named queries' texts, and a spread of
/// value kinds (nodes, paths, relationships, maps, lists, floats, nulls, booleans).
fn queries() -> Vec<(String, String, Value)> {
    let spec: Value = serde_json::from_str(include_str!("conformance/seed_queries.json")).unwrap();
    let mut out: Vec<(String, String, Value)> = spec["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["org"].as_str().unwrap().to_owned(),
                c["query"].as_str().unwrap().to_owned(),
                c["params"].clone(),
            )
        })
        .collect();
    for q in [
        "MATCH (f:Feedback) RETURN f.id, f.score, f.used_for_training, f.metadata ORDER BY f.id",
        "MATCH (f:Feedback)-[r:FEEDBACK_FOR]->(a:Adapter) RETURN r, a, f.created_at ORDER BY f.id, a.id",
        "MATCH (a:Adapter) RETURN a.id, a.derived_from, [1, 'x', null] AS l, {k: a.id} AS m ORDER BY a.id",
        "MATCH (f:Feedback) RETURN f.type AS t, count(*) AS n, avg(f.created_at) AS avg ORDER BY t",
        "MATCH (f:Feedback) WHERE f.id = 'none' RETURN f.id",
        // Ids kept as references into the graph snapshot until written out.
        "MATCH (f:Feedback)-[:FEEDBACK_FOR]->(a1:Adapter)-[:DERIVED_FROM*0..30]->(a2:Adapter) RETURN f.id, a1.id, a2.id",
        "MATCH (a:Adapter) OPTIONAL MATCH (a)<-[:FEEDBACK_FOR]-(f:Feedback) RETURN a.id, f.id",
        "UNWIND [1, 'x', null, [2], {a: 1.5}] AS v RETURN v",
        "UNWIND [1, 2.5, null, 3, 4] AS v RETURN v",
    ] {
        out.push(("acme".into(), q.into(), json!({})));
    }
    out
}

/// A data directory with the fixtures loaded, the collected (non-streamed) results of
/// `queries()` computed on it in process, and a server on it.
async fn setup(
    tweak: impl FnOnce(&mut feedgraph::config::Config),
) -> (TestServer, Vec<(String, String, Value, Value)>) {
    let dir = tempfile::tempdir().unwrap();
    let mut expected = Vec::new();
    common::load_fixtures(&common::open(dir.path()));
    {
        // Reopened, the graph is built from the store as the server builds it (node ids
        // and the order of unordered results are the same).
        let s = common::open(dir.path());
        for (org, q, params) in queries() {
            let r = s
                .query(&org, &q, params.as_object().unwrap())
                .unwrap_or_else(|e| panic!("{q}: {e}"));
            expected.push((org, q, params, serde_json::to_value(&r).unwrap()));
        }
    }
    let s = TestServer::start_in(dir, |c| {
        c.rate_limit.enabled = false;
        tweak(c);
    })
    .await;
    (s, expected)
}

async fn post_query(s: &TestServer, token: &str, q: &str, params: &Value) -> reqwest::Response {
    s.client
        .post(s.url("/graph/query"))
        .bearer_auth(token)
        .json(&json!({"query": q, "params": params}))
        .send()
        .await
        .unwrap()
}

async fn post_arrow(s: &TestServer, token: &str, q: &str, params: &Value) -> reqwest::Response {
    s.client
        .post(s.url("/graph/query"))
        .bearer_auth(token)
        .header("accept", MEDIA_TYPE)
        .json(&json!({"query": q, "params": params}))
        .send()
        .await
        .unwrap()
}

/// The batches of an Arrow IPC stream.
fn read_arrow(bytes: &[u8]) -> (arrow_schema::SchemaRef, Vec<RecordBatch>) {
    let reader = StreamReader::try_new(std::io::Cursor::new(bytes.to_vec()), None).unwrap();
    let schema = reader.schema();
    let batches = reader.map(|b| b.unwrap()).collect();
    (schema, batches)
}

/// The rows of Arrow batches as JSON values (JSON-text columns parsed back).
fn arrow_rows(schema: &arrow_schema::Schema, batches: &[RecordBatch]) -> Vec<Vec<Value>> {
    let mut rows = Vec::new();
    for b in batches {
        for r in 0..b.num_rows() {
            let mut row = Vec::new();
            for (c, field) in schema.fields().iter().enumerate() {
                let col = b.column(c);
                if col.is_null(r) {
                    row.push(Value::Null);
                    continue;
                }
                let json_text =
                    field.metadata().get(ENCODING_KEY).map(String::as_str) == Some(ENCODING_JSON);
                let any = col.as_any();
                row.push(match field.data_type() {
                    DataType::Int64 => json!(any.downcast_ref::<Int64Array>().unwrap().value(r)),
                    DataType::Float64 => {
                        json!(any.downcast_ref::<Float64Array>().unwrap().value(r))
                    }
                    DataType::Boolean => {
                        json!(any.downcast_ref::<BooleanArray>().unwrap().value(r))
                    }
                    DataType::Null => {
                        assert!(any.downcast_ref::<NullArray>().is_some());
                        Value::Null
                    }
                    // Adapter ids: each batch's distinct ids once, an index per row.
                    DataType::Dictionary(k, v)
                        if **k == DataType::Int32 && **v == DataType::Utf8 =>
                    {
                        let d = any.downcast_ref::<DictionaryArray<Int32Type>>().unwrap();
                        let values = d.values().as_any().downcast_ref::<StringArray>().unwrap();
                        json!(values.value(d.keys().value(r) as usize))
                    }
                    DataType::Utf8 => {
                        let s = any.downcast_ref::<StringArray>().unwrap().value(r);
                        if json_text {
                            serde_json::from_str(s).unwrap()
                        } else {
                            json!(s)
                        }
                    }
                    other => panic!("unexpected Arrow type {other}"),
                });
            }
            rows.push(row);
        }
    }
    rows
}

/// Equal JSON values, numbers compared as numbers (Arrow's Float64 column holds an
/// integer of a mixed column as a float).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x == y || x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_json_and_arrow_equal_the_collected_result() {
    // Three rows a batch: every result of more than three rows crosses batches.
    let (s, expected) = setup(|c| c.query.stream_batch_rows = 3).await;
    let mut multi_batch = 0;
    let mut dictionaries = 0;
    for (org, q, params, want) in &expected {
        let t = s.token(org, "ana", Role::User);
        let r = post_query(&s, &t, q, params).await;
        assert_eq!(r.status().as_u16(), 200, "{q}");
        assert_eq!(
            r.headers()["content-type"].to_str().unwrap(),
            "application/json"
        );
        let text = r.text().await.unwrap();
        // Header first, rows, then the trailer.
        assert!(text.starts_with("{\"columns\":"), "{q}: {text}");
        assert!(text.ends_with(",\"complete\":true}"), "{q}: {text}");
        let got: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(got["columns"], want["columns"], "{q}");
        assert_eq!(got["rows"], want["rows"], "{q}");
        assert_eq!(got["stats"]["rows"], want["stats"]["rows"], "{q}");
        assert_eq!(got["complete"], true, "{q}");
        assert_eq!(got.as_object().unwrap().len(), 4, "{q}");
        let n = want["rows"].as_array().unwrap().len();
        if n > 3 {
            multi_batch += 1;
        }

        // The same rows through Arrow.
        let r = post_arrow(&s, &t, q, params).await;
        assert_eq!(r.status().as_u16(), 200, "{q}");
        assert_eq!(r.headers()["content-type"].to_str().unwrap(), MEDIA_TYPE);
        let (schema, batches) = read_arrow(&r.bytes().await.unwrap());
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(json!(names), want["columns"], "{q}");
        assert_eq!(
            batches.len(),
            n.div_ceil(3),
            "{q}: one record batch per batch"
        );
        dictionaries += schema
            .fields()
            .iter()
            .filter(|f| matches!(f.data_type(), DataType::Dictionary(..)))
            .count();
        let rows = arrow_rows(&schema, &batches);
        let want_rows = want["rows"].as_array().unwrap();
        assert_eq!(rows.len(), want_rows.len(), "{q}");
        for (a, j) in rows.iter().zip(want_rows) {
            assert!(same(&json!(a), j), "{q}:\n arrow {a:?}\n json  {j}");
        }
    }
    assert!(multi_batch >= 5, "too few results cross batches");
    // Columns of adapter ids come dictionary-encoded, a dictionary per batch.
    assert!(dictionaries >= 2, "no dictionary-encoded column");

    // The named-query endpoint streams too.
    let t = s.token("acme", "ana", Role::User);
    let r = s
        .client
        .post(s.url("/graph/queries/lineage"))
        .bearer_auth(&t)
        .header("accept", MEDIA_TYPE)
        .json(&json!({"params": {"root": "base_model"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let (schema, batches) = read_arrow(&r.bytes().await.unwrap());
    assert!(batches.len() > 10);
    // Paths are nested: JSON text.
    assert_eq!(
        schema
            .field(0)
            .metadata()
            .get(ENCODING_KEY)
            .map(String::as_str),
        Some(ENCODING_JSON)
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_past_the_old_row_cap_stream_whole_in_bounded_memory() {
    let s = TestServer::start_with(|c| c.rate_limit.enabled = false).await;
    let t = s.token("acme", "ana", Role::User);
    // 25,000 rows: the old default cap refused more than 10,000.
    let q = "UNWIND range(1, 250) AS i UNWIND range(1, 100) AS j RETURN (i - 1) * 100 + j AS n, toString(j) AS s";
    let r = post_query(&s, &t, q, &json!({})).await;
    assert_eq!(r.status().as_u16(), 200);
    let got: Value = r.json().await.unwrap();
    let rows = got["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 25_000);
    assert!(
        rows.iter()
            .enumerate()
            .all(|(i, r)| r[0] == json!(i as i64 + 1))
    );
    assert_eq!(got["stats"]["rows"], 25_000);
    assert_eq!(got["complete"], true);
    let small = got["stats"]["memory_bytes"].as_u64().unwrap();

    let r = post_arrow(&s, &t, q, &json!({})).await;
    let (schema, batches) = read_arrow(&r.bytes().await.unwrap());
    assert_eq!(schema.field(0).data_type(), &DataType::Int64);
    assert_eq!(schema.field(1).data_type(), &DataType::Utf8);
    assert_eq!(batches.len(), 25_000usize.div_ceil(8192));
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 25_000);

    // Ten times the rows hold about the same memory: rows sent are no longer counted.
    let q = "UNWIND range(1, 2500) AS i UNWIND range(1, 100) AS j RETURN (i - 1) * 100 + j AS n, toString(j) AS s";
    let r = post_query(&s, &t, q, &json!({})).await;
    let got: Value = r.json().await.unwrap();
    assert_eq!(got["rows"].as_array().unwrap().len(), 250_000);
    let big = got["stats"]["memory_bytes"].as_u64().unwrap();
    assert!(
        big < 2 * small,
        "memory held grows with rows sent: {small} -> {big}"
    );
    s.stop().await;
}

/// Asks for `q` as Arrow and checks that the stream does not end cleanly: the body read
/// fails (or, if the server gave up before anything reached the socket, the request).
async fn assert_arrow_fails(s: &TestServer, t: &str, q: &str) {
    let sent = s
        .client
        .post(s.url("/graph/query"))
        .bearer_auth(t)
        .header("accept", MEDIA_TYPE)
        .json(&json!({"query": q}))
        .send()
        .await;
    if let Ok(r) = sent {
        assert_eq!(r.status().as_u16(), 200, "{q}");
        let body = r.bytes().await;
        assert!(body.is_err(), "{q}: a failed Arrow stream ended cleanly");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_midway_are_visible_in_the_body() {
    let s = TestServer::start_with(|c| {
        c.rate_limit.enabled = false;
        c.query.max_rows = 5;
        c.query.stream_batch_rows = 2;
    })
    .await;
    let t = s.token("acme", "ana", Role::User);
    // Rows 1-4 go out in two batches before the sixth row breaks max_rows.
    let q = "UNWIND range(1, 10) AS i RETURN i";
    let r = post_query(&s, &t, q, &json!({})).await;
    assert_eq!(r.status().as_u16(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["rows"], json!([[1], [2], [3], [4]]), "{body}");
    assert!(body.get("complete").is_none(), "{body}");
    assert!(body.get("stats").is_none(), "{body}");
    assert_eq!(body["error"]["status"], 400, "{body}");
    assert_eq!(body["error"]["error"], "Query limit exceeded", "{body}");
    assert!(
        body["error"]["details"]
            .as_str()
            .unwrap()
            .contains("max_rows"),
        "{body}"
    );
    // An Arrow stream that fails midway is cut short: reading it is an error.
    assert_arrow_fails(&s, &t, q).await;
    // So is one whose column changes type after the first batch.
    let q = "UNWIND range(1, 4) AS i RETURN CASE WHEN i < 3 THEN i ELSE 0.5 END AS v";
    assert_arrow_fails(&s, &t, q).await;
    // ... which JSON streams whole.
    let body: Value = post_query(&s, &t, q, &json!({}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["rows"], json!([[1], [2], [0.5], [0.5]]));
    // An error before the first batch keeps its status.
    for r in [
        post_query(&s, &t, "MATCH (f RETURN f", &json!({})).await,
        post_arrow(&s, &t, "MATCH (f RETURN f", &json!({})).await,
    ] {
        assert_eq!(r.status().as_u16(), 400);
        let body: Value = r.json().await.unwrap();
        assert!(error_details(&body).contains("line 1"), "{body}");
    }
    s.stop().await;
}

/// Counts of finished queries with `outcome` in `/metrics`.
async fn outcome_count(s: &TestServer, outcome: &str) -> u64 {
    let text = s.get_open("/metrics").await.text().await.unwrap();
    let label = format!("outcome=\"{outcome}\"");
    text.lines()
        .filter(|l| l.starts_with("feedgraph_query_duration_seconds_count{") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// 9 million rows of about 60 bytes: far more than socket buffers hold.
const HUGE: &str = "UNWIND range(1, 3000) AS i UNWIND range(1, 3000) AS j \
                    RETURN i, j, 'some padding to make each row longer than a few bytes' AS pad";

/// Sends `q` on a raw connection asking for `accept`, and returns the connection unread,
/// so a test can read as little of the answer as it likes.
async fn send_raw_query(s: &TestServer, t: &str, q: &str, accept: &str) -> tokio::net::TcpStream {
    let body = json!({"query": q}).to_string();
    let addr = s.base.trim_start_matches("http://").to_owned();
    let mut sock = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let request = format!(
        "POST /api/v1/llm/graph/query HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {t}\r\n\
         Accept: {accept}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    sock.write_all(request.as_bytes()).await.unwrap();
    sock
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_up_mid_result_stops_its_query() {
    let s = TestServer::start_with(|c| {
        c.rate_limit.enabled = false;
        c.query.max_concurrent_per_org = 1;
        // Long enough that only the hang-up can stop the query in time.
        c.query.timeout_ms = 600_000;
        c.query.max_work = u64::MAX / 2;
    })
    .await;
    let t = s.token("acme", "ana", Role::User);
    for format in ["application/json", MEDIA_TYPE] {
        let before = outcome_count(&s, "cancelled").await;
        let mut sock = send_raw_query(&s, &t, HUGE, format).await;
        let mut buf = vec![0u8; 16 * 1024];
        let mut read = 0;
        while read < 8 * 1024 {
            let n = sock.read(&mut buf[read..]).await.unwrap();
            assert!(n > 0, "the server closed early");
            read += n;
        }
        assert!(buf.starts_with(b"HTTP/1.1 200"));
        drop(sock);
        // The query stops: counted as cancelled, and the org's only slot is free again.
        let give_up = Instant::now() + Duration::from_secs(120);
        while outcome_count(&s, "cancelled").await <= before {
            assert!(
                Instant::now() < give_up,
                "{format}: the query was not cancelled"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let r = post_query(&s, &t, "RETURN 1 AS one", &json!({})).await;
        assert_eq!(r.status().as_u16(), 200, "{format}: the slot stays taken");
    }
    s.stop().await;
}

/// A server with `query.timeout_ms = 200` and `stream_timeout_ms`, a user's token, and its
/// JSON answer to `q`.
async fn timed_server_and_answer(stream_timeout_ms: u64, q: &str) -> (TestServer, String, Value) {
    let s = TestServer::start_with(|c| {
        c.rate_limit.enabled = false;
        c.query.timeout_ms = 200;
        c.query.stream_timeout_ms = stream_timeout_ms;
        c.query.max_work = u64::MAX / 2;
    })
    .await;
    let t = s.token("acme", "ana", Role::User);
    let body: Value = post_query(&s, &t, q, &json!({}))
        .await
        .json()
        .await
        .unwrap();
    (s, t, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_answer_may_outlast_the_query_timeout_but_not_the_stream_timeout() {
    // 1.5M rows: well past 200 ms to produce and send, but their first batch goes out
    // long before that.
    let q = "UNWIND range(1, 1500) AS i UNWIND range(1, 1000) AS j RETURN i, j";
    let (s, t, body) = timed_server_and_answer(600_000, q).await;
    assert_eq!(body["complete"], true, "{}", body["error"]);
    assert_eq!(body["rows"].as_array().unwrap().len(), 1_500_000);
    let took = body["stats"]["elapsed_us"].as_u64().unwrap();
    assert!(
        took > 200_000,
        "the query finished within timeout_ms ({took} µs), so it proves nothing"
    );
    // The same through Arrow.
    let r = post_arrow(&s, &t, q, &json!({})).await;
    let (_, batches) = read_arrow(&r.bytes().await.unwrap());
    assert_eq!(
        batches.iter().map(|b| b.num_rows()).sum::<usize>(),
        1_500_000
    );
    s.stop().await;

    // With the stream timeout as short as the query timeout, the answer is cut and says
    // which limit cut it.
    let (s, _, body) = timed_server_and_answer(200, q).await;
    assert!(body.get("complete").is_none(), "the answer was not cut");
    assert_eq!(
        body["error"]["error"], "Query limit exceeded",
        "{}",
        body["error"]
    );
    assert!(
        body["error"]["details"]
            .as_str()
            .unwrap()
            .contains("query.stream_timeout_ms"),
        "{}",
        body["error"]
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_off_after_the_query_timeout() {
    let s = TestServer::start_with(|c| {
        c.rate_limit.enabled = false;
        c.query.max_concurrent_per_org = 1;
        c.query.timeout_ms = 500;
        c.query.stream_timeout_ms = 600_000;
        c.query.max_work = u64::MAX / 2;
    })
    .await;
    let t = s.token("acme", "ana", Role::User);
    let mut sock = send_raw_query(&s, &t, HUGE, "application/json").await;
    let mut head = [0u8; 12];
    sock.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    // The client holds the connection open and reads nothing more: the query gives up its
    // org's only slot once a batch has waited timeout_ms, not after stream_timeout_ms.
    let give_up = Instant::now() + Duration::from_secs(60);
    loop {
        let r = post_query(&s, &t, "RETURN 1 AS one", &json!({})).await;
        if r.status().as_u16() == 200 {
            break;
        }
        assert_eq!(r.status().as_u16(), 429);
        assert!(
            Instant::now() < give_up,
            "a client that stopped reading kept its query running"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(sock);
    s.stop().await;
}
