//! What happens to a write between its store call and the graph: the guard that finishes
//! and indexes a write whose client hung up ([`FinishOnDrop`]), and the count of writes
//! in between that a clean stop waits for before it saves the graph ([`InFlight`]).

use super::*;

/// A write the backend is making durable: polled by the request, or, if the client hangs
/// up first, by a task that finishes and indexes it (see [`FinishOnDrop`]).
pub(super) type WriteFuture<T> = BoxFuture<'static, Result<T, StoreError>>;

/// What a durable write hands the graph index once it finished.
pub(super) trait Indexed: Send + 'static {
    /// The changes to apply (`None` when nothing was stored).
    fn changes(&self) -> Option<&ChangeSet>;
}

impl Indexed for Inserted {
    fn changes(&self) -> Option<&ChangeSet> {
        match self {
            Inserted::New(changes) => Some(changes),
            Inserted::Replay(_) => None,
        }
    }
}

impl Indexed for crate::store::Linked {
    fn changes(&self) -> Option<&ChangeSet> {
        Some(&self.changes)
    }
}

/// A write (a submit or a link) handed to the backend whose caller may stop waiting: on
/// drop before the write finished, a task drives it to the end and indexes what it
/// stored, as the caller would have, so a stored change is always indexed.
pub(super) struct FinishOnDrop<'a, T: Indexed> {
    pub(super) service: &'a Arc<Service>,
    pub(super) org: String,
    pub(super) pending: Option<WriteFuture<T>>,
}

impl<'a, T: Indexed> FinishOnDrop<'a, T> {
    /// Waits for the write; from then on nothing is left for the guard (a failed write
    /// indexes nothing). Returns the write's outcome and the org to index it in.
    pub(super) async fn finish(mut self) -> (Result<T, StoreError>, String) {
        let written = match self.pending.as_mut() {
            Some(pending) => pending.await,
            None => Err(StoreError::Backend("the write was finished twice".into())),
        };
        self.pending = None;
        (written, std::mem::take(&mut self.org))
    }
}

/// Counts the writes between their store call and the offer of their change to the graph.
/// A write takes [`InFlight::enter`] before it calls the store and holds the guard until
/// the graph has been offered its change; a clean stop seals the store, then waits for the
/// count to reach zero before it saves the graph ([`Service::checkpoint_graph`]), so the
/// checkpoint holds every write the store took, however long a writer's thread stalled
/// between the two steps.
#[derive(Debug, Default)]
pub(super) struct InFlight(std::sync::atomic::AtomicUsize);

impl InFlight {
    /// Counts a write in until the returned guard is dropped.
    pub(super) fn enter(&self) -> InFlightGuard<'_> {
        self.add();
        InFlightGuard(self)
    }

    /// Counts a write in by hand (a task that finishes an abandoned write; pair with
    /// [`InFlight::sub`]).
    pub(super) fn add(&self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// Counts out a write counted in with [`InFlight::add`].
    pub(super) fn sub(&self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// Writes counted in now.
    pub(super) fn count(&self) -> usize {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// One write counted in [`InFlight`] until dropped.
#[must_use = "the write is counted only while the guard lives"]
pub(super) struct InFlightGuard<'a>(&'a InFlight);

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.0.sub();
    }
}

impl<T: Indexed> Drop for FinishOnDrop<'_, T> {
    fn drop(&mut self) {
        let Some(pending) = self.pending.take() else {
            return;
        };
        let service = Arc::clone(self.service);
        let org = std::mem::take(&mut self.org);
        // Counted before this returns: the caller's own count ends with it.
        service.in_flight.add();
        let finish = async move {
            match pending.await {
                Ok(written) => {
                    if let Some(changes) = written.changes() {
                        // Nobody waits for it; the graph thread publishes it if it queued.
                        let _applied = service.graph.apply(&org, changes);
                    }
                }
                Err(e) => tracing::error!("a write whose client left was not made durable: {e}"),
            }
            service.in_flight.sub();
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                // In the request's span, so its log lines carry the request id.
                runtime.spawn(tracing::Instrument::in_current_span(finish));
            }
            // Outside a runtime nobody polls futures: whatever was stored is indexed at
            // the next start.
            Err(_) => tracing::warn!(
                "a write was dropped outside the runtime; it is indexed at the next start"
            ),
        }
    }
}
