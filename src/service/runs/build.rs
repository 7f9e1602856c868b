//! Building runs: the `feedgraph-runs` thread, which adapters of which org get a run and
//! when it is built again, and writing a run's file within the disk bounds.

use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::time::Duration;

use rustc_hash::FxHashMap;

use super::{BUILD_CHUNK, CHECK_EVERY, CHUNK_ROOM, OrgRuns, Runs, RunsError, Slot, id_hash};
use crate::graph::OrgGraph;
use crate::service::pages::RenderItem;
use crate::service::{Service, ServiceError};

impl Service {
    /// The adapter runs (see the module).
    pub fn runs(&self) -> &Runs {
        &self.runs
    }

    /// Builds, rebuilds or drops each org's runs as its adapters now ask (see the
    /// module); `render` writes the items as pages serve them. Blocking, and long (it
    /// reads every item of the adapters a run is built for).
    /// `keep_going` is asked between chunks of a build: false abandons it (the server is
    /// stopping).
    pub fn refresh_runs(
        &self,
        render: RenderItem,
        keep_going: &dyn Fn() -> bool,
    ) -> Result<(), RunsError> {
        let orgs: Vec<Box<str>> = {
            let mut orgs: Vec<Box<str>> = self.runs.demand.lock().keys().cloned().collect();
            orgs.extend(self.runs.orgs.read().keys().cloned());
            orgs.sort_unstable();
            orgs.dedup();
            orgs
        };
        for org in orgs {
            if !keep_going() {
                break;
            }
            // One org's failure does not hold up the others.
            if let Err(e) = self.refresh_org_runs(&org, render, keep_going) {
                tracing::warn!(org = %org, error = %e, "adapter run not built; pages read the store");
            }
        }
        Ok(())
    }

    fn refresh_org_runs(
        &self,
        org: &str,
        render: RenderItem,
        keep_going: &dyn Fn() -> bool,
    ) -> Result<(), RunsError> {
        let runs = &self.runs;
        let Some(g) = self.graph.org(org) else {
            runs.set(org, None);
            return Ok(());
        };
        let wanted = runs.wanted(org, &g);
        if wanted.is_empty() {
            if runs.org(org).is_some() {
                runs.set(org, None);
            }
            return Ok(());
        }
        if runs.org(org).is_some_and(|r| !r.stale(&wanted)) {
            return Ok(());
        }
        let budget = runs.max_bytes.saturating_sub(runs.bytes_of_others(org));
        if budget == 0 || !runs.room_for(CHUNK_ROOM) {
            // No room: looked at again later, with nothing written.
            tracing::debug!(org, "no room for an adapter run");
            return Ok(());
        }
        runs.begin_build(org);
        match self.build_runs(org, &g, wanted, budget, render, keep_going) {
            Ok(Some(built)) => Ok(runs.install(org, built)?),
            Ok(None) => {
                runs.abandon_build();
                Ok(())
            }
            Err(e) => {
                runs.abandon_build();
                Err(e)
            }
        }
    }

