//! Importing JSON lines: the record each line parses to, the checks that run before
//! anything is written (shape, ids, references within the file and the store), and the
//! writes in chunks, each chunk one durable unit.

use super::*;

/// One line of an import file: feedback (default) or an adapter.
#[derive(Debug, Clone, PartialEq)]
pub enum ImportRecord {
    /// A feedback item, optionally with its original id and creation time.
    Feedback {
        /// Org of the item (else the import's default org).
        org: Option<String>,
        /// Keep this id instead of generating one.
        id: Option<String>,
        /// Keep this creation time (ms).
        created_at: Option<Millis>,
        /// The submission.
        item: Box<NewFeedback>,
    },
    /// An adapter, possibly with a parent.
    Adapter {
        /// Org (else the default).
        org: Option<String>,
        /// The adapter.
        adapter: NewAdapter,
    },
    /// A manual FEEDBACK_FOR link between existing records.
    Link {
        /// Org (else the default).
        org: Option<String>,
        /// Feedback end.
        feedback_id: Option<String>,
        /// Adapter end.
        adapter_id: Option<String>,
        /// Edge metadata.
        metadata: Option<serde_json::Map<String, serde_json::Value>>,
    },
}

impl ImportRecord {
    /// Parses one JSON line. `kind` selects `feedback` (default) or `adapter`; `org`, `id`
    /// and `created_at` are import-only fields; the rest is the API's request body.
    pub fn parse(line: &str) -> Result<ImportRecord, String> {
        let mut map: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(line).map_err(|e| format!("not a JSON object: {e}"))?;
        let take_str =
            |map: &mut serde_json::Map<String, serde_json::Value>, k: &str| match map.remove(k) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::String(s)) => Ok(Some(s)),
                Some(other) => Err(format!("'{k}' must be a string, got {other}")),
            };
        let kind = take_str(&mut map, "kind")?;
        let org = take_str(&mut map, "org")?;
        match kind.as_deref().unwrap_or("feedback") {
            "feedback" => {
                let id = take_str(&mut map, "id")?;
                let created_at =
                    match map.remove("created_at") {
                        None | Some(serde_json::Value::Null) => None,
                        Some(v) => Some(v.as_u64().ok_or_else(|| {
                            format!("'created_at' must be ms since epoch, got {v}")
                        })?),
                    };
                let item = serde_json::from_value(serde_json::Value::Object(map))
                    .map(Box::new)
                    .map_err(|e| e.to_string())?;
                Ok(ImportRecord::Feedback {
                    org,
                    id,
                    created_at,
                    item,
                })
            }
            "adapter" => {
                let adapter = serde_json::from_value(serde_json::Value::Object(map))
                    .map_err(|e| e.to_string())?;
                Ok(ImportRecord::Adapter { org, adapter })
            }
            "link" => {
                let feedback_id = take_str(&mut map, "feedback_id")?;
                let adapter_id = take_str(&mut map, "adapter_id")?;
                let metadata = match map.remove("metadata") {
                    None | Some(serde_json::Value::Null) => None,
                    Some(serde_json::Value::Object(m)) => Some(m),
                    Some(other) => {
                        return Err(format!("'metadata' must be an object, got {other}"));
                    }
                };
                if let Some(k) = map.keys().next() {
                    return Err(format!("unknown field '{k}' on a link line"));
                }
                Ok(ImportRecord::Link {
                    org,
                    feedback_id,
                    adapter_id,
                    metadata,
                })
            }
            other => Err(format!(
                "unknown kind '{other}' (expected feedback, adapter or link)"
            )),
        }
    }
}

