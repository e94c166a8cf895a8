"""A small real HTTP upstream for the sync's tests: the wire of POST /sync/v1/batch and PUT /sync/v1/pack
(docs: /tmp/brief/design.md, "Wire"), in memory, with faults injected at known points of a request.

It is not the companion service (the lead's end-to-end tests use that one): it keeps every row in dicts keyed as
the companion keys them, so "stored once" is what a dict holds, and it counts what it *received* per uid, so a
test can see that a batch was in fact sent twice and stored once.

Faults (`fail_next`), each consumed by one batch request, in order:
- "401", "429", "500": answered at once, nothing stored ("429" with Retry-After `retry_after`);
- "close_before_store": the body is read, then the connection is closed without an answer, nothing stored;
- "500_after_store": stored, then answered 500;
- "close_after_store": stored, then the connection is closed without an answer;
- "hang_after_store": stored, then the request waits until `release` is set (the client times out first), then
  the connection is closed without an answer.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import threading
from collections import Counter, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MAX_BODY = 16 * 1024 * 1024
MAX_DOWN = 1000


@dataclass
class Received:
    """One batch request as the upstream saw it (before any fault)."""

    analytics: int
    erasures: int
    events_after: int
    erasures_after: int
    pack: Any
    fault: str | None


@dataclass
class SyncUpstream:
    keys: dict[str, str]
    """site key → site_id"""
    port: int = 0
    retry_after: str = "7"
    analytics: dict[str, list[Any]] = field(default_factory=dict)
    received_uids: Counter[str] = field(default_factory=Counter)
    take_home: dict[tuple[str, str, str], list[Any]] = field(default_factory=dict)
    joins: dict[tuple[str, str], list[Any]] = field(default_factory=dict)
    tombstones: set[str] = field(default_factory=set)
    erasure_rows: list[list[str]] = field(default_factory=list)
    down_erasures: list[tuple[int, str, str]] = field(default_factory=list)
    down_events: list[tuple[int, str, Any]] = field(default_factory=list)
    packs: dict[str, str] = field(default_factory=dict)
    """site → sha256 of the pack it sent."""
    pack_puts: int = 0
    requests: list[Received] = field(default_factory=list)
    refused: list[int] = field(default_factory=list)
    """Statuses of the batch requests answered at once with an error (faults, auth)."""
    release: threading.Event = field(default_factory=threading.Event)
    hanging: threading.Event = field(default_factory=threading.Event)
    """Set while a "hang_after_store" request waits."""

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self.faults: deque[str] = deque()
        self._seq = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- control ------------------------------------------------------------------------------------------------

    def start(self) -> str:
        upstream = self

        class Handler(_Handler):
            owner = upstream

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), name="sync-upstream",
                                        daemon=True)
        self._thread.start()
        return self.url

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def fail_next(self, *faults: str) -> None:
        with self.lock:
            self.faults.extend(faults)

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def add_erasure(self, site_id: str, visit_id: str) -> int:
        """As "Forget my visit" would: the visit's rows go, a tombstone stays, the erasure waits for the site."""
        with self.lock:
            self._erase(visit_id, None)
            seq = self._next_seq()
            self.down_erasures.append((seq, site_id, visit_id))
            return seq

    def add_phone_event(self, site_id: str, event: Any) -> int:
        with self.lock:
            seq = self._next_seq()
            self.down_events.append((seq, site_id, event))
            return seq

    def stored_uids(self) -> set[str]:
        with self.lock:
            return set(self.analytics)

    # --- the wire -----------------------------------------------------------------------------------------------

    def _erase(self, visit_id: str, pseudonym: str | None) -> None:
        self.tombstones.add(visit_id)
        for key in [key for key in self.take_home if key[0] == visit_id]:
            del self.take_home[key]
        for key in [key for key in self.joins if visit_id in key]:
            del self.joins[key]
        if pseudonym is not None:
            for uid in [uid for uid, row in self.analytics.items() if row[5] == pseudonym]:
                del self.analytics[uid]

    def store(self, site_id: str, batch: dict[str, Any]) -> dict[str, Any]:
        """Ingest one batch (idempotent) and make the reply, as the companion would."""
        with self.lock:
            stored = Counter[str]()
            duplicates = 0
            for row in batch["analytics"]:
                self.received_uids[row[0]] += 1
                if row[0] in self.analytics:
                    duplicates += 1
                else:
                    self.analytics[row[0]] = row
                    stored["analytics"] += 1
            for row in batch["take_home"]:
                if row[0] in self.tombstones:
                    continue
                key = (row[0], row[1], row[2])
                before = self.take_home.get(key)
                if before is None:
                    self.take_home[key] = list(row)
                    stored["take_home"] += 1
                else:
                    before[3] = min(before[3], row[3])
                    if row[4] is not None:
                        before[4] = row[4] if before[4] is None else max(before[4], row[4])
            for row in batch["joins"]:
                if row[0] in self.tombstones or row[1] in self.tombstones:
                    continue
                if (row[0], row[1]) not in self.joins:
                    self.joins[(row[0], row[1])] = list(row)
                    stored["joins"] += 1
            for visit_id, pseudonym in batch["erasures"]:
                self.erasure_rows.append([visit_id, pseudonym])
                self._erase(visit_id, pseudonym)
                stored["erasures"] += 1
            # What the site says it holds may go from the down queues.
            self.down_events = [item for item in self.down_events
                                if not (item[1] == site_id and item[0] <= batch["events_after"])]
            self.down_erasures = [item for item in self.down_erasures
                                  if not (item[1] == site_id and item[0] <= batch["erasures_after"])]
            erasures = [item for item in self.down_erasures if item[1] == site_id and item[0] > batch["erasures_after"]]
            events = [item for item in self.down_events if item[1] == site_id and item[0] > batch["events_after"]]
            pack = batch.get("pack")
            return {"stored": {kind: stored[kind] for kind in ("analytics", "take_home", "joins", "erasures")},
                    "duplicates": duplicates,
                    "erasures": [{"seq": seq, "visit_id": visit} for seq, _, visit in erasures[:MAX_DOWN]],
                    "events": [{"seq": seq, "event": event} for seq, _, event in events[:MAX_DOWN]],
                    "pack_wanted": bool(pack) and self.packs.get(site_id) != pack.get("sha256"),
                    "more": len(erasures) > MAX_DOWN or len(events) > MAX_DOWN}


