"""Bring a database's schema up to date with Alembic, safely from many processes at once.

Every bridge migrates its database when it starts. Several instances may start together
against one PostgreSQL database, or two processes may open one new SQLite file, so the whole
upgrade runs in one transaction under a lock: a PostgreSQL advisory lock, or SQLite's write
lock taken by ``BEGIN IMMEDIATE`` (see ``engines.py``). The second process waits, then finds
the schema current and does nothing.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from bridge.errors import ConfigurationError
from bridge.storage.engines import StoreEngine

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# The revision matching the schema the bridge created by hand before it had migrations.
_LEGACY_REVISION = "0001"
# Any fixed number will do; it only has to be the same in every bridge process.
_ADVISORY_LOCK_KEY = 0x6272_6964


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic ``Config`` for the bridge's migrations, bound to ``connection``."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest revision this bridge knows."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise ConfigurationError("the bridge ships no migrations")
    return head


async def migrate(engine: StoreEngine) -> None:
    """Upgrade the database behind ``engine`` to the newest schema."""
    await engine.run(_upgrade)


def _upgrade(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        # Released when this transaction ends, whether it commits or not.
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_LOCK_KEY})
    config = alembic_config(connection)
    current = MigrationContext.configure(connection).get_current_revision()
    if current is None and _has_legacy_schema(connection):
        command.stamp(config, _LEGACY_REVISION)
    known = {script.revision for script in ScriptDirectory.from_config(config).walk_revisions()}
    current = MigrationContext.configure(connection).get_current_revision()
    if current is not None and current not in known:
        raise ConfigurationError(
            f"the call store's schema is at revision {current}, newer than this bridge"
            f" knows ({head_revision()}): upgrade the bridge"
        )
    try:
        command.upgrade(config, "head")
    except CommandError as exc:
        raise ConfigurationError(f"cannot migrate the call store: {exc}") from exc


def _has_legacy_schema(connection: Connection) -> bool:
    tables = set(inspect(connection).get_table_names())
    return {"calls", "turns", "events"} <= tables
