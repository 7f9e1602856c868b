//! The review console end to end in a real headless Chromium, driven over WebDriver
//! (Debian's `chromium` and `chromium-driver`, through `fantoccini`): sign in, review from
//! the queue with the keyboard, follow the item's history, read the lineage picture, and
//! see that a `user` session and a forged cross-site post change nothing.
//!
//! Screenshots of every page go to `target/console-screenshots/`; with
//! `FEEDGRAPH_DOCS_SCREENSHOTS=1` the queue and lineage shots are also written to `docs/`
//! for the README.
//!
//! Without `/usr/bin/chromium` and `/usr/bin/chromedriver` the test skips with a notice,
//! unless `FEEDGRAPH_REQUIRE_BROWSER` is set (CI sets it in `.ci/run`), where that fails.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::server::TestServer;
use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::{Client, ClientBuilder, Locator};
use feedgraph::http::auth::Role;
use serde_json::json;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// chromedriver, killed when dropped.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The browser tools, or `None` (after a loud notice) where they are missing and the run
/// does not demand them.
fn browser_available() -> bool {
    let missing: Vec<&str> = [CHROMIUM, CHROMEDRIVER]
        .into_iter()
        .filter(|p| !Path::new(p).exists())
        .collect();
    if missing.is_empty() {
        return true;
    }
    let why = format!(
        "{} missing (Debian packages chromium and chromium-driver: `apt-get install -y \
         chromium chromium-driver`)",
        missing.join(" and ")
    );
    assert!(
        std::env::var_os("FEEDGRAPH_REQUIRE_BROWSER").is_none(),
        "{why}; FEEDGRAPH_REQUIRE_BROWSER is set, so this is a failure"
    );
    eprintln!("SKIPPED: the console browser test did not run: {why}");
    false
}

async fn start_driver() -> (Driver, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let driver = Driver(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "chromedriver did not listen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (driver, port)
}

async fn browser(port: u16, profile: &Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": CHROMIUM,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", "--window-size=1280,900",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a Chromium session")
}

fn shots_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    std::fs::write(shots_dir().join(format!("{name}.png")), &png).unwrap();
    if std::env::var_os("FEEDGRAPH_DOCS_SCREENSHOTS").is_some()
        && (name == "queue" || name == "lineage")
    {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
        std::fs::create_dir_all(&docs).unwrap();
        std::fs::write(docs.join(format!("console-{name}.png")), &png).unwrap();
    }
}

/// Presses one key on whatever has the focus (the page, when nothing does).
async fn press(c: &Client, key: char) {
    let keys = KeyActions::new("keyboard".into())
        .then(KeyAction::Down { value: key })
        .then(KeyAction::Up { value: key });
    c.perform_actions(keys).await.unwrap();
}

async fn text_of(c: &Client, css: &str) -> String {
    match c
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(css))
        .await
    {
        Ok(e) => e.text().await.unwrap(),
        Err(e) => panic!(
            "no {css} ({e}) at {}:\n{}",
            c.current_url().await.unwrap(),
            c.source().await.unwrap()
        ),
    }
}

async fn remaining(c: &Client) -> usize {
    text_of(c, "#remaining").await.parse().unwrap()
}

async fn card_ids(c: &Client) -> Vec<String> {
    let mut ids = Vec::new();
    for card in c
        .find_all(Locator::Css("#queue article.item"))
        .await
        .unwrap()
    {
        ids.push(card.attr("data-id").await.unwrap().unwrap());
    }
    ids
}

async fn current_id(c: &Client) -> String {
    c.find(Locator::Css("#queue article.item.current"))
        .await
        .unwrap()
        .attr("data-id")
        .await
        .unwrap()
        .unwrap()
}