    /// Writes the items of `wanted`'s adapters, biggest first, newest first, adapter after
    /// adapter (an item of two of them once), read from the store now, into a new file of
    /// at most `budget` bytes that leaves the file system `min_free` bytes free (cut short
    /// where either is reached); `None` when `keep_going` said to stop (the file is
    /// deleted).
    fn build_runs(
        &self,
        org: &str,
        g: &OrgGraph,
        wanted: Vec<(u32, usize)>,
        budget: u64,
        render: RenderItem,
        keep_going: &dyn Fn() -> bool,
    ) -> Result<Option<OrgRuns>, RunsError> {
        let (file, path) = self.runs.create_file()?;
        // Deletes the file on every way out but the last.
        let mut partial = Partial(Some(path));
        let mut slots: FxHashMap<u64, Slot> = FxHashMap::default();
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let mut offset = 0u64;
        let mut scratch: Vec<u8> = Vec::with_capacity(2048);
        let cols = g.feedback();
        let mut written: rustc_hash::FxHashSet<u32> = rustc_hash::FxHashSet::default();
        let mut order = wanted.clone();
        order.sort_unstable_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(&y.0)));
        let mut full = false;
        'adapters: for (a, _) in order {
            let rows: Vec<u32> = g
                .linked_by_id(a)
                .iter()
                .rev()
                .copied()
                .filter(|&r| written.insert(r))
                .collect();
            for chunk in rows.chunks(BUILD_CHUNK) {
                if !keep_going() {
                    return Ok(None);
                }
                if full || !self.runs.room_for(CHUNK_ROOM) {
                    break 'adapters;
                }
                let picked: Vec<(u32, &str)> = chunk
                    .iter()
                    .filter_map(|&r| Some((r, cols.id(r)?)))
                    .collect();
                let ids: Vec<&str> = picked.iter().map(|p| p.1).collect();
                let mut at = 0usize;
                let mut failed: Option<std::io::Error> = None;
                self.store
                    .for_each_feedback_view(org, &ids, &mut |v| {
                        let row = picked.get(at).map(|p| p.0);
                        at += 1;
                        let (Some(v), Some(row)) = (v, row) else {
                            return Ok(());
                        };
                        if failed.is_some() || full {
                            return Ok(());
                        }
                        scratch.clear();
                        if render(&mut scratch, v).is_err() {
                            // Left to the store read, which reports it.
                            return Ok(());
                        }
                        let Ok(len) = u32::try_from(scratch.len()) else {
                            return Ok(());
                        };
                        if slots.contains_key(&id_hash(v.id)) {
                            // Another id with the same hash holds the slot: this item is
                            // left to the store, and its bytes out of the file.
                            return Ok(());
                        }
                        if offset + u64::from(len) > budget {
                            full = true;
                            return Ok(());
                        }
                        if let Err(e) = out.write_all(&scratch) {
                            failed = Some(e);
                            return Ok(());
                        }
                        slots.entry(id_hash(v.id)).or_insert(Slot {
                            row,
                            len,
                            offset,
                            kind: v.kind,
                            version: AtomicU64::new(v.version),
                        });
                        offset += u64::from(len);
                        Ok(())
                    })
                    .map_err(ServiceError::from)?;
                if let Some(e) = failed {
                    return Err(e.into());
                }
            }
        }
        let file = out.into_inner().map_err(|e| e.into_error())?;
        let Some(path) = partial.0.take() else {
            return Ok(None);
        };
        Ok(Some(OrgRuns {
            file,
            path,
            slots,
            bytes: offset,
            dead: AtomicUsize::new(0),
            built_for: wanted,
            blanked: AtomicBool::new(false),
        }))
    }
}

/// The path of a run file being written, deleted if the build does not finish.
struct Partial(Option<PathBuf>);

impl Drop for Partial {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Starts the `feedgraph-runs` thread: twice a second it refreshes the runs of every org
/// clients page through ([`Service::refresh_runs`]). Holds the
/// service weakly and ends with the server. Nothing is started when runs are off.
pub fn spawn_builder(service: &Arc<Service>, render: RenderItem) {
    if !service.runs.enabled() {
        return;
    }
    let weak = Arc::downgrade(service);
    let spawned = std::thread::Builder::new()
        .name("feedgraph-runs".into())
        .spawn(move || {
            loop {
                let Some(service) = weak.upgrade() else {
                    return;
                };
                // Stops a build once the server let go of the service.
                let keep_going = || weak.strong_count() > 1;
                if let Err(e) = service.refresh_runs(render, &keep_going) {
                    tracing::warn!(error = %e, "adapter runs not built; pages read the store");
                }
                drop(service);
                // Sleep in short steps so a stopped server is noticed soon.
                let until = std::time::Instant::now() + CHECK_EVERY;
                while std::time::Instant::now() < until {
                    std::thread::sleep(Duration::from_millis(100));
                    if weak.strong_count() == 0 {
                        return;
                    }
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the adapter runs thread");
    }
}
