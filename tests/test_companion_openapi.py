"""The companion's OpenAPI schema, tested with schemathesis against the running app (real uvicorn, real SQLite
store with the sample pack): requests generated from the schema, valid and not, on every route. No input may
give a server error, and every answer must be one the schema declares, with the declared content type and body.

The sync routes get a real site key, so generated input reaches past authentication into the checks of the body."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from companion_server import CompanionServer
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from companion_api.settings import Settings
from companion_api.store import open_store
from content.pack import file_sha256, verify_pack

SITE = "demo"
CHECKS = (not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance)


@pytest.fixture(scope="module")
def companion(tmp_path_factory: pytest.TempPathFactory, sample_pack_file: Path) -> Iterator[CompanionServer]:
    tmp = tmp_path_factory.mktemp("companion-openapi")
    store = open_store(str(tmp / "companion.sqlite"))
    store.migrate()
    key = store.enroll_site(SITE)
    pack = verify_pack(sample_pack_file)
    store.put_pack(SITE, file_sha256(sample_pack_file), pack.pack_id, pack.pack_version, sample_pack_file)
    # Rate limits wide open: generated requests come fast, and the limits have their own tests.
    settings_ = Settings(store_url=str(tmp / "companion.sqlite"), data_dir=tmp / "data",
                         base_url="https://visit.example.org", token_burst=1_000_000, sync_burst=1_000_000)
    server = CompanionServer(settings_, store).start()
    server.site_key = key  # type: ignore[attr-defined]
    try:
        yield server
    finally:
        server.stop()
        store.close()


@pytest.fixture(scope="module")
def api_schema(companion: CompanionServer) -> Any:
    return schemathesis.openapi.from_url(f"{companion.url}/openapi.json")


def exercise(operation: Any, headers: dict[str, str]) -> None:
    @given(case=operation.as_strategy())
    @settings(max_examples=30, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
    def each_case(case: Any) -> None:
        response = case.call(headers=headers, timeout=30)
        case.validate_response(response, checks=CHECKS)

    each_case()


def test_every_route_answers_as_its_schema_says(api_schema: Any, companion: CompanionServer) -> None:
    # Each operation's strategy driven by hypothesis directly (schemathesis's pytest plugin does not load under
    # this pytest): the same generation, the same checks.
    tested = []
    for result in api_schema.get_all_operations():
        operation = result.ok()
        headers = {"Authorization": f"Bearer {companion.site_key}"} if operation.path.startswith("/sync/") else {}  # type: ignore[attr-defined]
        exercise(operation, headers)
        tested.append(f"{operation.method.upper()} {operation.path}")
    assert {"POST /sync/v1/batch", "PUT /sync/v1/pack", "GET /a/{site}/{artwork}", "GET /v/{token}",
            "GET /healthz"} <= set(tested)
