"""Background sending: ``client.feedback(...)`` puts an item in a bounded queue and returns
at once; a worker thread sends the queue through ``POST /feedback/batch``.

* Every item gets its idempotency key when it is queued, so a batch sent again after a
  lost answer or a server restart stores nothing twice.
* ``flush()`` waits until everything queued so far has been answered; ``shutdown()``
  flushes, then stops the worker. An ``atexit`` hook shuts down at interpreter exit, so
  nothing queued is lost on a clean exit while the server is reachable.
* When the queue is full (``max_queue`` items), the policy decides: ``"block"`` (the
  default) makes the caller wait for room, so nothing is ever dropped; ``"drop"`` drops the
  new item and counts it in ``dropped``; ``"raise"`` raises :class:`~feedgraph.errors.QueueFull`.
* After ``os.fork()`` the child starts with an empty queue and a worker of its own (made
  on its first item); items queued in the parent stay the parent's to send.
* Items the server refuses (400/409) are never retried: they are counted in ``failed`` and
  handed to ``on_error``. When the server cannot be reached the worker keeps the batch and
  tries again, with backoff, until ``shutdown``'s deadline; only then are items given up
  (counted in ``failed`` and logged).
"""

from __future__ import annotations

import atexit
import collections
import json
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Literal

from ._ops import submit_batch
from ._transport import Settings, SyncTransport
from .errors import FeedgraphError, QueueFull, ValidationError
from .models import BatchItemResult, JsonObject

log = logging.getLogger("feedgraph")

#: What to do when the queue is full.
FullPolicy = Literal["block", "drop", "raise"]

#: Called with an item the server refused (or that could not be delivered) and the reason.
ErrorHook = Callable[[JsonObject, FeedgraphError | BatchItemResult], None]


