//! Lifecycle events as the store keeps them: webhook endpoints, the transactional outbox
//! and the delivery log, and the [`EventStore`] interface every backend implements.
//!
//! An outbox entry is written by the same write as the change it describes, wherever that
//! write stores the change's history entry (see [`event_for`]): on PostgreSQL inside the
//! write's transaction; on sled after the history entry and before the record, so the
//! record stays the commit point. On sled an entry therefore names the record version it
//! belongs to ([`Subject`]); it is delivered only once that record version is stored and
//! durable, and one whose record never reached that version (a write that failed or died
//! before its record) is removed when the store opens. No lost and no phantom events.
//!
//! Payloads never contain an item's text: ids, statuses, counts and adapter names only, so
//! an erasure leaves no copy of erased text in the outbox or the delivery log.

use serde::{Deserialize, Serialize};

use crate::model::{Adapter, ChangeAction, HistoryVersion, Millis};
use crate::store::{Batch, FeedbackRecord, StoreError, keys};

/// The lifecycle events a webhook endpoint can subscribe to.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
pub enum EventType {
    /// A feedback item was stored by a submit (single or batch).
    #[serde(rename = "feedback.submitted")]
    FeedbackSubmitted,
    /// A reviewer changed an item's validation status.
    #[serde(rename = "feedback.reviewed")]
    FeedbackReviewed,
    /// A FEEDBACK_FOR edge was added to an item.
    #[serde(rename = "feedback.linked")]
    FeedbackLinked,
    /// An item's text was erased (emitted by the erasure write, see [`event_for`]).
    #[serde(rename = "feedback.erased")]
    FeedbackErased,
    /// A training batch was claimed.
    #[serde(rename = "batch.claimed")]
    BatchClaimed,
    /// A training batch was committed (or items were marked used directly).
    #[serde(rename = "batch.committed")]
    BatchCommitted,
    /// A training batch was aborted.
    #[serde(rename = "batch.aborted")]
    BatchAborted,
    /// An adapter was created (explicitly, or on the fly by a submit or link).
    #[serde(rename = "adapter.created")]
    AdapterCreated,
}

impl EventType {
    /// Every event type, in a fixed order.
    pub const ALL: [EventType; 8] = [
        EventType::FeedbackSubmitted,
        EventType::FeedbackReviewed,
        EventType::FeedbackLinked,
        EventType::FeedbackErased,
        EventType::BatchClaimed,
        EventType::BatchCommitted,
        EventType::BatchAborted,
        EventType::AdapterCreated,
    ];

    /// The name on the wire (`feedback.submitted`).
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::FeedbackSubmitted => "feedback.submitted",
            EventType::FeedbackReviewed => "feedback.reviewed",
            EventType::FeedbackLinked => "feedback.linked",
            EventType::FeedbackErased => "feedback.erased",
            EventType::BatchClaimed => "batch.claimed",
            EventType::BatchCommitted => "batch.committed",
            EventType::BatchAborted => "batch.aborted",
            EventType::AdapterCreated => "adapter.created",
        }
    }

    /// The type named `name`, if any.
    pub fn parse(name: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.as_str() == name)
    }

    /// One bit per type, for the subscription masks kept in memory.
    pub fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

/// The event a history entry of record kind `kind` (a `keys::KIND_*`) stands for, if any.
///
/// This is the one place where changes become events, on every backend: an item's lease,
/// commit and abort steps are part of a batch event, not events of their own; imports are
/// not events. The erasure write (another module) adds its action here:
/// `(keys::KIND_FEEDBACK, ChangeAction::Erase) => Some(EventType::FeedbackErased)`.
pub fn event_for(kind: u8, entry: &HistoryVersion) -> Option<EventType> {
    match (kind, entry.action) {
        (keys::KIND_FEEDBACK, ChangeAction::Submit) => Some(EventType::FeedbackSubmitted),
        (keys::KIND_FEEDBACK, ChangeAction::Review) => Some(EventType::FeedbackReviewed),
        (keys::KIND_FEEDBACK, ChangeAction::Link) => Some(EventType::FeedbackLinked),
        (keys::KIND_FEEDBACK, ChangeAction::Erase) => Some(EventType::FeedbackErased),
        (keys::KIND_ADAPTER, ChangeAction::Create) if entry.version == 1 => {
            Some(EventType::AdapterCreated)
        }
        (keys::KIND_BATCH, ChangeAction::Lease) => Some(EventType::BatchClaimed),
        (keys::KIND_BATCH, ChangeAction::Commit | ChangeAction::MarkUsed) => {
            Some(EventType::BatchCommitted)
        }
        (keys::KIND_BATCH, ChangeAction::Abort) => Some(EventType::BatchAborted),
        _ => None,
    }
}

