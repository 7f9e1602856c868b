//! The review console as an attacker tries it, through the real server: forged posts
//! (Origin and Sec-Fetch-Site tricks, wrong content types), other orgs' sessions, links
//! that try to put words on a page, hostile names in tokens, error pages that must keep
//! the console's headers, and signing out.

mod common;

use common::server::TestServer;
use feedgraph::http::auth::Role;
use serde_json::json;

/// One response, read whole.
struct Page {
    status: u16,
    location: Option<String>,
    set_cookie: Option<String>,
    headers: reqwest::header::HeaderMap,
    body: String,
}

/// A client that keeps no cookies and follows no redirects: each request says exactly
/// what it sends.
struct Browser {
    base: String,
    client: reqwest::Client,
}

impl Browser {
    fn new(s: &TestServer) -> Browser {
        Browser {
            base: s.base.clone(),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        }
    }

    async fn send(&self, r: reqwest::RequestBuilder) -> Page {
        let resp = r.send().await.unwrap();
        let headers = resp.headers().clone();
        let text = |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_owned());
        Page {
            status: resp.status().as_u16(),
            location: text("location"),
            set_cookie: text("set-cookie"),
            body: resp.text().await.unwrap(),
            headers,
        }
    }

    /// `GET path` with the session cookie `cookie`, if any.
    async fn get(&self, cookie: Option<&str>, path: &str) -> Page {
        let mut r = self.client.get(format!("{}{path}", self.base));
        if let Some(c) = cookie {
            r = r.header("cookie", format!("fg_session={c}"));
        }
        self.send(r).await
    }

    /// `POST path` of a raw body with the given headers and the session cookie.
    async fn post_raw(
        &self,
        cookie: Option<&str>,
        path: &str,
        headers: &[(&str, &str)],
        body: String,
    ) -> Page {
        let mut r = self.client.post(format!("{}{path}", self.base)).body(body);
        if let Some(c) = cookie {
            r = r.header("cookie", format!("fg_session={c}"));
        }
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        self.send(r).await
    }

    /// A same-origin form post, as the console's pages send it.
    async fn post(&self, cookie: Option<&str>, path: &str, form: &[(&str, &str)]) -> Page {
        let origin = self.base.clone();
        self.post_raw(
            cookie,
            path,
            &[
                ("origin", &origin),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
            encode(form),
        )
        .await
    }

    /// Signs in with `token` and returns the session cookie's value.
    async fn sign_in(&self, token: &str) -> String {
        let p = self.post(None, "/console/login", &[("token", token)]).await;
        assert_eq!(p.status, 303, "{}", p.body);
        let c = p.set_cookie.expect("a session cookie");
        c.strip_prefix("fg_session=")
            .and_then(|c| c.split(';').next())
            .unwrap()
            .to_owned()
    }

    /// The CSRF token of a session, from its queue page.
    async fn csrf(&self, cookie: &str) -> String {
        let p = self.get(Some(cookie), "/console/queue").await;
        assert_eq!(p.status, 200, "{}", p.body);
        let at = p.body.find(r#"name="csrf" value=""#).expect("a csrf field") + 19;
        p.body[at..].split('"').next().unwrap().to_owned()
    }
}

fn encode(form: &[(&str, &str)]) -> String {
    form.iter()
        .map(|(k, v)| format!("{}={}", pct(k), pct(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn pct(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

async fn server() -> TestServer {
    TestServer::start_with(|c| c.rate_limit.enabled = false).await
}

/// Submits a negative item without explanation (flagged) and returns its id.
async fn flagged(s: &TestServer, token: &str, question: &str) -> String {
    let (st, body) = s
        .post(
            token,
            "/feedback",
            &json!({"type": "negative", "question": question, "answer": "An answer.",
                    "adapter_id": "attack_lora"}),
        )
        .await;
    assert_eq!(st, 201, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

/// Asserts that `p` is an HTML page carrying the console's protective headers.
fn assert_console_page(what: &str, p: &Page) {
    let h = |name: &str| {
        p.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    assert!(
        h("content-type").starts_with("text/html"),
        "{what}: {} {} {}",
        p.status,
        h("content-type"),
        p.body
    );
    assert!(
        h("content-security-policy").contains("frame-ancestors 'none'"),
        "{what}"
    );
    assert_eq!(h("cache-control"), "no-store", "{what}");
    assert_eq!(h("x-frame-options"), "DENY", "{what}");
    assert_eq!(h("x-content-type-options"), "nosniff", "{what}");
}

#[tokio::test]
async fn the_console_answers_with_and_without_a_trailing_slash() {
    let s = server().await;
    let b = Browser::new(&s);
    for path in ["/console", "/console/"] {
        let p = b.get(None, path).await;
        assert_eq!(p.status, 303, "{path}: {}", p.body);
        assert_eq!(p.location.as_deref(), Some("/console/queue"), "{path}");
    }
    let cookie = b.sign_in(&s.token("acme", "alice", Role::User)).await;
    let p = b.get(Some(&cookie), "/console/").await;
    assert_eq!(p.location.as_deref(), Some("/console/queue"));
    s.stop().await;
}

#[tokio::test]
async fn every_console_error_is_an_html_page_with_the_console_headers() {
    let s = server().await;
    let b = Browser::new(&s);
    let cookie = b.sign_in(&s.token("acme", "alice", Role::Admin)).await;
    let csrf = b.csrf(&cookie).await;
    let c = Some(cookie.as_str());
    let cases = [
        ("bad path", b.get(c, "/console/items/%FF").await, 400),
        (
            "repeated query",
            b.get(c, "/console/queue?after=a&after=b").await,
            400,
        ),
        (
            "bad query",
            b.get(c, "/console/items?status=%FF").await,
            400,
        ),
        ("unknown page", b.get(c, "/console/nope").await, 404),
        ("wrong method", b.get(c, "/console/logout").await, 405),
        (
            "a review by GET, signed out",
            b.get(None, "/console/review/x").await,
            405,
        ),
        ("login page", b.get(None, "/console/login").await, 200),
        (
            "a form in another media type",
            b.post_raw(
                c,
                "/console/query",
                &[
                    ("origin", &s.base),
                    ("content-type", "application/x-www-form-urlencodedX"),
                ],
                encode(&[("csrf", &csrf), ("query", "RETURN 1")]),
            )
            .await,
            415,
        ),
        (
            "a JSON body",
            b.post_raw(
                c,
                "/console/query",
                &[("origin", &s.base), ("content-type", "application/json")],
                json!({"csrf": csrf, "query": "RETURN 1"}).to_string(),
            )
            .await,
            415,
        ),
        (
            "a body past the limit",
            b.post_raw(
                c,
                "/console/query",
                &[
                    ("origin", &s.base),
                    ("content-type", "application/x-www-form-urlencoded"),
                ],
                format!("csrf={csrf}&query={}", "A".repeat(300 * 1024)),
            )
            .await,
            413,
        ),
        (
            "a repeated form field",
            b.post_raw(
                c,
                "/console/query",
                &[
                    ("origin", &s.base),
                    ("content-type", "application/x-www-form-urlencoded"),
                ],
                format!("csrf={csrf}&csrf={csrf}&query=RETURN+1"),
            )
            .await,
            400,
        ),
    ];
    for (what, p, status) in &cases {
        assert_eq!(p.status, *status, "{what}: {}", p.body);
        // A body over the limit is refused by the connection layer, before the console
        // sees it, in the API's JSON: still a refusal, and it holds no data.
        if *status != 413 {
            assert_console_page(what, p);
        }
    }
    s.stop().await;
}

#[tokio::test]
async fn forged_posts_are_refused_whatever_the_origin_trick() {
    let s = server().await;
    let admin = s.token("acme", "alice", Role::Admin);
    let id = flagged(&s, &admin, "Forged review target?").await;
    let b = Browser::new(&s);
    let cookie = b.sign_in(&admin).await;
    let csrf = b.csrf(&cookie).await;
    let host = s.base.trim_start_matches("http://").to_owned();
    let form = encode(&[
        ("csrf", &csrf),
        ("decision", "approved"),
        ("reason", "forged"),
    ]);
    let path = format!("/console/review/{id}");
    let origins = [
        "null".to_owned(),
        format!("http://{host}.evil.example"),
        format!("http://{host}@evil.example"),
        format!("http://evil.example/{host}"),
        format!("ftp://{host}"),
        format!("http://{host}/"),
    ];
    for origin in &origins {
        let p = b
            .post_raw(
                Some(&cookie),
                &path,
                &[
                    ("origin", origin),
                    ("content-type", "application/x-www-form-urlencoded"),
                ],
                form.clone(),
            )
            .await;
        assert_eq!(p.status, 403, "Origin {origin}: {}", p.body);
    }
    for site in ["same-site", "cross-site", "SAME-ORIGIN"] {
        let p = b
            .post_raw(
                Some(&cookie),
                &path,
                &[
                    ("sec-fetch-site", site),
                    ("content-type", "application/x-www-form-urlencoded"),
                ],
                form.clone(),
            )
            .await;
        assert_eq!(p.status, 403, "Sec-Fetch-Site {site}: {}", p.body);
    }
    // A form whose media type only starts like a form's is not a form.
    let p = b
        .post_raw(
            Some(&cookie),
            &path,
            &[
                ("origin", &s.base),
                ("content-type", "application/x-www-form-urlencoded-not"),
            ],
            form.clone(),
        )
        .await;
    assert_eq!(p.status, 415, "{}", p.body);
    let (_, item) = s.get(&admin, &format!("/feedback/{id}")).await;
    assert_eq!(
        item["validation_status"], "flagged",
        "a forged post got through"
    );
    assert_eq!(item["version"], 1);
    s.stop().await;
}

#[tokio::test]
async fn a_session_of_another_org_sees_and_changes_nothing_here() {
    let s = server().await;
    let admin = s.token("acme", "alice", Role::Admin);
    let id = flagged(&s, &admin, "Only acme may see this?").await;
    let (st, body) = s
        .post(
            &admin,
            "/feedback",
            &json!({"type": "positive", "question": "A good question here?",
                    "answer": "A useful and correct answer."}),
        )
        .await;
    assert_eq!(st, 201, "{body}");
    let (st, body) = s
        .post(&admin, "/training/batches", &json!({"limit": 1}))
        .await;
    assert_eq!(st, 201, "{body}");
    let b = Browser::new(&s);
    let eve = b.sign_in(&s.token("globex", "eve", Role::Admin)).await;
    let csrf = b.csrf(&eve).await;
    let e = Some(eve.as_str());
    for path in [
        format!("/console/items/{id}"),
        "/console/adapters/attack_lora".to_owned(),
        "/console/batches/1".to_owned(),
    ] {
        let p = b.get(e, &path).await;
        assert_eq!(p.status, 404, "{path}: {}", p.body);
    }
    for path in [
        "/console/queue",
        "/console/items",
        "/console/adapters",
        "/console/dashboard",
        "/console/batches",
    ] {
        let p = b.get(e, path).await;
        assert_eq!(p.status, 200, "{path}");
        assert!(!p.body.contains(&id), "{path} shows acme's item");
        assert!(
            !p.body.contains("attack_lora"),
            "{path} shows acme's adapter"
        );
    }
    let p = b
        .post(
            e,
            "/console/query",
            &[
                ("csrf", &csrf),
                ("query", "MATCH (f:Feedback) RETURN f.id AS id"),
                ("params", "{}"),
            ],
        )
        .await;
    assert_eq!(p.status, 200, "{}", p.body);
    assert!(p.body.contains(r#"id="query-count">0 rows"#), "{}", p.body);
    let p = b
        .post(
            e,
            &format!("/console/review/{id}"),
            &[("csrf", &csrf), ("decision", "rejected"), ("reason", "x")],
        )
        .await;
    assert_eq!(p.status, 404, "{}", p.body);
    let (_, item) = s.get(&admin, &format!("/feedback/{id}")).await;
    assert_eq!(item["validation_status"], "flagged");
    s.stop().await;
}

#[tokio::test]
async fn a_link_cannot_put_words_on_a_page() {
    let s = server().await;
    let admin = s.token("acme", "alice", Role::Admin);
    let id = flagged(&s, &admin, "Flash target?").await;
    let b = Browser::new(&s);
    let cookie = b.sign_in(&admin).await;
    let c = Some(cookie.as_str());
    let lie = "Your session expired. Sign in again at evil.example";
    let p = b
        .get(
            c,
            &format!("/console/queue?done={}&status=approved", pct(lie)),
        )
        .await;
    assert_eq!(p.status, 200);
    assert!(!p.body.contains("evil.example"), "{}", p.body);
    assert!(!p.body.contains(r#"id="flash""#));
    let p = b
        .get(c, &format!("/console/items/{id}?done={}", pct(lie)))
        .await;
    assert_eq!(p.status, 200);
    assert!(!p.body.contains("evil.example"), "{}", p.body);
    // The notes the console's own redirects ask for still show.
    let p = b
        .get(c, &format!("/console/queue?done={id}&status=approved"))
        .await;
    assert!(p.body.contains(r#"id="flash">Approved"#), "{}", p.body);
    let p = b
        .get(c, &format!("/console/items/{id}?done=rejected"))
        .await;
    assert!(p.body.contains("Review saved: rejected."), "{}", p.body);
    s.stop().await;
}

#[tokio::test]
async fn names_from_a_token_are_text_on_every_page() {
    let s = server().await;
    let hostile = "<x-sub>\"'";
    let token = s.token("acme", hostile, Role::Admin);
    let id = flagged(&s, &token, "Who reviewed me?").await;
    let (st, body) = s
        .patch(
            &token,
            &format!("/feedback/{id}"),
            &json!({"validation_status": "approved", "reason": "<x-reason>"}),
        )
        .await;
    assert_eq!(st, 200, "{body}");
    let (st, body) = s
        .post(&token, "/training/batches", &json!({"limit": 1}))
        .await;
    assert_eq!(st, 201, "{body}");
    let b = Browser::new(&s);
    let cookie = b.sign_in(&token).await;
    for path in [
        "/console/queue".to_owned(),
        format!("/console/items/{id}"),
        "/console/batches".to_owned(),
        "/console/batches/1".to_owned(),
        "/console/query".to_owned(),
    ] {
        let p = b.get(Some(&cookie), &path).await;
        assert_eq!(p.status, 200, "{path}: {}", p.body);
        assert!(
            !p.body.contains("<x-"),
            "{path} shows markup from the token"
        );
        assert!(p.body.contains("&#60;x-sub&#62;"), "{path}: {}", p.body);
    }
    s.stop().await;
}

#[tokio::test]
async fn signing_out_clears_the_cookie_with_the_attributes_it_was_set_with() {
    let s = TestServer::start_with(|c| {
        c.rate_limit.enabled = false;
        c.console.secure_cookie = true;
    })
    .await;
    let b = Browser::new(&s);
    let cookie = b.sign_in(&s.token("acme", "alice", Role::User)).await;
    let csrf = b.csrf(&cookie).await;
    // Signing out needs the form's token: a bare post does not sign anyone out.
    let p = b.post(Some(&cookie), "/console/logout", &[]).await;
    assert_eq!(p.status, 403, "{}", p.body);
    assert!(p.set_cookie.is_none());
    let p = b
        .post(Some(&cookie), "/console/logout", &[("csrf", &csrf)])
        .await;
    assert_eq!(p.status, 303);
    assert_eq!(p.location.as_deref(), Some("/console/login"));
    let cleared = p.set_cookie.unwrap();
    for part in [
        "fg_session=;",
        "Max-Age=0",
        "Path=/console",
        "HttpOnly",
        "SameSite=Strict",
        "Secure",
    ] {
        assert!(cleared.contains(part), "{part} missing: {cleared}");
    }
    // A cookie that no longer verifies is cleared the same way.
    let p = b.get(Some("not-a-token"), "/console/queue").await;
    assert_eq!(p.status, 303);
    assert_eq!(p.location.as_deref(), Some("/console/login"));
    let cleared = p.set_cookie.unwrap();
    for part in ["Max-Age=0", "Path=/console", "HttpOnly", "Secure"] {
        assert!(cleared.contains(part), "{part} missing: {cleared}");
    }
    // Without a cookie nothing is set: a request from elsewhere cannot sign anyone out.
    let p = b.get(None, "/console/queue").await;
    assert_eq!(p.status, 303);
    assert!(p.set_cookie.is_none());
    s.stop().await;
}

#[tokio::test]
async fn a_user_session_cannot_review_by_posting_directly() {
    let s = server().await;
    let admin = s.token("acme", "alice", Role::Admin);
    let id = flagged(&s, &admin, "Users only look?").await;
    let b = Browser::new(&s);
    for role in [Role::User, Role::Trainer] {
        let cookie = b.sign_in(&s.token("acme", "uma", role)).await;
        let csrf = b.csrf(&cookie).await;
        for decision in ["approved", "rejected"] {
            let p = b
                .post(
                    Some(&cookie),
                    &format!("/console/review/{id}"),
                    &[("csrf", &csrf), ("decision", decision), ("reason", "mine")],
                )
                .await;
            assert_eq!(p.status, 403, "{role:?} {decision}: {}", p.body);
            assert_console_page("refused review", &p);
        }
    }
    let (_, item) = s.get(&admin, &format!("/feedback/{id}")).await;
    assert_eq!(item["validation_status"], "flagged");
    assert_eq!(item["version"], 1);
    s.stop().await;
}
