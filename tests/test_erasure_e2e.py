""""Forget my visit", end to end, with every piece real: a device's durable outbox, Mosquitto, the hub, the sync
(`museum sync run --once`) and the companion service (`museum companion run`), and a phone's requests.

A kiosk collects a work for a visit and the sync takes it upstream; the visitor's phone opens the take-home page
and forgets the visit. One more event of that visit is still in a second device's outbox (that device was off).
The erasure comes down in the next sync reply: the hub deletes the visit's events and keeps a tombstone, so when
the device comes back and delivers its event, the hub acknowledges it (the device may forget it) and does not
store it. Nothing of the visit is left on the site or upstream, and its page answers like an unknown one."""

from __future__ import annotations

import re
import sqlite3
import urllib.parse
import urllib.request
from http.cookiejar import CookieJar
from pathlib import Path

from harness import HubThread, device_config, start_device, stored_ids
from support import wait_until
from sync_support import CompanionProcess, configure_sync, place_pack, sample_pack_for, sync_once

from broker.site import Site
from broker.upstream_policy import visit_pseudonym
from broker.upstream_sync import pseudonym_key
from bus.device import DeviceClient
from protocol.events import ArtworkCollected, ArtworkViewed
from protocol.ids import new_visit_id, visit_id_for

WAIT_S = 60.0
WORK = "monet-impression-sunrise"


def hub_rows(site: Site, visit_id: str) -> list[tuple[str, str]]:
    with sqlite3.connect(site.hub_database) as db:
        return db.execute("SELECT event_id, type FROM events WHERE visit_id = ?", (visit_id,)).fetchall()


def upstream_rows(companion: CompanionProcess, visit_id: str, pseudonym: str) -> dict[str, int]:
    with sqlite3.connect(companion.store_path) as db:
        return {"take_home": db.execute("SELECT COUNT(*) FROM take_home WHERE visit_id = ?", (visit_id,)).fetchone()[0],
                "analytics": db.execute("SELECT COUNT(*) FROM analytics WHERE visitor = ?", (pseudonym,)).fetchone()[0]}


def forget_from_a_phone(companion: CompanionProcess, token: str) -> int:
    """What the phone does: open the confirmation page, then send its form (with the form's token and cookie)."""
    jar = CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    with opener.open(f"{companion.url}/v/{token}/forget", timeout=30) as page:
        form = page.read().decode()
    match = re.search(r'name="csrf_token" value="([^"]+)"', form)
    assert match, "the confirmation page has no form token"
    body = urllib.parse.urlencode({"csrf_token": match.group(1)}).encode()
    request = urllib.request.Request(f"{companion.url}/v/{token}/forget", data=body, method="POST",
                                     headers={"Origin": companion.url})
    with opener.open(request, timeout=30) as answer:  # follows the 303 to the confirmation
        assert "/v/forgotten" in answer.url
        return answer.status


def test_forget_my_visit_erases_it_everywhere_even_an_event_still_in_an_outbox(site: Site, broker: object,
                                                                              tmp_path: Path) -> None:
    token = new_visit_id()
    visit = visit_id_for(token)
    late_device = DeviceClient(device_config(site, "kiosk-late"))  # off: what it records waits in its outbox
    companion = CompanionProcess(tmp_path / "companion").start()
    try:
        configure_sync(site, companion, companion.enroll(site.site_id))
        place_pack(site, sample_pack_for(site.site_id, tmp_path))
        with HubThread(site):
            kiosk = start_device(site, "kiosk-1")
            try:
                collected = kiosk.record(ArtworkCollected, visit_id=visit, artwork_id=WORK, source="kiosk")
                assert wait_until(lambda: collected.event_id in stored_ids(site), WAIT_S)
            finally:
                kiosk.stop()
            late = late_device.record(ArtworkViewed, visit_id=visit, artwork_id=WORK, source="kiosk",
                                      language="fr")

            sync_once(site)
            status, page = companion.get(f"/v/{token}")
            assert status == 200 and "Impression, soleil levant" in page
            pseudonym_rows = upstream_rows(companion, visit, _pseudonym(site, visit))
            assert pseudonym_rows["take_home"] == 1 and pseudonym_rows["analytics"] == 1

            assert forget_from_a_phone(companion, token) == 200
            sync_once(site)  # the erasure comes down, is applied, and goes back up with the visit's pseudonym
            assert hub_rows(site, visit) == []

            late_device.start()
            try:
                assert late_device.wait_drained(WAIT_S), "the hub never acknowledged the late event"
            finally:
                late_device.stop()
            assert late.event_id not in stored_ids(site) and hub_rows(site, visit) == []
            sync_once(site)

        unknown_status, unknown_page = companion.get(f"/v/{new_visit_id()}")
        status, page = companion.get(f"/v/{token}")
        assert (status, page) == (unknown_status, unknown_page) == (404, unknown_page)
        assert upstream_rows(companion, visit, _pseudonym(site, visit)) == {"take_home": 0, "analytics": 0}
    finally:
        companion.stop()


def _pseudonym(site: Site, visit: str) -> str:
    """The visit's analytics pseudonym, with the site's own key (only the site can compute it)."""
    return visit_pseudonym(visit, pseudonym_key(site.root / "sync" / "pseudonym.key"))
