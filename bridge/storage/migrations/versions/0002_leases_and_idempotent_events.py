"""Instance leases, so a crashed instance's calls can be ended, and idempotent events.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.add_column(sa.Column("instance_id", sa.String(64)))
    op.create_index("calls_status_instance", "calls", ["status", "instance_id"])
    op.create_table(
        "instances",
        sa.Column("instance_id", sa.String(64), primary_key=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("renewed_at", sa.BigInteger, nullable=False),
    )
    # Before this revision a retried event write could add a duplicate row: keep the first.
    op.execute(
        "DELETE FROM events WHERE id NOT IN ("
        " SELECT MIN(id) FROM events GROUP BY call_sid, at_ms, type, data)"
    )
    op.create_index("events_once", "events", ["call_sid", "at_ms", "type", "data"], unique=True)
    # The version table of the hand-made schema, now replaced by alembic_version.
    op.execute("DROP TABLE IF EXISTS schema_version")


def downgrade() -> None:
    op.drop_index("events_once", table_name="events")
    op.drop_table("instances")
    op.drop_index("calls_status_instance", table_name="calls")
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("instance_id")
