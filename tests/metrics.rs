//! `/metrics`: the output is valid Prometheus text (checked strictly, line by line), its
//! counters move with the requests that should move them, labels stay bounded (route
//! templates, not raw paths; no org unless asked for), and the scrape token works.

mod common;

use std::collections::{BTreeMap, HashMap};

use common::server::TestServer;
use feedgraph::http::auth::Role;
use serde_json::json;

/// Labels of a sample, as name and value.
type Labels = Vec<(String, String)>;

/// One sample: metric name and its labels, sorted.
type SeriesKey = (String, Labels);

/// A parsed exposition: each family's type, and every sample's value.
#[derive(Debug, Default)]
struct Exposition {
    types: HashMap<String, String>,
    samples: BTreeMap<SeriesKey, f64>,
}

impl Exposition {
    /// The value of `name` with exactly `labels`, if present.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut l: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        l.sort();
        self.samples.get(&(name.to_owned(), l)).copied()
    }

    /// Like [`Exposition::get`], zero when absent (a counter not yet created).
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or(0.0)
    }

    /// Every label set of samples named `name`.
    fn label_sets(&self, name: &str) -> Vec<&Vec<(String, String)>> {
        self.samples
            .keys()
            .filter(|(n, _)| n == name)
            .map(|(_, l)| l)
            .collect()
    }
}

fn valid_metric_name(n: &str) -> bool {
    let mut chars = n.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn valid_label_name(n: &str) -> bool {
    let mut chars = n.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !n.starts_with("__")
}

fn parse_value(v: &str) -> Result<f64, String> {
    match v {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => v
            .parse::<f64>()
            .map_err(|_| format!("bad sample value '{v}'")),
    }
}

/// Parses `{a="x",b="y"}` (after the name) into labels; returns them and the rest.
fn parse_labels(s: &str) -> Result<(Labels, &str), String> {
    let Some(mut rest) = s.strip_prefix('{') else {
        return Ok((Vec::new(), s));
    };
    let mut labels = Vec::new();
    loop {
        if let Some(r) = rest.strip_prefix('}') {
            return Ok((labels, r));
        }
        let eq = rest.find('=').ok_or("label without '='")?;
        let name = &rest[..eq];
        if !valid_label_name(name) {
            return Err(format!("bad label name '{name}'"));
        }
        rest = rest[eq + 1..]
            .strip_prefix('"')
            .ok_or("label value not quoted")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err("unterminated label value".into()),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("bad escape in label value: {other:?}")),
                },
                Some((_, '\n')) => return Err("raw newline in label value".into()),
                Some((_, c)) => value.push(c),
            }
        };
        if labels.iter().any(|(n, _)| n == name) {
            return Err(format!("label '{name}' repeated"));
        }
        labels.push((name.to_owned(), value));
        rest = &rest[end + 1..];
        if let Some(r) = rest.strip_prefix(',') {
            rest = r;
        } else if !rest.starts_with('}') {
            return Err("expected ',' or '}' after a label".into());
        }
    }
}

