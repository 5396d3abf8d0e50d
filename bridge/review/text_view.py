"""The call log as plain text, for ``bridge calls list`` and ``bridge calls show``.

Both functions return the whole text; the caller prints it. Times are shown in the
machine's local zone unless ``tz`` says otherwise, with the offset so nothing is ambiguous.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator
from datetime import datetime, tzinfo

from bridge.call.records import CallEvent, Role, Turn
from bridge.review.timeline import event_label
from bridge.storage.base import CallRecord, CallSummary

_COLUMNS = ("STARTED", "FROM", "TO", "STATUS", "END REASON", "DURATION", "TURNS", "CALL SID")
_RIGHT_ALIGNED = frozenset({"DURATION", "TURNS"})
_LABELS = {Role.CALLER: "caller: ", Role.AGENT: "agent:  "}


def format_call_list(calls: list[CallSummary], *, tz: tzinfo | None = None) -> str:
    """A table of ``calls``, one line each, in the order given; ``No calls yet.`` if empty."""
    if not calls:
        return "No calls yet."
    rows = [
        (
            _when(call.started_at, tz),
            _clean(call.from_number),
            _clean(call.to_number),
            call.status.value,
            "-" if call.end_reason is None else call.end_reason.value,
            _duration(call.duration_ms),
            str(call.turn_count),
            _clean(call.call_sid),
        )
        for call in calls
    ]
    widths = [max(len(column), *(len(row[i]) for row in rows)) for i, column in enumerate(_COLUMNS)]
    lines = [_table_line(_COLUMNS, widths)]
    lines.extend(_table_line(row, widths) for row in rows)
    return "\n".join(lines)


def format_call(record: CallRecord, *, tz: tzinfo | None = None) -> str:
    """One call: a header, then the conversation with events inline in time order."""
    if record.ended_at is None:
        ended = "- (still in progress)"
    else:
        ended = f"{_when(record.ended_at, tz)} ({_duration(record.duration_ms)})"
    status = record.status.value
    if record.end_reason is not None:
        status += f", {record.end_reason.value}"
    lines = [
        f"Call {_clean(record.call_sid)}",
        f"  from     {_clean(record.from_number)}",
        f"  to       {_clean(record.to_number)}",
        f"  agent    {_clean(record.agent)}",
        f"  model    {_clean(record.provider)} / {_clean(record.model)}",
        f"  stream   {_clean(record.stream_sid)}",
        f"  started  {_when(record.started_at, tz)}",
        f"  ended    {ended}",
        f"  status   {status}",
        f"  turns    {len(record.turns)}, events {len(record.events)}",
        "",
    ]
    conversation = list(_conversation(record.turns, record.events))
    lines.extend(conversation or ["(nothing was said)"])
    return "\n".join(lines)


def _conversation(turns: list[Turn], events: list[CallEvent]) -> Iterator[str]:
    # Turns keep their seq order (the order of the conversation); each event goes in before
    # the first turn that starts at or after it, so "-- barge-in" precedes the caller's words.
    pending = sorted(events, key=lambda event: event.at_ms)
    index = 0
    for turn in turns:
        while index < len(pending) and pending[index].at_ms <= turn.start_ms:
            yield _event_line(pending[index])
            index += 1
        yield from _turn_lines(turn)
    for event in pending[index:]:
        yield _event_line(event)


def _turn_lines(turn: Turn) -> Iterator[str]:
    prefix = f"{_stamp(turn.start_ms)} {_LABELS[turn.role]}"
    indent = " " * len(prefix)
    body = _clean(turn.text, keep_newlines=True).splitlines() or [""]
    if turn.interrupted:
        said = "" if turn.full_text is None else _clean(turn.full_text)
        note = f"(cut off; the model had said: {said})" if said else "(cut off)"
        if body == [""]:
            body = [note]
        else:
            body.append(note)
    yield prefix + body[0]
    for line in body[1:]:
        yield indent + line


def _event_line(event: CallEvent) -> str:
    if event.type == "dtmf" and "digit" in event.data:
        what = f"keypress {_clean(str(event.data['digit']))}"
    elif event.type in {"tool_call", "transfer"}:
        # Worded as on the call page, so a row reads the same wherever it is looked up.
        what = _clean(event_label(event))
    else:
        what = _clean(event.type.replace("_", "-"))
        details = " ".join(f"{_clean(key)}={_clean(str(v))}" for key, v in event.data.items())
        if details:
            what += " " + details
    return f"{_stamp(event.at_ms)} -- {what}"


def _stamp(ms: int) -> str:
    return f"[{ms / 1000:6.2f}s]"


def _when(value: datetime, tz: tzinfo | None) -> str:
    return value.astimezone(tz).isoformat(sep=" ", timespec="seconds")


def _duration(ms: int | None) -> str:
    if ms is None:
        return "live"
    seconds = max(ms, 0) // 1000
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{seconds:02d}s"
    if minutes:
        return f"{minutes}m{seconds:02d}s"
    return f"{seconds}s"


def _table_line(cells: tuple[str, ...], widths: list[int]) -> str:
    parts = [
        cell.rjust(width) if column in _RIGHT_ALIGNED else cell.ljust(width)
        for cell, width, column in zip(cells, widths, _COLUMNS, strict=True)
    ]
    return "  ".join(parts).rstrip()


def _clean(text: str, *, keep_newlines: bool = False) -> str:
    # Transcripts and caller IDs come from outside: never let them drive the terminal
    # (escape sequences, carriage returns that overwrite a line).
    out = []
    for char in text:
        if char == "\n" and keep_newlines:
            out.append(char)
        elif char in "\t\n\r":
            out.append(" ")
        elif unicodedata.category(char) in {"Cc", "Cf"} and char != "\u200d":
            # Cf covers the bidi overrides that can make text read backwards; the
            # zero-width joiner stays, emoji need it.
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return "".join(out)
