"""The call store's tables, as SQLAlchemy Core metadata shared by every backend.

These describe the schema at the newest migration; the migrations in ``migrations/versions``
are what actually create and change it, and a test checks the two agree. Times are integers,
microseconds since the Unix epoch in UTC: they sort and compare exactly on SQLite and
PostgreSQL alike and round-trip a ``datetime`` without loss.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

# SQLite makes only an INTEGER PRIMARY KEY an auto-numbered rowid; PostgreSQL gets a bigint.
_EVENT_ID = BigInteger().with_variant(Integer(), "sqlite")

calls = Table(
    "calls",
    metadata,
    Column("call_sid", String(64), primary_key=True),
    Column("stream_sid", String(64), nullable=False),
    Column("from_number", String(128), nullable=False),
    Column("to_number", String(128), nullable=False),
    Column("provider", String(32), nullable=False),
    Column("model", String(128), nullable=False),
    Column("started_at", BigInteger, nullable=False),
    Column("ended_at", BigInteger),
    Column("status", String(16), nullable=False),
    Column("end_reason", String(32)),
    # The instance serving the call: its lease says whether the call can still be live.
    Column("instance_id", String(64)),
    Column("channel", String(16), nullable=False, server_default="twilio"),
    Column("agent", String(64), nullable=False, server_default="default"),
    Column("sip_call_id", String(255)),
    Index("calls_started_at", "started_at"),
    Index("calls_status_instance", "status", "instance_id"),
)

turns = Table(
    "turns",
    metadata,
    Column(
        "call_sid",
        String(64),
        ForeignKey("calls.call_sid", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("seq", Integer, primary_key=True),
    Column("role", String(16), nullable=False),
    Column("text", Text, nullable=False),
    Column("start_ms", Integer, nullable=False),
    Column("end_ms", Integer, nullable=False),
    Column("interrupted", Boolean, nullable=False),
    Column("full_text", Text),
    sqlite_with_rowid=False,
)

events = Table(
    "events",
    metadata,
    Column("id", _EVENT_ID, primary_key=True, autoincrement=True),
    Column(
        "call_sid",
        String(64),
        ForeignKey("calls.call_sid", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("type", String(64), nullable=False),
    Column("at_ms", Integer, nullable=False),
    Column("data", Text, nullable=False),
    Index("events_call", "call_sid", "at_ms", "id"),
    # A retried write of the same event must not add a second row.
    Index("events_once", "call_sid", "at_ms", "type", "data", unique=True),
)

instances = Table(
    "instances",
    metadata,
    Column("instance_id", String(64), primary_key=True),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("renewed_at", BigInteger, nullable=False),
)