/// Checks the text strictly against the Prometheus text format 0.0.4: HELP and TYPE once
/// per family, before its samples; samples of a family together; sample names that fit
/// their family's type; valid names, label syntax and values; no duplicate series; and for
/// histograms, ascending `le` buckets with cumulative counts, a `+Inf` bucket equal to
/// `_count`, and a `_sum`.
fn parse_strict(text: &str) -> Result<Exposition, String> {
    let mut out = Exposition::default();
    let mut helped = HashMap::new();
    let mut finished: Vec<String> = Vec::new();
    let mut current: Option<String> = None;
    // Histogram checks: (family, labels without le) -> [(le, count)], sums, counts.
    let mut buckets: BTreeMap<SeriesKey, Vec<(f64, f64)>> = BTreeMap::new();
    let mut counts: BTreeMap<SeriesKey, f64> = BTreeMap::new();
    let mut sums: BTreeMap<SeriesKey, f64> = BTreeMap::new();
    if !text.ends_with('\n') {
        return Err("the exposition must end with a newline".into());
    }
    for (n, line) in text.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}: {line:?}", n + 1);
        if line.is_empty() {
            return Err(at("empty line".into()));
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap_or("");
            if !valid_metric_name(name) || helped.insert(name.to_owned(), ()).is_some() {
                return Err(at("bad or repeated HELP".into()));
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let (Some(name), Some(kind), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(at("TYPE needs a name and a type".into()));
            };
            if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                return Err(at(format!("unknown type '{kind}'")));
            }
            if !valid_metric_name(name) || out.types.contains_key(name) {
                return Err(at("bad or repeated TYPE".into()));
            }
            if let Some(prev) = current.replace(name.to_owned()) {
                finished.push(prev);
            }
            out.types.insert(name.to_owned(), kind.to_owned());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let name_end = line
            .find(['{', ' '])
            .ok_or_else(|| at("sample without a value".into()))?;
        let name = &line[..name_end];
        if !valid_metric_name(name) {
            return Err(at(format!("bad metric name '{name}'")));
        }
        let (mut labels, rest) = parse_labels(&line[name_end..]).map_err(at)?;
        let mut fields = rest
            .strip_prefix(' ')
            .ok_or_else(|| at("no space before the value".into()))?
            .split(' ');
        let value = parse_value(fields.next().unwrap_or("")).map_err(at)?;
        if let Some(ts) = fields.next()
            && ts.parse::<i64>().is_err()
        {
            return Err(at("bad timestamp".into()));
        }
        if fields.next().is_some() {
            return Err(at("trailing fields".into()));
        }
        let family = current
            .clone()
            .ok_or_else(|| at("sample before any TYPE".into()))?;
        let kind = out.types[&family].as_str();
        let suffix = name.strip_prefix(family.as_str());
        let fits = match kind {
            "histogram" => matches!(suffix, Some("_bucket" | "_sum" | "_count")),
            "summary" => matches!(suffix, Some("" | "_sum" | "_count")),
            _ => suffix == Some(""),
        };
        if !fits {
            return Err(at(format!(
                "sample does not belong to {kind} family '{family}'"
            )));
        }
        if kind == "counter" && (value < 0.0 || value.is_nan()) {
            return Err(at("negative counter".into()));
        }
        labels.sort();
        if kind == "histogram" {
            let mut base = labels.clone();
            let le = base.iter().position(|(k, _)| k == "le");
            match suffix {
                Some("_bucket") => {
                    let i = le.ok_or_else(|| at("bucket without le".into()))?;
                    let (_, le) = base.remove(i);
                    let le = parse_value(&le).map_err(at)?;
                    buckets
                        .entry((family.clone(), base))
                        .or_default()
                        .push((le, value));
                }
                Some("_count") => {
                    counts.insert((family.clone(), base), value);
                }
                _ => {
                    sums.insert((family.clone(), base), value);
                }
            }
        }
        if out
            .samples
            .insert((name.to_owned(), labels), value)
            .is_some()
        {
            return Err(at("duplicate series".into()));
        }
        if finished.contains(&family) {
            return Err(at("family continued after another began".into()));
        }
    }
    for (key, list) in &buckets {
        let les: Vec<f64> = list.iter().map(|(le, _)| *le).collect();
        if !les.windows(2).all(|w| w[0] < w[1]) || les.last() != Some(&f64::INFINITY) {
            return Err(format!("{key:?}: le bounds not ascending to +Inf: {les:?}"));
        }
        if !list.windows(2).all(|w| w[0].1 <= w[1].1) {
            return Err(format!("{key:?}: bucket counts not cumulative"));
        }
        if counts.get(key) != list.last().map(|(_, c)| c) {
            return Err(format!("{key:?}: +Inf bucket differs from _count"));
        }
        if !sums.contains_key(key) {
            return Err(format!("{key:?}: histogram without _sum"));
        }
    }
    Ok(out)
}

