//! Tests of the runs: what a slot serves, what a change kills and blanks, the order of
//! the hook and of an install against pages and erasures, and demand.

use super::*;
use crate::model::{FeedbackLink, LinkSource};
use crate::service::Service;

/// A run of org `o` holding `items` (id, row, version, bytes) one after another.
fn run_of(runs: &Runs, items: &[(&str, u32, u64, &str)]) -> OrgRuns {
    let (file, path) = runs.create_file().unwrap();
    let mut slots = FxHashMap::default();
    let mut offset = 0u64;
    for &(id, row, version, bytes) in items {
        file.write_all_at(bytes.as_bytes(), offset).unwrap();
        slots.insert(
            id_hash(id),
            Slot {
                row,
                len: bytes.len() as u32,
                offset,
                kind: FeedbackKind::Thumbs,
                version: AtomicU64::new(version),
            },
        );
        offset += bytes.len() as u64;
    }
    OrgRuns {
        file,
        path,
        slots,
        bytes: offset,
        dead: AtomicUsize::new(0),
        built_for: vec![(0, items.len())],
        blanked: AtomicBool::new(false),
    }
}

fn link_change(id: &str) -> ChangeSet {
    ChangeSet {
        links: vec![FeedbackLink {
            feedback_id: id.into(),
            adapter_id: "a".into(),
            created_at: 0,
            source: LinkSource::Manual,
            metadata: Default::default(),
        }],
        ..ChangeSet::default()
    }
}

/// A change that erased item `id`.
fn erasure_change(id: &str) -> ChangeSet {
    let mut f = crate::model::Feedback::sample(id, "o");
    f.erase_content(1, "tester");
    ChangeSet {
        feedback: vec![crate::store::FeedbackRecord {
            lease: None,
            links: Vec::new(),
            feedback: f,
        }],
        ..ChangeSet::default()
    }
}

fn text(item: &Option<CachedItem>) -> Option<String> {
    item.as_ref()
        .map(|i| String::from_utf8(i.bytes.to_vec()).unwrap())
}