class _Handler(BaseHTTPRequestHandler):
    owner: SyncUpstream
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _answer(self, status: int, obj: Any = None, headers: dict[str, str] | None = None) -> None:
        body = b"" if obj is None else json.dumps(obj).encode()
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if obj is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _hang_up(self) -> None:
        """Close the connection with no answer at all."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(2)

    def _site(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        return self.owner.keys.get(auth.removeprefix("Bearer ")) if auth.startswith("Bearer ") else None

    def _body(self) -> bytes | None:
        length = int(self.headers.get("Content-Length", "0"))
        if length > MAX_BODY:
            self._answer(413, {"error": "body too large"})
            self.close_connection = True
            return None
        return self.rfile.read(length)

    def do_POST(self) -> None:
        owner = self.owner
        if self.path != "/sync/v1/batch":
            self._answer(404, {"error": "no such endpoint"})
            return
        raw = self._body()
        if raw is None:
            return
        site = self._site()
        if site is None:
            owner.refused.append(401)
            self._answer(401, {"error": "unknown site key"})
            return
        with owner.lock:
            fault = owner.faults.popleft() if owner.faults else None
        if fault in ("401", "429", "500"):
            owner.refused.append(int(fault))
            self._answer(int(fault), {"error": f"injected {fault}"},
                         {"Retry-After": owner.retry_after} if fault == "429" else None)
            return
        if fault == "close_before_store":
            self._hang_up()
            return
        try:
            batch = json.loads(gzip.decompress(raw))
        except (OSError, ValueError) as error:
            self._answer(400, {"error": f"not gzip JSON: {error}"})
            return
        if batch.get("site_id") != site:
            self._answer(403, {"error": "site_id is not the key's site"})
            return
        owner.requests.append(Received(len(batch["analytics"]), len(batch["erasures"]), batch["events_after"],
                                       batch["erasures_after"], batch.get("pack"), fault))
        reply = owner.store(site, batch)
        if fault == "500_after_store":
            self._answer(500, {"error": "injected 500 after storing"})
        elif fault == "close_after_store":
            self._hang_up()
        elif fault == "hang_after_store":
            owner.hanging.set()
            owner.release.wait(60)
            self._hang_up()
        else:
            self._answer(200, reply)

    def do_PUT(self) -> None:
        owner = self.owner
        if self.path != "/sync/v1/pack":
            self._answer(404, {"error": "no such endpoint"})
            return
        raw = self._body()
        if raw is None:
            return
        site = self._site()
        if site is None:
            self._answer(401, {"error": "unknown site key"})
            return
        sha = hashlib.sha256(raw).hexdigest()
        if sha != self.headers.get("X-Pack-Sha256"):
            self._answer(400, {"error": "X-Pack-Sha256 does not match the body"})
            return
        with owner.lock:
            owner.packs[site] = sha
            owner.pack_puts += 1
        self._answer(204)
