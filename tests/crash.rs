//! Crash safety: a child process submits in a loop and prints each id once `submit`
//! returned; we SIGKILL it at random moments. After every restart each printed id must be
//! present with its history, and the graph must match the store.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rand::Rng;

const CYCLES: usize = 20;

#[test]
fn sigkill_loses_no_acknowledged_submit() {
    let dir = tempfile::tempdir().unwrap();
    let mut acknowledged: Vec<String> = Vec::new();
    let mut rng = rand::rng();
    for cycle in 0..CYCLES {
        let mut child = Command::new(env!("CARGO_BIN_EXE_feedgraph"))
            .args(["--data-dir"])
            .arg(dir.path())
            .args(["torture", "--org", "crash", "--threads", "4"])
            .envs(common::backend_env(dir.path()))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Wait until the child is writing, then let it run a random while and kill it.
        let first = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("child started writing");
        acknowledged.push(first);
        let until = Instant::now() + Duration::from_millis(rng.random_range(5..250));
        while Instant::now() < until {
            if let Ok(id) = rx.recv_timeout(Duration::from_millis(1)) {
                acknowledged.push(id);
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        // Only complete lines count: each was printed after submit returned.
        acknowledged.extend(rx.try_iter());

        let s = common::open(dir.path());
        for id in &acknowledged {
            let fb = s
                .get("crash", id)
                .unwrap_or_else(|e| panic!("cycle {cycle}: acknowledged {id} lost: {e}"));
            let history = s.history("crash", id).unwrap();
            assert_eq!(
                history.len() as u64,
                fb.version,
                "cycle {cycle}: history of {id}"
            );
            assert_eq!(history[0].version, 1);
        }
        assert_eq!(
            s.verify().unwrap(),
            None,
            "cycle {cycle}: graph differs from store"
        );
        // The rebuilt index holds exactly the stored items, each at its stored version.
        let g = s.graph().org("crash").expect("org graph");
        let mut stored = Vec::new();
        s.store()
            .for_each_record_of("crash", &mut |r| {
                stored.push(r.feedback);
                Ok(())
            })
            .unwrap();
        assert_eq!(
            g.feedback().len(),
            stored.len(),
            "cycle {cycle}: node count"
        );
        for f in &stored {
            let row = g.feedback_row(&f.id).expect("stored item indexed");
            assert_eq!(g.feedback().version(row).unwrap_or(0), f.version);
        }
    }
    assert!(
        acknowledged.len() >= CYCLES,
        "the child wrote too little to test anything"
    );
    eprintln!(
        "{} acknowledged ids survived {CYCLES} SIGKILLs",
        acknowledged.len()
    );
}
