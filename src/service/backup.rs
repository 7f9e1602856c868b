//! Full backups: writing every stored entity of some orgs to a file, and restoring such
//! a file into a store of either backend (the format is `store::backup`'s).
//!
//! A restore reads its file twice: the first pass checks every line (syntax, the org
//! frames, that each entity belongs to its frame's org, the counts each frame ends with)
//! before anything is written, so a damaged or truncated file writes nothing. The second
//! pass writes in chunks, each durable before the next; a restore stopped part-way (a
//! crash, a full disk) is finished by running it again with `overwrite`, because a
//! restore writes entities exactly as given.

use std::io::{BufRead, Write};

use super::{Service, ServiceError};
use crate::model::{Actor, now_millis};
use crate::store::StoreError;
use crate::store::backup::{BACKUP_FORMAT, BackupCounts, BackupEntry};

/// Entities written per durable chunk of a restore.
const RESTORE_CHUNK: usize = 1000;

/// Erasure records read per page of a backup.
const ERASURE_PAGE: usize = 500;

/// What a restore wrote, per org.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreSummary {
    /// Each org restored with its counts, in file order.
    pub orgs: Vec<(String, BackupCounts)>,
}

fn write_err(e: impl std::fmt::Display) -> ServiceError {
    ServiceError::BadRequest(format!("writing the backup: {e}"))
}

/// Writes backup lines, counting them for the org part being written.
struct Emitter<'a> {
    out: &'a mut dyn Write,
    counts: BackupCounts,
    written: u64,
    progress: &'a mut dyn FnMut(u64),
}

impl Emitter<'_> {
    fn emit(&mut self, entry: &BackupEntry) -> Result<(), ServiceError> {
        serde_json::to_writer(&mut *self.out, entry).map_err(write_err)?;
        self.out.write_all(b"\n").map_err(write_err)?;
        self.counts.add(entry);
        self.written += 1;
        if self.written.is_multiple_of(4096) {
            (self.progress)(self.written);
        }
        Ok(())
    }
}

/// Keeps a service error raised inside a store scan's callback (which must return a
/// store error) so the scan's caller can return the original.
fn stash(slot: &mut Option<ServiceError>, e: ServiceError) -> StoreError {
    let message = e.to_string();
    *slot = Some(e);
    StoreError::Backend(message)
}

fn bad_line(line: usize, message: impl std::fmt::Display) -> ServiceError {
    ServiceError::BadRequest(format!("backup line {line}: {message}"))
}

impl Service {
    /// Writes a full backup of `orgs` (every org with data when empty) to `out`, one org
    /// after another; `progress` gets the number of entities written so far. Returns the
    /// counts of the whole backup.
    pub fn backup(
        &self,
        orgs: &[String],
        out: &mut dyn Write,
        progress: &mut dyn FnMut(u64),
    ) -> Result<BackupCounts, ServiceError> {
        // Every read of the backup sees one state of the store (on PostgreSQL, one
        // REPEATABLE READ transaction), so a write landing meanwhile is in it whole or
        // not at all.
        let mut total = BackupCounts::default();
        let mut em = Emitter {
            out,
            counts: BackupCounts::default(),
            written: 0,
            progress,
        };
        let mut failed: Option<ServiceError> = None;
        self.store
            .read_snapshot(&mut || {
                self.backup_in_snapshot(orgs, &mut em, &mut total)
                    .map_err(|e| stash(&mut failed, e))
            })
            .map_err(|e| failed.take().unwrap_or(ServiceError::from(e)))?;
        em.out.flush().map_err(write_err)?;
        (em.progress)(em.written);
        Ok(total)
    }

