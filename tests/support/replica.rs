//! One `feedgraph serve` process over a PostgreSQL database, as the multi-replica tests
//! run them: a data directory of its own, an address read from its first line of output,
//! ready once `/readyz` answers 200, SIGKILLed on drop. Settings beyond the common ones
//! (placement, webhooks) come as environment pairs.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a replica may take to print its address and to get ready.
const START_DEADLINE: Duration = Duration::from_secs(90);

/// One running replica.
pub struct Replica {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    dir: PathBuf,
    url: String,
    secret: String,
    env: Vec<(String, String)>,
}

impl Replica {
    /// Starts a replica over the database at `url` with its own data directory `dir`,
    /// signing tokens with `secret`, with the extra settings `env`, and waits until it is
    /// ready.
    pub async fn start(url: &str, dir: &Path, secret: &str, env: &[(&str, &str)]) -> Replica {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Self::spawn(url.to_owned(), dir.to_owned(), secret.to_owned(), env).await
    }

    async fn spawn(
        url: String,
        dir: PathBuf,
        secret: String,
        env: Vec<(String, String)>,
    ) -> Replica {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_feedgraph"));
        cmd.arg("--data-dir")
            .arg(&dir)
            .args(["serve", "--bind", "127.0.0.1:0"])
            .env("FEEDGRAPH__STORAGE__BACKEND", "postgres")
            .env("FEEDGRAPH__STORAGE__POSTGRES__URL", &url)
            .env("FEEDGRAPH__STORAGE__POSTGRES__FOLLOW_POLL_MS", "200")
            .env("FEEDGRAPH__STORAGE__POSTGRES__CONNECT_TIMEOUT_MS", "2000")
            .env("FEEDGRAPH__AUTH__SECRET", &secret)
            .env("FEEDGRAPH__RATE_LIMIT__ENABLED", "false")
            .env("RUST_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in &env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start feedgraph serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.strip_prefix("feedgraph listening on ") {
                    let _ = tx.send(addr.trim().to_owned());
                }
            }
        });
        let base = tokio::task::spawn_blocking(move || rx.recv_timeout(START_DEADLINE))
            .await
            .unwrap()
            .expect("the replica printed its address");
        let r = Replica {
            child,
            base,
            dir,
            url,
            secret,
            env,
        };
        let client = reqwest::Client::new();
        let until = Instant::now() + START_DEADLINE;
        loop {
            let ok = client
                .get(format!("{}/readyz", r.base))
                .send()
                .await
                .is_ok_and(|x| x.status() == 200);
            if ok {
                return r;
            }
            assert!(Instant::now() < until, "replica {} never got ready", r.base);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILLs the process.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the process gracefully (SIGTERM) and waits until it has exited.
    pub fn terminate(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let _ = self.child.wait();
    }

    /// Starts the same replica again: same database, directory and settings.
    pub async fn restart(&mut self) {
        self.kill();
        let (url, dir, secret, env) = (
            self.url.clone(),
            self.dir.clone(),
            self.secret.clone(),
            self.env.clone(),
        );
        *self = Replica::spawn(url, dir, secret, env).await;
    }

    /// The URL of an API path (`/feedback`, ...).
    pub fn api(&self, path: &str) -> String {
        format!("{}/api/v1/llm{path}", self.base)
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}