async fn scrape(s: &TestServer) -> (String, String) {
    let r = s.get_open("/metrics").await;
    assert_eq!(r.status().as_u16(), 200);
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    (ct, r.text().await.unwrap())
}

async fn metrics(s: &TestServer) -> Exposition {
    let (ct, text) = scrape(s).await;
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    parse_strict(&text).unwrap_or_else(|e| panic!("not valid Prometheus text: {e}\n{text}"))
}

fn item(n: usize) -> serde_json::Value {
    json!({
        "type": "positive",
        "question": format!("How do I enable sharding number {n}?"),
        "answer": "Use SHARD BY in CREATE COLLECTION.",
        "adapter_id": "lora_a",
    })
}

const REQUESTS: &str = "feedgraph_http_requests_total";

#[test]
fn the_checker_refuses_broken_expositions() {
    let good = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\"} 2\n";
    assert!(parse_strict(good).is_ok());
    for bad in [
        "a_total 1\n",                                    // no TYPE
        "# TYPE a_total counter\na_total{x=1} 2\n",       // unquoted
        "# TYPE a_total counter\na_total 1\na_total 2\n", // duplicate
        "# TYPE a_total counter\nb_total 1\n",            // wrong family
        "# TYPE a_total counter\na_total{x=\"1\"} two\n", // bad value
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
        "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 2\n",
        "# TYPE a_total counter\na_total 1", // no final newline
    ] {
        assert!(parse_strict(bad).is_err(), "accepted: {bad:?}");
    }
}