    /// Checks a backup read from `open()` end to end, then restores it: each org must
    /// hold nothing in this store unless `overwrite` (which replaces what the backup
    /// holds and keeps the rest). `open` is called twice, once per pass. `progress` gets
    /// the number of entities written so far and the total.
    pub fn restore_backup<R: BufRead>(
        &self,
        mut open: impl FnMut() -> Result<R, ServiceError>,
        overwrite: bool,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<RestoreSummary, ServiceError> {
        let summary = check_backup(open()?)?;
        if !overwrite {
            let present = self.store.orgs()?;
            if let Some((org, _)) = summary.orgs.iter().find(|(o, _)| present.contains(o)) {
                return Err(ServiceError::Conflict(format!(
                    "org '{org}' already holds data in this store; restore into an empty \
                     store, or give --overwrite to replace what the backup holds"
                )));
            }
        }
        let total: u64 = summary.orgs.iter().map(|(_, c)| c.entities()).sum();
        let mut org = String::new();
        let mut chunk: Vec<BackupEntry> = Vec::with_capacity(RESTORE_CHUNK);
        let mut written = 0u64;
        let mut flush = |org: &str, chunk: &mut Vec<BackupEntry>| -> Result<(), ServiceError> {
            if !chunk.is_empty() {
                self.store.restore(org, chunk)?;
                self.restore_through_writes(org, chunk)?;
                written += chunk.len() as u64;
                chunk.clear();
                progress(written, total);
            }
            Ok(())
        };
        for (n, line) in open()?.lines().enumerate() {
            let line = line.map_err(|e| bad_line(n + 1, e))?;
            if line.trim().is_empty() {
                continue;
            }
            let entry: BackupEntry = serde_json::from_str(&line).map_err(|e| bad_line(n + 1, e))?;
            match entry {
                BackupEntry::Org { org: next, .. } => {
                    flush(&org, &mut chunk)?;
                    org = next;
                }
                BackupEntry::End { .. } => flush(&org, &mut chunk)?,
                entry => {
                    chunk.push(entry);
                    if chunk.len() == RESTORE_CHUNK {
                        flush(&org, &mut chunk)?;
                    }
                }
            }
        }
        flush(&org, &mut chunk)?;
        Ok(summary)
    }
}

impl Service {
    /// The reads and lines of [`Service::backup`], inside its snapshot.
    fn backup_in_snapshot(
        &self,
        orgs: &[String],
        em: &mut Emitter<'_>,
        total: &mut BackupCounts,
    ) -> Result<(), ServiceError> {
        let orgs = if orgs.is_empty() {
            self.store.orgs()?
        } else {
            orgs.to_vec()
        };
        for org in &orgs {
            super::check_org(org)?;
            em.counts = BackupCounts::default();
            em.emit(&BackupEntry::Org {
                org: org.clone(),
                format: BACKUP_FORMAT,
                backend: self.store.name().to_owned(),
                taken_at: now_millis(),
            })?;
            for adapter in self.store.adapters_of(org)? {
                let history = self.store.adapter_history(org, &adapter.id)?;
                em.emit(&BackupEntry::Adapter {
                    adapter: Box::new(adapter),
                    history,
                })?;
            }
            let mut failed: Option<ServiceError> = None;
            self.store
                .for_each_record_with_history(org, &mut |record, history| {
                    let entry = BackupEntry::Feedback {
                        record: Box::new(record),
                        history,
                    };
                    em.emit(&entry).map_err(|e| stash(&mut failed, e))
                })
                .map_err(|e| failed.take().unwrap_or(ServiceError::from(e)))?;
            for batch in self.store.batches_of(org)? {
                let history = self.store.batch_history(org, batch.id)?;
                em.emit(&BackupEntry::Batch {
                    batch: Box::new(batch),
                    history,
                })?;
            }
            let mut failed: Option<ServiceError> = None;
            self.store
                .for_each_idempotency(org, &mut |user, key, record| {
                    let entry = BackupEntry::Idempotency {
                        user: user.to_owned(),
                        key: key.to_owned(),
                        record,
                    };
                    em.emit(&entry).map_err(|e| stash(&mut failed, e))
                })
                .map_err(|e| failed.take().unwrap_or(ServiceError::from(e)))?;
            for config in self.store.score_configs_of(org)? {
                let history = self.store.score_config_history(org, &config.name)?;
                em.emit(&BackupEntry::ScoreConfig {
                    config: Box::new(config),
                    history,
                })?;
            }
            let mut before: Option<String> = None;
            loop {
                let page = self
                    .store
                    .erasures_page(org, before.as_deref(), ERASURE_PAGE)?;
                let full = page.len() == ERASURE_PAGE;
                for record in page {
                    before = Some(record.id.clone());
                    em.emit(&BackupEntry::Erasure {
                        record: Box::new(record),
                    })?;
                }
                if !full {
                    break;
                }
            }
            for endpoint in self.store.events().endpoints(Some(org))? {
                em.emit(&BackupEntry::Webhook {
                    endpoint: Box::new(endpoint),
                })?;
            }
            let counts = em.counts;
            em.emit(&BackupEntry::End { counts })?;
            total.merge(&counts);
        }
        Ok(())
    }

