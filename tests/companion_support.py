"""The companion store on both engines, for any test module:

    import companion_support
    store_url = companion_support.store_url     # the fixture (an assignment, so ruff sees no shadowed import)
    def test_x(store_url): store = open_store(store_url); ...

`store_url` is parametrized over "sqlite" (a file in tmp_path) and "postgresql" (a fresh database
`companion_test_<random>` on 127.0.0.1:5432, user postgres, dropped afterwards). When no PostgreSQL server answers
the PostgreSQL case is skipped with the reason, except under CI=true, where it fails: CI machines have one.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator

import pytest

from companion_api import pg

SERVER_URL = os.environ.get("COMPANION_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")

__all__ = ["SERVER_URL", "pg_database", "require_postgresql", "store_url"]


def require_postgresql() -> None:
    """Skip the test (fail it under CI=true) when the PostgreSQL server is not reachable."""
    reason = pg.unreachable(SERVER_URL)
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and no PostgreSQL server to test with: {reason}")
    pytest.skip(f"no PostgreSQL server to test with: {reason}")


@contextlib.contextmanager
def pg_database() -> Iterator[str]:
    """A fresh, empty database for one test: yields its URL, drops it at the end (skips or fails the test when
    there is no server, see `require_postgresql`)."""
    require_postgresql()
    name = f"companion_test_{secrets.token_hex(6)}"
    url = pg.create_database(SERVER_URL, name)
    try:
        yield url
    finally:
        pg.drop_database(SERVER_URL, name)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Where a companion store lives: a SQLite path or a PostgreSQL URL (a fresh database)."""
    if request.param == "sqlite":
        yield str(tmp_path_factory.mktemp("companion") / "companion.sqlite")
    else:
        with pg_database() as url:
            yield url
