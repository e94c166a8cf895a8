"""The kiosk never freezes on I/O: with the broker and the pack server both blackholed, a visitor's visit runs
exactly as usual, and only the events wait in the outbox.

The blackholes are permanent, and in place before the kiosk starts: a listening socket whose connections the
kernel completes and nobody ever reads or answers. MQTT's CONNECT never gets a CONNACK and the pack download
never gets an HTTP status. Had any of that I/O run on the UI thread, the frame answering a tap would never come,
so each tap below would time out (tests/support's generous waits), whatever the machine's speed."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from harness import device_config
from support import wait_until

from broker.site import Site
from kiosk.pack_store import InstalledPack, PackStore
from kiosk.runtime import KioskRuntime
from kiosk.settings import KioskSettings
from protocol.messages import ContentAnnouncement

DEVICE = "kiosk-io"


@pytest.fixture
def blackhole() -> Iterator[int]:
    """A port that accepts connections (in the kernel's backlog) and never reads or answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()


def test_a_visit_runs_as_usual_with_the_broker_and_the_pack_server_blackholed(
        site: Site, harness: Any, sample_pack: InstalledPack, sample_pack_file: Path, tmp_path: Path,
        blackhole: int) -> None:
    from kiosk.ui import ui_call

    config = device_config(site, DEVICE).with_broker(host="127.0.0.1", port=blackhole, tls=False, discover=False)
    packs = tmp_path / "packs"
    settings = replace(KioskSettings.from_config(config, site.device_config(DEVICE)), packs_dir=packs)
    store = PackStore(packs)
    store.install(sample_pack_file)
    runtime = KioskRuntime(config, settings, ui_call=ui_call)
    harness.reset(runtime.controller)
    runtime.start()
    try:
        assert harness.run_until(lambda: runtime.controller.view.screen == "attract", 30)
        # A new pack announced, whose server never answers: the pack worker waits on it, the screen does not.
        runtime.updater.offer(ContentAnnouncement(
            pack_id="demo-museum", pack_version="99", sha256="0" * 64, announced_at=datetime.now(UTC),
            url=f"https://127.0.0.1:{blackhole}/packs/demo-museum-99.tar", size=1024))

        controller = runtime.controller
        work = controller.view.museum.artworks_in(controller.view.zone_id)[0] if controller.view.museum else None
        assert work is not None
        steps: list[tuple[str, Any]] = [
            ("attract", lambda view: view.screen == "browse"),
            (f"artwork:{work.artwork_id}", lambda view: view.screen == "detail"),
            ("take_home", lambda view: view.collected == (work.artwork_id,)),
            ("lang:en", lambda view: view.language == "en"),
            ("mode:high_contrast", lambda view: "high_contrast" in view.modes),
            ("my_visit", lambda view: view.screen == "my_visit"),
            ("end_visit_here", lambda view: view.screen == "attract" and view.session_id is None),
        ]
        for target, answered in steps:
            if target == "attract":
                harness.tap((640, 400))
            else:
                harness.tap(target)
            assert harness.run_until(lambda answered=answered: answered(controller.view), 30), target

        recorded = {"kiosk.session_started", "artwork.viewed", "artwork.collected", "visitor.language_changed",
                    "visitor.accessibility_changed", "kiosk.session_ended"}
        # Every event of the visit is committed to the outbox, where it waits for the broker.
        assert wait_until(lambda: runtime.writer.pending == 0 and runtime.device.outbox.pending >= len(recorded),
                          30)
        stats = runtime.device.stats()
        assert not stats.connected and stats.events_acked == 0
        assert runtime.controller.shown_pack is not None
        assert runtime.controller.shown_pack.pack_version == sample_pack.pack_version, "the old pack stays"
    finally:
        runtime.stop(timeout=5)
