//! A real PostgreSQL for the tests: one server per test process, started on first use in
//! a temporary directory on a free port (initdb with trust authentication, listening on
//! 127.0.0.1 only), and a fresh database per caller. As root it runs as the `postgres`
//! user (PostgreSQL refuses root). A watchdog stops the server and removes its directory
//! once the test process exits.
//!
//! Under `cargo nextest` every test is a process of its own, so there the processes of one
//! run (`NEXTEST_RUN_ID`) share one server instead: the first starts it under a file lock
//! and records its port; the others find it; the watchdog waits for nextest itself (the
//! parent process) to exit.
//!
//! Binaries: `FEEDGRAPH_PG_BIN` (a directory with `initdb` and `pg_ctl`), else the newest
//! `/usr/lib/postgresql/*/bin`, else `PATH`. When none is found the caller gets `None`;
//! with `FEEDGRAPH_REQUIRE_POSTGRES=1` (set by CI) that is a failure instead.
#![allow(dead_code)]

use std::os::unix::process::CommandExt;
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

/// Starts this process's server, or under nextest finds (or starts) the run's.
fn start() -> Result<PgServer, String> {
    match std::env::var("NEXTEST_RUN_ID") {
        Ok(run) if !run.is_empty() => shared(&run),
        _ => {
            let base = std::env::temp_dir().join(format!("feedgraph-pg-{}", std::process::id()));
            launch(&base, std::process::id())
        }
    }
}

/// The server of nextest run `run`, shared by its test processes.
fn shared(run: &str) -> Result<PgServer, String> {
    use std::os::fd::AsRawFd;
    let base = std::env::temp_dir().join(format!("feedgraph-pg-run-{run}"));
    let lock_path = std::env::temp_dir().join(format!("feedgraph-pg-run-{run}.lock"));
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| format!("opening {}: {e}", lock_path.display()))?;
    // SAFETY: flock on a descriptor we own; it is released when `lock` is closed.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(format!("locking {}", lock_path.display()));
    }
    let port_file = base.join("port");
    if let Some(port) = std::fs::read_to_string(&port_file)
        .ok()
        .and_then(|p| p.trim().parse::<u16>().ok())
        && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    {
        let pg_ctl = bin_dir().map(|b| b.join("pg_ctl")).unwrap_or_default();
        return Ok(PgServer {
            port,
            dir: base,
            pg_ctl,
            opts: String::new(),
        });
    }
    // None yet (or it died): start it afresh, watched by nextest's process.
    let _ = std::fs::remove_dir_all(&base);
    // SAFETY: getppid has no preconditions and cannot fail.
    let parent = unsafe { libc::getppid() } as u32;
    let server = launch(&base, parent)?;
    std::fs::write(&port_file, server.port.to_string())
        .map_err(|e| format!("writing {}: {e}", port_file.display()))?;
    let watch = format!(
        "while kill -0 {parent} 2>/dev/null; do sleep 1; done; rm -f {}",
        lock_path.display()
    );
    let _ = Command::new("sh")
        .args(["-c", &watch])
        .process_group(0)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    Ok(server)
}

/// Runs initdb and starts a server in `base`, stopped and removed once process `owner`
/// is gone.
fn launch(base: &Path, owner: u32) -> Result<PgServer, String> {
    let bin = bin_dir().ok_or("no PostgreSQL binaries (set FEEDGRAPH_PG_BIN)")?;
    let data = base.join("data");
    let sock = base.join("sock");
    std::fs::create_dir_all(&sock).map_err(|e| format!("creating {}: {e}", sock.display()))?;
    if is_root() {
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(base)
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
        pid = owner,
        base = base.display()
    );
    // In a process group of its own: a Ctrl-C (or a runner killing the tests' group) must
    // not take the watchdog with it and leave the server running.
    Command::new("sh")
        .args(["-c", &script])
        .process_group(0)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("starting the watchdog: {e}"))?;
    Ok(PgServer {
        port,
        dir: base.to_owned(),
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
        // The process id and a random part: a test binary may hold two copies of this
        // module (through tests/common and directly), each with its own counter.
        let name = format!(
            "fg_{}_{:08x}_{n}",
            std::process::id(),
            rand::random::<u32>()
        );
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

    /// Writes every changed page to disk (`CHECKPOINT`) and returns the directory holding
    /// the files of the database at `url` (`base/<oid>` of the cluster), for tests that
    /// scan what reached the disk.
    pub fn database_files(&self, url: &str) -> PathBuf {
        let url = url.to_owned();
        let oid = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                    .await
                    .expect("connect to the test database");
                let conn = tokio::spawn(conn);
                client
                    .batch_execute("CHECKPOINT")
                    .await
                    .expect("checkpoint");
                let row = client
                    .query_one(
                        "SELECT oid FROM pg_database WHERE datname = current_database()",
                        &[],
                    )
                    .await
                    .expect("the database's oid");
                let oid: u32 = row.get(0);
                drop(client);
                let _ = conn.await;
                oid
            })
        })
        .join()
        .expect("reading the database's oid");
        self.dir.join("data/base").join(oid.to_string())
    }

    /// The server's directory (data, socket, log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A server of the caller's own (not the shared one), for a test that stops and
    /// starts it; `None` as for [`PgServer::get`]. Removed when the test process exits.
    pub fn private(tag: &str) -> Option<PgServer> {
        let base = std::env::temp_dir().join(format!("feedgraph-pg-{}-{tag}", std::process::id()));
        match launch(&base, std::process::id()) {
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
