"""What a phone does on the companion pages, as protocol events stored for the site (they travel down to the hub
in the sync's responses, and count in the site's figures like a kiosk's).

Every `visit_id` here is the stored derivation of a visit token (`protocol.ids.visit_id_for`), never the token.
The take-home rows recorded with an event make the visit page show it at once, before the event has gone down to
the site and come back up as a take-home record (the store keeps one row either way).
"""

from __future__ import annotations

import json
import logging
import threading
from datetime import UTC, datetime
from typing import Protocol

from companion_api.model import JoinRow, TakeHomeRow
from companion_api.store import PhoneEvent
from protocol.codec import encode_event
from protocol.events import ArtworkCollected, ArtworkViewed, Event, VisitJoined, VisitLinked

log = logging.getLogger("companion.views")


class PhoneEventStore(Protocol):
    """The store methods this module needs (`companion_api.store.Store` has them)."""

    def record_phone_event(self, site_id: str, event_json: str, visit_id: str | None, *,
                           take_home: TakeHomeRow | None = None, join: JoinRow | None = None) -> int: ...

    def record_phone_events(self, items: list[PhoneEvent]) -> list[int]: ...


class ViewQueue:
    """Page views, written to the store in groups by one thread: a view costs the page a list append instead of a
    transaction of its own (the artwork page is what a QR code opens, and answers as fast as a trivial endpoint
    would, within bench.companion's ratio).

    What a crash can lose: the views of the last moment (`flush_every_s`), counts only; saves, joins and erasures
    are written before their page answers. Bounded: past `max_pending` waiting views, the page writes its view
    itself, so a stalled store slows pages down instead of growing memory."""

    def __init__(self, store: PhoneEventStore, *, flush_every_s: float = 0.05, max_batch: int = 500,
                 max_pending: int = 5_000) -> None:
        self.store = store
        self.flush_every_s = flush_every_s
        self.max_batch = max_batch
        self.max_pending = max_pending
        self._pending: list[PhoneEvent] = []
        self._lock = threading.Lock()
        self._flushing = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="companion-views", daemon=True)
        self._thread.start()

    def put(self, item: PhoneEvent) -> None:
        with self._lock:
            if not self._closed and len(self._pending) < self.max_pending:
                self._pending.append(item)
                if len(self._pending) >= self.max_batch:
                    self._wake.set()
                return
        self._write([item])

    def flush(self) -> None:
        """Write every view waiting now; when it returns, every view put before the call is stored (a batch
        the thread had taken is written under the same lock)."""
        with self._flushing:
            while True:
                with self._lock:
                    batch, self._pending = self._pending[:self.max_batch], self._pending[self.max_batch:]
                if not batch:
                    return
                self._write(batch)

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._wake.set()
        self._thread.join(timeout=30)
        self.flush()

    def _run(self) -> None:
        while True:
            self._wake.wait(self.flush_every_s)
            self._wake.clear()
            with self._lock:
                closed = self._closed
            self.flush()
            if closed:
                return

    def _write(self, batch: list[PhoneEvent]) -> None:
        try:
            seqs = self.store.record_phone_events(batch)
        except Exception:  # the store is down: these views are lost, the pages went on answering
            log.exception("companion: %d page views could not be stored", len(batch))
            return
        # A view whose phone names a forgotten visit still counts, as a view without a visit.
        again = [_without_visit(item) for item, seq in zip(batch, seqs, strict=True)
                 if seq == 0 and item.visit_id is not None]
        if again:
            self._write(again)


def _without_visit(item: PhoneEvent) -> PhoneEvent:
    event = json.loads(item.event_json)
    event["visit_id"] = None
    return PhoneEvent(item.site_id, json.dumps(event, separators=(",", ":"), ensure_ascii=False), None)


def wire_json(event: Event) -> str:
    """The event as the wire carries it (`protocol.codec`)."""
    return encode_event(event).decode("utf-8")


def record_view(views: ViewQueue, *, device_id: str, site_id: str, artwork_id: str, language: str,
                visit_id: str | None, now: datetime, source: str = "qr") -> None:
    """An artwork's page opened from its QR code (`source` "qr"), or from the take-home page ("companion"); with
    a visit, the work joins the visit's "opened" works. Queued: written with the other views of the moment."""
    event = ArtworkViewed.create(site_id=site_id, device_id=device_id, visit_id=visit_id, occurred_at=now,
                                 artwork_id=artwork_id, source=source, language=language)
    row = None if visit_id is None else TakeHomeRow(visit_id, artwork_id, "opened", site_id, _day(now), None)
    views.put(PhoneEvent(site_id, wire_json(event), visit_id, row))


def record_save(store: PhoneEventStore, *, device_id: str, site_id: str, artwork_id: str, visit_id: str,
                now: datetime) -> None:
    """"Save to my visit": the work is collected, and the visit is linked to the QR code next to it."""
    collected = ArtworkCollected.create(site_id=site_id, device_id=device_id, visit_id=visit_id, occurred_at=now,
                                        artwork_id=artwork_id, source="companion")
    store.record_phone_event(site_id, wire_json(collected), visit_id,
                             take_home=TakeHomeRow(visit_id, artwork_id, "collected", site_id, _day(now), None))
    linked = VisitLinked.create(site_id=site_id, device_id=device_id, visit_id=visit_id, occurred_at=now,
                                channel="artwork_qr", artwork_id=artwork_id)
    store.record_phone_event(site_id, wire_json(linked), visit_id)


def record_join(store: PhoneEventStore, *, device_id: str, site_id: str, visit_id: str,
                other_visit_id: str | None, now: datetime) -> None:
    """The phone opened a kiosk visit's page (its "My visit" QR code) and chose to keep it: the visit is linked
    to the kiosk's QR code and, when the phone held a visit of its own, the two are joined."""
    if other_visit_id is not None and other_visit_id != visit_id:
        joined = VisitJoined.create(site_id=site_id, device_id=device_id, visit_id=visit_id, occurred_at=now,
                                    other_visit_id=other_visit_id)
        store.record_phone_event(site_id, wire_json(joined), visit_id,
                                 join=JoinRow(visit_id, other_visit_id, site_id, _day(now)))
    linked = VisitLinked.create(site_id=site_id, device_id=device_id, visit_id=visit_id, occurred_at=now,
                                channel="kiosk_qr")
    store.record_phone_event(site_id, wire_json(linked), visit_id)


def _day(now: datetime) -> str:
    return now.astimezone(UTC).date().isoformat()
