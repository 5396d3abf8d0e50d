"""Every call says which kind of phone leg carried it and which agent served it; a SIP call
keeps its SIP Call-ID.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Every call before this revision came through Twilio and had the one default agent.
    with op.batch_alter_table("calls") as batch:
        batch.add_column(
            sa.Column("channel", sa.String(16), nullable=False, server_default="twilio")
        )
        batch.add_column(
            sa.Column("agent", sa.String(64), nullable=False, server_default="default")
        )
        batch.add_column(sa.Column("sip_call_id", sa.String(255)))


def downgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("sip_call_id")
        batch.drop_column("agent")
        batch.drop_column("channel")
