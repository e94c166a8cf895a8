"""The sync batch as the companion reads it: `companion_api.model.parse_batch`, its refusals and its limits."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from companion_api.model import (
    MAX_ANALYTICS,
    MAX_ERASURES,
    MAX_FIELDS_CHARS,
    MAX_JOINS,
    MAX_TAKE_HOME,
    AnalyticsRow,
    BatchError,
    ErasureRow,
    JoinRow,
    PackRef,
    TakeHomeRow,
    parse_batch,
)
from protocol.ids import visit_id_for

VISIT = visit_id_for("token-a")
OTHER = visit_id_for("token-b")
UID = "AbCdEfGhIjKlMnOpQrStUvWx"
PSEUDONYM = "pSeUdOnYmPsEuDoNyMpSeUdO"
SHA = "ab" * 32


def good() -> dict[str, Any]:
    return {
        "v": 1, "site_id": "demo",
        "analytics": [[UID, "artwork.viewed", 1, "kiosk-1", "2026-11-25T17:00:00.000Z", PSEUDONYM,
                       {"artwork_id": "mona-lisa", "source": "kiosk", "language": "fr"}],
                      ["ZyXwVuTsRqPoNmLkJiHgFeDc", "occupancy.counted", 2, "station-3", "2026-11-25T17:15:00.000Z",
                       None, {}]],
        "take_home": [[VISIT, "mona-lisa", "collected", "2026-11-25", None],
                      [VISIT, "mona-lisa", "lingered", "2026-11-25", 45]],
        "joins": [[VISIT, OTHER, "2026-11-25"]],
        "erasures": [[OTHER, PSEUDONYM]],
        "events_after": 31, "erasures_after": 7,
        "pack": {"sha256": SHA, "pack_id": "demo-museum", "pack_version": 3},
    }


def test_a_good_batch_parses_to_rows_of_its_site() -> None:
    batch = parse_batch(good())
    assert batch.site_id == "demo"
    assert batch.analytics[0] == AnalyticsRow(UID, "demo", "artwork.viewed", 1, "kiosk-1", "2026-11-25T17:00:00.000Z",
                                              PSEUDONYM, '{"artwork_id":"mona-lisa","source":"kiosk","language":"fr"}')
    assert batch.analytics[1].visitor is None and batch.analytics[1].fields == "{}"
    assert batch.take_home == (TakeHomeRow(VISIT, "mona-lisa", "collected", "demo", "2026-11-25", None),
                               TakeHomeRow(VISIT, "mona-lisa", "lingered", "demo", "2026-11-25", 45.0))
    assert batch.joins == (JoinRow(VISIT, OTHER, "demo", "2026-11-25"),)
    assert batch.erasures == (ErasureRow(OTHER, PSEUDONYM),)
    assert (batch.events_after, batch.erasures_after) == (31, 7)
    assert batch.pack == PackRef(SHA, "demo-museum", 3)


def test_lists_cursors_and_pack_may_be_left_out() -> None:
    batch = parse_batch({"v": 1, "site_id": "demo", "pack": None})
    assert (batch.analytics, batch.take_home, batch.joins, batch.erasures) == ((), (), (), ())
    assert (batch.events_after, batch.erasures_after, batch.pack) == (0, 0, None)


def test_fields_are_stored_as_compact_json_text_a_database_can_hold() -> None:
    body = good()
    body["analytics"][0][6] = {"title": "Élégie", "n": [1, 2.5, None, True]}
    text = parse_batch(body).analytics[0].fields
    assert text == '{"title":"Élégie","n":[1,2.5,null,true]}'
    text.encode("utf-8")  # what SQLite and PostgreSQL store
    # A lone surrogate (which no UTF-8 database takes) and an integer too large for either are refused.
    for bad in ({"title": "Élégie \ud800"}, {"n": 2**70}):
        body["analytics"][0][6] = bad
        with pytest.raises(BatchError, match="analytics\\[0\\]: fields must be plain JSON"):
            parse_batch(body)


def _with(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    body = copy.deepcopy(good())
    target: Any = body
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return body


REFUSED = [
    # (what is changed, the new value, status, words the message holds)
    (("analytics", 1), "not a row", 422, "analytics[1]: must be a list of 7 values"),
    (("analytics", 0), [UID, "artwork.viewed", 1], 422, "analytics[0]: must be a list of 7 values"),
    (("analytics", 0, 0), "short", 422, "analytics[0]: uid must be a digest"),
    (("analytics", 0, 0), 12, 422, "analytics[0]: uid must be a digest"),
    (("analytics", 0, 1), "Artwork.Viewed", 422, "analytics[0]: type must be an event type"),
    (("analytics", 0, 1), "artwork", 422, "analytics[0]: type must be an event type"),
    (("analytics", 0, 1), ["artwork.viewed"], 422, "analytics[0]: type must be an event type"),
    (("analytics", 0, 3), {"kiosk": 1}, 422, "analytics[0]: device_id must be an identifier"),
    (("analytics", 0, 4), ["2026-11-25T17:00:00.000Z"], 422, "analytics[0]: period must be an instant"),
    (("analytics", 0, 5), [UID], 422, "analytics[0]: visitor must be"),
    (("analytics", 0, 2), True, 422, "analytics[0]: schema_version must be a whole number"),
    (("analytics", 0, 2), 0, 422, "analytics[0]: schema_version must be a whole number"),
    (("analytics", 0, 3), "Kiosk 1", 422, "analytics[0]: device_id must be an identifier"),
    (("analytics", 0, 4), "2026-11-25T17:00:00Z", 422, "analytics[0]: period must be an instant"),
    (("analytics", 0, 4), "2026-13-25T17:00:00.000Z", 422, "analytics[0]: period must be an instant"),
    (("analytics", 0, 4), "２026-11-25T17:00:00.000Z", 422, "analytics[0]: period must be an instant"),
    (("analytics", 0, 5), "aa:bb:cc:dd:ee:ff:00:11:22:33", 422, "analytics[0]: visitor must be null or a digest"),
    (("analytics", 0, 6), [1, 2], 422, "analytics[0]: fields must be a JSON object"),
    (("analytics", 0, 6), {"x": float("nan")}, 422, "analytics[0]: fields must be plain JSON"),
    (("analytics", 0, 6), {"x": "y" * MAX_FIELDS_CHARS}, 422, f"longer than {MAX_FIELDS_CHARS} characters"),
    (("take_home", 1), [VISIT, "mona-lisa", "collected", "2026-11-25"], 422, "take_home[1]: must be a list of 5"),
    (("take_home", 0, 0), "not-a-visit", 422, "take_home[0]: visit_id must be a visit id"),
    (("take_home", 0, 1), "../etc", 422, "take_home[0]: artwork_id must be an identifier"),
    (("take_home", 0, 2), "liked", 422, "take_home[0]: kind must be one of collected, opened, lingered"),
    (("take_home", 0, 3), "25/11/2026", 422, "take_home[0]: day must be a date"),
    (("take_home", 0, 3), "2026-02-30T00", 422, "take_home[0]: day must be a date"),
    (("take_home", 0, 4), -1, 422, "take_home[0]: dwell_s must be null or a number of seconds"),
    (("take_home", 0, 4), float("inf"), 422, "take_home[0]: dwell_s must be null or a number of seconds"),
    (("take_home", 0, 4), "45", 422, "take_home[0]: dwell_s must be null or a number of seconds"),
    (("joins", 0), [VISIT, OTHER], 422, "joins[0]: must be a list of 3 values"),
    (("joins", 0, 1), None, 422, "joins[0]: other_visit_id must be a visit id"),
    (("joins", 0, 2), 20261125, 422, "joins[0]: day must be a date"),
    (("erasures", 0), [OTHER], 422, "erasures[0]: must be a list of 2 values"),
    (("erasures", 0, 1), None, 422, "erasures[0]: visitor_pseudonym must be a digest"),
    (("erasures", 0, 0), VISIT + "!", 422, "erasures[0]: visit_id must be a visit id"),
    (("v",), 2, 400, "unsupported batch version"),
    (("site_id",), "Demo Site", 400, "site_id must be an identifier"),
    (("analytics",), {"0": []}, 400, "analytics must be a list of rows"),
    (("events_after",), -1, 400, "events_after must be a whole number"),
    (("erasures_after",), 1.5, 400, "erasures_after must be a whole number"),
    (("pack",), {"sha256": SHA.upper(), "pack_id": "demo-museum", "pack_version": 3}, 400, "pack must be null"),
    (("pack",), {"sha256": SHA, "pack_id": "demo-museum"}, 400, "pack must be null"),
    (("take-home",), [], 400, "unknown field(s) in the batch: take-home"),
]


@pytest.mark.parametrize(("path", "value", "status", "message"), REFUSED,
                         ids=[f"{'.'.join(map(str, p))}={str(v)[:20]}" for p, v, _, _ in REFUSED])
def test_a_bad_part_refuses_the_whole_batch_naming_it(path: tuple[Any, ...], value: Any, status: int,
                                                      message: str) -> None:
    with pytest.raises(BatchError) as caught:
        parse_batch(_with(path, value))
    assert caught.value.status == status
    assert message in caught.value.message, caught.value.message


@pytest.mark.parametrize("body", [None, [], "batch", 1])
def test_a_body_that_is_not_an_object_is_refused(body: Any) -> None:
    with pytest.raises(BatchError) as caught:
        parse_batch(body)
    assert caught.value.status == 400 and "JSON object" in caught.value.message


@pytest.mark.parametrize(("name", "limit", "row"), [
    ("analytics", MAX_ANALYTICS, [UID, "artwork.viewed", 1, "kiosk-1", "2026-11-25T17:00:00.000Z", None, {}]),
    ("take_home", MAX_TAKE_HOME, [VISIT, "mona-lisa", "opened", "2026-11-25", None]),
    ("joins", MAX_JOINS, [VISIT, OTHER, "2026-11-25"]),
    ("erasures", MAX_ERASURES, [VISIT, PSEUDONYM]),
])
def test_row_limits(name: str, limit: int, row: list[Any]) -> None:
    at_limit = {"v": 1, "site_id": "demo", name: [row] * limit}
    assert len(getattr(parse_batch(at_limit), name)) == limit
    with pytest.raises(BatchError) as caught:
        parse_batch({"v": 1, "site_id": "demo", name: [row] * (limit + 1)})
    assert caught.value.status == 413
    assert caught.value.message == (f"{name} has {limit + 1} rows; a batch may hold at most {limit}: "
                                    "send smaller batches")
