//! Test hooks, compiled only for unit tests and with the `testing` feature (which the
//! crate's own tests and benches turn on): make the syncs of a store, named by its data
//! directory, fail, panic or stop until released, write raw bytes under a key, and make
//! the dump reader of `feedgraph load` die at a given line of a file. Not part of the
//! default public API.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::{Condvar, Mutex};

/// A failure injected into the syncs of a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The sync returns an error (as a failed fsync would).
    Error,
    /// The sync panics.
    Panic,
    /// The sync waits, before it flushes anything, until [`release`] is called.
    Hold,
}

/// Whether any fault is registered: the syncs check only this while none is.
static ANY: AtomicBool = AtomicBool::new(false);

#[derive(Default)]
struct Registry {
    faults: HashMap<PathBuf, Fault>,
    /// Syncs waiting in [`hold`], by sled directory.
    held: HashMap<PathBuf, u64>,
}

static REGISTRY: Mutex<Option<Registry>> = Mutex::new(None);
static CHANGED: Condvar = Condvar::new();

fn sled_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("sled")
}

/// Makes every later sync of the store in `data_dir` fail, panic or wait (until
/// [`release`]).
pub fn inject(data_dir: &Path, fault: Fault) {
    let mut r = REGISTRY.lock();
    r.get_or_insert_with(Registry::default)
        .faults
        .insert(sled_dir(data_dir), fault);
    ANY.store(true, Ordering::Release);
}

/// Removes the fault of `data_dir` and lets its held syncs go on.
pub fn release(data_dir: &Path) {
    let mut r = REGISTRY.lock();
    if let Some(r) = r.as_mut() {
        r.faults.remove(&sled_dir(data_dir));
    }
    CHANGED.notify_all();
}

/// Waits until a sync of the store in `data_dir` is held by [`Fault::Hold`]; `false` if
/// none is after `limit` (a hang guard, not a timing assertion).
pub fn wait_until_held(data_dir: &Path, limit: std::time::Duration) -> bool {
    let key = sled_dir(data_dir);
    let until = std::time::Instant::now() + limit;
    let mut r = REGISTRY.lock();
    loop {
        if r.as_ref()
            .and_then(|r| r.held.get(&key))
            .is_some_and(|&n| n > 0)
        {
            return true;
        }
        if CHANGED.wait_until(&mut r, until).timed_out() {
            return false;
        }
    }
}

/// The fault registered for the store whose sled directory is `dir`.
pub(crate) fn fault_for(dir: &Path) -> Option<Fault> {
    if !ANY.load(Ordering::Acquire) {
        return None;
    }
    REGISTRY
        .lock()
        .as_ref()
        .and_then(|r| r.faults.get(dir).copied())
}

/// Called by a sync under [`Fault::Hold`]: waits until the fault is released.
pub(crate) fn hold(dir: &Path) {
    let mut r = REGISTRY.lock();
    *r.get_or_insert_with(Registry::default)
        .held
        .entry(dir.to_owned())
        .or_default() += 1;
    CHANGED.notify_all();
    while r
        .as_ref()
        .and_then(|r| r.faults.get(dir))
        .is_some_and(|f| *f == Fault::Hold)
    {
        CHANGED.wait(&mut r);
    }
    if let Some(n) = r.as_mut().and_then(|r| r.held.get_mut(dir)) {
        *n = n.saturating_sub(1);
    }
}

/// Dump files whose reader dies at a line: (file, 1-based line).
static READER_DEATHS: Mutex<Vec<(PathBuf, usize)>> = Mutex::new(Vec::new());

/// Makes the dump reader of `feedgraph load` panic when it reaches line `line` of `file`,
/// as a reader thread that dies mid-file would. Stays in force for that file.
pub fn kill_dump_reader_at(file: &Path, line: usize) {
    READER_DEATHS.lock().push((file.to_owned(), line));
    ANY.store(true, Ordering::Release);
}

/// Called by the dump reader for each line it reads: panics where
/// [`kill_dump_reader_at`] asked for it.
pub(crate) fn dump_reader_line(file: &Path, line: usize) {
    if !ANY.load(Ordering::Acquire) {
        return;
    }
    let dies = READER_DEATHS
        .lock()
        .iter()
        .any(|(f, l)| f == file && *l == line);
    if dies {
        panic!("injected: the dump reader died at line {line}");
    }
}
