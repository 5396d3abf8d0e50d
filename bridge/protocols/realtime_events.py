"""Events a realtime-API session hands to the bridge, the same for every dialect.

``RealtimeConnection.events_received()`` returns these; consumers ``match`` on them.
Item and response ids are the server's own. Times in ``SpeechStarted``/``SpeechStopped``
are on the model's *input* timeline (ms of audio appended since the session opened; map
them with ``RealtimeConnection.appended_ms``); ``ItemTruncated.audio_end_ms`` is on the
assistant item's *output* timeline.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SessionCreated:
    """The session is open: send ``session.update`` now. ``expires_at`` is epoch seconds."""

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
    | RealtimeError
)
