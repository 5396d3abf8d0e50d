"""Build the call store named by ``BRIDGE_DATABASE_URL``.

``open_store`` only builds the store; the caller awaits ``open()`` on it (at start-up, so a
bad path fails before the first call) and ``close()`` at shutdown.
"""

from __future__ import annotations

from bridge.errors import ConfigurationError
from bridge.storage.base import CallStore
from bridge.storage.sqlite import SqliteCallStore

_SQLITE_PREFIX = "sqlite:///"


def open_store(database_url: str) -> CallStore:
    """The store for ``database_url``, not yet opened: await ``open()`` on it next.

    ``sqlite:///./bridge.db`` (relative to the working directory), ``sqlite:////abs/path.db``
    (absolute) and ``sqlite:///:memory:`` (gone when the process ends) are understood.
    Anything else raises ``ConfigurationError``.
    """
    url = database_url.strip()
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme in {"postgresql", "postgres"} or scheme.startswith("postgresql+"):
        raise ConfigurationError("PostgreSQL support is not available yet; use sqlite:///PATH")
    if scheme == "sqlite":
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
        return SqliteCallStore(path)
    raise ConfigurationError(
        f"BRIDGE_DATABASE_URL: unsupported scheme {scheme or url!r}; "
        "use sqlite:///PATH (PostgreSQL is planned)"
    )
