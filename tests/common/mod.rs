//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod server;

use std::path::{Path, PathBuf};

use feedgraph::config::Config;
use feedgraph::model::{Actor, NewFeedback};
use feedgraph::service::Service;

/// The fixtures file.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/feedback.jsonl")
}

/// A configuration on `dir` with defaults otherwise.
pub fn config(dir: &Path) -> Config {
    Config {
        data_dir: dir.to_owned(),
        ..Config::default()
    }
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
