"""Events a realtime-API session hands to the bridge, the same for every dialect.

``RealtimeConnection.events_received()`` returns these; consumers ``match`` on them.
Item and response ids are the server's own. Times in ``SpeechStarted``/``SpeechStopped``
are on the model's *input* timeline (ms of audio appended since the session opened; map
them with ``RealtimeConnection.appended_ms``); ``ItemTruncated.audio_end_ms`` is on the
assistant item's *output* timeline.

The helpers at the end read the parts of server payloads these events summarise; the
connection uses them, and so may a fake server's tests.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SessionCreated:
    """The session is open and ready to be configured: send ``session.update`` now.

    Raised at the dialect's ``configure_after`` event (``session.created``, or xAI's
    ``conversation.created``). ``expires_at`` is epoch seconds, from ``session.created``.
    """

    expires_at: int | None


@dataclass(frozen=True, slots=True)
class SessionUpdated:
    """The server accepted the session configuration."""


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """The caller started talking: stop the agent's playback at once (barge-in)."""

    item_id: str | None
    audio_start_ms: int | None


@dataclass(frozen=True, slots=True)
class SpeechStopped:
    """The caller stopped talking; a response usually follows."""

    item_id: str | None
    audio_end_ms: int | None


@dataclass(frozen=True, slots=True)
class InputCommitted:
    """The caller's audio became the user item ``item_id``."""

    item_id: str | None


@dataclass(frozen=True, slots=True)
class ResponseCreated:
    """The model started a response; it can now be cancelled."""

    response_id: str


@dataclass(frozen=True, slots=True)
class AssistantItemStarted:
    """A new assistant message began; its audio starts at 0 ms on its own timeline."""

    response_id: str | None
    item_id: str


@dataclass(frozen=True, slots=True)
class AudioDelta:
    """The agent's audio, in the session format: play it unless the item was cut off."""

    response_id: str | None
    item_id: str
    audio: bytes


@dataclass(frozen=True, slots=True)
class AudioDone:
    """No more audio will come for ``item_id``."""

    response_id: str | None
    item_id: str


@dataclass(frozen=True, slots=True)
class TranscriptDelta:
    """A piece of the text of what the agent is saying."""

    response_id: str | None
    item_id: str
    delta: str


@dataclass(frozen=True, slots=True)
class TranscriptDone:
    """The full text of what the model generated for ``item_id`` (not what was heard)."""

    response_id: str | None
    item_id: str
    transcript: str


@dataclass(frozen=True, slots=True)
class InputTranscriptCompleted:
    """What the caller said in ``item_id``; may arrive before or after the response."""

    item_id: str | None
    transcript: str


@dataclass(frozen=True, slots=True)
class InputTranscriptFailed:
    """The caller's speech in ``item_id`` could not be transcribed."""

    item_id: str | None
    message: str


@dataclass(frozen=True, slots=True)
class ItemTruncated:
    """The server cut assistant item ``item_id`` at ``audio_end_ms`` of its audio."""

    item_id: str
    audio_end_ms: int


@dataclass(frozen=True, slots=True)
class ResponseDone:
    """The response ended (``completed``, ``cancelled``, ``failed`` or ``incomplete``).

    ``reason`` is the status detail (``turn_detected``, ``client_cancelled``,
    ``max_output_tokens``, or the error code of a failed response). ``transcripts`` maps
    each assistant item of the response to its final transcript.
    """

    response_id: str | None
    status: str
    reason: str | None
    transcripts: dict[str, str]


@dataclass(frozen=True, slots=True)
class FunctionCallRequested:
    """The model called a tool. Run it, then :meth:`RealtimeConnection.send_function_output`
    with the same ``call_id`` and ask for a response; ``arguments`` is the JSON text the
    model wrote (it may be invalid: say so in the output rather than failing the call)."""

    response_id: str | None
    item_id: str | None
    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class OutputAudioStarted:
    """The provider started playing the agent's audio to the caller itself (WebRTC and
    SIP sessions only: ``output_audio_buffer.started``)."""

    response_id: str | None


@dataclass(frozen=True, slots=True)
class OutputAudioStopped:
    """The provider's playout of the agent's audio ended: all of it was played
    (``output_audio_buffer.stopped``) or the rest was dropped (``.cleared``)."""

    response_id: str | None


@dataclass(frozen=True, slots=True)
class RealtimeError:
    """The server reported an error.

    ``caused_by`` is the type of the client event that caused it, when known. ``benign``:
    expected in normal operation, go on. ``fatal``: the session cannot serve the call (bad
    key, no quota, expired, configuration refused); end or replace it. Neither: log it and
    go on.
    """

    code: str | None
    message: str
    param: str | None
    caused_by: str | None
    benign: bool
    fatal: bool


RealtimeEvent = (
    SessionCreated
    | SessionUpdated
    | SpeechStarted
    | SpeechStopped
    | InputCommitted
    | ResponseCreated
    | AssistantItemStarted
    | AudioDelta
    | AudioDone
    | TranscriptDelta
    | TranscriptDone
    | InputTranscriptCompleted
    | InputTranscriptFailed
    | ItemTruncated
    | ResponseDone
    | FunctionCallRequested
    | OutputAudioStarted
    | OutputAudioStopped
    | RealtimeError
)


# -- reading what the server says about errors and finished responses --------------------

