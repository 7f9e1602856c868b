//! A real PostgreSQL for the tests: one server per test binary, started on first use in
//! a temporary directory on a free port (initdb with trust authentication, listening on
//! 127.0.0.1 only), and a fresh database per caller. As root it runs as the `postgres`
//! user (PostgreSQL refuses root). A watchdog stops the server and removes its directory
//! once the test process exits.
//!
//! Binaries: `FEEDGRAPH_PG_BIN` (a directory with `initdb` and `pg_ctl`), else the newest
//! `/usr/lib/postgresql/*/bin`, else `PATH`. When none is found the caller gets `None`;
//! with `FEEDGRAPH_REQUIRE_POSTGRES=1` (set by CI) that is a failure instead.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

/// A running test server.
pub struct PgServer {
    port: u16,
    dir: PathBuf,
    /// `pg_ctl`, and the options it was started with (for [`PgServer::start_again`]).
    pg_ctl: PathBuf,
    opts: String,
}

static SERVER: OnceLock<Result<PgServer, String>> = OnceLock::new();
static NEXT_DB: AtomicU32 = AtomicU32::new(0);

fn bin_dir() -> Option<PathBuf> {
    if let Ok(d) = std::env::var("FEEDGRAPH_PG_BIN") {
        return Some(PathBuf::from(d));
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    found.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    found.pop()
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A command running `program` as the user that owns the cluster.
fn as_owner(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

fn start() -> Result<PgServer, String> {
    start_named("")
}

fn start_named(tag: &str) -> Result<PgServer, String> {
    let bin = bin_dir().ok_or("no PostgreSQL binaries (set FEEDGRAPH_PG_BIN)")?;
    let base = std::env::temp_dir().join(format!("feedgraph-pg-{}{tag}", std::process::id()));
    let data = base.join("data");
    let sock = base.join("sock");
    std::fs::create_dir_all(&sock).map_err(|e| format!("creating {}: {e}", sock.display()))?;
    if is_root() {
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&base)
            .status()
            .map_err(|e| format!("chown: {e}"))?;
        if !status.success() {
            return Err(format!("chown of {} failed", base.display()));
        }
    }
    let out = as_owner(&bin.join("initdb"))
        .args(["-D"])
        .arg(&data)
        .args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-locale",
        ])
        .output()
        .map_err(|e| format!("running initdb: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let port = free_port();
    let opts = format!(
        "-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={} \
         -c max_connections=200 -c shared_buffers=64MB",
        sock.display()
    );
    let out = as_owner(&bin.join("pg_ctl"))
        .args(["-D"])
        .arg(&data)
        .args(["-o", &opts, "-l"])
        .arg(base.join("log"))
        .args(["-w", "-t", "60", "start"])
        .output()
        .map_err(|e| format!("running pg_ctl: {e}"))?;
    if !out.status.success() {
        let log = std::fs::read_to_string(base.join("log")).unwrap_or_default();
        return Err(format!(
            "pg_ctl start failed: {}{log}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    // The watchdog: when this process is gone, stop the server and remove its files.
    let pg_ctl = bin.join("pg_ctl");
    let stop = if is_root() {
        format!(
            "runuser -u postgres -- {} -D {} -m immediate stop",
            pg_ctl.display(),
            data.display()
        )
    } else {
        format!(
            "{} -D {} -m immediate stop",
            pg_ctl.display(),
            data.display()
        )
    };
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {stop} >/dev/null 2>&1; rm -rf {base}",
        pid = std::process::id(),
        base = base.display()
    );
    Command::new("sh")
        .args(["-c", &script])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("starting the watchdog: {e}"))?;
    Ok(PgServer {
        port,
        dir: base,
        pg_ctl,
        opts,
    })
}

impl PgServer {
    /// The shared server, started on first use; `None` if PostgreSQL is not installed
    /// (and the environment does not require it).
    pub fn get() -> Option<&'static PgServer> {
        match SERVER.get_or_init(start) {
            Ok(s) => Some(s),
            Err(e) => {
                if std::env::var("FEEDGRAPH_REQUIRE_POSTGRES").as_deref() == Ok("1") {
                    panic!("PostgreSQL is required here but could not start: {e}");
                }
                eprintln!("skipping: PostgreSQL could not start: {e}");
                None
            }
        }
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Creates a new empty database and returns its URL.
    pub fn fresh_database(&self) -> String {
        let n = NEXT_DB.fetch_add(1, Ordering::Relaxed);
        let name = format!("fg_{}_{n}", std::process::id());
        let admin = format!("postgres://postgres@127.0.0.1:{}/postgres", self.port);
        let sql = format!("CREATE DATABASE {name}");
        // On a thread of its own: the caller may be inside an async runtime.
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                let (client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
                    .await
                    .expect("connect to the test server");
                let conn = tokio::spawn(conn);
                client.batch_execute(&sql).await.expect("create database");
                drop(client);
                let _ = conn.await;
            });
        })
        .join()
        .expect("creating the database");
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// The server's directory (data, socket, log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A server of the caller's own (not the shared one), for a test that stops and
    /// starts it; `None` as for [`PgServer::get`]. Removed when the test process exits.
    pub fn private(tag: &str) -> Option<PgServer> {
        match start_named(&format!("-{tag}")) {
            Ok(s) => Some(s),
            Err(e) => {
                if std::env::var("FEEDGRAPH_REQUIRE_POSTGRES").as_deref() == Ok("1") {
                    panic!("PostgreSQL is required here but could not start: {e}");
                }
                eprintln!("skipping: PostgreSQL could not start: {e}");
                None
            }
        }
    }

    /// Stops the server (fast shutdown: open connections are cut, nothing committed is
    /// lost) and waits until it is down.
    pub fn stop(&self) {
        let out = as_owner(&self.pg_ctl)
            .args(["-D"])
            .arg(self.dir.join("data"))
            .args(["-m", "fast", "-w", "-t", "60", "stop"])
            .output()
            .expect("running pg_ctl stop");
        assert!(
            out.status.success(),
            "pg_ctl stop: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts a stopped server again on the same port and waits until it accepts
    /// connections.
    pub fn start_again(&self) {
        let out = as_owner(&self.pg_ctl)
            .args(["-D"])
            .arg(self.dir.join("data"))
            .args(["-o", &self.opts, "-l"])
            .arg(self.dir.join("log"))
            .args(["-w", "-t", "60", "start"])
            .output()
            .expect("running pg_ctl start");
        assert!(
            out.status.success(),
            "pg_ctl start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
