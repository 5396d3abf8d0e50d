"""Sample calls and turns for the storage tests."""

from __future__ import annotations

from datetime import UTC, datetime

from bridge.call.records import Role, Turn
from bridge.storage import NewCall

T0 = datetime(2026, 11, 21, 10, 0, 0, tzinfo=UTC)


def new_call(sid: str = "CA0001", started_at: datetime = T0, **overrides: str) -> NewCall:
    fields = {
        "stream_sid": "MZ" + sid[2:],
        "from_number": "+15551230000",
        "to_number": "+15557650000",
        "provider": "openai",
        "model": "gpt-realtime",
    }
    fields.update(overrides)
    return NewCall(call_sid=sid, started_at=started_at, **fields)


def caller(seq: int, text: str, start: int, end: int) -> Turn:
    return Turn(seq=seq, role=Role.CALLER, text=text, start_ms=start, end_ms=end)


def agent(seq: int, text: str, start: int, end: int, full_text: str | None = None) -> Turn:
    return Turn(
        seq=seq,
        role=Role.AGENT,
        text=text,
        start_ms=start,
        end_ms=end,
        interrupted=full_text is not None,
        full_text=full_text,
    )
