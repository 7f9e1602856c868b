//! The offline rewrite of the sled database that makes erased bytes leave the disk.
//!
//! sled appends every value to its log and keeps an old value's bytes in its segment
//! until it rewrites that segment, which may be never: an erased text stays readable in
//! `<data_dir>/sled/db` long after the record says it is gone. [`compact`] copies every
//! live key and value of every tree into a fresh database (`sled.compact`), fsyncs it,
//! swaps it in by rename (`sled` -> `sled.old`, `sled.compact` -> `sled`), fsyncs the
//! data directory and deletes the old database. Only live values are copied, so nothing
//! an erasure removed survives the rewrite.
//!
//! When: an erasure that finishes on sled leaves the marker file [`DUE_FILE`]; the server
//! rewrites the database at its next start (`erasure.compact_on_start`, default on), and
//! `feedgraph compact` does it on demand with the server stopped (sled allows one process
//! per directory). A crash at any point leaves either the old database or the new one
//! (`recover` sorts out the directories at the next open) and the marker, so the rewrite
//! runs again.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{StorageConfig, StoreError};

/// The marker file (in the data directory) that says an erasure finished since the last
/// rewrite.
pub const DUE_FILE: &str = "compaction-due";

/// What a rewrite did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactReport {
    /// Bytes of the database directory before.
    pub bytes_before: u64,
    /// Bytes after.
    pub bytes_after: u64,
    /// Keys copied.
    pub keys: u64,
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> StoreError {
    move |source| StoreError::Io { context, source }
}

fn paths(data_dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    (
        data_dir.join("sled"),
        data_dir.join("sled.compact"),
        data_dir.join("sled.old"),
    )
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
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

/// True when an erasure finished since the last rewrite.
pub fn is_due(data_dir: &Path) -> bool {
    data_dir.join(DUE_FILE).exists()
}

/// Finishes or takes back a rewrite a crash interrupted: with no `sled` but a `sled.old`,
/// the swap stopped half-way and the old database goes back (the marker stays, so the
/// rewrite runs again); a `sled.old` beside `sled` is the replaced database, deleted; a
/// `sled.compact` is an unfinished copy, deleted.
pub fn recover(data_dir: &Path) -> Result<(), StoreError> {
    let (live, fresh, old) = paths(data_dir);
    if old.exists() {
        if live.exists() {
            std::fs::remove_dir_all(&old).map_err(io(format!("removing {}", old.display())))?;
        } else {
            std::fs::rename(&old, &live).map_err(io(format!("restoring {}", live.display())))?;
        }
        sync_dir(data_dir)?;
    }
    if fresh.exists() {
        std::fs::remove_dir_all(&fresh).map_err(io(format!("removing {}", fresh.display())))?;
        sync_dir(data_dir)?;
    }
    Ok(())
}

/// Waits until no sled instance holds the lock on `dir/db` (sled lets go from its I/O
/// threads a moment after the database is dropped), so its files are final.
fn wait_released(dir: &Path) -> Result<(), StoreError> {
    let path = dir.join("db");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io(format!("opening {}", path.display())))?;
        match file.try_lock() {
            Ok(()) => {
                let _ = file.unlock();
                return Ok(());
            }
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(_) => {
                return Err(StoreError::Locked(dir.display().to_string()));
            }
        }
    }
}

/// Fsyncs every file and directory under `dir`.
fn sync_tree(dir: &Path) -> Result<(), StoreError> {
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

fn dir_size(dir: &Path) -> u64 {
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

fn open(dir: &Path, data_dir: &Path, config: &StorageConfig) -> Result<sled::Db, StoreError> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match sled::Config::new()
            .path(dir)
            .cache_capacity(config.cache_mb.saturating_mul(1024 * 1024))
            .open()
        {
            Ok(db) => return Ok(db),
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
/// module comment), then removes the marker. The server must not be running.
pub fn compact(data_dir: &Path, config: &StorageConfig) -> Result<CompactReport, StoreError> {
    recover(data_dir)?;
    let (live, fresh, old) = paths(data_dir);
    if !live.exists() {
        return Err(StoreError::Backend(format!(
            "no sled database in {}",
            data_dir.display()
        )));
    }
    let bytes_before = dir_size(&live);
    let copied = copy_live(data_dir, &live, &fresh, config);
    let keys = match copied {
        Ok(keys) => keys,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&fresh);
            return Err(e);
        }
    };
    wait_released(&live)?;
    wait_released(&fresh)?;
    sync_tree(&fresh)?;
    std::fs::rename(&live, &old).map_err(io(format!("renaming {}", live.display())))?;
    std::fs::rename(&fresh, &live).map_err(io(format!("renaming {}", fresh.display())))?;
    sync_dir(data_dir)?;
    std::fs::remove_dir_all(&old).map_err(io(format!("removing {}", old.display())))?;
    let due = data_dir.join(DUE_FILE);
    if due.exists() {
        std::fs::remove_file(&due).map_err(io(format!("removing {}", due.display())))?;
    }
    sync_dir(data_dir)?;
    Ok(CompactReport {
        bytes_before,
        bytes_after: dir_size(&live),
        keys,
    })
}

/// Copies every tree of `live` into a new database at `fresh`; returns the keys copied.
fn copy_live(
    data_dir: &Path,
    live: &Path,
    fresh: &Path,
    config: &StorageConfig,
) -> Result<u64, StoreError> {
    let src = open(live, data_dir, config)?;
    let dst = open(fresh, data_dir, config)?;
    let mut keys = 0u64;
    for name in src.tree_names() {
        let from = src.open_tree(&name)?;
        let to = dst.open_tree(&name)?;
        for kv in from.iter() {
            let (k, v) = kv?;
            to.insert(k, v)?;
            keys += 1;
        }
    }
    dst.flush()?;
    src.flush()?;
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db_with(dir: &Path, key: &[u8]) {
        let db = sled::open(dir).unwrap();
        db.insert(key, b"v".as_slice()).unwrap();
        db.flush().unwrap();
    }

    #[test]
    fn a_swap_cut_short_is_taken_back_or_finished() {
        let data = tempfile::tempdir().unwrap();
        let (live, fresh, old) = paths(data.path());
        // Crash between the two renames: only the old database and the copy exist.
        db_with(&live, b"kept");
        wait_released(&live).unwrap();
        std::fs::rename(&live, &old).unwrap();
        std::fs::create_dir_all(&fresh).unwrap();
        std::fs::write(fresh.join("db"), b"half a copy").unwrap();
        recover(data.path()).unwrap();
        assert!(!old.exists() && !fresh.exists());
        let db = sled::open(&live).unwrap();
        assert!(
            db.get(b"kept").unwrap().is_some(),
            "the old database is back"
        );
        drop(db);
        wait_released(&live).unwrap();
        // Crash after the swap, before the old one was deleted: it is deleted now.
        std::fs::create_dir_all(old.join("x")).unwrap();
        recover(data.path()).unwrap();
        assert!(!old.exists() && live.exists());
        // And a full rewrite keeps the data and clears the marker.
        mark_due(data.path()).unwrap();
        assert!(is_due(data.path()));
        let r = compact(data.path(), &StorageConfig::default()).unwrap();
        assert!(r.keys >= 1);
        assert!(!is_due(data.path()));
        let db = sled::open(&live).unwrap();
        assert!(db.get(b"kept").unwrap().is_some());
    }
}
