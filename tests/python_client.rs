//! The Python client (`clients/python`): `mypy --strict` over the package and its tests,
//! then its pytest suite against real `feedgraph serve` processes (the binary cargo built
//! for this test, passed as `FEEDGRAPH_BIN`).
//!
//! Python and the test tools come from a virtual environment: `FEEDGRAPH_PYTHON_VENV` names
//! it (default `target/python-client-venv`). When it is missing the test creates it and
//! installs the pinned tools from PyPI (`.ci/run` does the same beforehand). The package is
//! tested from its source tree (`PYTHONPATH=clients/python/src`), so the run always checks
//! the code as it is. `.ci/run` sets `FEEDGRAPH_REQUIRE_PYTHON=1`, so in CI a missing or
//! broken environment fails the test; elsewhere it skips with a loud notice.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The pinned tools (the same as `.ci/run` installs).
const TOOLS: &[&str] = &[
    "httpx==0.28.1",
    "pytest==9.0.3",
    "mypy==2.4.0",
    "starlette==1.7.0",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn required() -> bool {
    std::env::var_os("FEEDGRAPH_REQUIRE_PYTHON").is_some()
}

/// Fails (when required) or skips with a notice; `None` means skip.
fn unavailable(why: &str) -> Option<PathBuf> {
    assert!(
        !required(),
        "{why}; FEEDGRAPH_REQUIRE_PYTHON is set, so this is a failure"
    );
    eprintln!("SKIPPED: the Python client tests did not run: {why}");
    None
}

fn run(cmd: &mut Command) -> std::io::Result<Output> {
    cmd.output()
}

fn has_tools(python: &Path) -> bool {
    run(Command::new(python).args(["-c", "import httpx, pytest, mypy, starlette"]))
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// The venv's python with the tools installed, creating the venv if needed.
fn python() -> Option<PathBuf> {
    let venv = std::env::var_os("FEEDGRAPH_PYTHON_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/python-client-venv"));
    let python = venv.join("bin/python");
    if python.is_file() && has_tools(&python) {
        return Some(python);
    }
    eprintln!(
        "creating the Python test environment in {} ({})",
        venv.display(),
        TOOLS.join(" ")
    );
    let created = run(Command::new("python3").args(["-m", "venv"]).arg(&venv));
    if !matches!(&created, Ok(o) if o.status.success()) {
        return unavailable(&format!(
            "`python3 -m venv {}` failed: {created:?}",
            venv.display()
        ));
    }
    let installed = run(Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(TOOLS));
    match installed {
        Ok(o) if o.status.success() && has_tools(&python) => Some(python),
        other => unavailable(&format!("installing {} failed: {other:?}", TOOLS.join(" "))),
    }
}

fn show(o: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn the_python_client_type_checks_and_passes_its_tests_against_the_server() {
    common::sled_only!(
        "it tests the Python client; its pytest suite starts `feedgraph serve` processes of its own, on sled"
    );
    let Some(python) = python() else { return };
    let client = root().join("clients/python");
    let src = client.join("src");

    let mypy = run(Command::new(&python)
        .args(["-m", "mypy", "--strict", "src", "tests"])
        .env("MYPYPATH", &src)
        .current_dir(&client))
    .expect("mypy starts");
    assert!(
        mypy.status.success(),
        "mypy --strict found problems:\n{}",
        show(&mypy)
    );

    let started = std::time::Instant::now();
    let pytest = run(Command::new(&python)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"])
        .env("PYTHONPATH", &src)
        .env("FEEDGRAPH_BIN", env!("CARGO_BIN_EXE_feedgraph"))
        .env_remove("FEEDGRAPH_URL")
        .env_remove("FEEDGRAPH_TOKEN")
        .current_dir(&client))
    .expect("pytest starts");
    let text = show(&pytest);
    eprintln!(
        "pytest ran in {:.1} s:\n{}",
        started.elapsed().as_secs_f64(),
        text.lines()
            .rev()
            .take(15)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(pytest.status.success(), "pytest failed:\n{text}");
    // It must really have run the suite, not collected nothing.
    assert!(
        text.lines()
            .any(|l| l.contains(" passed") && !l.contains("failed")),
        "pytest reported no passed tests:\n{text}"
    );
}
