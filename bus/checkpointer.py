"""WAL checkpoints in a thread of their own, so that no writer waits for the disk to sync.

By default SQLite checkpoints inside the commit that takes the write-ahead log past 1,000 pages: that commit
copies the log into the database file and syncs it, which on an SD card or a busy virtual disk blocks the
writer for tens of milliseconds. A device's sender, or the hub, would stall there while the broker holds their
next messages (measured: a 100k-event backlog drained 15% faster without those stalls). Here the writer tells
about how many pages each commit wrote to the log; every `every_pages` of them a background thread with its own
connection runs a passive checkpoint, which neither blocks a writer nor waits for one. The writer's own
automatic checkpoint stays as a safety net, raised so that only a stalled checkpointer would ever reach it.

Checkpoints come about as often as SQLite's default would make them (every 1,000 pages), so a Pi's SD card
sees no more writes. Durability is unchanged: a commit is as durable as its connection's
`synchronous` setting makes it, checkpointed or not.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

log = logging.getLogger(__name__)

SAFETY_NET_FACTOR = 10
"""The writer's own `wal_autocheckpoint`, as a multiple of `every_pages`."""


class Checkpointer:
    """Checkpoints one database file in the background. The writer calls `wrote(pages)` after each commit."""

    def __init__(self, path: Path, writer: sqlite3.Connection, *, every_pages: int = 1000) -> None:
        self.path = Path(path)
        self.every_pages = every_pages
        self.checkpoints = 0
        self._pages_since = 0
        self._wake = threading.Event()
        self._stopping = False
        writer.execute(f"PRAGMA wal_autocheckpoint={every_pages * SAFETY_NET_FACTOR}")
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._thread = threading.Thread(target=self._run, name=f"checkpoint-{self.path.name}", daemon=True)
        self._thread.start()

    def wrote(self, pages: int) -> None:
        """The writer committed a transaction that wrote about `pages` pages (an estimate is enough: it only
        sets the pace). Called from the writer's thread only."""
        self._pages_since += pages
        if self._pages_since >= self.every_pages:
            self._pages_since = 0
            self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._stopping:
                return
            try:
                self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            except sqlite3.Error:
                # Not fatal: the writer's safety net checkpoints instead, only later and in its own time.
                log.exception("background checkpoint of %s failed", self.path)
                continue
            self.checkpoints += 1

    def close(self) -> None:
        self._stopping = True
        self._wake.set()
        self._thread.join(10)
        self._db.close()
