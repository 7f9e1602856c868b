//! The per-query resource budget: work, memory, wall-clock time and cancellation.
//!
//! One [`Budget`] lives for one query run. The executor and the expression evaluator charge
//! it where they spend:
//!
//! - **work**: every node scanned and relationship examined, and every list element that an
//!   expression produces or visits (ranges, comprehensions, quantifiers, list and string
//!   operations, collected values). `max_work` bounds it; it is what `stats.work` reports.
//! - **memory**: an estimate, in bytes, of what the query holds: list elements and string
//!   bytes built by expressions, values bound in rows, collected values, DISTINCT, sort and
//!   grouping state, and the result (its cells plus the estimated size of each row's JSON;
//!   a streamed result gives its rows back once a batch is handed to the sink).
//!   Expression temporaries are released when the expression that built them is done with
//!   them ([`Budget::mark`] / [`Budget::settle`]); held state stays charged while the query
//!   holds it. Values shared by reference are charged once per holder, so the estimate errs
//!   high, never low by more than a single expression's temporaries.
//! - **time and cancellation**: every [`CHECK_EVERY`] units of work (and whenever a large
//!   charge is made) the clock is read and the cancel flag looked at, so a query stops
//!   within a few thousand units of work of its deadline, or of its client hanging up, even
//!   inside one expression.
//!
//! The counters are `Cell`s: a budget belongs to one query on one thread, and expressions
//! are evaluated through shared references.
//!
//! Across queries, a [`MemoryPool`] bounds what every running query holds together
//! (`query.max_memory_total_bytes`): a budget reserves pool bytes a mebibyte at a time as its
//! charges grow past what it reserved, and gives them all back when the query ends. A query
//! that cannot reserve stops with [`Limit::MaxMemoryTotal`] (the server is busy: retry),
//! so many big queries at once cannot take more memory than the operator allowed, while one
//! query alone may still use its own `max_memory_bytes`.

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prometheus_client::metrics::gauge::Gauge;

use super::QueryLimits;
use super::error::{CypherError, Fail, Limit};
use super::value::Value;

/// How often (in work units) the clock and the cancel flag are read.
pub(crate) const CHECK_EVERY: u64 = 4096;

/// The bytes one value takes in a list or a row.
pub(crate) const VALUE_BYTES: u64 = std::mem::size_of::<Value<'static>>() as u64;

/// The work units charged for building `bytes` bytes of string (copying is cheap per byte).
#[inline]
pub(crate) fn string_work(bytes: u64) -> u64 {
    bytes / 64 + 1
}

/// The configuration key of the memory limit, named in its error.
pub const MEMORY_KEY: &str = "query.max_memory_bytes";

/// The configuration key of the server-wide memory limit, named in its error.
pub const MEMORY_TOTAL_KEY: &str = "query.max_memory_total_bytes";

/// What a budget reserves from the pool at a time: large enough that a query reserves a
/// handful of times, small enough that small queries leave the pool to big ones.
const POOL_CHUNK: u64 = 1 << 20;

/// What every query may hold without drawing on the pool (see [`MemoryPool`]).
pub const POOL_FREE: u64 = POOL_CHUNK;

/// The memory every running query holds together, in bytes of the budgets' estimate,
/// bounded by `max` (see the module docs). One per server; each query draws on it through
/// its org's [`PoolShare`] in [`QueryLimits::memory_pool`].
///
/// Two rules keep one tenant from shutting the others out: no org may hold more than
/// three quarters of the pool (the rest stays for the other orgs), and a query's first
/// [`POOL_FREE`] bytes are not drawn from it at all, so small queries always run (they
/// are bounded by `query.max_concurrent_total` instead).
#[derive(Debug)]
pub struct MemoryPool {
    /// Bytes reserved now; a gauge, so `/metrics` reads the same counter.
    held: Gauge<u64, AtomicU64>,
    max: u64,
    /// Bytes each org with a reservation holds (touched once per reserved mebibyte and at
    /// the end of a query that reserved, never per charge).
    orgs: parking_lot::Mutex<std::collections::HashMap<Arc<str>, u64>>,
}

/// Why a reservation was refused.
enum Refused {
    /// The org holds its three quarters of the pool.
    Org,
    /// The pool is full.
    Pool,
}

impl MemoryPool {
    /// A pool of `max` bytes.
    pub fn new(max: u64) -> Self {
        MemoryPool {
            held: Gauge::default(),
            max,
            orgs: parking_lot::Mutex::default(),
        }
    }

