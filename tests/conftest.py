"""Fixtures shared across the suite: a real PostgreSQL to run the store against.

The server is the local one (127.0.0.1:5432, user postgres, trust auth, database ``test``;
``.ci/run`` starts it when it is down), or whatever ``BRIDGE_TEST_POSTGRES_URL`` names. Each
test gets a schema or a database of its own and drops it afterwards, so tests never see each
other's calls. An unreachable server fails the tests that need it, loudly: skipping would let
a broken PostgreSQL backend pass unnoticed.
"""

from __future__ import annotations

import os
import ssl
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from sqlalchemy.engine import make_url

PG_URL = os.environ.get("BRIDGE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


async def _connect(database: str | None = None) -> asyncpg.Connection:
    url = make_url(PG_URL)
    if database is not None:
        url = url.set(database=database)
    try:
        return await asyncpg.connect(url.render_as_string(hide_password=False), timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.fail(
            f"PostgreSQL at {make_url(PG_URL).render_as_string()} is not reachable ({exc}); "
            "start it with: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
        )


@pytest.fixture
async def pg_schema() -> AsyncIterator[str]:
    """A fresh, empty schema in the test database; dropped with everything in it afterwards."""
    name = "t_" + uuid.uuid4().hex[:16]
    conn = await _connect()
    try:
        await conn.execute(f'CREATE SCHEMA "{name}"')
        yield name
    finally:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        await conn.close()


@pytest.fixture
async def pg_database() -> AsyncIterator[str]:
    """The URL of a fresh, empty database (for bridge processes, which take only a URL)."""
    name = "bridge_t_" + uuid.uuid4().hex[:16]
    conn = await _connect()
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
        yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        # FORCE ends any connection a killed bridge left half-open.
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()


@pytest.fixture
def tls_contexts_built(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Grows by one each time ``ssl.create_default_context`` builds a TLS context (each
    reads the whole trust store, tens of ms of CPU on whatever loop asked)."""
    real = ssl.create_default_context
    built: list[Any] = []

    def counted(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        built.append(args or kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(ssl, "create_default_context", counted)
    return built
