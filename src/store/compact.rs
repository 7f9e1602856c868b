//! The rewrite of the sled database that makes erased bytes leave the disk: where the
//! current database lives, how a rewritten one becomes current, and cleaning up after a
//! rewrite a crash interrupted.
//!
//! sled appends every value to its log and keeps an old value's bytes in its segment
//! until it rewrites that segment, which may be never: an erased text stays readable in
//! sled's files long after the record says it is gone. A rewrite copies every live key and
//! value of every tree into a fresh database in a new directory (`sled.gen<N>`), makes it
//! durable, and makes it current by replacing the small file [`CURRENT_FILE`] (write a
//! temporary file, fsync, rename, fsync the directory): one atomic step. The old
//! directory is deleted afterwards. A directory sled has open is never renamed (sled
//! reopens some files by path). Without a `CURRENT` file the database is `sled` (data
//! directories made before online rewrites).
//!
//! The copy itself runs online, with the server serving, in `SledStore::rewrite` (see
//! `sled_store/rewrite.rs`); [`compact`] (`feedgraph compact`, server stopped) and the
//! start-up rewrite use the same code on a store nobody else writes to.
//!
//! When: an erasure that finishes on sled leaves the marker file [`DUE_FILE`]; the server
//! rewrites within `erasure.rewrite_within_secs` (and at start-up while the marker is
//! there); a rewrite removes the marker when it swaps. A crash at any point leaves
//! `CURRENT` naming a whole, durable database and the marker, so the rewrite runs again;
//! [`recover`] deletes the other directories at the next open.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{StorageConfig, StoreError};

/// The marker file (in the data directory) that says an erasure finished since the last
/// rewrite.
pub const DUE_FILE: &str = "compaction-due";

/// The file (in the data directory) naming the current database's directory.
pub const CURRENT_FILE: &str = "CURRENT";

/// The database directory of data directories without a `CURRENT` file.
const LEGACY: &str = "sled";

/// Prefix of the directories of rewritten databases (`sled.gen<N>`).
const GEN_PREFIX: &str = "sled.gen";

/// What a rewrite did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct CompactReport {
    /// Bytes of the database directory before.
    pub bytes_before: u64,
    /// Bytes after.
    pub bytes_after: u64,
    /// Keys copied.
    pub keys: u64,
    /// Keys copied again because they changed during the copy (the catch-up).
    pub caught_up: u64,
    /// How long the whole rewrite took, ms.
    pub took_ms: u64,
    /// How long writes were held off for the final catch-up, flush and swap, µs.
    pub pause_us: u64,
    /// When the new database became current (ms since epoch): every erasure finished
    /// before then has its bytes gone from the disk.
    pub finished_at: crate::model::Millis,
}

pub(crate) fn io(context: String) -> impl FnOnce(std::io::Error) -> StoreError {
    move |source| StoreError::Io { context, source }
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(io(format!("syncing directory {}", dir.display())))
}

/// Records that the database holds erased bytes until its next rewrite.
pub fn mark_due(data_dir: &Path) -> Result<(), StoreError> {
    let path = data_dir.join(DUE_FILE);
    if path.exists() {
        return Ok(());
    }
    std::fs::File::create(&path)
        .and_then(|f| f.sync_all())
        .map_err(io(format!("creating {}", path.display())))?;
    sync_dir(data_dir)
}

/// Removes the marker (a rewrite covered every erasure that finished before it).
pub(crate) fn clear_due(data_dir: &Path) -> Result<(), StoreError> {
    let due = data_dir.join(DUE_FILE);
    match std::fs::remove_file(&due) {
        Ok(()) => sync_dir(data_dir),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(format!("removing {}", due.display()))(e)),
    }
}

/// True when an erasure finished since the last rewrite.
pub fn is_due(data_dir: &Path) -> bool {
    data_dir.join(DUE_FILE).exists()
}

