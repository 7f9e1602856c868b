//! When the graph checkpoint is written and when it is used (the file itself is
//! `graph/checkpoint.rs`).
//!
//! Written at a clean stop (and at the end of `feedgraph load`): the sled store is sealed
//! (it refuses every write from then on), the service waits until every write the store
//! took is in the graph, writes the file, and only then records the checkpoint's id in the
//! store. Used at the next start only if the store vouches for that id: the store hands the
//! id out once, at open, and removes it durably before anything can write, so a crash after
//! later writes, or any tool that opened the store meanwhile, means a full scan. Anything
//! wrong with the file means a full scan too, logged with the reason.
//!
//! Only for the sled backend and a placement that serves every org (the checkpoint holds
//! the orgs the writer served); PostgreSQL keeps its own start-up.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::Service;
use super::placement::Placement;
use crate::config::Config;
use crate::graph::GraphIndex;
use crate::graph::checkpoint::{self, Written};
use crate::store::{Backend, BackendKind, StoreError};

/// How long the graph must see no new change, with the store sealed, before it is taken
/// as holding every write the store took (a writer applies its change right after its
/// store call returns).
const QUIET: Duration = Duration::from_millis(50);

/// How long a stop waits for writes in flight to reach the graph before it gives up on
/// the checkpoint.
const SETTLE_LIMIT: Duration = Duration::from_secs(10);

/// The data directory when checkpoints are on for this configuration.
pub(super) fn dir_for(config: &Config, placement: &Placement) -> Option<PathBuf> {
    (config.storage.graph_checkpoint
        && config.storage.backend == BackendKind::Sled
        && *placement == Placement::All)
        .then(|| config.data_dir.clone())
}

/// The graph index at start-up: from the checkpoint the store vouches for if there is one
/// and it checks out, else built by scanning the store.
pub(super) fn open_graph(
    store: &dyn Backend,
    placement: &Placement,
    dir: Option<&Path>,
    vouched: Option<u128>,
) -> Result<GraphIndex, StoreError> {
    let scan = || GraphIndex::build_for(store, &|org| placement.serves(org));
    let Some(dir) = dir else {
        return scan();
    };
    let Some(id) = vouched else {
        tracing::info!(
            "no graph checkpoint vouched for by the store (no clean stop since the last start, \
             or the store was opened since); building the graph from the store"
        );
        return scan();
    };
    match GraphIndex::load_checkpoint(dir, id) {
        Ok(index) => Ok(index),
        Err(e) => {
            tracing::warn!(
                reason = %e,
                "the graph checkpoint is not used; building the graph from the store"
            );
            scan()
        }
    }
}

/// Removes the checkpoint file in `data_dir`, if any: once the store is open the file is
/// never used again (the store hands its id out once), and it may hold strings that
/// later erasures take out of the store. A failure is logged; the file stays unused.
pub(super) fn discard_file(data_dir: &Path) {
    let path = checkpoint::path_in(data_dir);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "could not remove the used graph checkpoint")
        }
    }
}

impl Service {
    /// Whether the graph was read from a checkpoint at start-up.
    pub fn graph_from_checkpoint(&self) -> bool {
        self.graph.loaded_from_checkpoint()
    }

    /// At a clean stop: seals the store, then writes every org's graph to the checkpoint
    /// and records its id in the store. Returns what was written, or `None` if checkpoints
    /// are off or it could not be done (logged; the next start then scans). The store
    /// refuses every write afterwards: call it last.
    pub fn checkpoint_graph(&self) -> Option<Written> {
        let dir = self.checkpoint_dir.as_deref()?;
        let sled = self.sled()?;
        let started = Instant::now();
        sled.seal();
        // Writes the store took before the seal are applied to the graph by their callers
        // once durable: make them durable, then wait until no write is between its store
        // call and its graph change (every writer counts itself in before its store call,
        // `InFlight`) and the graph has seen no new change for a while.
        if let Err(e) = sled.make_durable() {
            tracing::warn!(error = %e, "no graph checkpoint: the store could not sync");
            return None;
        }
        let deadline = started + SETTLE_LIMIT;
        loop {
            let before = self.graph.changes_offered();
            std::thread::sleep(QUIET);
            if self.in_flight.count() == 0 && self.graph.changes_offered() == before {
                break;
            }
            if Instant::now() > deadline {
                tracing::warn!("writes are still reaching the graph; no graph checkpoint written");
                return None;
            }
        }
        let offered = self.graph.changes_offered();
        let orgs = self.graph.settled_snapshots();
        let written = match checkpoint::write(dir, &orgs) {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "could not write the graph checkpoint");
                return None;
            }
        };
        if let Err(e) = sled.vouch_for_graph_checkpoint(written.id) {
            tracing::warn!(error = %e, "could not record the graph checkpoint in the store");
            return None;
        }
        // Nothing can have changed (the store is sealed); if the graph did anyway, the
        // checkpoint may lack it: take it back.
        if self.graph.changes_offered() != offered || self.in_flight.count() != 0 {
            tracing::warn!("the graph changed while it was saved; graph checkpoint withdrawn");
            if let Err(e) = sled.withdraw_graph_checkpoint() {
                tracing::error!(error = %e, "could not withdraw the graph checkpoint");
            }
            // And the file, so that even a record left in the store names nothing.
            let _ = std::fs::remove_file(checkpoint::path_in(dir));
            return None;
        }
        tracing::info!(
            orgs = orgs.len(),
            bytes = written.bytes,
            write_ms = started.elapsed().as_millis() as u64,
            "graph checkpoint written"
        );
        Some(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Actor, ChangeAction, Feedback};

    fn has(service: &Service, org: &str, id: &str) -> bool {
        service
            .graph
            .org(org)
            .is_some_and(|g| g.feedback().row_of(id).is_some())
    }

    /// A writer whose thread stalls after its store call, longer than the stop's quiet
    /// window and the whole checkpoint write, must still be in the checkpoint: the stop
    /// waits for it rather than saving a graph that lacks an acknowledged write.
    #[test]
    fn a_stop_waits_for_a_write_between_its_store_call_and_the_graph()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let config = Config {
            data_dir: dir.path().to_owned(),
            ..Config::default()
        };
        let actor = Actor::new("acme", "u1");
        let service = Service::open(&config)?;
        let first = Feedback::sample("fb_first", "acme");
        let late = Feedback::sample("fb_late", "acme");
        let changes = service.store.write(&actor, &mut |tx| {
            tx.insert_feedback(&first, ChangeAction::Submit)
        })?;
        service.graph.apply("acme", &changes).wait();

        // The stalled writer: counted in, stored, not yet offered to the graph.
        let guard = service.in_flight.enter();
        let changes = service.store.write(&actor, &mut |tx| {
            tx.insert_feedback(&late, ChangeAction::Submit)
        })?;
        let written = std::thread::scope(|s| {
            let stop = s.spawn(|| service.checkpoint_graph());
            // Long past the quiet window (50 ms) and a checkpoint of two items.
            std::thread::sleep(Duration::from_millis(600));
            service.graph.apply("acme", &changes).wait();
            drop(guard);
            stop.join()
        });
        let written = written.map_err(|_| "the stop panicked")?;
        assert!(
            written.is_some(),
            "the checkpoint is written once the writer is done"
        );
        drop(service);

        let reopened = Service::open(&config)?;
        assert!(
            reopened.graph_from_checkpoint(),
            "the start reads the checkpoint"
        );
        assert!(has(&reopened, "acme", "fb_first"));
        assert!(
            has(&reopened, "acme", "fb_late"),
            "the stalled write is in it"
        );
        Ok(())
    }
}
