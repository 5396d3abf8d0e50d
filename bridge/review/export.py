"""``bridge calls export`` and ``purge``: the call log as JSON lines or CSV, and retention.

JSON lines carry each call whole, in the record shape of CONTRACT.md, one call per line.
CSV is for spreadsheets: one row per turn, the call's fields repeated on each row (a call
with no turns still gets one row), so a reviewer can filter and sort by any column.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime, timedelta

from bridge.storage.base import CallFilter, CallRecord, CallStore

CSV_COLUMNS = (
    "call_sid",
    "from",
    "to",
    "started_at",
    "ended_at",
    "status",
    "end_reason",
    "provider",
    "model",
    "seq",
    "role",
    "start_ms",
    "end_ms",
    "interrupted",
    "text",
    "full_text",
)

_PAGE = 200
_DURATION = re.compile(r"(\d+)\s*([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_age(text: str) -> timedelta:
    """``30d``, ``12h``, ``2w``, ``90m`` (minutes), ``45s``: a span of time."""
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None or int(match.group(1)) <= 0:
        raise ValueError(f"{text!r} is not a duration; write it like 30d, 12h, 2w or 90m")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def parse_since(text: str, now: datetime) -> datetime:
    """A start time: an ISO date or time (UTC unless it says otherwise), or an age (``7d``)
    counted back from ``now``."""
    try:
        return now - parse_age(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{text!r} is neither a date (2026-11-01, 2026-11-01T09:30) nor an age (7d)"
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


async def records_since(store: CallStore, since: datetime | None) -> AsyncIterator[CallRecord]:
    """Every call started at or after ``since`` (all calls without it), oldest first."""
    sids: list[str] = []
    before = None
    filters = CallFilter(started_from=since)
    while True:
        page = await store.list_calls(limit=_PAGE, before=before, filters=filters)
        sids.extend(call.call_sid for call in page)
        if len(page) < _PAGE:
            break
        before = page[-1].started_at
    for sid in reversed(sids):
        record = await store.get_call(sid)
        if record is not None:  # purged while the export ran
            yield record


def jsonl_line(record: CallRecord) -> str:
    return json.dumps(record.to_json(), ensure_ascii=False, separators=(",", ":")) + "\n"


def csv_header() -> str:
    return _csv_text([CSV_COLUMNS])


def csv_rows(record: CallRecord) -> str:
    call = record.to_json()
    head = [call[name] for name in CSV_COLUMNS[:9]]
    turns = call["turns"] or [{}]
    rows = [
        [
            *head,
            turn.get("seq", ""),
            turn.get("role", ""),
            turn.get("start_ms", ""),
            turn.get("end_ms", ""),
            "" if "interrupted" not in turn else str(turn["interrupted"]).lower(),
            turn.get("text", ""),
            turn.get("full_text", ""),
        ]
        for turn in turns
    ]
    return _csv_text(rows)


def _csv_text(rows: Iterable[Iterable[object]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for row in rows:
        writer.writerow(["" if value is None else value for value in row])
    return buffer.getvalue()