fn valid_name(name: &str) -> bool {
    name == LEGACY
        || name
            .strip_prefix(GEN_PREFIX)
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The directory name (inside `data_dir`) of the current database: what `CURRENT` names,
/// else `sled`.
pub fn active_name(data_dir: &Path) -> Result<String, StoreError> {
    let path = data_dir.join(CURRENT_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let name = text.trim();
            if valid_name(name) {
                Ok(name.to_owned())
            } else {
                Err(StoreError::Backend(format!(
                    "{} names no database directory: {name:?}",
                    path.display()
                )))
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(LEGACY.to_owned()),
        Err(e) => Err(io(format!("reading {}", path.display()))(e)),
    }
}

/// The current database's directory.
pub fn active_dir(data_dir: &Path) -> Result<PathBuf, StoreError> {
    Ok(data_dir.join(active_name(data_dir)?))
}

fn generation(name: &str) -> u64 {
    name.strip_prefix(GEN_PREFIX)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// A directory name for the next rewrite: one generation past every directory present.
pub(crate) fn next_name(data_dir: &Path) -> Result<String, StoreError> {
    let mut top = generation(&active_name(data_dir)?);
    for entry in
        std::fs::read_dir(data_dir).map_err(io(format!("reading {}", data_dir.display())))?
    {
        let entry = entry.map_err(io(format!("reading {}", data_dir.display())))?;
        top = top.max(generation(&entry.file_name().to_string_lossy()));
    }
    Ok(format!("{GEN_PREFIX}{}", top.saturating_add(1)))
}

/// Makes `name` the current database: `CURRENT.tmp` written and fsynced, renamed over
/// `CURRENT`, the directory fsynced. Atomic: a crash leaves the old name or the new one.
pub(crate) fn point_to(data_dir: &Path, name: &str) -> Result<(), StoreError> {
    use std::io::Write;
    let tmp = data_dir.join(format!("{CURRENT_FILE}.tmp"));
    let current = data_dir.join(CURRENT_FILE);
    std::fs::File::create(&tmp)
        .and_then(|mut f| {
            f.write_all(format!("{name}\n").as_bytes())?;
            f.sync_all()
        })
        .map_err(io(format!("writing {}", tmp.display())))?;
    std::fs::rename(&tmp, &current).map_err(io(format!("replacing {}", current.display())))?;
    sync_dir(data_dir)
}

/// Cleans up after a rewrite a crash interrupted, before the store opens: every database
/// directory other than the current one is an unfinished copy or a replaced database,
/// and is deleted (with a stray `CURRENT.tmp`). Data directories of the offline rewrite
/// of earlier versions are handled too: with no `sled` but a `sled.old`, that swap
/// stopped half-way and the old database goes back (the marker stays, so the rewrite
/// runs again).
pub fn recover(data_dir: &Path) -> Result<(), StoreError> {
    let legacy = data_dir.join(LEGACY);
    let old = data_dir.join("sled.old");
    if !data_dir.join(CURRENT_FILE).exists() && old.exists() && !legacy.exists() {
        std::fs::rename(&old, &legacy).map_err(io(format!("restoring {}", legacy.display())))?;
        sync_dir(data_dir)?;
    }
    let active = active_name(data_dir)?;
    if !data_dir.join(&active).exists() && data_dir.join(CURRENT_FILE).exists() {
        return Err(StoreError::Backend(format!(
            "{} names {active}, which is missing",
            data_dir.join(CURRENT_FILE).display()
        )));
    }
    let mut removed = false;
    let entries =
        std::fs::read_dir(data_dir).map_err(io(format!("reading {}", data_dir.display())))?;
    for entry in entries {
        let entry = entry.map_err(io(format!("reading {}", data_dir.display())))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        let stale_db = (name == LEGACY || name.starts_with("sled.")) && name != active;
        if stale_db && path.is_dir() {
            tracing::info!(dir = %path.display(), "removing a database directory a rewrite left");
            std::fs::remove_dir_all(&path).map_err(io(format!("removing {}", path.display())))?;
            removed = true;
        } else if name == format!("{CURRENT_FILE}.tmp") {
            std::fs::remove_file(&path).map_err(io(format!("removing {}", path.display())))?;
            removed = true;
        }
    }
    if removed {
        sync_dir(data_dir)?;
    }
    Ok(())
}

/// Waits until no sled instance holds the lock on `dir/db` (sled lets go from its I/O
/// threads a moment after the database is dropped), so its files are final; false if it
/// is still held after `limit`.
pub(crate) fn wait_released(dir: &Path, limit: Duration) -> bool {
    let path = dir.join("db");
    let deadline = Instant::now() + limit;
    loop {
        let file = match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
        {
            Ok(f) => f,
            Err(_) => return true,
        };
        match file.try_lock() {
            Ok(()) => {
                let _ = file.unlock();
                return true;
            }
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Err(_) => return false,
        }
    }
}

/// Fsyncs every file and directory under `dir`.
pub(crate) fn sync_tree(dir: &Path) -> Result<(), StoreError> {
    for entry in std::fs::read_dir(dir).map_err(io(format!("reading {}", dir.display())))? {
        let path = entry
            .map_err(io(format!("reading {}", dir.display())))?
            .path();
        if path.is_dir() {
            sync_tree(&path)?;
        } else {
            std::fs::File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(io(format!("syncing {}", path.display())))?;
        }
    }
    sync_dir(dir)
}

/// Bytes of every file under `dir`.
pub(crate) fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| {
                    let p = e.path();
                    if p.is_dir() {
                        dir_size(&p)
                    } else {
                        e.metadata().map(|m| m.len()).unwrap_or(0)
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

/// Opens the sled database in `dir`. sled releases its file lock from its I/O threads,
/// shortly after the previous owner in this process (or a process that just exited) let
/// go: a locked directory is retried for a moment before it counts as held by someone
/// else.
pub(crate) fn open_db(
    dir: &Path,
    data_dir: &Path,
    cache_bytes: u64,
) -> Result<sled::Db, StoreError> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .open()
        {
            Ok(db) => return Ok(db),
            // sled reports a held lock as an `Other` error naming it, with the
            // `WouldBlock` cause only in the text.
            Err(sled::Error::Io(e))
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.to_string().contains("could not acquire lock") =>
            {
                if Instant::now() >= deadline {
                    return Err(StoreError::Locked(data_dir.display().to_string()));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Rewrites the sled database of `data_dir` with only its live keys and values (see the
/// module comment), then removes the marker. The server must not be running (sled allows
/// one process per directory).
pub fn compact(data_dir: &Path, config: &StorageConfig) -> Result<CompactReport, StoreError> {
    if !active_dir(data_dir)?.exists() {
        return Err(StoreError::Backend(format!(
            "no sled database in {}",
            data_dir.display()
        )));
    }
    let store = super::SledStore::open(data_dir, config)?;
    let report = store.rewrite()?;
    // Opening the store made any graph checkpoint stale (the store vouches for it once),
    // and it may hold strings erased since it was written: it goes with the old bytes.
    match std::fs::remove_file(data_dir.join(GRAPH_CHECKPOINT_FILE)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(StoreError::Backend(format!(
                "removing the stale graph checkpoint: {source}"
            )));
        }
    }
    Ok(report)
}

/// The graph checkpoint's file name in the data directory (written by
/// `graph::checkpoint`; the store only removes it).
pub const GRAPH_CHECKPOINT_FILE: &str = "graph.ckpt";

#[cfg(test)]
mod tests {
    use super::*;

    fn db_with(dir: &Path, key: &[u8]) {
        let db = sled::open(dir).unwrap();
        db.insert(key, b"v".as_slice()).unwrap();
        db.flush().unwrap();
    }

    #[test]
    fn leftovers_of_a_rewrite_are_removed_and_the_current_database_kept() {
        let data = tempfile::tempdir().unwrap();
        let d = data.path();
        // An old-version swap cut short: only `sled.old` and a half copy.
        db_with(&d.join("sled.old"), b"kept");
        assert!(wait_released(&d.join("sled.old"), Duration::from_secs(5)));
        std::fs::create_dir_all(d.join("sled.compact")).unwrap();
        recover(d).unwrap();
        assert!(!d.join("sled.old").exists() && !d.join("sled.compact").exists());
        assert_eq!(active_name(d).unwrap(), "sled");
        // A new-style copy that never became current is removed; CURRENT decides.
        std::fs::create_dir_all(d.join("sled.gen1")).unwrap();
        recover(d).unwrap();
        assert!(!d.join("sled.gen1").exists() && d.join("sled").exists());
        db_with(&d.join("sled.gen2"), b"new");
        assert!(wait_released(&d.join("sled.gen2"), Duration::from_secs(5)));
        assert_eq!(next_name(d).unwrap(), "sled.gen3");
        point_to(d, "sled.gen2").unwrap();
        std::fs::write(d.join("CURRENT.tmp"), b"sled.gen9").unwrap();
        recover(d).unwrap();
        assert!(!d.join("sled").exists() && !d.join("CURRENT.tmp").exists());
        assert_eq!(active_dir(d).unwrap(), d.join("sled.gen2"));
        // A CURRENT naming something else is refused, not guessed around.
        std::fs::write(d.join(CURRENT_FILE), b"../etc").unwrap();
        assert!(active_name(d).is_err());
    }

    #[test]
    fn an_offline_rewrite_keeps_the_data_and_clears_the_marker() {
        let data = tempfile::tempdir().unwrap();
        let config = StorageConfig::default();
        {
            let store = super::super::SledStore::open(data.path(), &config).unwrap();
            drop(store);
        }
        mark_due(data.path()).unwrap();
        let r = compact(data.path(), &config).unwrap();
        assert!(r.keys >= 1);
        assert!(!is_due(data.path()));
        assert_eq!(active_name(data.path()).unwrap(), "sled.gen1");
        assert!(!data.path().join("sled").exists());
        let r = compact(data.path(), &config).unwrap();
        assert!(r.keys >= 1);
        assert_eq!(active_name(data.path()).unwrap(), "sled.gen2");
        assert!(!data.path().join("sled.gen1").exists());
    }
}
