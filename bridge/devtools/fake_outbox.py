"""The fake session's outgoing side: ids, ``event_id`` stamps, errors, noise, close requests.

:class:`EventOutbox` queues what a :class:`~bridge.devtools.fake_session.FakeSession` wants
written; the I/O shell takes it with :meth:`EventOutbox.take` and writes it in order.
"""

from __future__ import annotations

from typing import Any

from bridge.devtools.fake_config import Dialect
from bridge.devtools.fake_records import (
    AbortConnection,
    CloseConnection,
    FakeSessionRecord,
    Outgoing,
)

__all__ = ["EventOutbox", "rate_limits_event"]

# Inworld documents that error.code may be null, and xAI's codes are its own; their fakes
# send null for runtime errors so that clients learn to match on the message, as the
# reference tells them to.
_INWORLD_NULL_CODES = frozenset(
    {
        "conversation_already_has_active_response",
        "response_cancel_not_active",
        "item_truncate_invalid_item_id",
        "invalid_value",
    }
)
_MESSAGE_MATCHED = frozenset({Dialect.INWORLD, Dialect.XAI})
_NOISE = ("ping", "rate_limits.updated", "conversation.vendor_extension")
_NOISE_EVERY = 3


def rate_limits_event() -> dict[str, Any]:
    """A ``rate_limits.updated`` like the one OpenAI sends after ``response.done``."""
    return {
        "type": "rate_limits.updated",
        "rate_limits": [
            {"name": "requests", "limit": 1000, "remaining": 999, "reset_seconds": 60.0},
            {"name": "tokens", "limit": 50000, "remaining": 49747, "reset_seconds": 60.0},
        ],
    }


class EventOutbox:
    """Queues server events with fresh ``event_id`` s, and close or drop requests.

    Once :meth:`close` or :meth:`abort` is called, :attr:`closed` is true and the session
    must queue nothing more. ``noise`` slips a ``ping``, a ``rate_limits.updated`` or an
    unknown event type in after every third event.
    """

    def __init__(
        self,
        dialect: Dialect,
        record: FakeSessionRecord,
        *,
        tag: str,
        noise: bool,
        now: float,
        epoch: float,
    ) -> None:
        self._dialect = dialect
        self._record = record
        self._tag = tag
        self._noise = noise
        self._t0 = now
        self._epoch = epoch
        self._queue: list[Outgoing] = []
        self._counters: dict[str, int] = {}
        self._emitted = 0
        self.closed = False
        self.now = now  # the latest time the session was told; noise pings read it

    @property
    def pending(self) -> bool:
        """Whether anything is queued to send."""
        return bool(self._queue)

    def take(self) -> list[Outgoing]:
        """Hand over everything queued, in order, and empty the queue."""
        out, self._queue = self._queue, []
        return out

    def new_id(self, prefix: str) -> str:
        """A session-unique id such as ``item_3fa9c20007``."""
        n = self._counters.get(prefix, 0) + 1
        self._counters[prefix] = n
        return f"{prefix}_{self._tag}{n:04d}"

    def wall_ms(self, now: float) -> int:
        """Unix time in ms at monotonic ``now`` (for Inworld's ping timestamps)."""
        return int((self._epoch + (now - self._t0)) * 1000)

    def emit(self, event: dict[str, Any]) -> None:
        if self._noise and self._emitted and self._emitted % _NOISE_EVERY == 0:
            self._queue.append(self._stamp(self._noise_event()))
        self._emitted += 1
        self._queue.append(self._stamp(event))

    def emit_all(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            self.emit(event)

    def error(
        self,
        code: str | None,
        message: str,
        param: str | None = None,
        client_id: str | None = None,
    ) -> None:
        """Queue an ``error`` event (``invalid_request_error``) and record it."""
        if self._dialect in _MESSAGE_MATCHED and code in _INWORLD_NULL_CODES:
            code = None
        error = {
            "type": "invalid_request_error",
            "code": code,
            "message": message,
            "param": param,
            "event_id": client_id,
        }
        self._record.errors_sent.append(error)
        self.emit({"type": "error", "error": error})

    def close(self, code: int, reason: str) -> None:
        self._queue.append(CloseConnection(code, reason))
        self.closed = True

    def abort(self) -> None:
        self._queue.append(AbortConnection())
        self.closed = True

    def _stamp(self, event: dict[str, Any]) -> dict[str, Any]:
        return {"type": event["type"], "event_id": self.new_id("event"), **event}

    def _noise_event(self) -> dict[str, Any]:
        kind = _NOISE[(self._emitted // _NOISE_EVERY) % len(_NOISE)]
        if kind == "ping":
            return {"type": "ping", "timestamp": self.wall_ms(self.now)}
        if kind == "rate_limits.updated":
            return rate_limits_event()
        return {"type": kind, "note": "an event type this client has never seen"}