    /// The bytes running queries have reserved now.
    pub fn held(&self) -> u64 {
        self.held.get()
    }

    /// A handle on the reserved bytes, for `/metrics`.
    pub fn gauge(&self) -> Gauge<u64, AtomicU64> {
        self.held.clone()
    }

    /// The pool's size.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// The most one org may hold: three quarters of the pool.
    pub fn org_max(&self) -> u64 {
        self.max - self.max / 4
    }

    /// Takes `bytes` from the pool for `org` if they fit both rules.
    fn reserve(&self, org: &Arc<str>, bytes: u64) -> Result<(), Refused> {
        let mut orgs = self.orgs.lock();
        let mine = orgs.get(org).copied().unwrap_or(0);
        if mine.saturating_add(bytes) > self.org_max() {
            return Err(Refused::Org);
        }
        self.held
            .inner()
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(bytes).filter(|&want| want <= self.max)
            })
            .map_err(|_| Refused::Pool)?;
        orgs.insert(Arc::clone(org), mine + bytes);
        Ok(())
    }

    /// Returns `bytes` that `org` took earlier.
    fn give_back(&self, org: &Arc<str>, bytes: u64) {
        if bytes == 0 {
            return;
        }
        let mut orgs = self.orgs.lock();
        if let Some(mine) = orgs.get_mut(org) {
            *mine = mine.saturating_sub(bytes);
            if *mine == 0 {
                orgs.remove(org);
            }
        }
        self.held.inner().fetch_sub(bytes, Ordering::AcqRel);
    }
}

/// One org's draw on the server's [`MemoryPool`]: what a query's limits carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolShare {
    /// The server's pool.
    pub pool: Arc<MemoryPool>,
    /// The org whose query draws on it.
    pub org: Arc<str>,
}

/// Two pools are equal only when they are the same pool (limits compare by identity).
impl PartialEq for MemoryPool {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
    }
}

impl Eq for MemoryPool {}

/// The resource budget of one query run (see the module docs).
pub(crate) struct Budget<'c> {
    work: Cell<u64>,
    next_check: Cell<u64>,
    mem: Cell<u64>,
    peak: Cell<u64>,
    max_work: u64,
    max_mem: u64,
    timeout: Duration,
    /// The limit once rows stream ([`Budget::note_streamed`]).
    stream_timeout: Duration,
    /// Whether a batch of rows was handed to a sink.
    streamed: Cell<bool>,
    started: Instant,
    cancel: Option<&'c AtomicBool>,
    /// The org's share of the server's pool, if there is one.
    pool: Option<PoolShare>,
    /// Bytes this query may hold without asking the pool again: [`POOL_FREE`] plus what
    /// it took from the pool; `u64::MAX` without a pool, so that charges never ask it.
    reserved: Cell<u64>,
}

impl<'c> Budget<'c> {
    /// A fresh budget for a query that started at `started`.
    pub fn new(limits: &QueryLimits, started: Instant, cancel: Option<&'c AtomicBool>) -> Self {
        Budget {
            work: Cell::new(0),
            next_check: Cell::new(CHECK_EVERY.min(limits.max_work.saturating_add(1))),
            mem: Cell::new(0),
            peak: Cell::new(0),
            max_work: limits.max_work,
            max_mem: limits.max_memory,
            timeout: limits.timeout,
            stream_timeout: limits.stream_timeout.max(limits.timeout),
            streamed: Cell::new(false),
            started,
            cancel,
            reserved: Cell::new(if limits.memory_pool.is_some() {
                POOL_FREE
            } else {
                u64::MAX
            }),
            pool: limits.memory_pool.clone(),
        }
    }

    /// Records that a batch of rows went to the client: from now on the query runs under
    /// the streamed time limit (`query.stream_timeout_ms`).
    pub fn note_streamed(&self) {
        self.streamed.set(true);
    }

    /// Work done so far.
    pub fn work(&self) -> u64 {
        self.work.get()
    }

    /// The most memory the query was charged at once.
    pub fn peak(&self) -> u64 {
        self.peak.get().max(self.mem.get())
    }

    /// Counts one unit of work; every [`CHECK_EVERY`] units checks the limits.
    #[inline(always)]
    pub fn tick(&self) -> Result<(), Fail> {
        let w = self.work.get() + 1;
        self.work.set(w);
        if w >= self.next_check.get() {
            return self.check();
        }
        Ok(())
    }

