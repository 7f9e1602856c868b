//! Batch submit: many feedback items in one call, each validated and stored on its own
//! (a bad item never keeps the good ones out), all made durable by one sync.
//!
//! Each item goes through the same steps as a single submit (validation, the idempotency
//! check, the write, the durability ticket); the batch then waits once, for the highest
//! ticket, whose sync covers every write before it, and indexes the stored items. The
//! work runs in a task of its own, so a client that hangs up mid-batch leaves nothing
//! half done: the items it wrote are made durable and indexed all the same.

use std::sync::Arc;

use tracing::Instrument;

use super::{PendingSubmit, Service, ServiceError};
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

/// The first phase's result: per-item outcomes (pending writes or item errors), the
/// highest durability ticket taken, and the error that stopped the batch early, if any.
struct Begun {
    outcomes: Vec<Result<PendingSubmit, ServiceError>>,
    ticket: Option<u64>,
    fatal: Option<ServiceError>,
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
        // The writes run on the blocking pool: a thousand of them take milliseconds.
        let service = Arc::clone(&self);
        let span = tracing::Span::current();
        let begun = tokio::task::spawn_blocking(move || {
            span.in_scope(|| service.begin_batch(&actor, items))
        })
        .await
        .map_err(|e| ServiceError::Internal(format!("batch write task failed: {e}")))?;
        if let Some(ticket) = begun.ticket {
            // A failed sync indexes nothing, as for a single submit.
            self.store.durable(ticket).await?;
        }
        let mut applied = Vec::new();
        let outcomes: Vec<BatchOutcome> = begun
            .outcomes
            .into_iter()
            .map(|o| {
                o.map(|pending| {
                    let (feedback, replay, a) = self.finish_submit(pending);
                    applied.push(a);
                    BatchStored { feedback, replay }
                })
            })
            .collect();
        // Read-your-writes: the answer goes out once the graph shows every item.
        for a in applied {
            a.wait_async().await;
        }
        match begun.fatal {
            Some(e) => Err(e),
            None => Ok(outcomes),
        }
    }

    fn begin_batch(&self, actor: &Actor, items: Vec<BatchItem>) -> Begun {
        let mut begun = Begun {
            outcomes: Vec::with_capacity(items.len()),
            ticket: None,
            fatal: None,
        };
        for item in items {
            match self.begin_submit(actor, item.new, item.key) {
                Ok(pending) => {
                    begun.ticket = begun.ticket.max(Some(pending.ticket));
                    begun.outcomes.push(Ok(pending));
                }
                Err(e) if item_error(&e) => begun.outcomes.push(Err(e)),
                Err(e) => {
                    begun.fatal = Some(e);
                    break;
                }
            }
        }
        begun
    }
}