# Errors expected in normal operation: races between the client and the server's own VAD.
_BENIGN_CODES = frozenset(
    {
        "response_cancel_not_active",
        "conversation_already_has_active_response",
        "input_audio_buffer_commit_empty",
        "item_truncate_invalid_item_id",
        "item_delete_invalid_item_id",  # an unheard item the server had dropped already
    }
)
# Some servers send code null (Inworld) or codes of their own (xAI): match the wording too,
# as pipecat does for xAI ("truncat" covers a truncate that came too late, however worded).
_BENIGN_MESSAGES = (
    "already shorter than",
    "no active response",
    "already has an active response",
    "truncat",
)
_FATAL_CODES = frozenset(
    {
        "invalid_api_key",
        "insufficient_quota",
        "rate_limit_exceeded",
        "session_expired",
        "beta_api_shape_disabled",
        "too_many_sessions",
    }
)
# Limits of the provider's account: rate, quota, and Inworld's concurrent sessions and
# packets per second (documented as limits; their error wording is not, so match loosely).
_LIMIT_CODES = frozenset({"rate_limit_exceeded", "insufficient_quota", "too_many_sessions"})
_LIMIT_MESSAGES = ("rate limit", "quota", "concurrent session", "too many sessions", "packet rate")
# api.openai.com answers a beta session with this wording.
_FATAL_MESSAGES = ("no longer supported", *_LIMIT_MESSAGES)
_TEXT_PARTS = frozenset({"text", "output_text"})


def classify_error(code: str | None, message: str, caused_by: str | None) -> tuple[bool, bool]:
    """``(benign, fatal)`` for a server error; see ``RealtimeError``."""
    lowered = message.lower()
    fatal = (
        code in _FATAL_CODES
        # The provider refused the session configuration: nothing will work after that.
        or caused_by == "session.update"
        or any(text in lowered for text in _FATAL_MESSAGES)
    )
    benign = not fatal and (
        code in _BENIGN_CODES or any(text in lowered for text in _BENIGN_MESSAGES)
    )
    return benign, fatal


def provider_limit(code: str | None, message: str) -> bool:
    """Whether a server error says the account hit a limit (rate, quota, sessions)."""
    lowered = message.lower()
    return code in _LIMIT_CODES or any(text in lowered for text in _LIMIT_MESSAGES)


def response_reason(details: object) -> str | None:
    """The reason in a response's ``status_details`` (or its error's code), if any."""
    if type(details) is not dict:
        return None
    reason = clean_id(details.get("reason"))
    if reason is None:
        error = details.get("error")
        if type(error) is dict:
            reason = clean_id(error.get("code")) or clean_id(error.get("type"))
    return reason


def response_transcripts(output: object) -> dict[str, str]:
    """item_id -> final transcript of each assistant message in ``response.output``."""
    transcripts: dict[str, str] = {}
    if type(output) is not list:
        return transcripts
    for item in output:
        if type(item) is not dict or item.get("role", "assistant") != "assistant":
            continue
        item_id = clean_id(item.get("id"))
        content = item.get("content")
        if item_id is None or type(content) is not list:
            continue
        spoken: list[str] = []
        written: list[str] = []
        for part in content:
            if type(part) is not dict:
                continue
            transcript = part.get("transcript")
            if type(transcript) is str:
                spoken.append(transcript)
            elif _is_text_part(part.get("type")) and type(part.get("text")) is str:
                written.append(part["text"])
        # With audio and text both on (Inworld), the text repeats the speech: prefer speech.
        if spoken or written:
            transcripts[item_id] = _clean("".join(spoken or written))
    return transcripts


def _is_text_part(kind: object) -> bool:
    # A set lookup would raise TypeError on a list or dict sent as the type.
    return type(kind) is str and kind in _TEXT_PARTS


# -- values read from the wire -----------------------------------------------------------
#
# A realtime server is a peer on the network: every value it sends is checked here before it
# reaches an event, because ids end up in logs and as keys, numbers in 32-bit columns, and
# text in the database.

#: Longest id taken from a server; real ones are under 40 characters.
MAX_ID_LENGTH = 128
#: Largest ms or index taken from a server: what a signed 32-bit column holds.
MAX_WIRE_INT = 2**31 - 1

# UTF-8 cannot encode a lone surrogate and PostgreSQL text refuses NUL.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def clean_id(value: object) -> str | None:
    """``value`` if it is a usable id (a non-empty, short string with no control character,
    lone surrogate or other unprintable character), else ``None``."""
    if type(value) is str and 0 < len(value) <= MAX_ID_LENGTH and value.isprintable():
        return value
    return None


def clean_text(value: object) -> str | None:
    """``value`` if it is a string, with what UTF-8 or the database cannot store replaced
    by U+FFFD; else ``None``."""
    return _clean(value) if type(value) is str else None


def int_in_range(value: object, limit: int = MAX_WIRE_INT) -> int | None:
    """``value`` as an int if it is a number from 0 to ``limit``, else ``None``.

    JSON floats count (some servers send ``1000.0``); NaN, infinities and bools do not.
    """
    if type(value) is int:
        return value if 0 <= value <= limit else None
    if type(value) is float and 0 <= value <= limit:  # False for NaN
        return int(value)
    return None


def _clean(text: str) -> str:
    if text.isascii() and "\x00" not in text:
        return text
    return _UNSTORABLE.sub("\ufffd", text)
