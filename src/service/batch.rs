//! Batch submit: many feedback items in one call, each validated and stored on its own
//! (a bad item never keeps the good ones out), all made durable by one sync.
//!
//! Each item is checked as a single submit is; the valid ones go to the backend together
//! ([`crate::store::Backend::submit_many`]: each item's idempotency check and write, then
//! one durable commit for all), and the stored items are indexed. The work runs in a task
//! of its own, so a client that hangs up mid-batch leaves nothing half done: the items it
//! wrote are made durable and indexed all the same.

use std::sync::Arc;

use tracing::Instrument;

use super::{Service, ServiceError};
use crate::model::{Actor, Feedback, NewFeedback};
use crate::store::IdempotencyKey;

/// Default of the most items one batch may hold (`batch.max_items`).
pub const DEFAULT_MAX_ITEMS: usize = 1000;

/// One item of a batch, as the HTTP layer parsed it.
#[derive(Debug, Clone)]
pub struct BatchItem {
    /// The submission (the body `POST /feedback` takes).
    pub new: NewFeedback,
    /// Its idempotency key, if the client gave one.
    pub key: Option<IdempotencyKey>,
}

/// What became of one stored item: the item and whether it is a replay of an earlier
/// submit with the same idempotency key.
#[derive(Debug, Clone)]
pub struct BatchStored {
    /// The item as stored (for a replay, the original).
    pub feedback: Feedback,
    /// True when the idempotency key had been used before with the same body.
    pub replay: bool,
}

/// The outcome of one item: stored, or the error that kept it out.
pub type BatchOutcome = Result<BatchStored, ServiceError>;

/// Whether an error concerns one item only (its content or key), so the batch goes on;
/// any other error (the store failing) ends the batch.
fn item_error(e: &ServiceError) -> bool {
    matches!(
        e,
        ServiceError::Invalid(_)
            | ServiceError::BadRequest(_)
            | ServiceError::Conflict(_)
            | ServiceError::NotFound { .. }
    )
}

impl Service {
    /// Validates and stores every item, waits once until all stored items are durable,
    /// indexes them, and answers one outcome per item in order. An item's own problem
    /// (validation, a reused idempotency key) is its outcome; a store failure is the
    /// batch's error (the items written before it are still made durable and indexed, so
    /// a retry with the same keys finds them).
    pub async fn submit_batch(
        self: &Arc<Self>,
        actor: &Actor,
        items: Vec<BatchItem>,
    ) -> Result<Vec<BatchOutcome>, ServiceError> {
        let service = Arc::clone(self);
        let actor = actor.clone();
        // A task of its own: dropping this future (the client left) does not stop it.
        let task =
            tokio::spawn(async move { service.run_batch(actor, items).await }.in_current_span());
        task.await
            .map_err(|e| ServiceError::Internal(format!("batch task failed: {e}")))?
    }

    async fn run_batch(
        self: Arc<Self>,
        actor: Actor,
        items: Vec<BatchItem>,
    ) -> Result<Vec<BatchOutcome>, ServiceError> {
        // Check every item first; `slots` says where each valid one's outcome goes.
        let mut outcomes: Vec<Option<BatchOutcome>> = Vec::with_capacity(items.len());
        let mut valid = Vec::with_capacity(items.len());
        let mut slots = Vec::with_capacity(items.len());
        let names: std::collections::BTreeSet<String> = items
            .iter()
            .filter_map(|i| i.new.score_config.clone())
            .collect();
        let configs = if names.is_empty() {
            Default::default()
        } else {
            self.configs_named(&actor.org, names.into_iter().collect())
                .await?
        };
        for item in items {
            let config = match item.new.score_config.as_deref() {
                None => Some(None),
                Some(name) => configs.get(name).cloned(),
            };
            match self.begin_submit(&actor, item.new, item.key, config) {
                Ok((fb, _, key)) => {
                    slots.push(outcomes.len());
                    outcomes.push(None);
                    valid.push((fb, key));
                }
                Err(e) if item_error(&e) => outcomes.push(Some(Err(e))),
                Err(e) => return Err(e),
            }
        }
        // A failed commit indexes nothing, as for a single submit.
        // Counted until the graph has been offered the change (see `InFlight`).
        let _in_flight = self.in_flight.enter();
        let written = Arc::clone(&self.store)
            .submit_many(actor.clone(), valid)
            .await?;
        let mut applied = Vec::new();
        for (slot, outcome) in slots.iter().zip(written.outcomes) {
            let result = match outcome {
                Ok(inserted) => {
                    self.finish_submit(&actor.org, inserted)
                        .map(|(feedback, replay, a)| {
                            applied.push(a);
                            BatchStored { feedback, replay }
                        })
                }
                Err(e) => Err(e.into()),
            };
            if let Some(o) = outcomes.get_mut(*slot) {
                *o = Some(result);
            }
        }
        // Read-your-writes: the answer goes out once the graph shows every item.
        for a in applied {
            a.wait_async().await;
        }
        if let Some(e) = written.stopped {
            return Err(e.into());
        }
        outcomes
            .into_iter()
            .map(|o| o.ok_or_else(|| ServiceError::Internal("a batch item got no outcome".into())))
            .collect()
    }
}
