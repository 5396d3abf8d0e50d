"""What the call pages show, worked out from stored calls: no HTTP, no templates, no clock.

``build_timeline(record)`` turns one call into rows for the conversation view; the small
formatters (``format_offset``, ``format_duration``, ``format_started``) and the label tables
are shared by the list page. Templates only lay out what this module decided.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bridge.call.records import CallEvent, CallStatus, EndReason, Role, Turn
from bridge.storage.base import CallRecord

NOT_HEARD = "not heard — caller interrupted"
MODEL_SAID = "model said"

#: How the call reached the bridge, as the pages name it (the record's ``channel``).
CHANNEL_LABELS = {"twilio": "Twilio", "sip": "SIP", "openai-sip": "OpenAI SIP"}

STATUS_LABELS = {
    CallStatus.IN_PROGRESS: "in progress",
    CallStatus.COMPLETED: "completed",
    CallStatus.FAILED: "failed",
}

END_REASON_LABELS = {
    EndReason.CALLER_HANGUP: "caller hung up",
    EndReason.AGENT_HANGUP: "agent hung up",
    EndReason.TRANSFERRED: "transferred to a person",
    EndReason.TIMEOUT: "timed out",
    EndReason.PROVIDER_ERROR: "model provider error",
    EndReason.BRIDGE_SHUTDOWN: "bridge shut down",
    EndReason.UNKNOWN: "unknown (found unfinished after a restart)",
}

_EVENT_LABELS = {
    "barge_in": "caller talked over the agent",
    "hangup": "hang-up",
    "mark": "mark",
}

_SPACES = re.compile(r"\s+")

#: A tool call's arguments come from the model and can be long (a whole note, a list of
#: items): the row shows the first few, each cut short, and the JSON API has them in full.
ARGUMENT_CHARS = 60
ARGUMENTS_SHOWN = 6


@dataclass(frozen=True, slots=True)
class TurnRow:
    """One utterance. ``unheard`` is the part of an interrupted agent turn the caller never
    heard (shown greyed under ``unheard_label``); ``gap`` says whether a space separates it
    from ``text`` (no space when the cut fell inside a word). ``latency_ms`` is how long the
    agent took to start after the caller stopped, for agent turns that answer a caller turn."""

    role: Role
    at: str
    start_ms: int
    text: str
    interrupted: bool = False
    unheard: str = ""
    unheard_label: str = ""
    gap: bool = False
    latency_ms: int | None = None

    @property
    def kind(self) -> str:
        return "turn"


@dataclass(frozen=True, slots=True)
class EventRow:
    """Something besides speech, shown as a small marker at its time."""

    type: str
    at: str
    at_ms: int
    label: str
    failed: bool = False

    @property
    def kind(self) -> str:
        return "event"


Row = TurnRow | EventRow


def build_timeline(record: CallRecord) -> list[Row]:
    """The conversation in time order, events inline; ties keep turns in ``seq`` order and
    put an event before the turn that starts with it (a barge-in precedes the caller's words).
    """
    keyed: list[tuple[int, int, int, Turn | CallEvent]] = []
    for index, event in enumerate(record.events):
        keyed.append((event.at_ms, 0, index, event))
    for turn in record.turns:
        keyed.append((turn.start_ms, 1, turn.seq, turn))
    keyed.sort(key=lambda item: item[:3])

    rows: list[Row] = []
    previous: Turn | None = None
    for _, _, _, item in keyed:
        if isinstance(item, CallEvent):
            rows.append(_event_row(item))
            continue
        rows.append(_turn_row(item, previous))
        previous = item
    return rows


def split_heard(text: str, full_text: str | None) -> tuple[str, str, str, bool]:
    """``(heard, unheard, label, gap)`` for an interrupted agent turn.

    When the model's full text starts with what was heard (spaces normalised), the unheard
    part is the rest; otherwise the transcripts disagree and the whole full text is shown as
    what the model said.
    """
    heard = normalise_spaces(text)
    if full_text is None:
        return heard, "", "", False
    full = normalise_spaces(full_text)
    if full.startswith(heard):
        rest = full[len(heard) :]
        gap = bool(heard) and rest.startswith(" ")
        return heard, rest.strip(), NOT_HEARD, gap
    return heard, full, MODEL_SAID, bool(heard)


def normalise_spaces(text: str) -> str:
    """Runs of whitespace (newlines included) as one space, none at either end."""
    return _SPACES.sub(" ", text).strip()


def response_latency_ms(turn: Turn, previous: Turn | None) -> int | None:
    """Agent start minus the end of the caller turn just before it; ``None`` when the agent
    is not answering the caller, or when the turns overlap (the agent started first)."""
    if turn.role is not Role.AGENT or previous is None or previous.role is not Role.CALLER:
        return None
    latency = turn.start_ms - previous.end_ms
    return latency if latency >= 0 else None


def format_offset(ms: int) -> str:
    """Time from the start of the stream as ``m:ss.s`` (``0:03.1``; ``62:05.0``)."""
    tenths = round(max(ms, 0) / 100)
    minutes, tenths = divmod(tenths, 600)
    return f"{minutes}:{tenths // 10:02d}.{tenths % 10}"


def format_duration(ms: int | None) -> str:
    """A call's length as ``m:ss`` (``h:mm:ss`` past the hour); ``live`` while in progress."""
    if ms is None:
        return "live"
    seconds = max(ms, 0) // 1000
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}:{minutes:02d}:{seconds:02d}"
    return f"{minutes}:{seconds:02d}"


