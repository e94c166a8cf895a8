"""bench.companion at tiny sizes, so that a broken benchmark shows in the suite rather than in CI's bench step:
every measure runs end to end (the companion in a process of its own, the real sync client draining a hub, the
PostgreSQL measure when a server answers) and the JSON line carries every key the issue names."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from companion_support import require_postgresql

from bench import companion
from broker.upstream_policy import new_pseudonym_key
from content.sample import load_sample_museum

TINY = companion.Sizes(ingest_rows=1_200, batch_rows=500, ingest_trials=1, page_requests=60, page_rounds=1,
                       connections=2, backlog_events=3_000)
KEYS = {"ingest_per_s_sqlite", "executemany_per_s", "ingest_ratio_sqlite", "ingest_per_s_pg", "copy_per_s",
        "ingest_ratio_pg", "artwork_page_per_s", "trivial_json_per_s", "artwork_page_ratio", "backlog_1m_s",
        "targets_met"}


def test_the_records_are_a_realistic_mix_and_ingest_as_a_request_does(tmp_path: Path) -> None:
    museum = load_sample_museum()
    records = companion.sample_records(museum, kiosk_sessions=40, gateway_visitors=20)
    types = Counter(record.type for record in records)
    assert {"artwork.viewed", "artwork.collected", "proximity.left", "occupancy.counted", "visit.joined",
            "kiosk.session_started"} <= types.keys()

    rows = companion.analytics_wire_rows(records, new_pseudonym_key(), 1_200)
    assert len({row[0] for row in rows}) == 1_200, "every row has its own uid"
    bodies = companion.batch_bodies(museum.site_id, rows, 500)
    assert [len(companion.request_path(body).analytics) for body in bodies] == [500, 500, 200]

    figures = companion.measure_sqlite_ingest(tmp_path, museum.site_id, bodies, trials=1)
    assert figures.rows == 1_200 and figures.batches == 3
    assert figures.ours_per_s > 0 and figures.baseline_per_s > 0


def test_the_hub_is_filled_with_distinct_events_the_policy_accounts_for(tmp_path: Path) -> None:
    museum = load_sample_museum()
    records = companion.sample_records(museum, kiosk_sessions=30, gateway_visitors=10)
    count = len(records) * 2 + 7  # two whole copies of the day and a few events of a third
    fill = companion.fill_hub(tmp_path / "hub.sqlite", records, count, new_pseudonym_key())
    import sqlite3

    with sqlite3.connect(tmp_path / "hub.sqlite") as conn:
        stored, ids, stamps = conn.execute(
            "SELECT COUNT(*), COUNT(DISTINCT event_id), COUNT(DISTINCT received_at) FROM events").fetchone()
        order = [row[0] for row in conn.execute("SELECT event_id FROM events ORDER BY received_at, event_id")]
    assert fill.events == stored == ids == count
    assert stamps == -(-count // companion.ROWS_PER_COMMIT)
    assert order == sorted(order), "event ids grow with arrival, as UUIDv7s do"
    assert 0 < fill.analytics <= count and 0 < fill.take_home < fill.analytics


def test_a_tiny_run_measures_everything_and_prints_one_json_line(capsys: pytest.CaptureFixture[str]) -> None:
    require_postgresql()  # the PostgreSQL measure too (skipped here without a server, failed under CI=true)

    figures = companion.run(TINY)

    assert figures.keys() >= KEYS
    assert all(figures[key] > 0 for key in KEYS - {"targets_met", "backlog_1m_s"})
    assert figures["backlog_events"] == TINY.backlog_events and figures["backlog_s"] > 0
    assert figures["backlog_1m_s"] is None and figures["targets_met"] is False, "3,000 events say nothing of 1 M"
    out = capsys.readouterr().out
    assert "backlog: 3,000 events" in out and "artwork page" in out


def test_without_postgresql_the_figures_say_why_and_ci_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(companion, "PG_SERVER", "postgresql://postgres@127.0.0.1:1/postgres")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(SystemExit, match="CI=true and no PostgreSQL server"):
        companion.run(TINY)

    lite = companion.IngestFigures(60.0, 100.0, 1_000, 2, 1)
    pages = companion.PageFigures(600.0, 1_000.0, 60, 1, 2, 26, 4_000)
    backlog = companion.BacklogFigures(1_000_000, 50.0, 900_000, 300_000, 5.0, 5_000)
    figures = companion.figures_of(lite, None, "PostgreSQL at 127.0.0.1:1: refused", pages, backlog, 100)
    assert figures["ingest_per_s_pg"] is None and figures["copy_per_s"] is None and figures["ingest_ratio_pg"] is None
    assert figures["pg_skipped"].startswith("PostgreSQL")
    assert figures["targets_met"] is True
    json.dumps(figures)
    slow = companion.BacklogFigures(1_000_000, 61.0, 900_000, 300_000, 5.0, 5_000)
    assert companion.figures_of(lite, None, "away", pages, slow, 100)["targets_met"] is False
