//! Making writes durable: sled flush plus `fdatasync` of its data file, shared by every
//! writer waiting at the same time (group commit).
//!
//! A writer that has put its records into sled calls [`Syncer::wait_durable`]. The first
//! writer to arrive while no sync runs becomes the leader: it starts sync number `n`, which
//! covers every write completed before it began, drops the lock, flushes and fsyncs, then
//! publishes `durable = n` and wakes the followers. Writers that arrive during a sync wait
//! for the next one, which one of them leads. No lock is held across the flush or fsync.
//!
//! After a failed fsync the store refuses further writes: the kernel may have dropped the
//! dirty pages, so retrying could report success for data that is gone.

use std::fs::File;
use std::path::Path;

use parking_lot::{Condvar, Mutex};
use serde::{Deserialize, Serialize};

/// What "durable" means when a write is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// sled flush plus `fdatasync` of the data file: survives a killed process and a power
    /// loss. The default.
    #[default]
    Fsync,
    /// sled flush only (`pwrite` + `sync_file_range`): survives a killed process, not a
    /// power loss or kernel crash.
    Flush,
}

/// Why a sync failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SyncError {
    /// The flush or fsync failed now.
    #[error("making the write durable failed: {0}")]
    Failed(String),
    /// An earlier sync failed; the store no longer accepts writes.
    #[error("the store is read-only after an earlier sync failure: {0}")]
    Poisoned(String),
}

#[derive(Debug, Default)]
struct State {
    /// Number of the most recently started sync.
    started: u64,
    /// Number of the most recent sync that completed successfully.
    durable: u64,
    /// A sync is in progress.
    running: bool,
    /// Set forever after the first failure.
    poisoned: Option<String>,
}

/// Coordinates flush + fsync for all writers of one store.
#[derive(Debug)]
pub struct Syncer {
    db: sled::Db,
    data_file: File,
    mode: Durability,
    group: bool,
    state: Mutex<State>,
    wake: Condvar,
    solo: Mutex<()>,
}

impl Syncer {
    /// A syncer for `db`, whose data file is at `data_file`.
    pub fn new(
        db: sled::Db,
        data_file: &Path,
        mode: Durability,
        group: bool,
    ) -> std::io::Result<Self> {
        Ok(Syncer {
            db,
            data_file: File::open(data_file)?,
            mode,
            group,
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            solo: Mutex::new(()),
        })
    }

    /// Whether concurrent writers share syncs.
    pub fn group_commit(&self) -> bool {
        self.group
    }

    fn sync_once(&self) -> Result<(), String> {
        self.db.flush().map_err(|e| format!("sled flush: {e}"))?;
        if self.mode == Durability::Fsync {
            self.data_file
                .sync_data()
                .map_err(|e| format!("fdatasync of the sled data file: {e}"))?;
        }
        Ok(())
    }

    /// Returns once every write this thread completed before the call is durable.
    pub fn wait_durable(&self) -> Result<(), SyncError> {
        if !self.group {
            return self.wait_solo();
        }
        let mut st = self.state.lock();
        if let Some(p) = &st.poisoned {
            return Err(SyncError::Poisoned(p.clone()));
        }
        // A sync that starts after this point covers our write.
        let need = st.started + 1;
        loop {
            if st.durable >= need {
                return Ok(());
            }
            if let Some(p) = &st.poisoned {
                return Err(SyncError::Poisoned(p.clone()));
            }
            if !st.running {
                st.running = true;
                st.started += 1;
                let number = st.started;
                drop(st);
                let result = self.sync_once();
                st = self.state.lock();
                st.running = false;
                match result {
                    Ok(()) => st.durable = number,
                    Err(e) => {
                        st.poisoned = Some(e.clone());
                        self.wake.notify_all();
                        return Err(SyncError::Failed(e));
                    }
                }
                self.wake.notify_all();
            } else {
                self.wake.wait(&mut st);
            }
        }
    }

    /// Without group commit each writer pays its own flush + fsync (used to measure the
    /// difference; serialised so the figures are the honest one-sync-per-write cost).
    fn wait_solo(&self) -> Result<(), SyncError> {
        let _one = self.solo.lock();
        if let Some(p) = &self.state.lock().poisoned {
            return Err(SyncError::Poisoned(p.clone()));
        }
        self.sync_once().map_err(|e| {
            self.state.lock().poisoned = Some(e.clone());
            SyncError::Failed(e)
        })
    }
}