async fn sign_in(c: &Client, base: &str, token: &str) {
    c.goto(&format!("{base}/console/queue")).await.unwrap();
    assert!(
        c.current_url().await.unwrap().path() == "/console/login",
        "a stranger is not sent to sign in"
    );
    c.find(Locator::Css("#token"))
        .await
        .unwrap()
        .send_keys(token)
        .await
        .unwrap();
    c.find(Locator::Css("#login button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    if let Err(e) = c
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css("#remaining"))
        .await
    {
        shot(c, "sign-in-failed").await;
        panic!(
            "not signed in to the queue ({e}): at {}\n{}",
            c.current_url().await.unwrap(),
            c.source().await.unwrap()
        );
    }
}

async fn status_of(s: &TestServer, token: &str, id: &str) -> (String, u64) {
    let (st, item) = s.get(token, &format!("/feedback/{id}")).await;
    assert_eq!(st, 200, "{item}");
    (
        item["validation_status"].as_str().unwrap().to_owned(),
        item["version"].as_u64().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reviewer_works_the_queue_with_the_keyboard_in_chromium() {
    if !browser_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    {
        let s = common::open(dir.path());
        common::load_fixtures(&s);
    }
    let s = TestServer::start_in(dir, |c| c.rate_limit.enabled = false).await;
    let admin = s.token("acme", "alice", Role::Admin);
    // A batch, so the batch pages have something to show.
    let (st, claimed) = s
        .post(&admin, "/training/batches", &json!({"limit": 5}))
        .await;
    assert_eq!(st, 201, "{claimed}");
    let batch = claimed["batch_id"].as_u64().unwrap();
    let (st, body) = s
        .post(
            &admin,
            &format!("/training/batches/{batch}/commit"),
            &json!({"trained_adapter_id": "themis_help_lora_v3"}),
        )
        .await;
    assert_eq!(st, 200, "{body}");

    let (_driver, port) = start_driver().await;
    let profile = tempfile::tempdir().unwrap();
    let c = browser(port, profile.path()).await;
    let base = s.base.clone();

    // Sign in; the login page first.
    c.goto(&format!("{base}/console/login")).await.unwrap();
    shot(&c, "login").await;
    sign_in(&c, &base, &admin).await;
    let left = remaining(&c).await;
    let ids = card_ids(&c).await;
    assert!(
        left >= 3 && ids.len() >= 3,
        "the fixtures give a queue: {left}"
    );
    assert_eq!(current_id(&c).await, ids[0]);
    shot(&c, "queue").await;

    // j and k move the selection; a approves the selected item.
    press(&c, 'j').await;
    assert_eq!(current_id(&c).await, ids[1]);
    press(&c, 'n').await;
    assert_eq!(current_id(&c).await, ids[2]);
    press(&c, 'k').await;
    press(&c, 'k').await;
    assert_eq!(current_id(&c).await, ids[0]);
    press(&c, 'a').await;
    let flash = text_of(&c, "#flash").await;
    assert!(flash.starts_with("Approved"), "{flash}");
    assert!(flash.contains(&ids[0]), "{flash}");
    assert_eq!(remaining(&c).await, left - 1);
    let now = card_ids(&c).await;
    assert!(
        !now.contains(&ids[0]),
        "the approved item is still in the queue"
    );
    assert_eq!(now[0], ids[1]);
    assert_eq!(status_of(&s, &admin, &ids[0]).await.0, "approved");

    // Its history shows the review, by whom, with the reason.
    c.find(Locator::Css("#flash a"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let history = text_of(&c, "#history").await;
    assert!(history.contains("review by alice"), "{history}");
    assert!(history.contains("flagged"), "{history}");
    assert!(history.contains("approved"), "{history}");
    assert_eq!(text_of(&c, "#item-status").await, "approved");
    shot(&c, "item").await;

    // r opens the reason box; Enter rejects with the reason typed.
    c.goto(&format!("{base}/console/queue")).await.unwrap();
    assert_eq!(current_id(&c).await, ids[1]);
    press(&c, 'r').await;
    let focused = c.active_element().await.unwrap();
    assert_eq!(
        focused.attr("name").await.unwrap().as_deref(),
        Some("reason")
    );
    focused.send_keys("contradicts the docs").await.unwrap();
    focused.send_keys("\u{E007}").await.unwrap(); // Enter
    let flash = text_of(&c, "#flash").await;
    assert!(flash.starts_with("Rejected"), "{flash}");
    assert_eq!(remaining(&c).await, left - 2);
    assert!(!card_ids(&c).await.contains(&ids[1]));
    let (status, _) = status_of(&s, &admin, &ids[1]).await;
    assert_eq!(status, "rejected");
    c.goto(&format!("{base}/console/items/{}", ids[1]))
        .await
        .unwrap();
    let history = text_of(&c, "#history").await;
    assert!(history.contains("contradicts the docs"), "{history}");

    // The lineage picture shows every adapter of the fixture's org.
    c.goto(&format!("{base}/console/adapters")).await.unwrap();
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
        let node = c
            .find(Locator::Css(&format!(
                "#lineage svg a[data-adapter=\"{id}\"]"
            )))
            .await
            .unwrap_or_else(|e| panic!("{id} is not drawn: {e}"));
        let (_, _, w, h) = node.rectangle().await.unwrap();
        assert!(w > 0.0 && h > 0.0, "{id} is drawn empty");
    }
    shot(&c, "lineage").await;

    // The other pages render (and get their screenshots).
    for (path, name, probe) in [
        (
            "/console/dashboard".to_owned(),
            "dashboard",
            "#chart-submits svg",
        ),
        ("/console/batches".to_owned(), "batches", "#batches"),
        (format!("/console/batches/{batch}"), "batch", "#manifest"),
        ("/console/items".to_owned(), "items", "table.list"),
        (
            "/console/adapters/themis_help_lora_v2".to_owned(),
            "adapter",
            "table.list",
        ),
    ] {
        c.goto(&format!("{base}{path}")).await.unwrap();
        text_of(&c, probe).await;
        shot(&c, name).await;
    }
    c.goto(&format!("{base}/console/query?named=lineage"))
        .await
        .unwrap();
    c.find(Locator::Css("#query-form button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    text_of(&c, "#query-count").await;
    shot(&c, "query").await;

    // A page on another origin posts a review form at the console: the browser does not
    // send the Strict cookie, the server refuses, and the item is untouched.
    let target = ids[2].clone();
    let before = status_of(&s, &admin, &target).await;
    let forged = format!(
        "data:text/html,<form id=f method=post action='{base}/console/review/{target}'>\
         <input name=decision value=approved><input name=reason value=forged></form>\
         <script>document.getElementById('f').submit()</script>"
    );
    c.goto(&forged).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(status_of(&s, &admin, &target).await, before);
    // The console's own origin without the form's CSRF token: refused too. (The page's
    // policy blocks fetch() altogether, so the forgery is a form built in the page.)
    c.goto(&format!("{base}/console/queue")).await.unwrap();
    c.execute(
        "const f = document.createElement('form');\
         f.method = 'post'; f.action = arguments[0];\
         for (const [k, v] of [['decision', 'approved'], ['reason', 'forged']]) {\
           const i = document.createElement('input'); i.name = k; i.value = v; f.appendChild(i);\
         }\
         document.body.appendChild(f); f.submit();",
        vec![json!(format!("/console/review/{target}"))],
    )
    .await
    .unwrap();
    let refused = text_of(&c, "#error-details").await;
    assert!(refused.contains("CSRF"), "{refused}");
    shot(&c, "forged-refused").await;
    assert_eq!(status_of(&s, &admin, &target).await, before);

    // Sign out; a user token sees the queue but no review buttons, and its keys review
    // nothing.
    c.goto(&format!("{base}/console/queue")).await.unwrap();
    c.find(Locator::Css("header.top form button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css("#token"))
        .await
        .unwrap();
    sign_in(&c, &base, &s.token("acme", "uma", Role::User)).await;
    assert_eq!(remaining(&c).await, left - 2);
    assert!(
        c.find_all(Locator::Css("form.review, button.approve, button.reject"))
            .await
            .unwrap()
            .is_empty(),
        "a user gets review buttons"
    );
    press(&c, 'a').await;
    press(&c, 'r').await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(remaining(&c).await, left - 2);
    assert_eq!(status_of(&s, &admin, &target).await, before);
    shot(&c, "queue-user").await;

    c.close().await.unwrap();
    s.stop().await;
}