#[tokio::test]
async fn the_exposition_is_valid_and_counters_move_with_requests() {
    let s = TestServer::start_with(|c| c.query.max_rows = 2).await;
    let token = s.token("acme", "alice", Role::User);
    let before = metrics(&s).await;
    let sync_count = |e: &Exposition| e.value("feedgraph_sync_batch_writes_count", &[]);
    let synced_before = sync_count(&before);

    let mut ids = Vec::new();
    for n in 0..3 {
        let (status, body) = s.post(&token, "/feedback", &item(n)).await;
        assert_eq!(status, 201, "{body}");
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    let (status, _) = s.get(&token, &format!("/feedback/{}", ids[0])).await;
    assert_eq!(status, 200);
    let (status, _) = s.get(&token, "/feedback/feedback-nope").await;
    assert_eq!(status, 404);
    let (status, _) = s.get("not-a-token", "/feedback").await;
    assert_eq!(status, 401);
    let q = json!({"query": "MATCH (f:Feedback) RETURN f.id"});
    let (status, body) = s.post(&token, "/graph/query", &q).await;
    assert_eq!(status, 400, "over max_rows: {body}");
    let q = json!({"query": "MATCH (f:Feedback) RETURN count(f) AS n"});
    let (status, body) = s.post(&token, "/graph/query", &q).await;
    assert_eq!(status, 200, "{body}");

    let after = metrics(&s).await;
    // Families with no series yet are left out, so look once every kind was used. The
    // sync families are sled's group commit (PostgreSQL's commits are the database's).
    let sled_sync: &[&str] = if common::on_postgres() {
        &[]
    } else {
        &[
            "feedgraph_sync_batch_writes",
            "feedgraph_sync_duration_seconds",
        ]
    };
    for family in [
        "feedgraph_http_requests_total",
        "feedgraph_http_request_duration_seconds",
        "feedgraph_submits_total",
        "feedgraph_graph_nodes",
        "feedgraph_graph_edges",
        "feedgraph_query_duration_seconds",
        "feedgraph_query_limit_hits_total",
    ]
    .iter()
    .chain(sled_sync)
    .copied()
    {
        assert!(after.types.contains_key(family), "no family {family}");
    }
    let delta = |name: &str, labels: &[(&str, &str)]| {
        after.value(name, labels) - before.value(name, labels)
    };
    let submit_route = [
        ("route", "/api/v1/llm/feedback"),
        ("method", "POST"),
        ("status", "201"),
    ];
    assert_eq!(delta(REQUESTS, &submit_route), 3.0);
    let get_route = "/api/v1/llm/feedback/{id}";
    assert_eq!(
        delta(
            REQUESTS,
            &[("route", get_route), ("method", "GET"), ("status", "200")]
        ),
        1.0
    );
    assert_eq!(
        delta(
            REQUESTS,
            &[("route", get_route), ("method", "GET"), ("status", "404")]
        ),
        1.0
    );
    assert_eq!(
        delta(
            REQUESTS,
            &[
                ("route", "/api/v1/llm/feedback"),
                ("method", "GET"),
                ("status", "401")
            ]
        ),
        1.0
    );
    assert!(
        delta(
            "feedgraph_http_request_duration_seconds_count",
            &[("route", "/api/v1/llm/feedback"), ("method", "POST")]
        ) == 3.0
    );
    assert_eq!(
        delta("feedgraph_submits_total", &[("status", "approved")]),
        3.0
    );
    if !sled_sync.is_empty() {
        assert!(sync_count(&after) > synced_before, "no sync was recorded");
        assert!(after.value("feedgraph_sync_batch_writes_sum", &[]) >= 3.0);
    }
    assert_eq!(
        after.value("feedgraph_graph_nodes", &[("kind", "feedback")]),
        3.0
    );
    assert_eq!(
        after.value("feedgraph_graph_nodes", &[("kind", "adapter")]),
        1.0
    );
    assert_eq!(after.value("feedgraph_graph_edges", &[]), 3.0);
    assert_eq!(
        delta("feedgraph_query_limit_hits_total", &[("limit", "max_rows")]),
        1.0
    );
    assert_eq!(
        delta(
            "feedgraph_query_duration_seconds_count",
            &[("outcome", "ok")]
        ),
        1.0
    );
    assert_eq!(
        delta(
            "feedgraph_query_duration_seconds_count",
            &[("outcome", "limit")]
        ),
        1.0
    );

    // Bounded labels: route templates only, never a raw id; no org label by default.
    let (_, text) = scrape(&s).await;
    for id in &ids {
        assert!(
            !text.contains(id.as_str()),
            "a raw path leaked into a label"
        );
    }
    assert!(!text.contains("feedback-nope"));
    assert!(!text.contains("org=\""), "org label without per_org_labels");
    for labels in after.label_sets(REQUESTS) {
        let route = &labels.iter().find(|(k, _)| k == "route").unwrap().1;
        assert!(
            route == "unmatched"
                || feedgraph::http::route_list()
                    .iter()
                    .any(|(_, p)| p == route)
                || feedgraph::http::console::ROUTES
                    .iter()
                    .any(|(_, p)| p == route),
            "route label '{route}' is not a route template"
        );
    }
    s.stop().await;
}

#[tokio::test]
async fn rate_limited_requests_and_unmatched_paths_are_counted() {
    let s = TestServer::start_with(|c| c.rate_limit.per_user = 2).await;
    let token = s.token("acme", "alice", Role::User);
    let before = metrics(&s).await;
    let mut limited = 0;
    for _ in 0..4 {
        let (status, _) = s.get(&token, "/feedback").await;
        if status == 429 {
            limited += 1;
        }
    }
    assert_eq!(limited, 2);
    let r = s.get_open("/no/such/path/12345").await;
    assert_eq!(r.status().as_u16(), 404);
    let after = metrics(&s).await;
    let delta = |name: &str, labels: &[(&str, &str)]| {
        after.value(name, labels) - before.value(name, labels)
    };
    assert_eq!(
        delta("feedgraph_rate_limited_total", &[("scope", "user")]),
        2.0
    );
    assert_eq!(
        delta(
            REQUESTS,
            &[
                ("route", "/api/v1/llm/feedback"),
                ("method", "GET"),
                ("status", "429")
            ]
        ),
        2.0
    );
    assert_eq!(
        delta(
            REQUESTS,
            &[("route", "unmatched"), ("method", "GET"), ("status", "404")]
        ),
        1.0
    );
    s.stop().await;
}

#[tokio::test]
async fn per_org_labels_appear_only_when_configured() {
    let s = TestServer::start_with(|c| c.metrics.per_org_labels = true).await;
    let token = s.token("acme", "alice", Role::User);
    let (status, _) = s.post(&token, "/feedback", &item(1)).await;
    assert_eq!(status, 201);
    let m = metrics(&s).await;
    assert_eq!(
        m.value(
            "feedgraph_submits_total",
            &[("status", "approved"), ("org", "acme")]
        ),
        1.0
    );
    assert_eq!(
        m.value(
            "feedgraph_graph_nodes",
            &[("kind", "feedback"), ("org", "acme")]
        ),
        1.0
    );
    // Request series never carry the org.
    for labels in m.label_sets(REQUESTS) {
        assert!(labels.iter().all(|(k, _)| k != "org"), "{labels:?}");
    }
    s.stop().await;
}

#[tokio::test]
async fn a_scrape_token_is_required_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("scrape-token");
    std::fs::write(&file, "s3cret-scrape\n").unwrap();
    let s = TestServer::start_with(|c| c.metrics.bearer_token_file = Some(file)).await;
    let url = format!("{}/metrics", s.base);
    let none = s.client.get(&url).send().await.unwrap();
    assert_eq!(none.status().as_u16(), 401);
    let wrong = s
        .client
        .get(&url)
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status().as_u16(), 401);
    let right = s
        .client
        .get(&url)
        .bearer_auth("s3cret-scrape")
        .send()
        .await
        .unwrap();
    assert_eq!(right.status().as_u16(), 200);
    parse_strict(&right.text().await.unwrap()).unwrap();
    s.stop().await;
}