/// One checked import line: the write it asks for.
#[derive(Debug)]
enum ImportOp {
    /// Create or describe an adapter.
    Adapter(Adapter),
    /// Store a feedback item (skipped if its id exists).
    Feedback(Box<Feedback>),
    /// Link an item to an adapter.
    Link(FeedbackLink),
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ImportSummary {
    /// Feedback items stored.
    pub feedback: u64,
    /// Adapters created or updated.
    pub adapters: u64,
    /// Manual links created.
    pub links: u64,
    /// Lines skipped because their id already existed.
    pub skipped: u64,
}

impl Service {
    /// Checks import records without writing anything: every line's org, shape (the same
    /// checks as the API), ids, and references (a parent adapter or a linked feedback id
    /// must exist in the store or earlier in the file). Returns each problem with its line.
    pub fn check_import(
        &self,
        default_org: Option<&str>,
        records: &[(usize, ImportRecord)],
    ) -> Vec<(usize, String)> {
        use std::collections::HashSet;
        let mut problems = Vec::new();
        let mut adapters: HashSet<(String, String)> = HashSet::new();
        let mut feedback: HashSet<(String, String)> = HashSet::new();
        for (line, rec) in records {
            let line = *line;
            let org_of = |org: &Option<String>| -> Result<String, String> {
                let org = org
                    .clone()
                    .or_else(|| default_org.map(str::to_owned))
                    .ok_or("no 'org' on the line and no --org given")?;
                check_org(&org).map_err(|e| e.to_string())?;
                Ok(org)
            };
            let result: Result<(), String> = (|| match rec {
                ImportRecord::Feedback { org, id, item, .. } => {
                    let org = org_of(org)?;
                    let config = self
                        .score_config_for(&org, item.score_config.as_deref())
                        .map_err(|e| e.to_string())?;
                    self.validator
                        .validate_with((**item).clone(), config.as_ref())
                        .map_err(|e| e.to_string())?;
                    if let Some(id) = id {
                        validate::check_id("id", Some(id.clone()), &self.limits)
                            .map_err(|e| e.to_string())?;
                        feedback.insert((org.clone(), id.clone()));
                    }
                    if let Some(a) = &item.adapter_id {
                        adapters.insert((org, a.trim().to_owned()));
                    }
                    Ok(())
                }
                ImportRecord::Adapter { org, adapter } => {
                    let org = org_of(org)?;
                    let id = adapter.id.clone().ok_or("adapter line without 'id'")?;
                    validate::check_adapter_id("id", id.clone()).map_err(|e| e.to_string())?;
                    if let Some(p) = &adapter.derived_from {
                        let known = adapters.contains(&(org.clone(), p.clone()))
                            || matches!(self.store.get_adapter(&org, p), Ok(Some(_)));
                        if !known {
                            return Err(format!(
                                "parent adapter '{p}' is neither in the store nor earlier in the file"
                            ));
                        }
                    }
                    adapters.insert((org, id));
                    Ok(())
                }
                ImportRecord::Link {
                    org,
                    feedback_id,
                    adapter_id,
                    ..
                } => {
                    let org = org_of(org)?;
                    let fid = feedback_id
                        .clone()
                        .ok_or("link line without 'feedback_id'")?;
                    let aid = adapter_id.clone().ok_or("link line without 'adapter_id'")?;
                    validate::check_adapter_id("adapter_id", aid).map_err(|e| e.to_string())?;
                    let known = feedback.contains(&(org.clone(), fid.clone()))
                        || matches!(self.store.get_record(&org, &fid), Ok(Some(_)));
                    if !known {
                        return Err(format!(
                            "feedback '{fid}' is neither in the store nor earlier in the file"
                        ));
                    }
                    Ok(())
                }
            })();
            if let Err(e) = result {
                problems.push((line, e));
            }
        }
        problems
    }