    /// The part of a restore chunk the backends do not write verbatim: score configs
    /// (each history version written with the config, as a config write does), erasure
    /// records (in one durable write), and webhook endpoints (through the event store, which
    /// keeps its cache of orgs with endpoints in step).
    fn restore_through_writes(&self, org: &str, chunk: &[BackupEntry]) -> Result<(), ServiceError> {
        let through_write = |e: &BackupEntry| {
            matches!(
                e,
                BackupEntry::ScoreConfig { .. } | BackupEntry::Erasure { .. }
            )
        };
        if chunk.iter().any(through_write) {
            let actor = Actor::new(org, "restore");
            self.store.write(&actor, &mut |tx| {
                // Config writes are serialised by the org's adapter lock.
                tx.lock_adapters()?;
                for entry in chunk {
                    match entry {
                        BackupEntry::ScoreConfig { config, history } => {
                            for h in history {
                                tx.put_score_config(config, h)?;
                            }
                        }
                        BackupEntry::Erasure { record } => tx.put_erasure(record)?,
                        _ => {}
                    }
                }
                Ok(())
            })?;
        }
        for entry in chunk {
            if let BackupEntry::Webhook { endpoint } = entry {
                self.store.events().put_endpoint(endpoint)?;
            }
        }
        Ok(())
    }
}

/// The first pass of a restore: every line parses, entities sit inside an org frame and
/// belong to its org, and each frame's `end` line counts what it holds.
fn check_backup(input: impl BufRead) -> Result<RestoreSummary, ServiceError> {
    let mut summary = RestoreSummary::default();
    let mut open: Option<(String, BackupCounts)> = None;
    let mut last_line = 0;
    for (n, line) in input.lines().enumerate() {
        let line_no = n + 1;
        last_line = line_no;
        let line = line.map_err(|e| bad_line(line_no, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let entry: BackupEntry = serde_json::from_str(&line).map_err(|e| bad_line(line_no, e))?;
        match (&entry, &mut open) {
            (BackupEntry::Org { org, format, .. }, None) => {
                if *format > BACKUP_FORMAT {
                    return Err(bad_line(
                        line_no,
                        format!(
                            "backup format {format} is newer than this build reads ({BACKUP_FORMAT})"
                        ),
                    ));
                }
                super::check_org(org).map_err(|e| bad_line(line_no, e))?;
                if summary.orgs.iter().any(|(o, _)| o == org) {
                    return Err(bad_line(line_no, format!("org '{org}' appears twice")));
                }
                open = Some((org.clone(), BackupCounts::default()));
            }
            (BackupEntry::Org { .. }, Some((org, _))) => {
                return Err(bad_line(
                    line_no,
                    format!("org '{org}' has no end line before the next org"),
                ));
            }
            (BackupEntry::End { counts }, Some((org, seen))) => {
                if counts != seen {
                    return Err(bad_line(
                        line_no,
                        format!(
                            "org '{org}' ends with counts {counts:?} but holds {seen:?}: the file is damaged"
                        ),
                    ));
                }
                summary.orgs.push((org.clone(), *seen));
                open = None;
            }
            (_, None) => {
                return Err(bad_line(line_no, "an entity before any org line"));
            }
            (entity, Some((org, seen))) => {
                let owner = match entity {
                    BackupEntry::Adapter { adapter, .. } => Some(&adapter.org_id),
                    BackupEntry::Feedback { record, .. } => Some(&record.feedback.org_id),
                    BackupEntry::Batch { batch, .. } => Some(&batch.org_id),
                    BackupEntry::ScoreConfig { config, .. } => Some(&config.org_id),
                    BackupEntry::Erasure { record } => Some(&record.org_id),
                    BackupEntry::Webhook { endpoint } => Some(&endpoint.org_id),
                    _ => None,
                };
                if let Some(owner) = owner
                    && owner != org
                {
                    return Err(bad_line(
                        line_no,
                        format!("an entity of org '{owner}' inside the part of org '{org}'"),
                    ));
                }
                seen.add(entity);
            }
        }
    }
    if let Some((org, _)) = open {
        return Err(bad_line(
            last_line,
            format!("the file ends inside org '{org}' (no end line): it was cut short"),
        ));
    }
    if summary.orgs.is_empty() {
        return Err(ServiceError::BadRequest("the backup holds no org".into()));
    }
    Ok(summary)
}
