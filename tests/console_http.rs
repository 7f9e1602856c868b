//! The review console at the HTTP level: sign-in and its cookie, CSRF and cross-site
//! refusals, roles, HTML escaping of user text, and paging of every list.

mod common;

use common::server::TestServer;
use feedgraph::http::auth::Role;
use feedgraph::http::console::ROUTES;
use serde_json::json;

/// A cookie-keeping client that does not follow redirects, like a browser tab whose
/// every step the test checks.
struct Tab {
    base: String,
    client: reqwest::Client,
    cookie: Option<String>,
}

struct Page {
    status: u16,
    location: Option<String>,
    set_cookie: Option<String>,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Tab {
    fn new(s: &TestServer) -> Tab {
        Tab {
            base: s.base.clone(),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookie: None,
        }
    }

    async fn finish(&mut self, r: reqwest::RequestBuilder) -> Page {
        let r = match &self.cookie {
            Some(c) => r.header("cookie", format!("fg_session={c}")),
            None => r,
        };
        let resp = r.send().await.unwrap();
        let headers = resp.headers().clone();
        let location = headers
            .get("location")
            .map(|v| v.to_str().unwrap().to_owned());
        let set_cookie = headers
            .get("set-cookie")
            .map(|v| v.to_str().unwrap().to_owned());
        Page {
            status: resp.status().as_u16(),
            location,
            set_cookie,
            headers,
            body: resp.text().await.unwrap(),
        }
    }

    async fn get(&mut self, path: &str) -> Page {
        let r = self.client.get(format!("{}{path}", self.base));
        self.finish(r).await
    }

    /// A same-origin form post, as the console's own pages send it.
    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let origin = self.base.clone();
        self.post_from(path, form, Some(&origin)).await
    }

    async fn post_from(&mut self, path: &str, form: &[(&str, &str)], origin: Option<&str>) -> Page {
        let mut r = self.client.post(format!("{}{path}", self.base)).form(form);
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        self.finish(r).await
    }

    /// Signs in with `token`; panics unless the console accepts it.
    async fn sign_in(&mut self, token: &str) -> Page {
        let p = self.post("/console/login", &[("token", token)]).await;
        assert_eq!(p.status, 303, "{}", p.body);
        let cookie = p.set_cookie.clone().expect("a session cookie");
        let value = cookie
            .strip_prefix("fg_session=")
            .and_then(|c| c.split(';').next())
            .unwrap();
        self.cookie = Some(value.to_owned());
        p
    }

    /// The CSRF token on a page of this session.
    async fn csrf(&mut self) -> String {
        let p = self.get("/console/queue").await;
        assert_eq!(p.status, 200, "{}", p.body);
        csrf_of(&p.body)
    }
}

/// `s` as the templates escape text (askama's numeric character references).
fn escaped(s: &str) -> String {
    s.replace('&', "&#38;")
        .replace('<', "&#60;")
        .replace('>', "&#62;")
        .replace('"', "&#34;")
        .replace('\'', "&#39;")
}

