"""Where calls are kept: the ``CallStore`` protocol, its values and its backends.

Build the configured store with ``open_store(settings.database_url)``, await ``open()`` on it
at start-up and ``close()`` at shutdown.
"""

from bridge.storage.base import (
    CallRecord,
    CallStore,
    CallSummary,
    NewCall,
    StoreUnavailableError,
    UnknownCallError,
    format_timestamp,
)
from bridge.storage.factory import open_store
from bridge.storage.sqlite import SqliteCallStore

__all__ = [
    "CallRecord",
    "CallStore",
    "CallSummary",
    "NewCall",
    "SqliteCallStore",
    "StoreUnavailableError",
    "UnknownCallError",
    "format_timestamp",
    "open_store",
]
