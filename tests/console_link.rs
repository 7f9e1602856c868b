//! One-time sign-in links for the console: `feedgraph console-link` prints a URL; opening
//! it shows who it signs in as without using it; the sign-in button uses it once; a used,
//! expired, altered or foreign code is refused, and a code is never an API token.

mod common;

use std::process::Command;

use common::server::TestServer;
use feedgraph::http::auth::Role;
use feedgraph::http::console::link;
use serde_json::json;

struct Reply {
    status: u16,
    location: Option<String>,
    set_cookie: Option<String>,
    csp: Option<String>,
    body: String,
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn read(r: reqwest::RequestBuilder) -> Reply {
    let resp = r.send().await.unwrap();
    let h = |n: &str| {
        resp.headers()
            .get(n)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let (location, set_cookie, csp) =
        (h("location"), h("set-cookie"), h("content-security-policy"));
    Reply {
        status: resp.status().as_u16(),
        location,
        set_cookie,
        csp,
        body: resp.text().await.unwrap(),
    }
}

/// Posts the sign-in form of a link, from the server's own origin unless `origin` says.
async fn use_code(s: &TestServer, code: &str, origin: Option<&str>) -> Reply {
    read(
        client()
            .post(format!("{}/console/link", s.base))
            .header("origin", origin.unwrap_or(&s.base))
            .form(&[("code", code)]),
    )
    .await
}

fn cookie_value(set_cookie: &str) -> String {
    set_cookie
        .strip_prefix("fg_session=")
        .and_then(|c| c.split(';').next())
        .unwrap()
        .to_owned()
}

/// Runs `feedgraph console-link` on the server's data directory; returns the URL.
fn cli_link(s: &TestServer, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_feedgraph"))
        .arg("--data-dir")
        .arg(s.dir.path())
        .envs(common::backend_env(s.dir.path()))
        .arg("console-link")
        .args(args)
        .arg("--url")
        .arg(&s.base)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[tokio::test]
async fn a_printed_link_signs_in_once() {
    let s = TestServer::start_with(|c| c.rate_limit.enabled = false).await;
    let admin = s.token("acme", "alice", Role::Admin);
    let (st, body) = s
        .post(
            &admin,
            "/feedback",
            &json!({"type": "negative", "question": "Link me in?", "answer": "Maybe."}),
        )
        .await;
    assert_eq!(st, 201, "{body}");
    let url = cli_link(&s, &["--org", "acme", "--user", "rita", "--role", "admin"]);
    let prefix = format!("{}/console/link/", s.base);
    let code = url
        .strip_prefix(&prefix)
        .expect("a console link")
        .to_owned();

    // Opening the link shows whom it signs in as and does not use it.
    for _ in 0..2 {
        let r = read(client().get(&url)).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(r.set_cookie.is_none());
        assert!(r.csp.unwrap().contains("frame-ancestors 'none'"));
        assert!(r.body.contains(r#"<strong id="link-user">rita</strong>"#));
        assert!(r.body.contains(r#"<strong id="link-org">acme</strong>"#));
    }

    // A post from another site does not use it either.
    let r = use_code(&s, &code, Some("http://evil.example")).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.set_cookie.is_none());

    // The button signs in: the cookie holds a session for rita, an admin.
    let r = use_code(&s, &code, None).await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.location.as_deref(), Some("/console/queue"));
    let set = r.set_cookie.unwrap();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    let session = cookie_value(&set);
    let r = read(
        client()
            .get(format!("{}/console/queue", s.base))
            .header("cookie", format!("fg_session={session}")),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body.contains(r#"<span class="user">rita</span>"#),
        "{}",
        r.body
    );
    assert!(
        r.body.contains("/console/review/"),
        "an admin link gives review forms"
    );

    // Once only.
    let r = use_code(&s, &code, None).await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(r.set_cookie.is_none());
    assert!(r.body.contains("used already"), "{}", r.body);
    s.stop().await;
}

#[tokio::test]
async fn expired_altered_foreign_and_api_uses_of_a_code_are_refused() {
    let s = TestServer::start_with(|c| c.rate_limit.enabled = false).await;
    // Expired: a link with no time left.
    let expired = link::make(&s.config, "acme", "rita", &[Role::Admin], 0, 3600).unwrap();
    let r = use_code(&s, &expired, None).await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(r.body.contains("expired"), "{}", r.body);

    // Altered: the claims say another user, the tag is the old one.
    let good = link::make(&s.config, "acme", "rita", &[Role::User], 600, 3600).unwrap();
    let (payload, tag) = good.split_once('.').unwrap();
    let claims = String::from_utf8(
        (0..payload.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&payload[i..i + 2], 16).unwrap())
            .collect(),
    )
    .unwrap();
    let forged: String = claims
        .replace("\"user\"", "\"admin\"")
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect();
    for code in [
        format!("{forged}.{tag}"),
        format!("{payload}.{}", "0".repeat(tag.len())),
        "nonsense".to_owned(),
        String::new(),
    ] {
        let r = use_code(&s, &code, None).await;
        assert_eq!(r.status, 401, "{code}: {}", r.body);
        assert!(r.set_cookie.is_none());
    }
    let r = read(client().get(format!("{}/console/link/{forged}.{tag}", s.base))).await;
    assert_eq!(r.status, 401);

    // Foreign: signed by another server's secret.
    let other = TestServer::start().await;
    let foreign = link::make(&other.config, "acme", "rita", &[Role::Admin], 600, 3600).unwrap();
    other.stop().await;
    let r = use_code(&s, &foreign, None).await;
    assert_eq!(r.status, 401, "{}", r.body);

    // A link code is not an API token.
    let (st, _) = s.get(&good, "/feedback").await;
    assert_eq!(st, 401);
    // The good one still works (refusals above did not use it).
    let r = use_code(&s, &good, None).await;
    assert_eq!(r.status, 303, "{}", r.body);
    s.stop().await;
}

#[tokio::test]
async fn the_command_refuses_unknown_roles_and_prints_a_reachable_address() {
    let s = TestServer::start().await;
    let out = Command::new(env!("CARGO_BIN_EXE_feedgraph"))
        .arg("--data-dir")
        .arg(s.dir.path())
        .envs(common::backend_env(s.dir.path()))
        .args([
            "console-link",
            "--org",
            "acme",
            "--user",
            "rita",
            "--role",
            "root",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown role"));
    let out = Command::new(env!("CARGO_BIN_EXE_feedgraph"))
        .arg("--data-dir")
        .arg(s.dir.path())
        .envs(common::backend_env(s.dir.path()))
        .args(["console-link", "--org", "acme", "--user", "rita"])
        .env("FEEDGRAPH__SERVER__BIND", "0.0.0.0:8123")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let url = String::from_utf8(out.stdout).unwrap();
    assert!(
        url.starts_with("http://127.0.0.1:8123/console/link/"),
        "{url}"
    );
    s.stop().await;
}