    /// Counts `n` units of work at once.
    #[inline]
    pub fn tick_n(&self, n: u64) -> Result<(), Fail> {
        let w = self.work.get().saturating_add(n);
        self.work.set(w);
        if w >= self.next_check.get() {
            return self.check();
        }
        Ok(())
    }

    /// Checks work, cancellation and time, and schedules the next check.
    #[inline(never)]
    pub fn check(&self) -> Result<(), Fail> {
        let w = self.work.get();
        if w > self.max_work {
            return Err(CypherError::limit(
                Limit::MaxWork,
                format!(
                    "the query did more than {} units of work (nodes scanned, relationships examined, list elements built or visited); narrow the MATCH or add filters (query.max_work)",
                    self.max_work
                ),
            ).into());
        }
        if self.cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
            return Err(CypherError::Cancelled.into());
        }
        let (limit, key) = if self.streamed.get() {
            (self.stream_timeout, "query.stream_timeout_ms")
        } else {
            (self.timeout, "query.timeout_ms")
        };
        if self.started.elapsed() > limit {
            return Err(CypherError::limit(
                Limit::Timeout,
                format!("the query ran longer than {} ms ({key})", limit.as_millis()),
            )
            .into());
        }
        self.next_check.set(
            w.saturating_add(CHECK_EVERY)
                .min(self.max_work.saturating_add(1)),
        );
        Ok(())
    }

    /// Charges `bytes` of memory; over the limit is an error (nothing has been allocated
    /// yet when callers charge before building).
    #[inline]
    pub fn charge(&self, bytes: u64) -> Result<(), Fail> {
        let m = self.mem.get().saturating_add(bytes);
        if m > self.max_mem {
            return Err(self.memory_error(m));
        }
        if m > self.reserved.get() {
            self.reserve(m)?;
        }
        self.mem.set(m);
        Ok(())
    }

    /// Reserves pool bytes until `wanted` are covered (in whole chunks).
    #[cold]
    fn reserve(&self, wanted: u64) -> Result<(), Fail> {
        let Some(share) = &self.pool else {
            return Ok(());
        };
        let have = self.reserved.get();
        let more = wanted.div_ceil(POOL_CHUNK).saturating_mul(POOL_CHUNK) - have;
        match share.pool.reserve(&share.org, more) {
            Ok(()) => {
                self.reserved.set(have + more);
                Ok(())
            }
            Err(why) => {
                let held = match why {
                    Refused::Org => format!(
                        "this org's running queries together hold nearly {} bytes, the most one org may (three quarters of {MEMORY_TOTAL_KEY} = {})",
                        share.pool.org_max(),
                        share.pool.max()
                    ),
                    Refused::Pool => format!(
                        "the server's running queries together hold nearly {} bytes, the most they may ({MEMORY_TOTAL_KEY})",
                        share.pool.max()
                    ),
                };
                Err(CypherError::limit(
                    Limit::MaxMemoryTotal,
                    format!("{held}; this query needed {wanted}; retry shortly"),
                )
                .into())
            }
        }
    }

    #[cold]
    fn memory_error(&self, wanted: u64) -> Fail {
        CypherError::limit(
            Limit::MaxMemory,
            format!(
                "the query needed more than {} bytes of memory (about {} held); build smaller lists and strings, return fewer or smaller rows, or add a LIMIT ({MEMORY_KEY})",
                self.max_mem, wanted
            ),
        )
        .into()
    }

    /// Counts `elements` units of work and charges `bytes`: what building a value costs.
    /// Call it before allocating.
    #[inline]
    pub fn alloc(&self, elements: u64, bytes: u64) -> Result<(), Fail> {
        self.charge(bytes)?;
        self.tick_n(elements)
    }

    /// Gives back `bytes` charged earlier.
    #[inline]
    pub fn release(&self, bytes: u64) {
        let m = self.mem.get();
        self.peak.set(self.peak.get().max(m));
        self.mem.set(m.saturating_sub(bytes));
    }

    /// The memory charged now, to return to with [`Budget::settle`].
    #[inline(always)]
    pub fn mark(&self) -> u64 {
        self.mem.get()
    }

    /// Drops every charge made since `mark` (the temporaries of an expression that is done)
    /// and charges `keep` instead (what its result holds). `keep` must not be more than was
    /// charged since the mark, or be checked by the caller.
    #[inline(always)]
    pub fn settle(&self, mark: u64, keep: u64) {
        let m = self.mem.get();
        if m != mark || keep != 0 {
            self.peak.set(self.peak.get().max(m));
            self.mem.set(mark.saturating_add(keep));
        }
    }

    /// Like [`Budget::settle`], for a `keep` that may be more than was charged since `mark`
    /// (a result that shares a value built elsewhere): over the limit is an error.
    #[inline]
    pub fn keep(&self, mark: u64, keep: u64) -> Result<(), Fail> {
        let m = self.mem.get();
        let want = mark.saturating_add(keep);
        if want == m {
            return Ok(());
        }
        self.peak.set(self.peak.get().max(m));
        if want > self.max_mem {
            return Err(self.memory_error(want));
        }
        if want > self.reserved.get() {
            self.reserve(want)?;
        }
        self.mem.set(want);
        Ok(())
    }

    /// The bytes `v` holds beyond its own slot (string bytes, list elements and what they
    /// hold), counting each visited element as work. A value shared by several holders is
    /// counted for each; the walk stops early once it exceeds the memory limit.
    pub fn heap_bytes(&self, v: &Value<'_>) -> Result<u64, Fail> {
        Ok(match v {
            Value::Null
            | Value::Bool(_)
            | Value::Int(_)
            | Value::Float(_)
            | Value::Str(_)
            | Value::Node(_)
            | Value::Rel(_) => 0,
            Value::Text(s) => s.len() as u64,
            Value::Path(p) => (p.nodes.len() as u64) * 8 + (p.rels.len() as u64) * 4,
            Value::List(items) => {
                self.tick_n(items.len() as u64)?;
                let mut n = (items.len() as u64).saturating_mul(VALUE_BYTES);
                for it in items.iter() {
                    if matches!(
                        it,
                        Value::Text(_) | Value::List(_) | Value::Map(_) | Value::Path(_)
                    ) {
                        n = n.saturating_add(self.heap_bytes(it)?);
                        if n > self.max_mem {
                            break;
                        }
                    }
                }
                n
            }
            Value::Map(entries) => {
                self.tick_n(entries.len() as u64)?;
                let mut n = 0u64;
                for (k, x) in entries.iter() {
                    n = n
                        .saturating_add(VALUE_BYTES + 16 + k.len() as u64)
                        .saturating_add(self.heap_bytes(x)?);
                    if n > self.max_mem {
                        break;
                    }
                }
                n
            }
        })
    }

    /// The bytes a row of values holds: its slots and what they hold.
    pub fn row_bytes(&self, row: &[Value<'_>]) -> Result<u64, Fail> {
        let mut n = (row.len() as u64).saturating_mul(VALUE_BYTES);
        for v in row {
            n = n.saturating_add(self.heap_bytes(v)?);
        }
        Ok(n)
    }
}

