"""Events off the UI thread: `record()` creates the event and queues it; a writer thread commits to the outbox.

`DeviceClient.emit` is an SQLite commit, tens of milliseconds on a Pi's SD card: a tap must not wait for it in
the frame that answers it. The writer commits whatever has queued since its last commit in one `emit_many`
(one transaction), so a slow disk means fewer, larger commits, not a growing delay.

An event accepted by `record()` is never dropped: a failed commit (disk full, I/O error) is logged and retried
with a growing pause until it succeeds or `stop()` gives up at its deadline (then the count left is logged as an
error). The queue is bounded: past MAX_QUEUED events `record()` blocks, which only a dead disk can cause.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from protocol.events import Event

log = logging.getLogger(__name__)

E = TypeVar("E", bound=Event)

MAX_QUEUED = 10_000
MAX_BATCH = 1_000
"""Events per commit: bounds one transaction (and how long the outbox's lock is held) after a long stall."""
RETRY_FIRST_S = 0.05
RETRY_MAX_S = 5.0


class EventSink(Protocol):
    site_id: str
    device_id: str

    def emit_many(self, events: list[Event]) -> None: ...


class EventWriter:
    def __init__(self, device: EventSink, *, max_queued: int = MAX_QUEUED,
                 on_recorded: Callable[[Event], None] | None = None) -> None:
        """`on_recorded(event)` is called in `record()`'s thread for every event accepted (tests, benchmark)."""
        self._device = device
        self._max_queued = max_queued
        self._on_recorded = on_recorded
        self._queue: deque[Event] = deque()
        self._in_commit = 0  # events taken from the queue and being committed
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._stopping = False
        self._closed = False
        self._thread: threading.Thread | None = None
        self.committed = 0
        self.failures = 0
        self.last_error: str | None = None

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("already started")
        self._thread = threading.Thread(target=self._run, name="kiosk-event-writer", daemon=True)
        self._thread.start()

    # --- any thread ---------------------------------------------------------------------------------------

    def record(self, event_class: type[E], visit_id: str | None = None, **fields: Any) -> E:
        """Create an event of this device, happening now, and queue it for the outbox. Raises the event's
        ContractError for bad fields, RuntimeError once stopped."""
        event = event_class.create(site_id=self._device.site_id, device_id=self._device.device_id,
                                   visit_id=visit_id, **fields)
        with self._changed:
            while len(self._queue) >= self._max_queued and not self._closed:
                self._changed.wait()
            if self._closed:
                raise RuntimeError(f"event writer stopped: {event.type} {event.event_id} not recorded")
            self._queue.append(event)
            self._changed.notify_all()
        if self._on_recorded is not None:
            self._on_recorded(event)
        return event

    @property
    def pending(self) -> int:
        """Events recorded and not yet committed to the outbox."""
        with self._lock:
            return len(self._queue) + self._in_commit

    def flush(self, timeout: float) -> bool:
        """Wait until every event recorded so far is in the outbox; False if that took longer than timeout."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._queue or self._in_commit:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
        return True

    def stop(self, timeout: float = 10.0) -> bool:
        """Refuse new events, commit those queued (retrying until `timeout`), stop the thread. False if some
        could not be committed (they are lost with the process: logged as an error)."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        drained = self.flush(timeout) if self._thread is not None else not self._queue
        with self._changed:
            self._stopping = True
            left = len(self._queue) + self._in_commit
            self._changed.notify_all()
        if self._thread is not None:
            self._thread.join(max(1.0, timeout))
        if not drained:
            log.error("%d kiosk events could not be written to the outbox (%s) and are lost", left, self.last_error)
        return drained

    # --- the writer thread --------------------------------------------------------------------------------

    def _run(self) -> None:
        delay = RETRY_FIRST_S
        while True:
            with self._changed:
                while not self._queue and not self._stopping:
                    self._changed.wait()
                if self._stopping:
                    return
                batch = [self._queue.popleft() for _ in range(min(len(self._queue), MAX_BATCH))]
                self._in_commit = len(batch)
            try:
                self._commit(batch)
            except (sqlite3.Error, OSError) as error:
                # The disk (full, failing, read-only): nothing the events did. Put them back, in order, and retry.
                self.failures += 1
                if self.last_error is None or self.failures in (2, 10) or self.failures % 100 == 0:
                    log.warning("cannot write %d kiosk events to the outbox (%s); retrying (failure %d)",
                                len(batch), error, self.failures)
                self.last_error = str(error)
                with self._changed:
                    self._queue.extendleft(reversed(batch))
                    self._in_commit = 0
                    self._changed.notify_all()
                    self._pause(delay)
                delay = min(delay * 2, RETRY_MAX_S)
                continue
            except Exception:
                log.exception("kiosk writer: unexpected failure writing events; retrying one by one")
                self._commit_one_by_one(batch)
            if self.last_error is not None:
                log.warning("kiosk events are written to the outbox again")
                self.last_error = None
            delay = RETRY_FIRST_S
            with self._changed:
                self._in_commit = 0
                self.committed += len(batch)
                self._changed.notify_all()

    def _pause(self, delay: float) -> None:
        """Wait before a retry, the lock held by the caller. Events recorded meanwhile do not cut it short (a
        storm of taps on a full disk must not become a storm of failing commits); stopping shortens it, so the
        last retries fit in stop()'s deadline."""
        retry_at = time.monotonic() + (min(delay, 0.2) if self._closed else delay)
        while not self._stopping and (left := retry_at - time.monotonic()) > 0:
            self._changed.wait(left)

    def _commit(self, batch: list[Event]) -> None:
        self._device.emit_many(batch)

    def _commit_one_by_one(self, batch: list[Event]) -> None:
        """Not the disk: an event the outbox refuses (a bug). It would block every later event forever, so it
        alone is dropped, loudly; the others are committed (disk errors are retried as usual)."""
        for event in batch:
            delay = RETRY_FIRST_S
            while True:
                try:
                    self._device.emit_many([event])
                    break
                except (sqlite3.Error, OSError) as error:
                    self.last_error = str(error)
                    with self._changed:
                        if self._stopping:
                            left = len(batch) - batch.index(event)
                            log.error("%d kiosk events could not be written to the outbox (%s) and are lost",
                                      left, error)
                            return
                        self._pause(delay)
                    delay = min(delay * 2, RETRY_MAX_S)
                except Exception:
                    log.exception("dropping kiosk event %s (%s): the outbox refuses it", event.event_id, event.type)
                    break


__all__ = ["MAX_QUEUED", "EventSink", "EventWriter"]
