//! A full backup of a live PostgreSQL store is one snapshot: taken while a writer keeps
//! submitting items that each create their own adapter, every backup is self-consistent
//! (every edge's adapter is in it, every record's history ends at the record's version,
//! the closing counts match the lines). Reading table by table outside one transaction
//! fails this: adapters are read first, so records submitted meanwhile name adapters the
//! backup lacks. PostgreSQL only (tests/support/postgres.rs); skips without it.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use common::postgres::PgServer;
use feedgraph::model::{Actor, NewFeedback};
use feedgraph::service::Service;
use feedgraph::store::BackendKind;
use feedgraph::store::backup::BackupEntry;

const ORG: &str = "acme";

fn item(n: usize, adapter: String) -> NewFeedback {
    NewFeedback {
        adapter_id: Some(adapter),
        ..common::item(&format!("snapshot question {n}"), &format!("answer {n}"))
    }
}

/// What is wrong with one backup, if anything.
fn problems(backup: &[u8]) -> Vec<String> {
    let mut adapters = HashSet::new();
    let mut edges = Vec::new();
    let mut bad = Vec::new();
    let (mut lines_adapters, mut lines_feedback) = (0u64, 0u64);
    for line in std::str::from_utf8(backup).unwrap().lines() {
        match serde_json::from_str::<BackupEntry>(line).unwrap() {
            BackupEntry::Adapter { adapter, .. } => {
                lines_adapters += 1;
                adapters.insert(adapter.id.clone());
            }
            BackupEntry::Feedback { record, history } => {
                lines_feedback += 1;
                let f = &record.feedback;
                if history.last().map(|h| h.version) != Some(f.version) {
                    bad.push(format!(
                        "{}: history ends at {:?}, record at {}",
                        f.id,
                        history.last().map(|h| h.version),
                        f.version
                    ));
                }
                for l in &record.links {
                    edges.push((f.id.clone(), l.adapter_id.clone()));
                }
            }
            BackupEntry::End { counts } => {
                let c = serde_json::to_value(counts).unwrap();
                if c["adapters"] != lines_adapters || c["feedback"] != lines_feedback {
                    bad.push(format!(
                        "counts {c} against {lines_adapters} adapters, {lines_feedback} records"
                    ));
                }
            }
            _ => {}
        }
    }
    for (item, adapter) in edges {
        if !adapters.contains(&adapter) {
            bad.push(format!("{item} links adapter {adapter}, not in the backup"));
        }
    }
    bad
}

#[test]
fn a_backup_taken_during_writes_is_one_consistent_snapshot() {
    let Some(server) = PgServer::get() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path());
    config.storage.backend = BackendKind::Postgres;
    config.storage.postgres.url = server.fresh_database();
    let service = Arc::new(Service::open(&config).unwrap());
    let user = Actor::new(ORG, "writer");
    // Many adapters make the adapter part of a backup take a while, so writes land
    // between it and the records.
    for n in 0..300 {
        service.submit(&user, item(n, format!("seed-{n}"))).unwrap();
    }

    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (service, stop, written, user) =
            (service.clone(), stop.clone(), written.clone(), user.clone());
        std::thread::spawn(move || {
            let mut n = 1000;
            while !stop.load(Ordering::Relaxed) {
                service.submit(&user, item(n, format!("live-{n}"))).unwrap();
                written.fetch_add(1, Ordering::Relaxed);
                n += 1;
            }
        })
    };

    // Back up until enough writes landed during backups (and at least a few backups).
    let mut all = Vec::new();
    let mut rounds = 0;
    while rounds < 4 || (written.load(Ordering::Relaxed) < 100 && rounds < 40) {
        let before = written.load(Ordering::Relaxed);
        let mut out = Vec::new();
        service
            .backup(&[ORG.to_owned()], &mut out, &mut |_| {})
            .unwrap();
        let during = written.load(Ordering::Relaxed) - before;
        for p in problems(&out) {
            all.push(format!("backup {rounds} ({during} writes during it): {p}"));
        }
        rounds += 1;
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert!(
        written.load(Ordering::Relaxed) > 0,
        "the writer wrote during the backups"
    );
    assert!(
        all.is_empty(),
        "{} problems, first: {:#?}",
        all.len(),
        &all[..all.len().min(5)]
    );
    // A backup of the quiet store holds everything written.
    let mut out = Vec::new();
    service
        .backup(&[ORG.to_owned()], &mut out, &mut |_| {})
        .unwrap();
    assert!(problems(&out).is_empty());
    let records = String::from_utf8(out)
        .unwrap()
        .lines()
        .filter(|l| l.contains(r#""kind":"feedback""#))
        .count();
    assert_eq!(records, 300 + written.load(Ordering::Relaxed));
}
