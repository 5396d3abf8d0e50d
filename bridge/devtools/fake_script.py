"""What the fake realtime server says: its replies, its greeting and the caller transcripts.

A :class:`FakeScript` is plain data. Each fake session walks it with its own cursor, so one
script can serve many connections at once. Replies carry 8 kHz mu-law audio: a shipped
clip, a file, or a synthetic voice-like signal (:func:`synthesize_voice`) that energy
detectors and listeners notice as speech. A reply may also call tools (:class:`ToolCall`):
the model then waits for the client's ``function_call_output`` items and its next
``response.create``, which the following reply answers::

    FakeScript(replies=[
        Reply(tool_calls=(ToolCall("check_availability", {"party": 4, "time": "20:00"}),)),
        Reply("We have a table at eight."),
    ])
"""

from __future__ import annotations

import functools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bridge.codecs.clips import clip_text, load_clip
from bridge.codecs.g711 import pcm16_to_ulaw
from bridge.errors import ConfigurationError

__all__ = [
    "GENERIC_REPLY",
    "MS_PER_CHARACTER",
    "FakeScript",
    "Reply",
    "ToolCall",
    "demo_script",
    "load_script",
    "synthesize_voice",
]

MS_PER_CHARACTER = 70
"""Duration of synthesized speech per character of reply text (about 14 characters/s)."""

_SAMPLE_RATE = 8000
_MIN_SYNTH_MS = 300
_TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")


