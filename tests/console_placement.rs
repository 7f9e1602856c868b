//! The review console on a replica placed on some orgs: a session, a sign-in or a
//! one-time link of an org the replica does not serve is answered with the API's 421
//! naming the placement, on every page and form post; the served org works as before,
//! and signing out works for anyone. Runs on either backend (`FEEDGRAPH_TEST_BACKEND`).

mod common;

use common::server::TestServer;
use feedgraph::http::auth::Role;
use feedgraph::http::console::ROUTES;

const SERVED: &str = "served-org";
const OTHER: &str = "other-org";

/// One console request with the session cookie `token` (if any), without following
/// redirects: `(status, set-cookie, body)`.
async fn request(
    s: &TestServer,
    method: &str,
    path: &str,
    token: Option<&str>,
    form: &[(&str, &str)],
) -> (u16, Option<String>, String) {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let url = format!("{}{path}", s.base);
    let mut r = match method {
        "GET" => client.get(url),
        _ => client.post(url).form(form).header("origin", &s.base),
    };
    if let Some(t) = token {
        r = r.header("cookie", format!("fg_session={t}"));
    }
    let resp = r.send().await.unwrap();
    let cookie = resp
        .headers()
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().to_owned());
    (resp.status().as_u16(), cookie, resp.text().await.unwrap())
}

/// A route of [`ROUTES`] with its parameters filled in.
fn concrete(path: &str) -> String {
    path.replace("{id}", "1")
        .replace("{code}", "x")
        .replace("{file}", "console.css")
}

#[tokio::test]
async fn console_answers_421_naming_the_placement_for_an_org_placed_elsewhere() {
    let s = TestServer::start_with(|c| c.placement.orgs = vec![SERVED.to_owned()]).await;
    let served = s.token(SERVED, "rev", Role::Admin);
    let other = s.token(OTHER, "rev", Role::Admin);

    // The served org signs in and sees its queue.
    let (status, cookie, body) =
        request(&s, "POST", "/console/login", None, &[("token", &served)]).await;
    assert_eq!(status, 303, "{body}");
    assert!(cookie.is_some(), "a session cookie for the served org");
    let (status, _, body) = request(&s, "GET", "/console/queue", Some(&served), &[]).await;
    assert_eq!(status, 200, "{body}");

    // Signing in as the other org is refused with the placement, and sets no cookie.
    let (status, cookie, body) =
        request(&s, "POST", "/console/login", None, &[("token", &other)]).await;
    assert_eq!(status, 421, "{body}");
    assert!(cookie.is_none(), "no session for an org placed elsewhere");
    assert!(
        body.contains(OTHER) && body.contains("placement"),
        "the page names the org and the placement: {body}"
    );

    // Every page and form post behind a session refuses the other org's session the same
    // way, whatever the form holds (the refusal comes before it is read).
    let mut checked = 0;
    for (method, path) in ROUTES {
        let open = [
            "/console",
            "/console/",
            "/console/login",
            "/console/logout",
            "/console/link/{code}",
            "/console/link",
            "/console/assets/{file}",
        ];
        if open.contains(path) {
            continue;
        }
        let form = [
            ("csrf", "x"),
            ("cypher", "MATCH (n) RETURN n"),
            ("action", "approve"),
        ];
        let (status, _, body) = request(&s, method, &concrete(path), Some(&other), &form).await;
        assert_eq!(status, 421, "{method} {path}: {body}");
        assert!(
            body.contains(OTHER) && body.contains("placement"),
            "{method} {path} names the placement: {body}"
        );
        checked += 1;
    }
    assert!(checked >= 10, "every session route was tried ({checked})");

    // The served org's session still gets its pages.
    let (status, _, body) = request(&s, "GET", "/console/items", Some(&served), &[]).await;
    assert_eq!(status, 200, "{body}");
}
