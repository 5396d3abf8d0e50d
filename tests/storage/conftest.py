"""The storage backends every contract test runs against: SQLite on a file, SQLite in
memory, and PostgreSQL (a fresh schema per test on the local server).

To add a backend, add a ``Backend`` to ``_backends()``; no test names one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from bridge.storage import CallStore, Instance, SqlCallStore, postgres_store, sqlite_store
from tests.conftest import PG_URL


@dataclass
class Backend:
    name: str
    # Builds a store over the same storage each time it is called.
    make: Callable[[], CallStore]
    # Whether a second store from make() sees what the first one wrote.
    durable: bool


def _backends(tmp_path: Path, pg_schema: str | None) -> dict[str, Backend]:
    db = tmp_path / "calls.db"
    backends = {
        "sqlite-file": Backend("sqlite-file", lambda: sqlite_store(str(db)), durable=True),
        "sqlite-memory": Backend("sqlite-memory", lambda: sqlite_store(":memory:"), durable=False),
    }
    if pg_schema is not None:
        backends["postgresql"] = Backend(
            "postgresql", lambda: postgres_store(PG_URL, schema=pg_schema), durable=True
        )
    return backends


@pytest.fixture(params=["sqlite-file", "sqlite-memory", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    # Only the PostgreSQL run asks for (and so creates) a schema on the server.
    schema = request.getfixturevalue("pg_schema") if request.param == "postgresql" else None
    return _backends(tmp_path, schema)[request.param]


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[CallStore]:
    store = backend.make()
    await store.open()
    try:
        yield store
    finally:
        await store.close()


A = Instance("instance-a", "host-1", 101)
B = Instance("instance-b", "host-2", 202)


def as_instance(backend: Backend, instance: Instance) -> SqlCallStore:
    """A store of ``backend`` that acts for ``instance``, as a bridge process's does."""
    store = backend.make()
    assert isinstance(store, SqlCallStore)
    store.instance = instance
    return store


@pytest.fixture
async def pair(backend: Backend) -> AsyncIterator[tuple[SqlCallStore, SqlCallStore]]:
    """Two instances, A and B, over one storage."""
    if not backend.durable:
        pytest.skip(f"{backend.name} cannot be shared by two stores")
    a, b = as_instance(backend, A), as_instance(backend, B)
    await a.open()
    await b.open()
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()