@functools.lru_cache(maxsize=64)  # a load test asks for the same few answers thousands of times
def synthesize_voice(duration_ms: int, *, pitch_hz: float = 140.0, level: float = 0.3) -> bytes:
    """A voice-like 8 kHz mu-law signal of ``duration_ms``: harmonics under a syllable envelope.

    Deterministic, so tests can compare bytes. Every 20 ms frame sits far above a -35 dBFS
    energy threshold (about -20 dBFS at the envelope's peaks, -28 dBFS in its valleys), so
    a voice detector sees one continuous utterance. ``level`` is the peak amplitude as a
    fraction of full scale.
    """
    if duration_ms <= 0:
        return b""
    n = duration_ms * _SAMPLE_RATE // 1000
    t = np.arange(n, dtype=np.float64) / _SAMPLE_RATE
    # A slow pitch wobble keeps it from sounding (and measuring) like a pure tone.
    f0 = pitch_hz * (1.0 + 0.04 * np.sin(2.0 * math.pi * 3.0 * t))
    phase = 2.0 * math.pi * np.cumsum(f0) / _SAMPLE_RATE
    wave = np.zeros(n, dtype=np.float64)
    for harmonic, weight in ((1, 1.0), (2, 0.6), (3, 0.4), (4, 0.25), (5, 0.15)):
        wave += weight * np.sin(harmonic * phase)
    wave /= 2.4  # the weights' sum, so the peak stays within [-1, 1]
    # About four syllables a second; the envelope never drops to silence mid-utterance.
    envelope = 0.35 + 0.65 * np.abs(np.sin(math.pi * 4.0 * t))
    ramp = min(n, _SAMPLE_RATE // 100)  # 10 ms fades avoid clicks at both ends
    fade = np.ones(n, dtype=np.float64)
    fade[:ramp] = np.linspace(0.0, 1.0, ramp)
    fade[n - ramp :] = np.minimum(fade[n - ramp :], np.linspace(1.0, 0.0, ramp))
    samples = np.clip(wave * envelope * fade * level * 32767.0, -32768, 32767)
    return pcm16_to_ulaw(samples.astype("<i2").tobytes())


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One function call the fake model makes: the tool's ``name`` and its ``arguments``.

    The arguments go on the wire as the JSON text :attr:`arguments_json`, as a model writes
    them. Raises :class:`ConfigurationError` for a name no server would accept or arguments
    that are not JSON.
    """

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _TOOL_NAME.fullmatch(self.name):
            raise ConfigurationError(f"tool name {self.name!r} must match ^[a-zA-Z0-9_-]{{1,64}}$")
        if not isinstance(self.arguments, dict):
            raise ConfigurationError(f"arguments of tool {self.name!r} must be a dict")
        try:
            json.dumps(self.arguments)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"arguments of tool {self.name!r}: {exc}") from exc

    @property
    def arguments_json(self) -> str:
        """The arguments as the compact JSON text a model streams."""
        return json.dumps(self.arguments, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class Reply:
    """One thing the fake agent says, and the tools it calls.

    ``audio`` is 8 kHz mu-law; when it is ``None`` a voice-like signal of ``duration_ms``
    (default :data:`MS_PER_CHARACTER` per character of ``text``) stands in for it. Call
    :meth:`render` to get the audio to stream.

    ``tool_calls`` come in the same response, after the spoken message, one
    ``function_call`` item each (several: parallel tool calls). A reply with tool calls and
    no ``text``, ``audio`` or ``duration_ms`` says nothing: its response holds only the
    calls (see :attr:`speaks`).
    """

    text: str = ""
    audio: bytes | None = None
    duration_ms: int | None = None
    tool_calls: tuple[ToolCall, ...] = ()

    @property
    def speaks(self) -> bool:
        """Whether the response carries an audio message (always, unless only tools)."""
        if not self.tool_calls:
            return True
        return bool(self.text) or self.audio is not None or self.duration_ms is not None

    def render(self) -> bytes:
        """The reply's 8 kHz mu-law audio, synthesized when none was given."""
        if self.audio is not None:
            return self.audio
        duration = self.duration_ms
        if duration is None:
            duration = max(_MIN_SYNTH_MS, MS_PER_CHARACTER * len(self.text))
        return synthesize_voice(duration)


GENERIC_REPLY = Reply("I see. Could you tell me a little more about that?")
"""What the fake agent says once the script's replies are used up."""


@dataclass(frozen=True, slots=True)
class FakeScript:
    """The conversation a fake session plays.

    ``greeting`` answers the first ``response.create`` that carries instructions;
    ``replies`` answer the following responses in order, then :data:`GENERIC_REPLY`;
    ``caller_transcripts[n - 1]`` is reported as the transcript of the n-th committed caller
    turn, then ``"(caller turn n)"``.

    Every response takes the next reply, whatever started it: a caller turn, or the
    client's ``response.create``. So after a reply with tool calls, the reply that follows
    it answers the ``response.create`` the client sends once it has given back the tools'
    outputs, as long as the caller does not take a turn in between.
    """

    greeting: Reply | None = None
    replies: list[Reply] = field(default_factory=list)
    caller_transcripts: list[str] = field(default_factory=list)

    def reply(self, index: int) -> Reply:
        """The ``index``-th (0-based) scripted reply, or the generic one when they run out."""
        return self.replies[index] if index < len(self.replies) else GENERIC_REPLY

    def caller_transcript(self, turn: int) -> str:
        """The transcript of the ``turn``-th (1-based) committed caller turn."""
        if 0 < turn <= len(self.caller_transcripts):
            return self.caller_transcripts[turn - 1]
        return f"(caller turn {turn})"


def demo_script() -> FakeScript:
    """The shipped demo conversation: recorded greeting, three replies, three caller lines."""
    return FakeScript(
        greeting=_clip_reply("demo_greeting"),
        replies=[_clip_reply(f"demo_reply_{n}") for n in (1, 2, 3)],
        caller_transcripts=[clip_text(f"caller_{n}") for n in (1, 2, 3)],
    )


def load_script(path: str | Path) -> FakeScript:
    """Read a script from a JSON file.

    The file holds ``{"greeting": R, "replies": [R, ...], "caller_transcripts": [str, ...]}``.
    Each ``R`` is a string (the text, audio synthesized) or an object with ``text``,
    optional ``duration_ms``, and optionally ``clip`` (a shipped clip name; its text is the
    default ``text``) or ``audio_file`` (raw 8 kHz mu-law, relative to the JSON file), and
    optionally ``tool_calls``: ``[{"name": str, "arguments": {...}}, ...]`` (then ``text``
    may be left out: the reply only calls tools). Raises :class:`ConfigurationError` when
    the file cannot be used.
    """
    source = Path(path)
    try:
        raw = json.loads(source.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"cannot read fake script {source}: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigurationError(f"fake script {source} must hold a JSON object")
    greeting = raw.get("greeting")
    replies = raw.get("replies", [])
    transcripts = raw.get("caller_transcripts", [])
    if not isinstance(replies, list):
        raise ConfigurationError(f"fake script {source}: 'replies' must be a list")
    if not isinstance(transcripts, list) or not all(isinstance(t, str) for t in transcripts):
        raise ConfigurationError(f"fake script {source}: 'caller_transcripts' must be strings")
    return FakeScript(
        greeting=None if greeting is None else _parse_reply(greeting, source),
        replies=[_parse_reply(entry, source) for entry in replies],
        caller_transcripts=list(transcripts),
    )


def _clip_reply(name: str) -> Reply:
    return Reply(clip_text(name), audio=load_clip(name))


def _parse_reply(entry: Any, source: Path) -> Reply:
    if isinstance(entry, str):
        return Reply(entry)
    if not isinstance(entry, dict):
        raise ConfigurationError(f"fake script {source}: a reply must be a string or an object")
    duration = entry.get("duration_ms")
    if duration is not None and (not isinstance(duration, int) or duration <= 0):
        raise ConfigurationError(f"fake script {source}: 'duration_ms' must be a positive int")
    audio: bytes | None = None
    text = entry.get("text")
    try:
        if "clip" in entry:
            audio = load_clip(str(entry["clip"]))
            text = clip_text(str(entry["clip"])) if text is None else text
        elif "audio_file" in entry:
            audio = (source.parent / str(entry["audio_file"])).read_bytes()
    except (KeyError, OSError) as exc:
        raise ConfigurationError(f"fake script {source}: cannot load reply audio: {exc}") from exc
    calls = _parse_tool_calls(entry.get("tool_calls", []), source)
    if text is None and calls:
        text = ""
    if not isinstance(text, str):
        raise ConfigurationError(f"fake script {source}: every reply needs a 'text' string")
    return Reply(text, audio=audio, duration_ms=duration, tool_calls=calls)


def _parse_tool_calls(value: Any, source: Path) -> tuple[ToolCall, ...]:
    if not isinstance(value, list):
        raise ConfigurationError(f"fake script {source}: 'tool_calls' must be a list")
    calls: list[ToolCall] = []
    for entry in value:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise ConfigurationError(f"fake script {source}: each tool call needs a 'name' string")
        try:
            calls.append(ToolCall(entry["name"], entry.get("arguments", {})))
        except ConfigurationError as exc:
            raise ConfigurationError(f"fake script {source}: {exc}") from exc
    return tuple(calls)