    /// Imports parsed records: adapters and feedback go through the same validation as the
    /// API, ids that already exist are skipped (so a re-run is harmless). Consecutive
    /// lines of one org are written together, `sync_every` lines per durable write (1 if
    /// 0). `progress` is called after each record.
    pub fn import(
        &self,
        default_org: Option<&str>,
        actor_user: &str,
        records: Vec<(usize, ImportRecord)>,
        sync_every: usize,
        mut progress: impl FnMut(u64),
    ) -> Result<ImportSummary, (usize, ServiceError)> {
        let mut summary = ImportSummary::default();
        let chunk_len = sync_every.max(1);
        // Lines are checked and turned into writes first; a line that fails the checks
        // ends the import after the lines before it are written.
        let mut chunk: Vec<(usize, ImportOp)> = Vec::with_capacity(chunk_len.min(65536));
        let mut chunk_org: Option<String> = None;
        let mut done = 0u64;
        let mut records = records.into_iter();
        loop {
            let prepared = records
                .next()
                .map(|(line, rec)| (line, self.import_op(default_org, rec)));
            let flush = match &prepared {
                None | Some((_, Err(_))) => true,
                Some((_, Ok((org, _)))) => {
                    chunk.len() >= chunk_len || chunk_org.as_deref().is_some_and(|o| o != org)
                }
            };
            if flush && let Some(org) = chunk_org.take() {
                let actor = Actor::new(org, actor_user);
                let written = self.import_chunk(&actor, &chunk)?;
                summary.adapters += written.adapters;
                summary.feedback += written.feedback;
                summary.links += written.links;
                summary.skipped += written.skipped;
                done += chunk.len() as u64;
                progress(done);
                chunk.clear();
            }
            match prepared {
                None => return Ok(summary),
                Some((line, Err(e))) => return Err((line, e)),
                Some((line, Ok((org, op)))) => {
                    chunk_org = Some(org);
                    chunk.push((line, op));
                }
            }
        }
    }

    /// Checks one import line and turns it into the write it asks for, with its org.
    fn import_op(
        &self,
        default_org: Option<&str>,
        rec: ImportRecord,
    ) -> Result<(String, ImportOp), ServiceError> {
        let org_of = |org: Option<String>| {
            let org = org
                .or_else(|| default_org.map(str::to_owned))
                .ok_or_else(|| {
                    ServiceError::BadRequest("no 'org' on the line and no default org given".into())
                })?;
            check_org(&org)?;
            Ok::<_, ServiceError>(org)
        };
        Ok(match rec {
            ImportRecord::Adapter { org, adapter } => {
                let actor = Actor::new(org_of(org)?, "import");
                let a = self.new_adapter(&actor, adapter)?;
                (actor.org, ImportOp::Adapter(a))
            }
            ImportRecord::Feedback {
                org,
                id,
                created_at,
                item,
            } => {
                let org = org_of(org)?;
                let fb = self.prepare(*item, id, created_at, &org, None)?;
                (org, ImportOp::Feedback(Box::new(fb)))
            }
            ImportRecord::Link {
                org,
                feedback_id,
                adapter_id,
                metadata,
            } => {
                let org = org_of(org)?;
                let feedback_id =
                    feedback_id.ok_or(ServiceError::Invalid(ValidationError::Missing {
                        field: "feedback_id",
                        hint: "",
                    }))?;
                let link = self.new_link(&feedback_id, adapter_id, metadata)?;
                (org, ImportOp::Link(link))
            }
        })
    }

    /// Writes checked import lines of one org as one durable write and indexes them.
    fn import_chunk(
        &self,
        actor: &Actor,
        chunk: &[(usize, ImportOp)],
    ) -> Result<ImportSummary, (usize, ServiceError)> {
        let mut summary = ImportSummary::default();
        let mut failed_line = 0;
        // Counted until the graph has been offered the change (see `InFlight`).
        let _in_flight = self.in_flight.enter();
        let written = self.store.write(actor, &mut |tx: &mut dyn WriteTx| {
            summary = ImportSummary::default();
            for (line, op) in chunk {
                failed_line = *line;
                match op {
                    ImportOp::Adapter(a) => {
                        let (_, outcome) = crate::store::create_adapter_in(tx, a)?;
                        if outcome != AdapterOutcome::Unchanged {
                            summary.adapters += 1;
                        }
                    }
                    ImportOp::Feedback(fb) => match tx.insert_feedback(fb, ChangeAction::Import) {
                        Ok(()) => summary.feedback += 1,
                        Err(StoreError::Exists { .. }) => summary.skipped += 1,
                        Err(e) => return Err(e),
                    },
                    ImportOp::Link(link) => {
                        if crate::store::link_in(tx, link)? {
                            summary.links += 1;
                        }
                    }
                }
            }
            Ok(())
        });
        match written {
            Ok(changes) => {
                self.graph.apply(&actor.org, &changes).wait();
                Ok(summary)
            }
            Err(e) => Err((failed_line, e.into())),
        }
    }
}