#[tokio::test]
async fn metrics_can_be_turned_off() {
    let s = TestServer::start_with(|c| c.metrics.enabled = false).await;
    assert_eq!(s.get_open("/metrics").await.status().as_u16(), 404);
    s.stop().await;
}

#[tokio::test]
async fn console_requests_are_labelled_with_their_route_template() {
    let s = TestServer::start_with(|c| c.rate_limit.enabled = false).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let token = s.token("acme", "alice", Role::Admin);
    let r = client
        .post(format!("{}/console/login", s.base))
        .header("origin", &s.base)
        .form(&[("token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);
    let cookie = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let before = metrics(&s).await;
    let routes = feedgraph::http::console::ROUTES;
    for (method, path) in routes {
        let concrete = path
            .replace("{id}", "feedback-raw-id-123")
            .replace("{file}", "console.css");
        let url = format!("{}{concrete}", s.base);
        let r = match *method {
            "GET" => client.get(url),
            _ => client
                .post(url)
                .header("origin", &s.base)
                .form(&[("x", "1")]),
        };
        let r = r.header("cookie", &cookie).send().await.unwrap();
        assert_ne!(r.status().as_u16(), 405, "{method} {path}");
    }
    // A page the console does not have stays unmatched, under no raw path.
    let r = client
        .get(format!("{}/console/no-such-page-77", s.base))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let after = metrics(&s).await;
    let moved = |route: &str, method: &str| -> f64 {
        let sum = |e: &Exposition| -> f64 {
            e.samples
                .iter()
                .filter(|((name, labels), _)| {
                    name == REQUESTS
                        && labels.iter().any(|(k, v)| k == "route" && v == route)
                        && labels.iter().any(|(k, v)| k == "method" && v == method)
                })
                .map(|(_, v)| *v)
                .sum()
        };
        sum(&after) - sum(&before)
    };
    for (method, path) in routes {
        assert_eq!(moved(path, method), 1.0, "{method} {path} is not labelled");
    }
    assert_eq!(moved("unmatched", "GET"), 1.0);
    let (_, text) = scrape(&s).await;
    assert!(
        !text.contains("feedback-raw-id-123"),
        "a raw path in a label"
    );
    assert!(!text.contains("no-such-page-77"), "a raw path in a label");
    s.stop().await;
}
