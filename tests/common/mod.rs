//! Helpers shared by the integration tests, and the one switch that picks the storage
//! backend they run against.
//!
//! `FEEDGRAPH_TEST_BACKEND=sled` (the default) or `postgres`. With `postgres`, every
//! configuration these helpers build ([`config`], [`open`], `server::TestServer`) points at
//! a PostgreSQL database of a cluster the test process starts once (`postgres::PgServer`):
//! one fresh database per data directory, so a test that reopens a directory (a restarted
//! server, a service opened after the server stopped) reconnects to the same database, and
//! tests stay independent. Tests about sled itself skip on PostgreSQL with [`sled_only!`].
#![allow(dead_code)]

pub mod disk;
pub mod graphs;
pub mod pages;
#[path = "../support/postgres.rs"]
pub mod postgres;
pub mod server;

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use std::path::{Path, PathBuf};

use feedgraph::config::Config;
use feedgraph::model::{Actor, NewFeedback};
use feedgraph::service::Service;
use feedgraph::store::BackendKind;

/// The backend this test process runs against (`FEEDGRAPH_TEST_BACKEND`, default sled).
/// Any other value is a mistake and panics rather than silently testing sled.
pub fn backend() -> BackendKind {
    static KIND: OnceLock<BackendKind> = OnceLock::new();
    *KIND.get_or_init(
        || match std::env::var("FEEDGRAPH_TEST_BACKEND").as_deref() {
            Err(_) | Ok("") | Ok("sled") => BackendKind::Sled,
            Ok("postgres") => BackendKind::Postgres,
            Ok(other) => panic!("FEEDGRAPH_TEST_BACKEND={other:?}: expected sled or postgres"),
        },
    )
}

/// Whether the tests run against PostgreSQL.
pub fn on_postgres() -> bool {
    backend() == BackendKind::Postgres
}

/// The database URL that stands for `data_dir` on PostgreSQL: created (empty) on first use,
/// the same one for every later use of the directory in this process.
pub fn database_for(data_dir: &Path) -> String {
    static DATABASES: OnceLock<Mutex<HashMap<PathBuf, String>>> = OnceLock::new();
    let map = DATABASES.get_or_init(Default::default);
    let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
    map.entry(data_dir.to_owned())
        .or_insert_with(|| {
            let server = postgres::PgServer::get().unwrap_or_else(|| {
                panic!("FEEDGRAPH_TEST_BACKEND=postgres but no PostgreSQL could be started")
            });
            server.fresh_database()
        })
        .clone()
}

/// Points `config` at the backend under test: nothing to do for sled; for PostgreSQL,
/// the database of `config.data_dir` (see [`database_for`]).
pub fn apply_backend(config: &mut Config) {
    if on_postgres() {
        config.storage.backend = BackendKind::Postgres;
        config.storage.postgres.url = database_for(&config.data_dir);
    }
}

/// On PostgreSQL, the directory with the files of `data_dir`'s database, after a
/// checkpoint wrote every change there (for tests that scan what reached the disk);
/// `None` on sled.
pub fn postgres_files(data_dir: &Path) -> Option<PathBuf> {
    if !on_postgres() {
        return None;
    }
    let url = database_for(data_dir);
    postgres::PgServer::get().map(|s| s.database_files(&url))
}

/// The environment a `feedgraph` child process on `data_dir` needs to use the backend
/// under test (empty for sled).
pub fn backend_env(data_dir: &Path) -> Vec<(&'static str, String)> {
    if on_postgres() {
        vec![
            ("FEEDGRAPH__STORAGE__BACKEND", "postgres".to_owned()),
            ("FEEDGRAPH__STORAGE__POSTGRES__URL", database_for(data_dir)),
        ]
    } else {
        Vec::new()
    }
}

/// Prints why a sled-only test does not run and returns `true` when the tests run against
/// another backend. Use through [`sled_only!`].
pub fn skip_unless_sled(test: &str, why: &str) -> bool {
    if on_postgres() {
        eprintln!("SKIPPED on postgres: {test} runs on sled only: {why}");
        true
    } else {
        false
    }
}

/// Returns from the test (a skip, with the reason printed) unless it runs against sled.
/// The one place a test says it is about sled itself (its files, its crash behaviour, its
/// internals) and not about the service every backend must provide.
#[allow(unused_macros)]
macro_rules! sled_only {
    ($why:expr) => {
        if $crate::common::skip_unless_sled(module_path!(), $why) {
            return;
        }
    };
}
#[allow(unused_imports)]
pub(crate) use sled_only;

/// The fixtures file.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/feedback.jsonl")
}

/// A configuration on `dir` (and, on PostgreSQL, its database) with defaults otherwise.
pub fn config(dir: &Path) -> Config {
    let mut config = Config {
        data_dir: dir.to_owned(),
        ..Config::default()
    };
    apply_backend(&mut config);
    config
}

/// Opens a service on `dir`.
pub fn open(dir: &Path) -> Service {
    Service::open(&config(dir)).expect("open service")
}

/// Imports the fixtures into `service`.
pub fn load_fixtures(service: &Service) {
    let text = std::fs::read_to_string(fixtures()).unwrap();
    let records = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| (i + 1, feedgraph::service::ImportRecord::parse(l).unwrap()))
        .collect();
    service
        .import(None, "test", records, 100, |_| {})
        .expect("import fixtures");
}

/// A valid positive item.
pub fn item(question: &str, answer: &str) -> NewFeedback {
    NewFeedback {
        feedback_type: Some("positive".into()),
        question: Some(question.into()),
        answer: Some(answer.into()),
        ..Default::default()
    }
}

/// An actor.
pub fn actor(org: &str) -> Actor {
    Actor::new(org, "tester")
}

/// A port that was free a moment ago, for a server started as a child process.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free local port")
}

/// Starts the `feedgraph` binary serving `dir` on a port of its choosing, with `envs` set
/// (and `RUST_LOG=warn`). Returns the child and the base URL from its first line; the rest
/// of its output is drained on a thread. It may not be ready yet: poll `/readyz`.
pub fn spawn_serve(dir: &Path, envs: &[(&str, String)]) -> (std::process::Child, String) {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_feedgraph"))
        .arg("--data-dir")
        .arg(dir)
        .args(["serve", "--bind", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the feedgraph binary starts");
    let stdout = child.stdout.take().expect("a piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let first = lines
        .next()
        .and_then(Result::ok)
        .unwrap_or_else(|| panic!("the server printed nothing"));
    let base = first
        .strip_prefix("feedgraph listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {first}"))
        .to_owned();
    std::thread::spawn(move || for _ in lines {});
    (child, base)
}