class BackgroundSender:
    """A bounded queue and the worker thread that empties it in batches."""

    def __init__(
        self,
        settings: Settings,
        *,
        max_queue: int = 10_000,
        batch_size: int = 200,
        max_batch_bytes: int = 200_000,
        flush_interval: float = 0.2,
        full_policy: FullPolicy = "block",
        on_error: ErrorHook | None = None,
        shutdown_timeout: float = 30.0,
    ) -> None:
        if max_queue < 1 or batch_size < 1:
            raise ValueError("max_queue and batch_size must be at least 1")
        self._settings = settings
        self.max_queue = max_queue
        self.batch_size = min(batch_size, 1000)
        self.max_batch_bytes = max_batch_bytes
        self.flush_interval = flush_interval
        self.full_policy: FullPolicy = full_policy
        self.on_error = on_error
        self.shutdown_timeout = shutdown_timeout
        self._reset()
        me = weakref.ref(self)

        def at_exit() -> None:
            s = me()
            if s is not None:
                s.shutdown(timeout=s.shutdown_timeout)

        def after_fork() -> None:
            s = me()
            if s is not None:
                s._reset()

        atexit.register(at_exit)
        os.register_at_fork(after_in_child=after_fork)

    def _reset(self) -> None:
        """Fresh state: at start, and in a forked child (whose copy of the parent's worker
        thread does not exist; its counters start at zero too)."""
        #: Items the server stored (new or replayed).
        self.sent = 0
        #: Items refused by the server or given up on.
        self.failed = 0
        #: Items dropped because the queue was full (policy ``"drop"``).
        self.dropped = 0
        #: Items given up because the server could not be reached in time (also in
        #: ``failed``).
        self.undelivered = 0
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._queue: collections.deque[tuple[JsonObject, int]] = collections.deque()
        self._outstanding = 0  # queued or in flight
        self._thread: threading.Thread | None = None
        self._closed = False
        self._flush_now = False
        self._deadline: float | None = None

    # -- the caller's side ------------------------------------------------------------

    def put(self, item: JsonObject) -> None:
        """Queues one item (which must carry its ``idempotency_key``)."""
        size = len(json.dumps(item, separators=(",", ":")))
        with self._cond:
            if self._closed:
                raise FeedgraphError("the background sender is shut down")
            while len(self._queue) >= self.max_queue:
                if self.full_policy == "drop":
                    self.dropped += 1
                    log.warning("feedgraph: background queue full, item dropped")
                    return
                if self.full_policy == "raise":
                    raise QueueFull(f"the background queue holds {self.max_queue} items")
                self._flush_now = True
                self._cond.notify_all()
                self._cond.wait()
                if self._closed:
                    raise FeedgraphError("the background sender is shut down")
            self._queue.append((item, size))
            self._outstanding += 1
            self._start_worker()
            if len(self._queue) >= self.batch_size:
                self._cond.notify_all()

    def pending(self) -> int:
        """Items queued or in flight."""
        with self._lock:
            return self._outstanding

    def flush(self, timeout: float | None = None) -> bool:
        """Sends everything queued so far now, and waits (up to ``timeout`` seconds) until
        it is answered. True when nothing is left."""
        end = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._flush_now = True
            self._cond.notify_all()
            while self._outstanding > 0:
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def shutdown(self, timeout: float | None = None) -> bool:
        """Flushes and stops the worker; later ``put`` calls raise. Items that cannot be
        delivered before ``timeout`` are given up (counted in ``failed`` and
        ``undelivered``). True when every item ever queued reached the server (stored, or
        refused for its content)."""
        with self._cond:
            if self._closed and self._thread is None:
                return self._outstanding == 0 and self.undelivered == 0
            self._closed = True
            self._flush_now = True
            self._deadline = None if timeout is None else time.monotonic() + timeout
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(None if timeout is None else timeout + 5.0)
        with self._cond:
            self._thread = None
            return self._outstanding == 0 and self.undelivered == 0

    # -- the worker -------------------------------------------------------------------

    def _start_worker(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(
                target=self._work, name="feedgraph-sender", daemon=True
            )
            self._thread.start()

    def _take(self) -> list[tuple[JsonObject, int]]:
        """The next batch (called with the lock held)."""
        batch: list[tuple[JsonObject, int]] = []
        size = 0
        while self._queue and len(batch) < self.batch_size:
            item = self._queue[0]
            if batch and size + item[1] > self.max_batch_bytes:
                break
            batch.append(self._queue.popleft())
            size += item[1]
        self._cond.notify_all()  # room for blocked producers
        return batch

    def _work(self) -> None:
        transport = SyncTransport(self._settings)
        try:
            while True:
                with self._cond:
                    if not self._queue:
                        if self._closed:
                            return
                        self._flush_now = False
                        self._cond.wait(self.flush_interval)
                        continue
                    if (
                        len(self._queue) < self.batch_size
                        and not self._flush_now
                        and not self._closed
                    ):
                        # Linger a little so a burst becomes one batch.
                        self._cond.wait(self.flush_interval)
                    batch = self._take()
                if batch:
                    self._deliver(transport, [item for item, _ in batch])
        finally:
            transport.close()

    def _give_up(self, items: list[JsonObject], why: FeedgraphError) -> None:
        log.error("feedgraph: %d items could not be delivered: %s", len(items), why)
        for item in items:
            self._report(item, why)
        with self._cond:
            self.undelivered += len(items)
        self._done(len(items), failed=len(items))

    def _report(self, item: JsonObject, why: FeedgraphError | BatchItemResult) -> None:
        if self.on_error is not None:
            try:
                self.on_error(item, why)
            except Exception:  # a hook's bug must not stop the worker
                log.exception("feedgraph: on_error hook failed")

    def _done(self, n: int, *, failed: int = 0) -> None:
        with self._cond:
            self._outstanding -= n
            self.failed += failed
            self.sent += n - failed
            self._cond.notify_all()

    def _deliver(self, transport: SyncTransport, items: list[JsonObject]) -> None:
        attempt = 0
        while True:
            try:
                result = transport.run(submit_batch(items))
            except ValidationError as e:
                # The whole request was refused (e.g. one item over the body limit): send
                # the items one by one so the good ones get through.
                if len(items) > 1:
                    for item in items:
                        self._deliver(transport, [item])
                    return
                self._give_up(items, e)
                return
            except FeedgraphError as e:
                with self._cond:
                    deadline = self._deadline
                if e.status in (401, 403, 404) or (
                    deadline is not None and time.monotonic() >= deadline
                ):
                    self._give_up(items, e)
                    return
                # Unreachable or unavailable: keep the batch, try again later. Its keys
                # make the repeat safe.
                wait = transport.settings.retry.delay(attempt)
                if deadline is not None:
                    wait = min(wait, max(0.0, deadline - time.monotonic()))
                attempt += 1
                time.sleep(wait)
                continue
            failed = 0
            for r in result.results:
                if not r.ok:
                    failed += 1
                    if 0 <= r.index < len(items):
                        self._report(items[r.index], r)
            self._done(len(items), failed=failed)
            return
