"""One assistant response of the fake realtime server, as wire events, paced by ``now``.

:class:`FakeResponse` is sans-I/O: :meth:`~FakeResponse.start_events` gives the opening
events, :meth:`~FakeResponse.step` the transcript and audio deltas that are due at ``now``
(100 ms of audio per delta unless ``delta_ms`` says otherwise, ``realtime_factor`` times
faster than real time, words running a little ahead of the audio), and
:meth:`~FakeResponse.end_events` the closing events, either ``completed`` or cut short
(``cancelled`` with the transcript spoken so far). The caller adds ``event_id`` and writes
them out; it asks :meth:`~FakeResponse.next_due` when to call again.

A response may also carry function calls (:class:`PlannedCall`). As on a real server they
follow the spoken message, each as its own output item whose arguments stream as
``response.function_call_arguments.delta`` events, and ``response.done`` lists every
item. A response without speech holds only the calls and is finished as soon as it starts.
Calls are made only by a response that completes: a cancelled one never gets to them.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bridge.codecs.g711 import ulaw_to_pcm16
from bridge.codecs.resampler import StreamResampler
from bridge.devtools.fake_config import Dialect, SessionConfig, previous_item_id
from bridge.devtools.fake_update import render_format
from bridge.devtools.fake_vad import AudioFormat

__all__ = [
    "CHUNK_MS",
    "DEFAULT_DELTA_MS",
    "DialectNames",
    "FakeResponse",
    "PlannedCall",
    "check_delta_ms",
    "names_for",
    "to_output_format",
]

CHUNK_MS = 100
DEFAULT_DELTA_MS = (CHUNK_MS,)
_ARGUMENTS_CHUNK = 16  # characters per arguments delta: models stream a few tokens at a time
_LEAD_MS = 100  # how far the transcript runs ahead of the end of the audio sent
_WORD = re.compile(r"\S+\s*")


def check_delta_ms(lengths: tuple[int, ...]) -> tuple[int, ...]:
    """``lengths`` if they can be the answers' audio deltas (10 to 500 ms each, at least one),
    else ``ValueError`` saying what is wrong."""
    if not lengths or not all(10 <= ms <= 500 for ms in lengths):
        raise ValueError(f"delta lengths must be 10 to 500 ms each, got {lengths}")
    return lengths


@dataclass(frozen=True, slots=True)
class DialectNames:
    """Event and content names that differ between GA (and Inworld), xAI and beta."""

    audio_delta: str
    audio_done: str
    transcript_delta: str
    transcript_done: str
    item_created: str
    item_done: str | None
    audio_content: str


_GA_NAMES = DialectNames(
    "response.output_audio.delta",
    "response.output_audio.done",
    "response.output_audio_transcript.delta",
    "response.output_audio_transcript.done",
    "conversation.item.added",
    "conversation.item.done",
    "output_audio",
)
# GA names, but xAI never sends conversation.item.done.
_XAI_NAMES = DialectNames(
    "response.output_audio.delta",
    "response.output_audio.done",
    "response.output_audio_transcript.delta",
    "response.output_audio_transcript.done",
    "conversation.item.added",
    None,
    "output_audio",
)
_BETA_NAMES = DialectNames(
    "response.audio.delta",
    "response.audio.done",
    "response.audio_transcript.delta",
    "response.audio_transcript.done",
    "conversation.item.created",
    None,
    "audio",
)


@dataclass(frozen=True, slots=True)
class PlannedCall:
    """A function call a response makes, with the ids the session gave it.

    ``arguments`` is the JSON text the model writes.
    """

    item_id: str
    call_id: str
    name: str
    arguments: str


def names_for(dialect: Dialect) -> DialectNames:
    if dialect is Dialect.OPENAI_BETA:
        return _BETA_NAMES
    return _XAI_NAMES if dialect is Dialect.XAI else _GA_NAMES


def to_output_format(ulaw: bytes, fmt: AudioFormat) -> bytes:
    """8 kHz mu-law audio converted to ``fmt``, the same duration to the sample."""
    if fmt.kind == "pcmu":
        return ulaw
    resampler = StreamResampler(8000, fmt.rate)
    pcm = resampler.process(ulaw_to_pcm16(ulaw)) + resampler.flush()
    expected = len(ulaw) * fmt.rate // 8000 * 2
    # The filter may round the tail by a sample or two; the duration must stay exact so
    # that truncation arithmetic on the client matches what the server counts.
    return pcm[:expected].ljust(expected, b"\x00")


class FakeResponse:
    """One response in flight: its ids, its paced deltas and its end events.

    ``item_id`` is the spoken message's item, or ``None`` for a response that only calls
    tools (``calls``); then ``text`` and ``audio`` are empty.
    """

    def __init__(
        self,
        *,
        dialect: Dialect,
        config: SessionConfig,
        response_id: str,
        item_id: str | None,
        conversation_id: str,
        text: str,
        audio: bytes,
        now: float,
        realtime_factor: float,
        calls: Sequence[PlannedCall] = (),
        delta_ms: Sequence[int] = DEFAULT_DELTA_MS,
    ) -> None:
        self.dialect = dialect
        self.names = names_for(dialect)
        self.config = config
        self.response_id = response_id
        self.item_id = item_id
        self.calls = tuple(calls)
        self.conversation_id = conversation_id
        self.full_text = text
        fmt = config.output_format
        # Deltas of these lengths in turn (real servers send roughly 20-100 ms each), each due
        # when the audio before it would have played, ``realtime_factor`` times faster.
        self._chunks: list[bytes] = []
        self._due_s: list[float] = []
        at = played_ms = 0
        while at < len(audio):
            ms = delta_ms[len(self._chunks) % len(delta_ms)]
            step = max(1, fmt.bytes_per_second * ms // 1000)
            self._chunks.append(audio[at : at + step])
            self._due_s.append(played_ms / 1000.0 / realtime_factor)
            at += step
            played_ms += ms
        self._format = fmt
        self._words = _WORD.findall(text.strip())
        total_ms = fmt.duration_ms(len(audio))
        count = max(1, len(self._words))
        self._word_at_ms = [total_ms * j / count for j in range(len(self._words))]
        self._started = now
        self._next_chunk = 0
        self._next_word = 0
        self._previous_item_id: str | None = None
        self.audio_bytes_sent = 0

    @property
    def finished(self) -> bool:
        """All audio has been stepped out: send :meth:`end_events` next."""
        return self._next_chunk >= len(self._chunks)

    @property
    def text_sent(self) -> str:
        """The transcript deltas sent so far, joined."""
        return "".join(self._words[: self._next_word])

    def next_due(self) -> float | None:
        """When the next delta is due (``None`` once finished)."""
        if self.finished:
            return None
        return self._started + self._due_s[self._next_chunk]

    def start_events(self, previous_item_id: str | None) -> list[dict[str, Any]]:
        """``response.created`` through ``response.content_part.added`` (the message's)."""
        previous_item_id = self._chain(previous_item_id)
        self._previous_item_id = previous_item_id
        created = {"type": "response.created", "response": self._response("in_progress", None, [])}
        if self.item_id is None:
            return [created]
        item = self._item("in_progress", None)
        return [
            created,
            {
                "type": "response.output_item.added",
                "response_id": self.response_id,
                "output_index": 0,
                "item": item,
            },
            {"type": self.names.item_created, "previous_item_id": previous_item_id, "item": item},
            {
                **self._part_ids("response.content_part.added"),
                "part": {"type": "audio", "transcript": ""},
            },
        ]

    def step(self, now: float) -> list[tuple[dict[str, Any], bytes]]:
        """Deltas due at ``now``, each with the raw audio it carries (``b""`` for text)."""
        out: list[tuple[dict[str, Any], bytes]] = []
        while not self.finished and self._started + self._due_s[self._next_chunk] <= now:
            chunk = self._chunks[self._next_chunk]
            chunk_end_ms = self._format.duration_ms(self.audio_bytes_sent + len(chunk))
            self._words_until(chunk_end_ms + _LEAD_MS, out)
            delta = base64.b64encode(chunk).decode("ascii")
            out.append(({**self._part_ids(self.names.audio_delta), "delta": delta}, chunk))
            self._next_chunk += 1
            self.audio_bytes_sent += len(chunk)
        if self.finished:
            self._words_until(float("inf"), out)
        return out

    def end_events(self, status: str, reason: str | None) -> list[dict[str, Any]]:
        """The closing events, ending with ``response.done``.

        ``status`` is ``completed`` or ``cancelled`` (``reason`` ``turn_detected`` or
        ``client_cancelled``); a cancelled item is ``incomplete`` and its transcript is what
        was sent so far. A completed response then makes its function calls.
        """
        transcript = self.full_text if status == "completed" else self.text_sent.rstrip()
        events: list[dict[str, Any]] = []
        output: list[dict[str, Any]] = []
        previous = self._previous_item_id
        if self.item_id is not None:
            item_status = "completed" if status == "completed" else "incomplete"
            item = self._item(item_status, transcript)
            events.extend(self._message_end_events(item, transcript))
            output.append(item)
            previous = self.item_id
        if status == "completed":
            for call in self.calls:
                done_item = self._call_item(call, "completed", call.arguments)
                events.extend(self._call_events(call, len(output), previous, done_item))
                output.append(done_item)
                previous = call.item_id
        details = None if reason is None else {"type": "cancelled", "reason": reason}
        done: dict[str, Any] = {
            "type": "response.done",
            "response": self._response(status, details, output, transcript),
        }
        if self.dialect is Dialect.INWORLD:
            done["usage"] = done["response"]["usage"]  # Inworld repeats it at the top level
        events.append(done)
        return events

    def _message_end_events(self, item: dict[str, Any], transcript: str) -> list[dict[str, Any]]:
        part = {"type": "audio", "transcript": transcript}
        events: list[dict[str, Any]] = [
            self._part_ids(self.names.audio_done),
            {**self._part_ids(self.names.transcript_done), "transcript": transcript},
            {**self._part_ids("response.content_part.done"), "part": part},
        ]
        if self.names.item_done is not None:
            events.append(
                {
                    "type": self.names.item_done,
                    "previous_item_id": self._previous_item_id,
                    "item": item,
                }
            )
        events.append(
            {
                "type": "response.output_item.done",
                "response_id": self.response_id,
                "output_index": 0,
                "item": item,
            }
        )
        return events

    def _call_events(
        self,
        call: PlannedCall,
        index: int,
        previous: str | None,
        done_item: dict[str, Any],
    ) -> list[dict[str, Any]]:
        """One function call: its item announced empty, its arguments streamed, then done."""
        added_item = self._call_item(call, "in_progress", "")
        previous = self._chain(previous)
        ids = {
            "response_id": self.response_id,
            "item_id": call.item_id,
            "output_index": index,
            "call_id": call.call_id,
        }
        events: list[dict[str, Any]] = [
            {
                "type": "response.output_item.added",
                "response_id": self.response_id,
                "output_index": index,
                "item": added_item,
            },
            {"type": self.names.item_created, "previous_item_id": previous, "item": added_item},
        ]
        text = call.arguments
        for start in range(0, len(text), _ARGUMENTS_CHUNK):
            delta = text[start : start + _ARGUMENTS_CHUNK]
            events.append({"type": "response.function_call_arguments.delta", **ids, "delta": delta})
        arguments_done: dict[str, Any] = {"type": "response.function_call_arguments.done", **ids}
        if self.dialect is not Dialect.INWORLD:  # Inworld leaves the name to the item
            arguments_done["name"] = call.name
        arguments_done["arguments"] = text
        events.append(arguments_done)
        if self.names.item_done is not None:
            events.append(
                {"type": self.names.item_done, "previous_item_id": previous, "item": done_item}
            )
        events.append(
            {
                "type": "response.output_item.done",
                "response_id": self.response_id,
                "output_index": index,
                "item": done_item,
            }
        )
        return events

    # ------------------------------------------------------------ helpers

    def _chain(self, previous: str | None) -> str | None:
        return previous_item_id(self.dialect, previous)

    def _words_until(self, limit_ms: float, out: list[tuple[dict[str, Any], bytes]]) -> None:
        while self._next_word < len(self._words) and self._word_at_ms[self._next_word] < limit_ms:
            word = self._words[self._next_word]
            out.append(({**self._part_ids(self.names.transcript_delta), "delta": word}, b""))
            self._next_word += 1

    def _part_ids(self, event_type: str) -> dict[str, Any]:
        return {
            "type": event_type,
            "response_id": self.response_id,
            "item_id": self.item_id,
            "output_index": 0,
            "content_index": 0,
        }

    def _call_item(self, call: PlannedCall, status: str, arguments: str) -> dict[str, Any]:
        return {
            "id": call.item_id,
            "object": "realtime.item",
            "type": "function_call",
            "status": status,
            "name": call.name,
            "call_id": call.call_id,
            "arguments": arguments,
        }

    def _item(self, status: str, transcript: str | None) -> dict[str, Any]:
        content = (
            []
            if transcript is None
            else [{"type": self.names.audio_content, "transcript": transcript}]
        )
        return {
            "id": self.item_id,
            "object": "realtime.item",
            "type": "message",
            "status": status,
            "role": "assistant",
            "content": content,
        }

    def _usage(self, transcript: str, output: list[dict[str, Any]]) -> dict[str, Any]:
        arguments = sum(len(item.get("arguments", "")) for item in output)
        text_tokens = max(1, (len(transcript) + arguments) // 4)
        audio_tokens = self.audio_bytes_sent * 10 // self._format.bytes_per_second  # ~10/s
        out_tokens = text_tokens + audio_tokens
        usage: dict[str, Any] = {
            "total_tokens": 132 + out_tokens,
            "input_tokens": 132,
            "output_tokens": out_tokens,
        }
        if self.dialect is Dialect.INWORLD:
            return usage
        usage["input_token_details"] = {"cached_tokens": 0, "text_tokens": 119, "audio_tokens": 13}
        if self.dialect is Dialect.OPENAI:
            usage["input_token_details"]["image_tokens"] = 0
            usage["input_token_details"]["cached_tokens_details"] = {
                "text_tokens": 0,
                "audio_tokens": 0,
                "image_tokens": 0,
            }
        usage["output_token_details"] = {"text_tokens": text_tokens, "audio_tokens": audio_tokens}
        return usage

    def _response(
        self,
        status: str,
        details: dict[str, Any] | None,
        output: list[dict[str, Any]],
        transcript: str = "",
    ) -> dict[str, Any]:
        response: dict[str, Any] = {
            "object": "realtime.response",
            "id": self.response_id,
            "status": status,
            "status_details": details,
            "output": output,
            "conversation_id": self.conversation_id,
        }
        cfg = self.config
        fmt = render_format(self.dialect, cfg.output_format)
        if self.dialect is Dialect.OPENAI_BETA:
            response.update(
                modalities=list(cfg.output_modalities),
                voice=cfg.voice,
                output_audio_format=fmt,
                temperature=cfg.temperature,
                max_output_tokens=cfg.max_output_tokens,
            )
        else:
            response.update(
                output_modalities=list(cfg.output_modalities),
                max_output_tokens=cfg.max_output_tokens,
                audio={"output": {"format": fmt, "voice": cfg.voice}},
            )
        response["usage"] = None if status == "in_progress" else self._usage(transcript, output)
        response["metadata"] = None
        return response