impl Drop for Budget<'_> {
    /// The query is over: its reservation goes back to the pool.
    fn drop(&mut self) {
        if let Some(share) = &self.pool {
            share
                .pool
                .give_back(&share.org, self.reserved.get().saturating_sub(POOL_FREE));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_memory: u64, max_work: u64) -> QueryLimits {
        QueryLimits {
            max_memory,
            max_work,
            ..QueryLimits::default()
        }
    }

    #[test]
    fn charges_are_bounded_and_settled() {
        let l = limits(1000, 1_000_000);
        let b = Budget::new(&l, Instant::now(), None);
        b.charge(600).unwrap();
        let mark = b.mark();
        b.charge(300).unwrap();
        let e = b.charge(200).unwrap_err();
        assert!(matches!(
            *e,
            CypherError::LimitExceeded {
                limit: Limit::MaxMemory,
                ..
            }
        ));
        assert!(e.to_string().contains(MEMORY_KEY), "{e}");
        // The failed charge left nothing behind; settling drops the temporaries.
        b.settle(mark, 50);
        assert_eq!(b.mark(), 650);
        b.release(650);
        assert_eq!(b.mark(), 0);
        assert_eq!(b.peak(), 900);
    }

    #[test]
    fn work_and_cancellation_are_checked_in_batches() {
        let l = limits(u64::MAX, 10_000);
        let b = Budget::new(&l, Instant::now(), None);
        for _ in 0..10_000 {
            b.tick().unwrap();
        }
        assert!(b.tick().is_err());
        let flag = AtomicBool::new(false);
        let l = limits(u64::MAX, u64::MAX);
        let b = Budget::new(&l, Instant::now(), Some(&flag));
        b.tick_n(CHECK_EVERY * 3).unwrap();
        flag.store(true, Ordering::Relaxed);
        let mut stopped = None;
        for i in 0..=CHECK_EVERY {
            if let Err(e) = b.tick() {
                stopped = Some((i, e));
                break;
            }
        }
        let (_, e) = stopped.expect("a cancelled budget stops within CHECK_EVERY units");
        assert_eq!(*e, CypherError::Cancelled);
    }

    #[test]
    fn heap_bytes_count_nested_content() {
        let l = limits(u64::MAX, u64::MAX);
        let b = Budget::new(&l, Instant::now(), None);
        let inner = Value::list(vec![Value::Int(1), Value::text("abcd")]);
        let outer = Value::list(vec![inner.clone(), inner, Value::Null]);
        assert_eq!(
            b.heap_bytes(&outer).unwrap(),
            3 * VALUE_BYTES + 2 * (2 * VALUE_BYTES + 4)
        );
        assert_eq!(b.heap_bytes(&Value::Int(3)).unwrap(), 0);
    }
    fn share(pool: &Arc<MemoryPool>, org: &str) -> QueryLimits {
        QueryLimits {
            memory_pool: Some(PoolShare {
                pool: Arc::clone(pool),
                org: Arc::from(org),
            }),
            ..limits(100 * POOL_CHUNK, u64::MAX)
        }
    }

    fn refusal(r: Result<(), Fail>) -> String {
        r.err().map(|f| f.to_string()).unwrap_or_default()
    }

    #[test]
    fn budgets_share_the_pool_fairly_and_give_it_back() {
        // 8 chunks in all; one org may hold 6.
        let pool = Arc::new(MemoryPool::new(8 * POOL_CHUNK));
        let (la, lb, lc) = (share(&pool, "a"), share(&pool, "b"), share(&pool, "c"));
        let a1 = Budget::new(&la, Instant::now(), None);
        let a2 = Budget::new(&la, Instant::now(), None);
        let b1 = Budget::new(&lb, Instant::now(), None);
        // A query's first mebibyte is its own.
        assert!(a1.charge(10).is_ok());
        assert_eq!(pool.held(), 0);
        // Past it, whole chunks are drawn, and charges within them do not ask again.
        assert!(a1.charge(POOL_CHUNK).is_ok());
        assert_eq!(pool.held(), POOL_CHUNK);
        assert!(a1.charge(POOL_CHUNK - 20).is_ok());
        assert_eq!(pool.held(), POOL_CHUNK);
        assert!(a1.charge(4 * POOL_CHUNK).is_ok());
        assert_eq!(pool.held(), 5 * POOL_CHUNK);
        // Org a reaches its three quarters with a second query, and no further.
        assert!(a2.charge(2 * POOL_CHUNK).is_ok());
        assert_eq!(pool.held(), 6 * POOL_CHUNK);
        let over = refusal(a2.charge(POOL_CHUNK));
        assert!(over.contains("max_memory_total"), "{over}");
        assert!(over.contains("this org's"), "{over}");
        // The last quarter is there for org b, then the pool is full.
        assert!(b1.charge(3 * POOL_CHUNK).is_ok());
        assert_eq!(pool.held(), 8 * POOL_CHUNK);
        let over = refusal(b1.charge(POOL_CHUNK));
        assert!(over.contains("the server's running queries"), "{over}");
        assert!(over.contains(MEMORY_TOTAL_KEY), "{over}");
        let m = b1.mark();
        assert!(b1.keep(m, POOL_CHUNK).is_err(), "keep() asks the pool too");
        // A small query runs with the pool full.
        let c1 = Budget::new(&lc, Instant::now(), None);
        assert!(c1.charge(POOL_CHUNK / 2).is_ok());
        // a1 ends: its chunks go back, and b can take them.
        drop(a1);
        assert_eq!(pool.held(), 3 * POOL_CHUNK);
        assert!(b1.charge(POOL_CHUNK).is_ok());
        drop((a2, b1, c1));
        assert_eq!(pool.held(), 0);
        assert!(pool.orgs.lock().is_empty());
    }

    #[test]
    fn without_a_pool_only_the_query_limit_applies() {
        let l = limits(10 * POOL_CHUNK, u64::MAX);
        let b = Budget::new(&l, Instant::now(), None);
        assert!(b.charge(9 * POOL_CHUNK).is_ok());
        let over = b
            .charge(2 * POOL_CHUNK)
            .err()
            .map(|f| f.to_string())
            .unwrap_or_default();
        assert!(over.contains("max_memory"), "{over}");
        assert!(!over.contains("max_memory_total"), "{over}");
    }
}