const ITEMS: [(&str, u32, u64, &str); 3] = [
    ("f1", 1, 3, r#"{"id":"f1","secret":"first"}"#),
    ("f2", 2, 1, r#"{"id":"f2","secret":"second"}"#),
    ("f3", 3, 7, r#"{"id":"f3","secret":"third"}"#),
];

#[test]
fn a_slot_is_served_only_at_its_row_and_version_and_never_after_a_change() {
    let dir = tempfile::tempdir().unwrap();
    let runs = Runs::new(dir.path().join("runs"), 1, 1, 1 << 20, 0);
    runs.set("o", Some(Arc::new(run_of(&runs, &ITEMS))));
    let want = |id, row, version| Want { row, id, version };
    let got = runs.read(
        "o",
        &[
            want("f3", 3, 7),
            want("f1", 1, 3),
            want("f2", 2, 2),
            want("f2", 9, 1),
        ],
    );
    assert_eq!(text(&got[0]).as_deref(), Some(ITEMS[2].3));
    assert_eq!(text(&got[1]).as_deref(), Some(ITEMS[0].3));
    assert!(got[2].is_none(), "another version");
    assert!(got[3].is_none(), "another row");
    assert!(
        runs.read("p", &[want("f1", 1, 3)])[0].is_none(),
        "another org"
    );
    assert_eq!(runs.stats().hits, 2);

    // A link to f1 kills its slot (no I/O: its bytes stay)...
    runs.invalidate_changes("o", &link_change("f1"));
    assert!(runs.read("o", &[want("f1", 1, 3)])[0].is_none());
    let path = runs.org("o").unwrap().path.clone();
    let on_disk = || String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
    assert!(on_disk().contains("first"));
    // ...its erasure, after, blanks them, and an erasure of a live slot kills and blanks.
    runs.invalidate_changes("o", &erasure_change("f1"));
    runs.invalidate_changes("o", &erasure_change("f3"));
    assert!(!on_disk().contains("first"));
    assert!(!on_disk().contains("third"));
    assert!(on_disk().contains("second"));
    assert!(runs.read("o", &[want("f3", 3, 7)])[0].is_none());
    assert_eq!(
        text(&runs.read("o", &[want("f2", 2, 1)])[0]).as_deref(),
        Some(ITEMS[1].3)
    );
    // Dropping the run deletes its file.
    runs.set("o", None);
    assert!(!path.exists());
}

#[test]
fn a_change_made_while_a_run_was_built_kills_its_slot_when_installed() {
    let dir = tempfile::tempdir().unwrap();
    let runs = Runs::new(dir.path().join("runs"), 1, 1, 1 << 20, 0);
    runs.begin_build("o");
    // The run read f2 before this change reached the store.
    runs.invalidate_changes("o", &link_change("f2"));
    runs.invalidate_changes("other", &link_change("f3"));
    runs.install("o", run_of(&runs, &ITEMS)).unwrap();
    let want = |id, row, version| Want { row, id, version };
    let got = runs.read("o", &[want("f1", 1, 3), want("f2", 2, 1), want("f3", 3, 7)]);
    assert!(got[0].is_some());
    assert!(got[1].is_none(), "changed during the build");
    assert!(got[2].is_some(), "a change of another org");
    let on_disk = std::fs::read(&runs.org("o").unwrap().path).unwrap();
    assert!(!String::from_utf8_lossy(&on_disk).contains("second"));
    assert_eq!(runs.stats().builds, 1);
}

#[test]
fn demand_picks_the_adapters_paged_through_biggest_first() {
    let dir = tempfile::tempdir().unwrap();
    let runs = Runs::new(dir.path().join("runs"), 10, 100, 1 << 20, 0);
    runs.note_reads("o", 4, 50, 60);
    runs.note_reads("o", 4, 50, 60);
    runs.note_reads("o", 7, 9, 500);
    runs.note_reads("o", 5, 80, 99);
    let per_org = runs.demand.lock().get("o").cloned().unwrap();
    assert_eq!(per_org.get(&4), Some(&120));
    assert_eq!(per_org.get(&7), None, "too small for a run");
    assert_eq!(per_org.get(&5), Some(&99));
}

/// The graph watch hook (`Service::open`) kills the changed items' run slots before it
/// drops them from the item cache. The other way round, a page whose snapshot still
/// shows the old version (the graph publishes after the hook) that looks an item up in
/// between takes its item-cache ticket after the cache was invalidated, finds the slot
/// still alive, and keeps the old bytes in the item cache (as the reader below does for
/// one item, like `rendered_items`): after an erasure the erased text stayed in memory
/// (38 of 40 erasures). The erasure and the hook are the real ones.
#[test]
fn an_erasure_racing_a_page_leaves_no_erased_text_in_the_item_cache() {
    use super::super::erasure::EraseRequest;
    use crate::config::Config;
    use crate::model::{Actor, ChangeAction, Feedback};
    use crate::store::ErasureScope;

    const SECRET: &str = r#"{"id":"x","question":"the erased words"}"#;
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        data_dir: dir.path().to_owned(),
        ..Config::default()
    };
    config.erasure.chunk_items = 256;
    let service = Service::open(&config).unwrap();
    let actor = Actor::new("acme", "u1");
    let mut kept = 0;
    for trial in 0..40 {
        let user = format!("victim-{trial}");
        let items: Vec<Feedback> = (0..256)
            .map(|i| {
                let mut f = Feedback::sample(&format!("fb_{trial:03}_{i:04}"), "acme");
                f.user_id = Some(user.clone());
                f
            })
            .collect();
        let changes = service
            .store
            .write(&actor, &mut |tx| {
                for f in &items {
                    tx.insert_feedback(f, ChangeAction::Submit)?;
                }
                Ok(())
            })
            .unwrap();
        service.graph.apply("acme", &changes).wait();
        // The first id erased: its cache entry goes first, its slot last.
        let x = items[0].id.as_str();
        let g = service.graph.org("acme").unwrap();
        let row = g.feedback_row(x).unwrap();
        let version = g.feedback().version(row).unwrap();
        drop(g);
        let run = run_of(&service.runs, &[(x, row, version, SECRET)]);
        service.runs.set("acme", Some(Arc::new(run)));
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let ticket = service.items.ticket("acme", x);
                    let want = Want {
                        row,
                        id: x,
                        version,
                    };
                    let got = service.runs.read("acme", &[want]);
                    if let Some(item) = got.into_iter().next().flatten() {
                        service.items.insert(ticket, "acme", x, version, item);
                    }
                }
            });
            std::thread::sleep(Duration::from_millis(2));
            let req = EraseRequest {
                scope: ErasureScope::User,
                value: user.clone(),
            };
            service.erase(&actor, &req).unwrap();
            stop.store(true, Ordering::Relaxed);
        });
        if let Some(item) = service.items.get("acme", x, version) {
            assert!(String::from_utf8_lossy(&item.bytes).contains("erased words"));
            kept += 1;
        }
    }
    assert_eq!(
        kept, 0,
        "in {kept} of 40 erasures the erased text went back into the item cache from \
         the run slot the hook had not killed yet"
    );
}