/// The record an outbox entry belongs to: kind (`keys::KIND_*`, or [`KIND_REDELIVERY`]),
/// id and the record version the change made.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Subject {
    /// `F`, `A`, `B` (feedback, adapter, batch) or `R` (a manual redelivery).
    pub kind: u8,
    /// The record's id (a batch's number as text; a redelivery's delivery id).
    pub id: String,
    /// The record's version after the change (0 for a redelivery).
    pub version: u64,
}

/// The subject kind of a manual redelivery: no record to wait for.
pub const KIND_REDELIVERY: u8 = b'R';

/// The new state a change left, from which an event's summary is drawn.
#[derive(Debug, Clone, Copy)]
pub enum Changed<'a> {
    /// A feedback record.
    Feedback(&'a FeedbackRecord),
    /// An adapter.
    Adapter(&'a Adapter),
    /// A training batch.
    Batch(&'a Batch),
}

/// The JSON body of an event, as it is signed and sent. Built once, when the change is
/// written; every endpoint and every attempt gets the same bytes.
pub fn payload(
    event_id: &str,
    event: EventType,
    org: &str,
    at: Millis,
    actor: &str,
    changed: Changed<'_>,
) -> String {
    use serde_json::json;
    let data = match changed {
        Changed::Feedback(r) => {
            let f = &r.feedback;
            json!({
                "feedback_id": f.id,
                "version": f.version,
                "type": f.feedback_type,
                "validation_status": f.validation_status,
                "adapter_ids": r.links.iter().map(|l| l.adapter_id.as_str()).collect::<Vec<_>>(),
                "model_version": f.model_version,
                "used_for_training": f.used_for_training,
                "training_batch_id": f.training_batch_id,
            })
        }
        Changed::Adapter(a) => json!({
            "adapter_id": a.id,
            "version": a.version,
            "base_model": a.base_model,
            "derived_from": a.derived_from,
            "source": a.source,
        }),
        Changed::Batch(b) => json!({
            "batch_id": b.id,
            "state": b.state,
            "item_count": b.items.len(),
            "adapter_id": b.adapter_id,
            "model": b.model,
            "trained_adapter_id": b.trained_adapter_id,
            "trained_adapter_version": b.trained_adapter_version,
        }),
    };
    json!({
        "id": event_id,
        "type": event.as_str(),
        "org_id": org,
        "created_at": at,
        "actor": actor,
        "data": data,
    })
    .to_string()
}

/// A registered webhook endpoint of an org.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Endpoint {
    /// `wh-<ULID>`.
    pub id: String,
    /// Owning org.
    pub org_id: String,
    /// Where events are POSTed.
    pub url: String,
    /// The events it receives.
    pub events: Vec<EventType>,
    /// The HMAC-SHA256 key of its signatures.
    pub secret: String,
    /// Whether events are queued and sent to it.
    pub enabled: bool,
    /// Why it was disabled, when the server disabled it.
    pub disabled_reason: Option<String>,
    /// When it was registered (ms).
    pub created_at: Millis,
    /// Who registered it.
    pub created_by: String,
    /// Failed attempts in a row (0 after a success).
    pub failure_streak: u32,
    /// When the current failure streak began (ms).
    pub failing_since: Option<Millis>,
    /// A free description.
    pub description: Option<String>,
}

impl Endpoint {
    /// The mask of the events it receives (see [`EventType::bit`]).
    pub fn mask(&self) -> u32 {
        self.events.iter().fold(0, |m, e| m | e.bit())
    }
}

/// One event waiting to be delivered to one endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// The endpoint.
    pub endpoint_id: String,
    /// The org of the endpoint and the change.
    pub org_id: String,
    /// The record and version the event belongs to (its ordering key).
    pub subject: Subject,
    /// The event id (also in the body).
    pub event_id: String,
    /// The event type.
    pub event: EventType,
    /// The JSON body to send.
    pub body: String,
    /// Attempts made so far.
    pub attempts: u32,
    /// Not to be tried before this time (ms).
    pub next_attempt_at: Millis,
}

/// One attempt to deliver an event, as the delivery log keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    /// `dlv-<ULID>`: time-ordered.
    pub id: String,
    /// The endpoint.
    pub endpoint_id: String,
    /// The org.
    pub org_id: String,
    /// The event id.
    pub event_id: String,
    /// The event type.
    pub event: EventType,
    /// The body that was sent (no item text, see the module comment).
    pub body: String,
    /// Which attempt of this event it was (1 = first).
    pub attempt: u32,
    /// When it was made (ms).
    pub at: Millis,
    /// The receiver's HTTP status, if it answered.
    pub status: Option<u16>,
    /// Whether it counts as delivered (a 2xx answer).
    pub ok: bool,
    /// What went wrong, if anything.
    pub error: Option<String>,
    /// Whether an admin asked for it (manual redelivery).
    pub manual: bool,
}

