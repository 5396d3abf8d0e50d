"""The fake server's conversation: its items and the client events that act on them.

:class:`FakeConversation` keeps the items in order and answers
``conversation.item.create``/``delete``/``retrieve``/``truncate`` the way a real server
does, returning the events to send or raising :class:`InvalidRequest`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bridge.devtools.fake_config import (
    Dialect,
    InvalidRequest,
    choice,
    integer,
    missing,
    previous_item_id,
)
from bridge.devtools.fake_vad import AudioFormat

__all__ = ["ConversationItem", "FakeConversation", "transcription_events"]

_WORD = re.compile(r"\S+\s*")
_GA_CONTENT = {
    "user": ("input_text", "input_audio", "input_image"),
    "system": ("input_text",),
    "assistant": ("output_text",),  # assistant audio items cannot be created by a client
}
_BETA_CONTENT = {
    "user": ("input_text", "input_audio", "item_reference"),
    "system": ("input_text",),
    "assistant": ("text",),
}


@dataclass(slots=True)
class ConversationItem:
    id: str
    type: str
    role: str | None
    status: str
    content: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    output_format: AudioFormat | None = None
    full_text: str = ""
    audio_bytes: int = 0

    def render(self) -> dict[str, Any]:
        item: dict[str, Any] = {
            "id": self.id,
            "object": "realtime.item",
            "type": self.type,
            "status": self.status,
        }
        if self.type == "message":
            item["role"] = self.role
            item["content"] = self.content
        item.update(self.extra)
        return item


class FakeConversation:
    """The items of one session, in order; ``new_id(prefix)`` makes server ids."""

    def __init__(self, dialect: Dialect, new_id: Callable[[str], str]) -> None:
        self._dialect = dialect
        self._new_id = new_id
        self._items: dict[str, ConversationItem] = {}

    def last_id(self) -> str | None:
        """The id of the newest item (the next item's ``previous_item_id``)."""
        return next(reversed(self._items), None)

    def get(self, item_id: str) -> ConversationItem | None:
        return self._items.get(item_id)

    def find_call(self, call_id: str) -> ConversationItem | None:
        """The newest ``function_call`` item with this ``call_id``, if any."""
        for item in reversed(self._items.values()):
            if item.type == "function_call" and item.extra.get("call_id") == call_id:
                return item
        return None

    def add(self, item: ConversationItem) -> None:
        """Append an item whose creation events the caller sends itself (model output)."""
        self._items[item.id] = item

    def insert(self, item: ConversationItem, previous: str | None) -> list[dict[str, Any]]:
        """Append a finished item; returns its creation events for the dialect."""
        self._items[item.id] = item
        rendered = item.render()
        previous = previous_item_id(self._dialect, previous)
        if self._dialect is Dialect.OPENAI_BETA:
            return [
                {
                    "type": "conversation.item.created",
                    "previous_item_id": previous,
                    "item": rendered,
                }
            ]
        if self._dialect is Dialect.XAI:  # xAI never finalizes an item with .done
            return [
                {"type": "conversation.item.added", "previous_item_id": previous, "item": rendered}
            ]
        return [
            {"type": "conversation.item.added", "previous_item_id": previous, "item": rendered},
            {"type": "conversation.item.done", "previous_item_id": previous, "item": rendered},
        ]

    def handle(self, kind: str, event: dict[str, Any]) -> list[dict[str, Any]]:
        """``conversation.item.create``, ``.delete`` or ``.retrieve``: the events to send."""
        if kind == "conversation.item.create":
            return self._create(event)
        item = self._lookup(event, kind.rsplit(".", 1)[-1])
        if kind == "conversation.item.delete":
            del self._items[item.id]
            return [{"type": "conversation.item.deleted", "item_id": item.id}]
        return [{"type": "conversation.item.retrieved", "item": item.render()}]

    def truncate(self, event: dict[str, Any]) -> dict[str, Any]:
        """Validate a truncate like a real server; returns ``conversation.item.truncated``.

        The item's transcript is cut in proportion to the audio kept.
        """
        item = self._lookup(event, "truncate")
        if item.role != "assistant" or item.output_format is None:
            raise InvalidRequest(
                "invalid_value", "Only assistant messages with audio can be truncated.", "item_id"
            )
        if event.get("content_index", 0) != 0:
            raise InvalidRequest(
                "invalid_value",
                "Invalid 'content_index': the item has one audio part.",
                "content_index",
            )
        end_ms = integer(event.get("audio_end_ms"), "audio_end_ms", 0)
        audio_ms = int(item.output_format.duration_ms(item.audio_bytes))
        if end_ms > audio_ms:
            raise InvalidRequest(
                None, f"Audio content of {audio_ms}ms is already shorter than {end_ms}ms"
            )
        for part in item.content:
            words = _WORD.findall(str(part.get("transcript") or ""))
            keep = len(words) * end_ms // audio_ms if audio_ms else 0
            part["transcript"] = "".join(words[:keep]).rstrip()
        return {
            "type": "conversation.item.truncated",
            "item_id": item.id,
            "content_index": 0,
            "audio_end_ms": end_ms,
        }

    # ------------------------------------------------------------ helpers

    def _lookup(self, event: dict[str, Any], action: str) -> ConversationItem:
        item_id = event.get("item_id")
        if not isinstance(item_id, str):
            raise missing("item_id")
        item = self._items.get(item_id)
        if item is None:
            raise InvalidRequest(
                f"item_{action}_invalid_item_id",
                f"Item with item_id not found: {item_id}",
                "item_id",
            )
        return item

    def _create(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        raw = event.get("item")
        if not isinstance(raw, dict):
            raise missing("item")
        kind = choice(
            raw.get("type"), ("message", "function_call", "function_call_output"), "item.type"
        )
        item_id = raw.get("id")
        if item_id is None:
            item_id = self._new_id("item")
        elif not isinstance(item_id, str) or item_id in self._items:
            raise InvalidRequest("invalid_value", f"Invalid item id: {item_id!r}.", "item.id")
        if kind == "message":
            role = choice(raw.get("role"), ("user", "assistant", "system"), "item.role")
            content = self._content(raw.get("content"), role)
            item = ConversationItem(item_id, kind, role, "completed", content)
        else:
            keys = (
                ("call_id", "output")
                if kind == "function_call_output"
                else ("call_id", "name", "arguments")
            )
            for key in keys:
                if not isinstance(raw.get(key), str):
                    raise missing(f"item.{key}")
            if kind == "function_call_output" and self.find_call(raw["call_id"]) is None:
                # OpenAI checks that the call exists; this is its error, param and all.
                raise InvalidRequest(
                    "invalid_tool_call_id",
                    f"Tool call ID '{raw['call_id']}' not found in conversation.",
                )
            item = ConversationItem(
                item_id, kind, None, "completed", extra={k: raw[k] for k in keys}
            )
        return self.insert(item, self.last_id())

    def _content(self, value: Any, role: str) -> list[dict[str, Any]]:
        if not isinstance(value, list) or not value:
            raise InvalidRequest(
                "invalid_value",
                "Invalid 'item.content': expected a non-empty array.",
                "item.content",
            )
        table = _BETA_CONTENT if self._dialect is Dialect.OPENAI_BETA else _GA_CONTENT
        parts: list[dict[str, Any]] = []
        for index, part in enumerate(value):
            param = f"item.content[{index}]"
            if not isinstance(part, dict):
                raise InvalidRequest("invalid_type", f"Invalid type for '{param}'.", param)
            choice(part.get("type"), table[role], f"{param}.type")
            parts.append(dict(part))
        return parts


def transcription_events(
    dialect: Dialect, item_id: str, text: str, model: str, seconds: float
) -> list[dict[str, Any]]:
    """The input transcription events of one committed caller turn.

    A delta first except for ``whisper`` models (they only complete); ``usage`` as each
    dialect reports it (GA tokens, beta duration, Inworld none). xAI sends no deltas but
    ``.updated`` events, each with the whole transcript so far, then ``.completed``.
    """
    ids = {"item_id": item_id, "content_index": 0}
    events: list[dict[str, Any]] = []
    if dialect is Dialect.XAI:
        kind = "conversation.item.input_audio_transcription.updated"
        events.extend({"type": kind, **ids, "transcript": part} for part in _cumulative(text))
    elif not model.startswith("whisper"):
        kind = "conversation.item.input_audio_transcription.delta"
        events.append({"type": kind, **ids, "delta": text})
    done: dict[str, Any] = {
        "type": "conversation.item.input_audio_transcription.completed",
        **ids,
        "transcript": text,
    }
    if dialect is Dialect.OPENAI:
        tokens = max(1, len(text) // 4)
        done["usage"] = {
            "type": "tokens",
            "total_tokens": 16 + tokens,
            "input_tokens": 16,
            "input_token_details": {"text_tokens": 0, "audio_tokens": 16},
            "output_tokens": tokens,
        }
    elif dialect is Dialect.OPENAI_BETA:
        done["usage"] = {"type": "duration", "seconds": seconds}
    events.append(done)
    return events


def _cumulative(text: str) -> list[str]:
    """The transcript as it grows: its first half of words, then all of it (one step for a
    single word), as a streaming recognizer revises toward its final text."""
    words = _WORD.findall(text)
    half = "".join(words[: len(words) // 2]).rstrip()
    return [half, text] if half else [text]
