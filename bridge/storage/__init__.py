"""Where calls are kept: the ``CallStore`` protocol, its values and its backends.

Build the configured store with ``open_store(settings.database_url)``, await ``open()`` on it
at start-up and ``close()`` at shutdown. SQLite and PostgreSQL share one implementation on
SQLAlchemy Core (``sql_store.py``); Alembic migrates the schema when a store opens.
"""

from bridge.storage.base import (
    CallFilter,
    CallRecord,
    CallStore,
    CallSummary,
    Instance,
    InstanceLease,
    NewCall,
    RefusedValueError,
    StoreUnavailableError,
    UnknownCallError,
    format_timestamp,
)
from bridge.storage.factory import open_store, postgres_store, sqlite_store
from bridge.storage.sql_store import SqlCallStore

__all__ = [
    "CallFilter",
    "CallRecord",
    "CallStore",
    "CallSummary",
    "Instance",
    "InstanceLease",
    "NewCall",
    "RefusedValueError",
    "SqlCallStore",
    "StoreUnavailableError",
    "UnknownCallError",
    "format_timestamp",
    "open_store",
    "postgres_store",
    "sqlite_store",
]
