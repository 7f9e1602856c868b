//! Making writes durable: sled flush plus `fdatasync` of its data file, shared by every
//! writer waiting at the same time (group commit).
//!
//! A writer that has put its records into sled takes a ticket ([`Syncer::ticket`]): the
//! number of the next sync to start, which will cover its write. A worker thread runs the
//! syncs: whenever a ticket asks for a sync that has not started, it starts sync `n` (which
//! covers every write completed before it began), drops the lock, flushes and fsyncs, then
//! publishes `durable = n`. Writers that arrive during a sync ask for the next one, so one
//! sync serves all of them. A writer waits for its ticket either blocking
//! ([`Syncer::wait`]) or as a future ([`Syncer::wait_async`]), so an HTTP request waits
//! for its fsync without holding a thread. No lock is held across the flush or fsync.
//!
//! After a failed fsync the store refuses further writes: the kernel may have dropped the
//! dirty pages, so retrying could report success for data that is gone.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

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
    /// The highest sync number a writer is waiting for.
    requested: u64,
    /// Set forever after the first failure.
    poisoned: Option<String>,
    /// The syncer is being dropped: the worker finishes what was requested and exits.
    stop: bool,
}

/// What async waiters watch: the durable sync number, and the failure once there is one.
#[derive(Debug, Clone, Default)]
struct Published {
    durable: u64,
    poisoned: Option<String>,
}

/// The part of the syncer its worker thread shares.
#[derive(Debug)]
struct Shared {
    db: sled::Db,
    data_file: File,
    mode: Durability,
    state: Mutex<State>,
    /// Wakes the worker when a sync is requested (or on stop).
    work: Condvar,
    /// Wakes blocking waiters when a sync completed or failed.
    done: Condvar,
    /// Wakes async waiters likewise.
    published: tokio::sync::watch::Sender<Published>,
}

impl Shared {
    fn sync_once(&self) -> Result<(), String> {
        self.db.flush().map_err(|e| format!("sled flush: {e}"))?;
        if self.mode == Durability::Fsync {
            self.data_file
                .sync_data()
                .map_err(|e| format!("fdatasync of the sled data file: {e}"))?;
        }
        Ok(())
    }

    /// The worker: runs one sync whenever one is requested that has not started yet.
    fn run(&self) {
        let mut st = self.state.lock();
        loop {
            if st.poisoned.is_some() || (st.stop && st.requested <= st.started) {
                return;
            }
            if st.requested <= st.started {
                self.work.wait(&mut st);
                continue;
            }
            // Every write completed before this point is covered by this sync.
            st.started += 1;
            let number = st.started;
            drop(st);
            let result = self.sync_once();
            st = self.state.lock();
            match result {
                Ok(()) => st.durable = number,
                Err(e) => st.poisoned = Some(e),
            }
            self.done.notify_all();
            self.published.send_replace(Published {
                durable: st.durable,
                poisoned: st.poisoned.clone(),
            });
        }
    }
}

/// Coordinates flush + fsync for all writers of one store.
#[derive(Debug)]
pub struct Syncer {
    shared: Arc<Shared>,
    worker: Option<std::thread::JoinHandle<()>>,
    group: bool,
    solo: Mutex<()>,
}

impl Syncer {
    /// A syncer for `db`, whose data file is at `data_file`. With group commit it starts
    /// its worker thread, which stops when the syncer is dropped.
    pub fn new(
        db: sled::Db,
        data_file: &Path,
        mode: Durability,
        group: bool,
    ) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            db,
            data_file: File::open(data_file)?,
            mode,
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            done: Condvar::new(),
            published: tokio::sync::watch::Sender::new(Published::default()),
        });
        let worker = if group {
            let s = shared.clone();
            Some(
                std::thread::Builder::new()
                    .name("feedgraph-sync".into())
                    .spawn(move || s.run())?,
            )
        } else {
            None
        };
        Ok(Syncer {
            shared,
            worker,
            group,
            solo: Mutex::new(()),
        })
    }

    /// Whether concurrent writers share syncs.
    pub fn group_commit(&self) -> bool {
        self.group
    }

    /// Asks for a sync that covers every write this thread completed before the call, and
    /// returns its number, to wait on with [`Syncer::wait`] or [`Syncer::wait_async`].
    /// Without group commit the number is 0 and the wait does its own sync.
    pub fn ticket(&self) -> Result<u64, SyncError> {
        if !self.group {
            return Ok(0);
        }
        let mut st = self.shared.state.lock();
        if let Some(p) = &st.poisoned {
            return Err(SyncError::Poisoned(p.clone()));
        }
        // A sync that starts after this point covers our write.
        let need = st.started + 1;
        if st.requested < need {
            st.requested = need;
            self.shared.work.notify_one();
        }
        Ok(need)
    }

    /// Blocks until sync `ticket` completed.
    pub fn wait(&self, ticket: u64) -> Result<(), SyncError> {
        if !self.group {
            return self.wait_solo();
        }
        let mut st = self.shared.state.lock();
        loop {
            if st.durable >= ticket {
                return Ok(());
            }
            if let Some(p) = &st.poisoned {
                return Err(SyncError::Failed(p.clone()));
            }
            self.shared.done.wait(&mut st);
        }
    }

    /// Waits, without blocking a thread, until sync `ticket` completed.
    pub async fn wait_async(&self, ticket: u64) -> Result<(), SyncError> {
        if !self.group {
            return self.wait_solo();
        }
        let mut rx = self.shared.published.subscribe();
        let seen = rx
            .wait_for(|p| p.durable >= ticket || p.poisoned.is_some())
            .await
            .map_err(|_| SyncError::Failed("the store was closed".into()))?;
        if seen.durable >= ticket {
            return Ok(());
        }
        Err(SyncError::Failed(seen.poisoned.clone().unwrap_or_default()))
    }

    /// Returns once every write this thread completed before the call is durable.
    pub fn wait_durable(&self) -> Result<(), SyncError> {
        let ticket = self.ticket()?;
        self.wait(ticket)
    }

    /// Without group commit each writer pays its own flush + fsync (used to measure the
    /// difference; serialised so the figures are the honest one-sync-per-write cost).
    fn wait_solo(&self) -> Result<(), SyncError> {
        let _one = self.solo.lock();
        if let Some(p) = &self.shared.state.lock().poisoned {
            return Err(SyncError::Poisoned(p.clone()));
        }
        self.shared.sync_once().map_err(|e| {
            self.shared.state.lock().poisoned = Some(e.clone());
            SyncError::Failed(e)
        })
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.shared.state.lock().stop = true;
        self.shared.work.notify_one();
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}