def format_started(value: datetime) -> str:
    """``2026-11-21 10:00:05``, in UTC (the pages say so once rather than on every row)."""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def event_label(event: CallEvent) -> str:
    """A short human label: ``pressed 1 (DTMF)``, ``caller talked over the agent``,
    ``called check_availability (date: 2026-12-24) — ok, 120 ms``, …"""
    if event.type == "dtmf":
        digit = event.data.get("digit")
        return "keypad" if digit is None else f"pressed {digit} (DTMF)"
    if event.type == "tool_call":
        return tool_call_label(event.data)
    if event.type == "transfer":
        target = event.data.get("target")
        return "transferred" if target is None else f"transferred to {target}"
    if event.type in _MODEL_EVENTS:
        return model_event_label(event.type, event.data)
    label = _EVENT_LABELS.get(event.type, event.type.replace("_", " "))
    details = ", ".join(f"{key} {value}" for key, value in event.data.items())
    return f"{label}: {details}" if details else label


_MODEL_EVENTS = frozenset({"reconnect", "provider_fallback"})
_RECONNECT_WHY = {
    "dropped": "its connection dropped",
    "expired": "its session expired",
    "rollover": "ahead of its session limit",
    "limit": "its provider was over a limit",
    "refused": "its provider refused the session",
}


def model_event_label(kind: str, data: dict[str, Any]) -> str:
    """``model session replaced (its connection dropped) — openai``; ``moved from openai to
    inworld``: how the model side of the call changed under it."""
    if kind == "provider_fallback":
        return f"moved from {_short(data.get('from'))} to {_short(data.get('to'))}"
    why = _RECONNECT_WHY.get(str(data.get("reason")), _short(data.get("reason")))
    return f"model session replaced ({why}) — {_short(data.get('provider'))}"


def tool_call_label(data: dict[str, Any]) -> str:
    """``called check_availability (date: 2026-12-24, people: 4) — ok, 120 ms``; a tool
    that failed or timed out reads ``— failed, 5003 ms``. Fields missing from an older or
    partial record are left out rather than guessed."""
    label = f"called {data.get('name') or 'a tool'}"
    arguments = format_arguments(data.get("arguments"))
    if arguments:
        label += f" ({arguments})"
    outcome = []
    ok = data.get("ok")
    if isinstance(ok, bool):
        outcome.append("ok" if ok else "failed")
    ms = data.get("ms")
    if isinstance(ms, int) and not isinstance(ms, bool):
        outcome.append(f"{ms} ms")
    return f"{label} — {', '.join(outcome)}" if outcome else label


def format_arguments(arguments: object) -> str:
    """A tool call's arguments on one short line: ``date: 2026-12-24, people: 4``.

    Strings are shown as they are, anything else as compact JSON; each key and value is cut
    to ``ARGUMENT_CHARS`` and only the first ``ARGUMENTS_SHOWN`` arguments are listed.
    """
    if arguments is None or arguments == {}:
        return ""
    if not isinstance(arguments, dict):
        return _short(arguments)
    shown = [
        f"{_short(key)}: {_short(value)}"
        for key, value in list(arguments.items())[:ARGUMENTS_SHOWN]
    ]
    if len(arguments) > ARGUMENTS_SHOWN:
        shown.append("…")
    return ", ".join(shown)


def _short(value: object) -> str:
    if isinstance(value, str):
        text = value
    else:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    text = normalise_spaces(text)
    if len(text) > ARGUMENT_CHARS:
        return text[: ARGUMENT_CHARS - 1].rstrip() + "…"
    return text


def end_label(record: CallRecord) -> str:
    """The line that closes the conversation."""
    if record.status is CallStatus.IN_PROGRESS:
        return "Call still in progress"
    if record.end_reason is None:
        return "Call ended: no reason recorded"
    return f"Call ended: {END_REASON_LABELS[record.end_reason]}"


def _turn_row(turn: Turn, previous: Turn | None) -> TurnRow:
    at = format_offset(turn.start_ms)
    latency = response_latency_ms(turn, previous)
    if not turn.interrupted:
        return TurnRow(turn.role, at, turn.start_ms, turn.text, latency_ms=latency)
    heard, unheard, label, gap = split_heard(turn.text, turn.full_text)
    return TurnRow(
        turn.role,
        at,
        turn.start_ms,
        heard,
        interrupted=True,
        unheard=unheard,
        unheard_label=label if unheard else "",
        gap=gap,
        latency_ms=latency,
    )


def _event_row(event: CallEvent) -> EventRow:
    failed = event.type == "tool_call" and event.data.get("ok") is False
    return EventRow(
        event.type, format_offset(event.at_ms), event.at_ms, event_label(event), failed=failed
    )
