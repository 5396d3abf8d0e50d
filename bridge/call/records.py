"""What a call leaves behind: turns and events, as the call logic hands them to the store.

These are plain values with no I/O. The store (``bridge.storage``) persists them and the
review API renders them in the JSON shape of CONTRACT.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Role(StrEnum):
    CALLER = "caller"
    AGENT = "agent"


class CallStatus(StrEnum):
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"


class EndReason(StrEnum):
    CALLER_HANGUP = "caller_hangup"
    AGENT_HANGUP = "agent_hangup"
    TRANSFERRED = "transferred"
    TIMEOUT = "timeout"
    PROVIDER_ERROR = "provider_error"
    BRIDGE_SHUTDOWN = "bridge_shutdown"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Turn:
    """One side's finished utterance. ``seq`` orders turns in the conversation; writing a
    turn again with the same ``seq`` replaces it (an agent turn cut by a later barge-in)."""

    seq: int
    role: Role
    text: str
    start_ms: int
    end_ms: int
    interrupted: bool = False
    full_text: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "seq": self.seq,
            "role": self.role.value,
            "text": self.text,
            "start_ms": self.start_ms,
            "end_ms": self.end_ms,
        }
        if self.role is Role.AGENT:
            out["interrupted"] = self.interrupted
            if self.interrupted and self.full_text is not None:
                out["full_text"] = self.full_text
        return out


@dataclass(frozen=True, slots=True)
class CallEvent:
    """Something that happened on the call besides speech: ``barge_in``, ``dtmf``, …
    ``data`` holds the event's own fields (``{"digit": "1"}``), flattened into the JSON."""

    type: str
    at_ms: int
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "at_ms": self.at_ms, **self.data}