/// What became of an attempted outbox entry.
#[derive(Debug, Clone, PartialEq)]
pub enum Settle {
    /// Delivered (or given up on): the entry leaves the outbox.
    Done,
    /// Failed: try again at `next_attempt_at`.
    Retry {
        /// When to try again (ms).
        next_attempt_at: Millis,
    },
}

/// The right to deliver one endpoint's outbox, held by one delivery worker at a time.
///
/// Several PostgreSQL replicas each run a worker; the lease makes sure only one of them
/// sends an endpoint's events at any moment, so per-item order holds and no event goes out
/// twice at once. It expires `ttl` after it was taken or last renewed (the backend's clock),
/// so a replica that dies while holding it blocks that endpoint for at most that long.
/// `epoch` grows with every take-over: a renewal names it, so a worker whose lease expired
/// and was taken by another (even if since released) learns it lost the lease and stops,
/// instead of going on from a stale read of the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The endpoint's org.
    pub org_id: String,
    /// The endpoint.
    pub endpoint_id: String,
    /// Who holds it (one id per worker, see `events::delivery`).
    pub holder: String,
    /// Which take-over this is.
    pub epoch: u64,
}

/// What a backend stores for lifecycle events: endpoints, the outbox, the delivery log.
///
/// Outbox entries are written by the backend's own write paths (see the module comment);
/// this interface reads and settles them. Endpoint writes are durable on return; settling
/// an entry need not be (a crash redelivers: delivery is at least once).
pub trait EventStore: Send + Sync {
    /// Stores an endpoint (new or changed). From then on the backend writes outbox entries
    /// for its events (none when it is disabled).
    fn put_endpoint(&self, endpoint: &Endpoint) -> Result<(), StoreError>;

    /// Removes an endpoint with its outbox entries and delivery log; `false` if absent.
    fn delete_endpoint(&self, org: &str, id: &str) -> Result<bool, StoreError>;

    /// One endpoint of `org`.
    fn get_endpoint(&self, org: &str, id: &str) -> Result<Option<Endpoint>, StoreError>;

    /// Every endpoint of `org`, or of every org when `None` (the delivery worker's poll,
    /// which need not wait for durability: endpoint writes are durable on return).
    fn endpoints(&self, org: Option<&str>) -> Result<Vec<Endpoint>, StoreError>;

    /// Up to `limit` outbox entries of an endpoint whose change is stored and durable,
    /// in (subject, version) order, so one record's events come in the order they
    /// happened.
    fn pending(&self, endpoint: &Endpoint, limit: usize) -> Result<Vec<OutboxEntry>, StoreError>;

    /// Records an attempt in the delivery log and settles its entry (see [`Settle`]).
    fn settle(
        &self,
        entry: &OutboxEntry,
        outcome: &Settle,
        attempt: &Delivery,
    ) -> Result<(), StoreError>;

    /// Up to `limit` delivery log entries of an endpoint, newest first, with ids below
    /// `before` if given.
    fn deliveries(
        &self,
        org: &str,
        endpoint: &str,
        before: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError>;

    /// One delivery log entry of an endpoint.
    fn get_delivery(
        &self,
        org: &str,
        endpoint: &str,
        id: &str,
    ) -> Result<Option<Delivery>, StoreError>;

    /// Queues an entry directly (a manual redelivery); durable on return.
    fn enqueue(&self, entry: &OutboxEntry) -> Result<(), StoreError>;

    /// How many outbox entries an endpoint has (for its view).
    fn pending_count(&self, org: &str, endpoint: &str) -> Result<usize, StoreError>;

    /// Drops the oldest delivery log entries of an endpoint beyond the newest `keep`.
    fn trim_log(&self, org: &str, endpoint: &str, keep: usize) -> Result<(), StoreError>;

    /// Takes the delivery lease of an endpoint for `holder` for `ttl_ms`, if nobody else
    /// holds it (it is free, expired, or already `holder`'s); `None` when another worker
    /// holds it. A backend with one process per store (sled) grants it always.
    fn acquire_lease(
        &self,
        org: &str,
        endpoint: &str,
        holder: &str,
        ttl_ms: u64,
    ) -> Result<Option<Lease>, StoreError>;

    /// Extends a lease to `ttl_ms` from now; `false` if it is no longer this lease (taken
    /// over since: stop delivering).
    fn renew_lease(&self, lease: &Lease, ttl_ms: u64) -> Result<bool, StoreError>;

    /// Gives a lease up (expires it now), if it is still this one.
    fn release_lease(&self, lease: &Lease) -> Result<(), StoreError>;
}
