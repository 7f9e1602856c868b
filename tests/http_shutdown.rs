//! Graceful shutdown: SIGTERM during a burst of submits loses no acknowledged write, and the
//! process exits cleanly.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use feedgraph::config::Config;
use feedgraph::http::auth::{Role, mint};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_burst_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr) = common::spawn_serve(dir.path(), &common::backend_env(dir.path()));

    let config = Config {
        data_dir: dir.path().to_owned(),
        ..Config::default()
    };
    let client = reqwest::Client::new();
    // Wait until ready.
    for _ in 0..200 {
        if let Ok(r) = client.get(format!("{addr}/readyz")).send().await
            && r.status().is_success()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut tasks = Vec::new();
    for w in 0..16 {
        // One user per writer keeps each under the per-user rate limit.
        let token = mint(&config, "acme", &format!("writer{w}"), &[Role::User], 600).unwrap();
        let (client, addr, acked) = (client.clone(), addr.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..90 {
                let body = serde_json::json!({
                    "type": "positive",
                    "question": format!("Question {i} from writer {w}?"),
                    "answer": "An answer that is long enough to be approved."
                });
                let r = client
                    .post(format!("{addr}/api/v1/llm/feedback"))
                    .bearer_auth(&token)
                    .json(&body)
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().as_u16() == 201 => {
                        let v: serde_json::Value = r.json().await.unwrap();
                        acked
                            .lock()
                            .unwrap()
                            .push(v["id"].as_str().unwrap().to_owned());
                    }
                    // Refused or cut off once shutdown began: not acknowledged.
                    _ => break,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    for t in tasks {
        t.await.unwrap();
    }
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "server exited with {status}");

    let acked = acked.lock().unwrap().clone();
    assert!(
        !acked.is_empty(),
        "no write was acknowledged before SIGTERM"
    );
    let service = common::open(dir.path());
    for id in &acked {
        assert!(service.get("acme", id).is_ok(), "acknowledged {id} lost");
    }
    eprintln!("{} acknowledged writes survived SIGTERM", acked.len());
}

#[test]
fn a_stalled_client_does_not_hold_shutdown_past_the_grace_period() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_feedgraph"))
        .arg("--data-dir")
        .arg(dir.path())
        .args(["serve", "--bind", "127.0.0.1:0"])
        .envs(common::backend_env(dir.path()))
        .env("FEEDGRAPH__SERVER__SHUTDOWN_GRACE_SECS", "1")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let addr = first
        .strip_prefix("feedgraph listening on http://")
        .unwrap()
        .to_owned();
    std::thread::spawn(move || for _ in lines {});
    let config = Config {
        data_dir: dir.path().to_owned(),
        ..Config::default()
    };
    let token = mint(&config, "acme", "slow", &[Role::User], 600).unwrap();
    // Headers and half a body, then silence.
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        stream,
        "POST /api/v1/llm/feedback HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"type\":"
    )
    .unwrap();
    stream.flush().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let started = std::time::Instant::now();
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "shutdown waited {:?} for a stalled client",
        started.elapsed()
    );
    drop(stream);
}
