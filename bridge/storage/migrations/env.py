"""Alembic's entry point, run by ``bridge.storage.migrate`` on a connection it already holds.

There is no alembic.ini: the bridge migrates its own database at start-up, inside one
transaction that it opened (and locked) itself.
"""

from __future__ import annotations

from alembic import context

from bridge.storage.tables import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    # SQLite cannot ALTER most things in place; batch mode copies the table instead.
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
