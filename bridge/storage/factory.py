"""Build the call store named by ``BRIDGE_DATABASE_URL``.

``open_store`` only builds the store; the caller awaits ``open()`` on it (at start-up, so a
bad URL or an unreachable database fails before the first call) and ``close()`` at shutdown.
"""

from __future__ import annotations

from pathlib import Path

from bridge.errors import ConfigurationError
from bridge.storage.base import CallStore, Instance
from bridge.storage.engines import StoreEngine, postgres_engine, sqlite_engine
from bridge.storage.sql_store import SqlCallStore

_SQLITE_PREFIX = "sqlite:///"
_POSTGRES_SCHEMES = {"postgresql", "postgres", "postgresql+asyncpg"}


def open_store(database_url: str, *, instance: Instance | None = None) -> CallStore:
    """The store for ``database_url``, not yet opened: await ``open()`` on it next.

    ``sqlite:///./bridge.db`` (relative to the working directory), ``sqlite:////abs/path.db``
    (absolute), ``sqlite:///:memory:`` (gone when the process ends) and
    ``postgresql://USER[:PASSWORD]@HOST:PORT/DB`` are understood; anything else raises
    ``ConfigurationError``. ``instance`` is the running bridge that will create calls.
    """
    url = database_url.strip()
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme in _POSTGRES_SCHEMES:
        return postgres_store(url, instance=instance)
    if scheme == "sqlite":
        return sqlite_store(_sqlite_path(url), instance=instance)
    raise ConfigurationError(
        f"BRIDGE_DATABASE_URL: unsupported scheme {scheme or url!r}; "
        "use sqlite:///PATH or postgresql://USER@HOST:PORT/DB"
    )


def sqlite_store(path: str, *, instance: Instance | None = None) -> SqlCallStore:
    """A store in the SQLite file at ``path`` (its folder is created if missing)."""

    def make() -> StoreEngine:
        if path != ":memory:":
            try:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigurationError(f"cannot create the folder for {path!r}: {exc}") from exc
        return sqlite_engine(path)

    return SqlCallStore(make, description=f"sqlite store {path!r}", instance=instance)


def postgres_store(
    url: str, *, instance: Instance | None = None, schema: str | None = None
) -> SqlCallStore:
    """A store in the PostgreSQL database at ``url``; ``schema`` picks a schema other than
    the default search path (several deployments sharing one database)."""
    # Built eagerly so a malformed URL is refused at start-up, not on first use.
    engine = postgres_engine(url, schema=schema)
    where = engine.engine.url
    place = f"{where.host or 'localhost'}:{where.port or 5432}/{where.database}"
    description = f"postgresql store {place}"
    return SqlCallStore(lambda: engine, description=description, instance=instance)


def _sqlite_path(url: str) -> str:
    if not url.startswith(_SQLITE_PREFIX):
        # sqlite://host/... has a host part; a file database has none.
        raise ConfigurationError(
            "BRIDGE_DATABASE_URL: write a SQLite database as sqlite:///PATH "
            "(three slashes, then the path; four slashes for an absolute path)"
        )
    path = url[len(_SQLITE_PREFIX) :]
    if "?" in path or "#" in path:
        raise ConfigurationError(
            "BRIDGE_DATABASE_URL: options after '?' are not supported for SQLite"
        )
    if not path:
        raise ConfigurationError("BRIDGE_DATABASE_URL: sqlite:/// needs a file path")
    return path