/// `Runs::install` kills the slots of the items changed during the build before it
/// puts the run in place. The other way round, a build that read an item before its
/// erasure held the erased text in a live slot until the kill reached it: a page whose
/// snapshot predates the erasure's publication reads it and keeps it in the item cache,
/// whose invalidation ran long before. Many changes during the build (200,000 ids ahead
/// of the erased one) make that window wide.
#[test]
fn an_item_erased_during_a_build_is_never_served_from_the_installed_run() {
    use super::super::erasure::EraseRequest;
    use crate::config::Config;
    use crate::model::{Actor, ChangeAction, Feedback};
    use crate::store::ErasureScope;

    const SECRET: &str = r#"{"id":"x","question":"the erased words"}"#;
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        data_dir: dir.path().to_owned(),
        ..Config::default()
    };
    let service = Service::open(&config).unwrap();
    let actor = Actor::new("acme", "u1");
    let x = "fb_x";
    let changes = service
        .store
        .write(&actor, &mut |tx| {
            tx.insert_feedback(&Feedback::sample(x, "acme"), ChangeAction::Submit)
        })
        .unwrap();
    service.graph.apply("acme", &changes).wait();
    let g = service.graph.org("acme").unwrap();
    let row = g.feedback_row(x).unwrap();
    let version = g.feedback().version(row).unwrap();
    drop(g);

    // A build of acme begins and reads x (the bytes below); other items of the org
    // change meanwhile, then x is erased.
    service.runs.begin_build("acme");
    let others = ChangeSet {
        links: (0..200_000)
            .map(|i| FeedbackLink {
                feedback_id: format!("fb_other_{i}"),
                adapter_id: "a".into(),
                created_at: 0,
                source: LinkSource::Manual,
                metadata: Default::default(),
            })
            .collect(),
        ..ChangeSet::default()
    };
    service.runs.invalidate_changes("acme", &others);
    let req = EraseRequest {
        scope: ErasureScope::Item,
        value: x.into(),
    };
    service.erase(&actor, &req).unwrap();
    let built = run_of(&service.runs, &[(x, row, version, SECRET)]);

    let stop = AtomicBool::new(false);
    let served = AtomicUsize::new(0);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                let ticket = service.items.ticket("acme", x);
                let got = service.runs.read(
                    "acme",
                    &[Want {
                        row,
                        id: x,
                        version,
                    }],
                );
                if let Some(item) = got.into_iter().next().flatten() {
                    served.fetch_add(1, Ordering::Relaxed);
                    service.items.insert(ticket, "acme", x, version, item);
                }
            }
        });
        std::thread::sleep(Duration::from_millis(5));
        service.runs.install("acme", built).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        stop.store(true, Ordering::Relaxed);
    });
    let kept = service.items.get("acme", x, version).is_some();
    assert!(
        served.load(Ordering::Relaxed) == 0 && !kept,
        "the erased text was served {} times from the installed run before its slot \
         was killed; kept in the item cache: {kept}",
        served.load(Ordering::Relaxed)
    );
}

#[test]
fn left_overs_go_and_a_live_process_runs_stay() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("runs");
    // A live process's directory: its lock is held (here by this test).
    let live = base.join("77-1");
    std::fs::create_dir_all(&live).unwrap();
    let held = std::fs::File::create(live.join(LOCK_FILE)).unwrap();
    held.lock().unwrap();
    std::fs::write(live.join("run-0"), b"live").unwrap();
    // A process gone: its lock file is there but nobody holds it; an older layout with
    // none; a stray file.
    let gone = base.join("1-2");
    std::fs::create_dir_all(&gone).unwrap();
    std::fs::File::create(gone.join(LOCK_FILE)).unwrap();
    std::fs::write(gone.join("run-3"), b"erased words").unwrap();
    let old = base.join("12");
    std::fs::create_dir_all(&old).unwrap();
    std::fs::write(old.join("run-0"), b"old").unwrap();
    std::fs::write(base.join("run-9"), b"stray").unwrap();

    let runs = Runs::new(base.clone(), 1, 1, 1 << 20, 0);
    assert!(live.join("run-0").exists());
    assert!(!gone.exists());
    assert!(!old.exists());
    assert!(!base.join("run-9").exists());
    // This process's own directory is made, locked, at its first file, and goes with it.
    let (_, path) = runs.create_file().unwrap();
    let own = path.parent().unwrap().to_owned();
    assert!(matches!(
        std::fs::File::open(own.join(LOCK_FILE)).unwrap().try_lock(),
        Err(std::fs::TryLockError::WouldBlock)
    ));
    drop(runs);
    assert!(!own.exists());
    assert!(live.exists());
}