fn csrf_of(body: &str) -> String {
    let at = body.find(r#"name="csrf" value=""#).expect("a csrf field") + 19;
    body[at..].split('"').next().unwrap().to_owned()
}

async fn server() -> TestServer {
    TestServer::start_with(|c| c.rate_limit.enabled = false).await
}

/// Submits a negative item without correction or comment: the basic rules flag it.
async fn flagged(s: &TestServer, token: &str, question: &str, answer: &str) -> String {
    let (st, body) = s
        .post(
            token,
            "/feedback",
            &json!({"type": "negative", "question": question, "answer": answer,
                    "adapter_id": "console_lora", "model_version": "m-1"}),
        )
        .await;
    assert_eq!(st, 201, "{body}");
    assert_eq!(body["validation_status"], "flagged", "{body}");
    body["id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_is_sent_to_sign_in_and_a_bad_token_is_refused_without_echo() {
    let s = server().await;
    let mut tab = Tab::new(&s);
    for path in [
        "/console",
        "/console/queue",
        "/console/adapters",
        "/console/items/x",
    ] {
        let p = tab.get(path).await;
        assert_eq!(p.status, 303, "{path}");
        let to = p.location.unwrap();
        assert!(
            to == "/console/login" || to == "/console/queue",
            "{path} -> {to}"
        );
    }
    let p = tab.get("/console/login").await;
    assert_eq!(p.status, 200);
    assert!(p.body.contains(r#"name="token""#));

    let forged = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4Iiwib3JnIjoiYWNtZSIsImV4cCI6OTk5OTk5OTk5OX0.c2lnbmF0dXJlLXRoYXQtZG9lcy1ub3QtbWF0Y2g";
    let p = tab.post("/console/login", &[("token", forged)]).await;
    assert_eq!(p.status, 401);
    assert!(p.set_cookie.is_none());
    assert!(p.body.contains("bad token signature"), "{}", p.body);
    assert!(!p.body.contains(forged), "the page repeats the token");
    assert!(
        !p.body.contains("c2lnbmF0dXJl"),
        "the page repeats part of the token"
    );

    // A valid token is never written into a page either.
    let token = s.token("acme", "alice", Role::Admin);
    tab.sign_in(&token).await;
    for path in ["/console/queue", "/console/items", "/console/dashboard"] {
        let p = tab.get(path).await;
        assert_eq!(p.status, 200, "{path}");
        assert!(!p.body.contains(&token), "{path} shows the token");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_cookie_is_httponly_strict_and_secure_only_when_configured() {
    let s = server().await;
    let mut tab = Tab::new(&s);
    let p = tab.sign_in(&s.token("acme", "alice", Role::User)).await;
    assert_eq!(p.location.as_deref(), Some("/console/queue"));
    let cookie = p.set_cookie.unwrap();
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Strict"), "{cookie}");
    assert!(cookie.contains("Path=/console"), "{cookie}");
    assert!(!cookie.contains("Secure"), "{cookie}");
    s.stop().await;

    let s = TestServer::start_with(|c| c.console.secure_cookie = true).await;
    let mut tab = Tab::new(&s);
    let p = tab.sign_in(&s.token("acme", "alice", Role::User)).await;
    assert!(p.set_cookie.unwrap().contains("; Secure"));
    // Signing out clears it.
    let csrf = tab.csrf().await;
    let p = tab.post("/console/logout", &[("csrf", &csrf)]).await;
    assert_eq!(p.status, 303);
    assert!(p.set_cookie.unwrap().contains("Max-Age=0"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_with_no_role_cannot_sign_in() {
    let s = server().await;
    let token = feedgraph::http::auth::mint(&s.config, "acme", "nobody", &[], 600).unwrap();
    let mut tab = Tab::new(&s);
    let p = tab.post("/console/login", &[("token", &token)]).await;
    assert_eq!(p.status, 403);
    assert!(p.set_cookie.is_none());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_changes_need_the_sessions_csrf_token_and_the_servers_origin() {
    let s = server().await;
    let admin = s.token("acme", "alice", Role::Admin);
    let id = flagged(&s, &admin, "How do I shard a table?", "You cannot do that.").await;
    let review = format!("/console/review/{id}");
    let mut tab = Tab::new(&s);
    tab.sign_in(&admin).await;
    let csrf = tab.csrf().await;

    // No token, a wrong token, a token of another session: refused.
    let mut other = Tab::new(&s);
    other.sign_in(&s.token("acme", "bob", Role::Admin)).await;
    let foreign = other.csrf().await;
    assert_ne!(foreign, csrf);
    let wrong = "00".repeat(32);
    for form in [
        vec![("decision", "approved"), ("reason", "ok")],
        vec![("decision", "approved"), ("reason", "ok"), ("csrf", &wrong)],
        vec![
            ("decision", "approved"),
            ("reason", "ok"),
            ("csrf", "not hex"),
        ],
        vec![
            ("decision", "approved"),
            ("reason", "ok"),
            ("csrf", &foreign),
        ],
    ] {
        let p = tab.post(&review, &form).await;
        assert_eq!(p.status, 403, "{form:?}: {}", p.body);
        assert!(p.body.contains("CSRF"), "{}", p.body);
    }
    // The right token from another site: refused by the Origin and Sec-Fetch-Site checks.
    let good = [
        ("decision", "approved"),
        ("reason", "ok"),
        ("csrf", csrf.as_str()),
    ];
    let p = tab
        .post_from(&review, &good, Some("http://evil.example"))
        .await;
    assert_eq!(p.status, 403, "{}", p.body);
    assert!(p.body.contains("cross-site"), "{}", p.body);
    let r = tab
        .client
        .post(format!("{}{review}", s.base))
        .header(
            "cookie",
            format!("fg_session={}", tab.cookie.clone().unwrap()),
        )
        .header("sec-fetch-site", "cross-site")
        .form(&good);
    let p = tab.finish(r).await;
    assert_eq!(p.status, 403, "{}", p.body);
    // A sign-in posted from another site is refused too (login CSRF).
    let p = tab
        .post_from(
            "/console/login",
            &[("token", &admin)],
            Some("http://evil.example"),
        )
        .await;
    assert_eq!(p.status, 403);
    assert!(p.set_cookie.is_none());

    let (_, item) = s.get(&admin, &format!("/feedback/{id}")).await;
    assert_eq!(
        item["validation_status"], "flagged",
        "a refused post changed the item"
    );
    assert_eq!(item["version"], 1);

    // The same post, same-origin with the session's token, goes through.
    let p = tab.post(&review, &good).await;
    assert_eq!(p.status, 303, "{}", p.body);
    let (_, item) = s.get(&admin, &format!("/feedback/{id}")).await;
    assert_eq!(item["validation_status"], "approved");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_sees_the_queue_without_review_forms_and_cannot_review() {
    let s = server().await;
    let admin = s.token("acme", "alice", Role::Admin);
    let id = flagged(&s, &admin, "How do I shard a table?", "You cannot do that.").await;
    let mut tab = Tab::new(&s);
    tab.sign_in(&s.token("acme", "uma", Role::User)).await;
    let p = tab.get("/console/queue").await;
    assert_eq!(p.status, 200);
    assert!(p.body.contains(&id));
    assert!(
        !p.body.contains("/console/review/"),
        "a user gets review forms"
    );
    assert!(!p.body.contains(r#"class="approve""#));
    let p = tab.get(&format!("/console/items/{id}")).await;
    assert!(!p.body.contains("/console/review/"));

    let csrf = csrf_of(&p.body);
    let p = tab
        .post(
            &format!("/console/review/{id}"),
            &[("decision", "approved"), ("reason", "ok"), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(p.status, 403, "{}", p.body);
    let (_, item) = s.get(&admin, &format!("/feedback/{id}")).await;
    assert_eq!(item["validation_status"], "flagged");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_from_the_queue_approves_rejects_and_keeps_the_history() {
    let s = server().await;
    let admin = s.token("acme", "alice", Role::Admin);
    let first = flagged(&s, &admin, "First question here?", "First answer here.").await;
    let second = flagged(&s, &admin, "Second question here?", "Second answer here.").await;
    let mut tab = Tab::new(&s);
    tab.sign_in(&admin).await;
    let p = tab.get("/console/queue").await;
    assert!(
        p.body.contains(r#"<strong id="remaining">2</strong>"#),
        "{}",
        p.body
    );
    // Oldest first.
    assert!(p.body.find(&first).unwrap() < p.body.find(&second).unwrap());
    let csrf = csrf_of(&p.body);

    // An approval without a reason gets the console's default reason.
    let p = tab
        .post(
            &format!("/console/review/{first}"),
            &[
                ("decision", "approved"),
                ("reason", ""),
                ("csrf", &csrf),
                ("back", "queue"),
            ],
        )
        .await;
    assert_eq!(p.status, 303);
    let to = p.location.unwrap();
    assert!(to.starts_with("/console/queue?done="), "{to}");
    let p = tab.get(&to).await;
    assert!(p.body.contains(r#"<strong id="remaining">1</strong>"#));
    assert!(p.body.contains(r#"id="flash">Approved"#), "{}", p.body);
    assert!(!p.body.contains(&format!(r#"data-id="{first}""#)));

    // A rejection needs a reason.
    let reject = |reason: &'static str| {
        vec![
            ("decision", "rejected"),
            ("reason", reason),
            ("back", "item"),
        ]
    };
    let mut form = reject("  ");
    form.push(("csrf", &csrf));
    let p = tab.post(&format!("/console/review/{second}"), &form).await;
    assert_eq!(p.status, 400, "{}", p.body);
    let mut form = reject("wrong about sharding");
    form.push(("csrf", &csrf));
    let p = tab.post(&format!("/console/review/{second}"), &form).await;
    assert_eq!(p.status, 303);
    let to = p.location.unwrap();
    assert!(to.starts_with(&format!("/console/items/{second}")), "{to}");
    let p = tab.get(&to).await;
    assert!(
        p.body.contains(r#"id="item-status">rejected"#),
        "{}",
        p.body
    );
    assert!(p.body.contains("wrong about sharding"));
    assert!(
        p.body
            .contains("<strong>review</strong> by <span class=\"actor\">alice</span>")
    );

    let p = tab.get(&format!("/console/items/{first}")).await;
    assert!(
        p.body
            .contains(feedgraph::http::console::DEFAULT_APPROVE_REASON)
    );
    let p = tab.get("/console/queue").await;
    assert!(p.body.contains(r#"id="queue-empty""#));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_text_is_shown_as_text_everywhere() {
    let s = server().await;
    let admin = s.token("acme", "alice", Role::Admin);
    let question = "<script>alert('q')</script> how?";
    let answer = "\"><img src=x onerror=alert(1)> fine";
    let (st, body) = s
        .post(
            &admin,
            "/feedback",
            &json!({"type": "negative", "question": question, "answer": answer,
                    "adapter_id": "esc_lora", "model_version": "m-1",
                    "metadata": {"<k>": "</pre><script>x</script>"}}),
        )
        .await;
    assert_eq!(st, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    let mut tab = Tab::new(&s);
    tab.sign_in(&admin).await;
    for path in [
        "/console/queue".to_owned(),
        format!("/console/items/{id}"),
        "/console/items".to_owned(),
        "/console/adapters".to_owned(),
        "/console/adapters/esc_lora".to_owned(),
        "/console/dashboard".to_owned(),
    ] {
        let p = tab.get(&path).await;
        assert_eq!(p.status, 200, "{path}: {}", p.body);
        let b = &p.body;
        assert!(!b.contains("<script>alert"), "{path} runs the question");
        assert!(!b.contains("<img src=x"), "{path} runs the answer");
        assert!(
            !b.contains("<script>x</script>"),
            "{path} runs the metadata"
        );
        // The only script on a page is our own file.
        assert_eq!(b.matches("<script").count(), 1, "{path}");
    }
    let p = tab.get("/console/queue").await;
    assert!(p.body.contains(&escaped(question)), "{}", p.body);
    let p = tab.get(&format!("/console/items/{id}")).await;
    assert!(p.body.contains(&escaped("</pre><script>x</script>")));
    assert!(p.body.contains(&escaped(answer)));

    // A query result and a query error are text too.
    let csrf = csrf_of(&p.body);
    let p = tab
        .post(
            "/console/query",
            &[
                ("csrf", &csrf),
                ("query", "MATCH (f:Feedback) RETURN f.question AS q"),
                ("params", "{}"),
            ],
        )
        .await;
    assert_eq!(p.status, 200, "{}", p.body);
    assert!(p.body.contains(&escaped(question)));
    assert_eq!(p.body.matches("<script").count(), 1);
    let p = tab
        .post(
            "/console/query",
            &[
                ("csrf", &csrf),
                ("query", "MATCH (<script>) RETURN 1"),
                ("params", "{}"),
            ],
        )
        .await;
    assert_eq!(p.status, 400);
    assert!(p.body.contains(r#"id="query-error""#));
    assert_eq!(p.body.matches("<script").count(), 1);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_carry_a_policy_that_runs_only_our_script() {
    let s = server().await;
    let mut tab = Tab::new(&s);
    tab.sign_in(&s.token("acme", "alice", Role::User)).await;
    let p = tab.get("/console/queue").await;
    let csp = p.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(p.headers["cache-control"], "no-store");
    let js = tab.get("/console/assets/console.js").await;
    assert_eq!(js.status, 200);
    assert!(
        js.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    assert_eq!(tab.get("/console/assets/nope.js").await.status, 404);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_and_the_item_list_page_through_every_item_once() {
    let s = server().await;
    let admin = s.token("acme", "alice", Role::Admin);
    let mut ids = Vec::new();
    for i in 0..30 {
        ids.push(
            flagged(
                &s,
                &admin,
                &format!("Question number {i}?"),
                "Some answer text.",
            )
            .await,
        );
    }
    let mut tab = Tab::new(&s);
    tab.sign_in(&admin).await;
    let mut seen = Vec::new();
    let mut path = "/console/queue".to_owned();
    loop {
        let p = tab.get(&path).await;
        assert_eq!(p.status, 200, "{}", p.body);
        assert!(p.body.contains(r#"<strong id="remaining">30</strong>"#));
        let cards: Vec<String> = p
            .body
            .split(r#"<article class="card item"#)
            .skip(1)
            .map(|c| {
                c.split(r#"data-id=""#)
                    .nth(1)
                    .unwrap()
                    .split('"')
                    .next()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert!(cards.len() <= 25);
        seen.extend(cards);
        match p.body.split(r#"<a href=""#).find_map(|a| {
            let (href, rest) = a.split_once('"')?;
            rest.starts_with(r#" id="next-page""#)
                .then(|| href.replace("&#38;", "&"))
        }) {
            Some(next) => path = next,
            None => break,
        }
    }
    assert_eq!(
        seen, ids,
        "the queue is every flagged item, oldest first, once"
    );

    // A cursor that names no item is a 400 page, not an empty queue.
    let p = tab.get("/console/queue?after=feedback-nope").await;
    assert_eq!(p.status, 400);
    assert!(
        p.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );

    // The item list is newest first, 25 a page.
    let p = tab.get("/console/items").await;
    assert_eq!(
        p.body.matches("<tr><td><a href=\"/console/items/").count(),
        25
    );
    let next = p
        .body
        .split("<p class=\"pager\"><a href=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .replace("&#38;", "&");
    let p = tab.get(&next).await;
    assert_eq!(
        p.body.matches("<tr><td><a href=\"/console/items/").count(),
        5
    );
    assert!(p.body.contains(&ids[0]));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_page_newest_first_and_show_their_manifest() {
    let s = server().await;
    let admin = s.token("acme", "alice", Role::Admin);
    for i in 0..28 {
        let (st, _) = s
            .post(
                &admin,
                "/feedback",
                &json!({"type": "positive", "question": format!("Useful question {i}?"),
                        "answer": "A useful and correct answer."}),
            )
            .await;
        assert_eq!(st, 201);
    }
    for _ in 0..27 {
        let (st, body) = s
            .post(&admin, "/training/batches", &json!({"limit": 1}))
            .await;
        assert_eq!(st, 201, "{body}");
    }
    let (st, body) = s
        .post(
            &admin,
            "/training/batches/27/commit",
            &json!({"trained_adapter_id": "t_lora"}),
        )
        .await;
    assert_eq!(st, 200, "{body}");
    let mut tab = Tab::new(&s);
    tab.sign_in(&s.token("acme", "uma", Role::User)).await;
    let p = tab.get("/console/batches").await;
    assert_eq!(p.status, 200);
    assert_eq!(
        p.body
            .matches("<tr><td><a href=\"/console/batches/")
            .count(),
        25
    );
    assert!(
        p.body.find("/console/batches/27\"").unwrap()
            < p.body.find("/console/batches/26\"").unwrap()
    );
    assert!(p.body.contains("/console/batches?before=3"), "{}", p.body);
    let p = tab.get("/console/batches?before=3").await;
    assert_eq!(
        p.body
            .matches("<tr><td><a href=\"/console/batches/")
            .count(),
        2
    );
    let p = tab.get("/console/batches/27").await;
    assert!(p.body.contains("committed"));
    assert!(p.body.contains("t_lora"));
    assert!(p.body.contains("Content hash"));
    assert_eq!(tab.get("/console/batches/999").await.status, 404);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lineage_picture_draws_the_orgs_adapters_only() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = common::open(dir.path());
        common::load_fixtures(&s);
    }
    let s = TestServer::start_in(dir, |c| c.rate_limit.enabled = false).await;
    let mut tab = Tab::new(&s);
    tab.sign_in(&s.token("acme", "uma", Role::User)).await;
    let p = tab.get("/console/adapters").await;
    assert_eq!(p.status, 200);
    let svg = p
        .body
        .split(r#"<div class="picture" id="lineage">"#)
        .nth(1)
        .unwrap();
    for id in [
        "base_model",
        "themis_help_lora",
        "themis_help_lora_v2",
        "themis_help_lora_v3",
        "sql_lora",
        "sql_lora_v2",
        "vector_lora",
        "mistral_root",
        "mistral_docs_lora",
    ] {
        assert!(
            svg.contains(&format!(r#"data-adapter="{id}""#)),
            "{id} missing"
        );
    }
    assert!(
        !svg.contains("support_lora"),
        "another org's adapter is drawn"
    );
    // One curve per DERIVED_FROM edge of acme (7 of its 9 adapters have a parent).
    assert_eq!(svg.matches("<path d=").count(), 7);
    // A page past the last root says so (not "no adapters").
    let p = tab.get("/console/adapters?page=9").await;
    assert_eq!(p.status, 200);
    assert!(p.body.contains(r#"id="no-more-roots""#), "{}", p.body);
    assert!(!p.body.contains("No adapters yet"));
    let p = tab.get("/console/adapters/themis_help_lora_v2").await;
    assert!(p.body.contains("themis_help_lora_v3"));
    assert!(p.body.contains("base_model"));
    let p = tab.get("/console/dashboard?days=400").await;
    assert_eq!(p.status, 400);
    let p = tab.get("/console/dashboard?days=90").await;
    assert_eq!(p.status, 200);
    assert!(p.body.contains(r#"id="chart-submits"><svg"#));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_listed_route_exists_and_nothing_else_does() {
    let s = server().await;
    let mut tab = Tab::new(&s);
    tab.sign_in(&s.token("acme", "alice", Role::Admin)).await;
    for (method, path) in ROUTES {
        let concrete = path.replace("{id}", "x").replace("{file}", "console.css");
        let p = match *method {
            "GET" => tab.get(&concrete).await,
            _ => tab.post(&concrete, &[]).await,
        };
        assert!(
            !p.body.contains("the console has no page") && p.status != 405,
            "{method} {path}: {} {}",
            p.status,
            p.body
        );
    }
    let p = tab.get("/console/nope").await;
    assert_eq!(p.status, 404);
    assert!(p.body.contains("the console has no page"));
    s.stop().await;
}
