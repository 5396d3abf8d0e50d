"""Twilio Media Streams (bidirectional ``<Connect><Stream>``) as a sans-I/O protocol object.

The adapter that owns the WebSocket drives one :class:`TwilioMediaStream` per call:

1. feed every inbound text frame to :meth:`TwilioMediaStream.receive_text` (and every
   binary frame to :meth:`~TwilioMediaStream.receive_bytes`, which always refuses it);
   on :class:`~bridge.errors.RemoteProtocolError` close the socket with its ``close_code``;
2. handle :meth:`~TwilioMediaStream.events_received` (``match`` on the event classes);
3. after any ``send_*`` call, write every string of :meth:`~TwilioMediaStream.data_to_send`
   as a text frame, in order.

Nothing here awaits, reads a clock or touches a socket. The media path is one JSON parse
(orjson) and a few dict lookups per frame inbound, and one string concatenation per frame
outbound.
"""

from __future__ import annotations

import binascii
import enum
import json
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeGuard

from bridge.errors import (
    CLOSE_INVALID_PAYLOAD,
    CLOSE_MESSAGE_TOO_BIG,
    CLOSE_PROTOCOL_ERROR,
    CLOSE_UNSUPPORTED_DATA,
    LocalProtocolError,
    RemoteProtocolError,
)
from bridge.protocols.json_text import parse_json
from bridge.protocols.phone import (
    DtmfReceived,
    MarkPlayed,
    MediaReceived,
    StreamStopped,
    UnknownEvent,
)

__all__ = [
    "MAX_MESSAGE_CHARS",
    "Connected",
    "DtmfReceived",
    "MarkPlayed",
    "MediaReceived",
    "StreamStarted",
    "StreamState",
    "StreamStopped",
    "TwilioEvent",
    "TwilioMediaStream",
    "UnknownEvent",
]

# Twilio documents no maximum; a real media frame is about 400 characters. 64 KiB leaves
# room for a large `start` (custom parameters) while refusing abuse early.
MAX_MESSAGE_CHARS = 64 * 1024
# Every number Twilio sends (timestamps in ms, chunk and sequence counters, the sample rate)
# fits a signed 32-bit integer for the longest call Twilio allows (24 h = 86.4 M ms); larger
# values are not from Twilio and would overflow the store's integer columns later.
MAX_NUMBER = 2**31 - 1
# Twilio's SIDs are two letters and 32 hex digits; leave room, but not for abuse.
MAX_SID_CHARS = 64
# A custom parameter travels from our TwiML back to us; ours are short, and the caller and
# called numbers must fit the store's columns.
MAX_PARAMETER_CHARS = 128
MAX_PARAMETERS = 32
# Unknown event names are remembered (to be reported once each) only up to this many per stream.
MAX_UNKNOWN_EVENT_NAMES = 8
UNKNOWN_EVENT_NAME_CHARS = 40
DTMF_DIGITS = frozenset("0123456789*#ABCD")
# Agent audio goes out in media messages of this many ms, and a mark after at most
# MARK_CHUNKS of them. Every mark is a message each way: 100 ms chunks send a fifth of the
# messages of 20 ms ones, a mark per three of them a third of the marks again, and the call
# logic's playout clock keeps what was heard exact between two echoes.
MARK_CHUNK_MS = 100
MARK_CHUNKS = 3


class StreamState(enum.Enum):
    AWAITING_START = "awaiting_start"
    STREAMING = "streaming"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class Connected:
    """Twilio's optional first message. Nothing to do but log it."""

    protocol: str
    version: str


@dataclass(frozen=True, slots=True)
class StreamStarted:
    """The stream is live: authenticate ``custom_parameters["token"]`` before opening a
    realtime session; from now on ``send_*`` may be called."""

    stream_sid: str
    call_sid: str
    account_sid: str
    custom_parameters: dict[str, str]
    tracks: tuple[str, ...]
    encoding: str
    sample_rate: int
    channels: int


TwilioEvent: TypeAlias = (
    Connected
    | StreamStarted
    | MediaReceived
    | MarkPlayed
    | DtmfReceived
    | StreamStopped
    | UnknownEvent
)


def _invalid(message: str) -> RemoteProtocolError:
    return RemoteProtocolError(message, CLOSE_INVALID_PAYLOAD)


def _require_dict(msg: dict[str, Any], key: str, event: str) -> dict[str, Any]:
    value = msg.get(key)
    if not isinstance(value, dict):
        raise _invalid(f"{event!r} message without a {key!r} object")
    return value


def _require_str(obj: dict[str, Any], key: str, event: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise _invalid(f"{event!r} message without a string {key!r}")
    return value


def _to_int(value: object, key: str, event: str) -> int:
    """Twilio sends numbers as strings ("5"); accept real ints too, never bools or floats.

    Strings must be plain ASCII digits: ``int()`` alone would also take " 5", "+5", "5_0"
    and digits of other scripts, none of which Twilio sends. Runs twice per media frame.
    """
    if type(value) is str:
        if value.isascii() and value.isdigit():
            if len(value) < 10:  # nine digits are always in range: the common case
                return int(value)
            if len(value) == 10 and int(value) <= MAX_NUMBER:
                return int(value)
        raise _invalid(f"{event!r} field {key!r} is not a non-negative integer in range")
    if type(value) is int and 0 <= value <= MAX_NUMBER:
        return value
    raise _invalid(f"{event!r} field {key!r} is missing or not a non-negative integer in range")


def is_sid(value: object) -> TypeGuard[str]:
    """Whether ``value`` can be an identifier: short printable ASCII without spaces, as every
    Twilio SID is."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= MAX_SID_CHARS
        and value.isascii()
        and value.isprintable()
        and " " not in value
    )


def _require_sid(obj: dict[str, Any], key: str, event: str) -> str:
    value = obj.get(key)
    if not is_sid(value):
        raise _invalid(f"{event!r} field {key!r} is not a valid identifier")
    return value


def clean_text(value: str, limit: int) -> str:
    """``value`` shortened to ``limit`` characters, with every character that is not
    printable (controls, lone surrogates, noncharacters, unassigned code points) replaced by
    U+FFFD, so it can be stored, logged and written into XML as it is."""
    value = value[:limit]
    if value.isprintable():
        return value
    return "".join(ch if ch.isprintable() else "\ufffd" for ch in value)


class TwilioMediaStream:
    """One Media Streams WebSocket, seen from the bridge.

    State goes ``AWAITING_START`` -> ``STREAMING`` (on ``start``) -> ``STOPPED`` (on
    ``stop``). Inbound frames after ``stop`` are ignored. Unknown ``event`` values are not
    errors: the first few distinct names each produce one :class:`UnknownEvent`.
    """

    # Twilio echoes a mark once the audio queued before it has played.
    marks_on_send = False

    def __init__(self) -> None:
        self._state = StreamState.AWAITING_START
        self.stream_sid: str | None = None
        self.call_sid: str | None = None
        # Bounded: names beyond the first few are only counted, whatever a peer sends.
        self._unknown_names: set[str] = set()
        #: Messages with an unknown ``event`` seen so far.
        self.unknown_event_count = 0
        self._events: list[TwilioEvent] = []
        self._outgoing: list[str] = []
        # Outbound templates, filled once the stream sid is known (json-escaped once).
        self._media_prefix = ""
        self._mark_prefix = ""
        self._clear_text = ""

    @property
    def state(self) -> StreamState:
        return self._state

    # ---------------------------------------------------------------- inbound

    def receive_text(self, text: str) -> None:
        """Parse one inbound text frame; then call :meth:`events_received`.

        Raises :class:`RemoteProtocolError` when the frame is unacceptable; the caller must
        close the socket with the error's ``close_code`` and stop using this object.
        """
        if self._state is StreamState.STOPPED:
            return
        if len(text) > MAX_MESSAGE_CHARS:
            raise RemoteProtocolError(
                f"frame of {len(text)} characters exceeds {MAX_MESSAGE_CHARS}",
                CLOSE_MESSAGE_TOO_BIG,
            )
        try:
            msg = parse_json(text)
        except (ValueError, RecursionError):
            raise _invalid("frame is not valid JSON") from None
        if not isinstance(msg, dict):
            raise _invalid("frame is not a JSON object")
        event = msg.get("event")
        if not isinstance(event, str):
            raise _invalid("frame has no string 'event'")

        # Media first: it is 50 frames a second, everything else is rare.
        if event == "media":
            if self._state is not StreamState.STREAMING:
                self._require_streaming(event)
            self._receive_media(msg)
        elif event == "mark":
            self._require_streaming(event)
            mark = _require_dict(msg, "mark", event)
            self._events.append(MarkPlayed(_require_str(mark, "name", event)))
        elif event == "start":
            if self._state is not StreamState.AWAITING_START:
                raise RemoteProtocolError("second 'start' on one stream", CLOSE_PROTOCOL_ERROR)
            self._receive_start(msg)
        elif event == "dtmf":
            self._require_streaming(event)
            dtmf = _require_dict(msg, "dtmf", event)
            digit = dtmf.get("digit")
            # Checked as text first: a list or object is unhashable, and no digit.
            if type(digit) is not str or digit not in DTMF_DIGITS:
                raise _invalid("'dtmf' digit is not one of 0-9, *, #, A-D")
            self._events.append(DtmfReceived(digit))
        elif event == "stop":
            self._require_streaming(event)
            self._state = StreamState.STOPPED
            self._events.append(StreamStopped())
        elif event == "connected":
            if self._state is not StreamState.AWAITING_START:
                raise RemoteProtocolError("'connected' after 'start'", CLOSE_PROTOCOL_ERROR)
            protocol = msg.get("protocol", "")
            version = msg.get("version", "")
            if not isinstance(protocol, str) or not isinstance(version, str):
                raise _invalid("'connected' with non-string 'protocol' or 'version'")
            self._events.append(Connected(clean_text(protocol, 64), clean_text(version, 64)))
        else:
            self._unknown_event(event)

    def _unknown_event(self, event: str) -> None:
        self.unknown_event_count += 1
        if len(self._unknown_names) >= MAX_UNKNOWN_EVENT_NAMES:
            return
        name = clean_text(event, UNKNOWN_EVENT_NAME_CHARS)
        if name not in self._unknown_names:
            self._unknown_names.add(name)
            self._events.append(UnknownEvent(name))

    def receive_bytes(self, data: bytes) -> None:
        """Binary frames are not part of Media Streams: always raises (close code 1003)."""
        raise RemoteProtocolError(
            f"binary frame of {len(data)} bytes; Media Streams uses JSON text frames",
            CLOSE_UNSUPPORTED_DATA,
        )

    def events_received(self) -> list[TwilioEvent]:
        """Return, and forget, the events produced since the last call, in arrival order."""
        events = self._events
        self._events = []
        return events

    def _require_streaming(self, event: str) -> None:
        if self._state is not StreamState.STREAMING:
            raise RemoteProtocolError(
                f"{event!r} before 'start': the stream is not open yet", CLOSE_PROTOCOL_ERROR
            )

    def _receive_media(self, msg: dict[str, Any]) -> None:
        # The hot path, 50 frames a second per call: a few dict lookups and type checks.
        media = msg.get("media")
        if type(media) is not dict:
            raise _invalid("'media' message without a 'media' object")
        track = media.get("track")
        if track is not None and track != "inbound":
            # A bidirectional stream only carries the caller; anything else is not ours.
            return
        payload = media.get("payload")
        if type(payload) is not str:
            raise _invalid("'media' message without a string 'payload'")
        try:
            audio = binascii.a2b_base64(payload, strict_mode=True)
        except ValueError:  # binascii.Error, or non-ASCII text
            raise _invalid("'media' payload is not valid base64") from None
        timestamp = _to_int(media.get("timestamp"), "timestamp", "media")
        self._events.append(
            MediaReceived(audio, timestamp, _to_int(media.get("chunk"), "chunk", "media"))
        )

    def _receive_start(self, msg: dict[str, Any]) -> None:
        start = _require_dict(msg, "start", "start")
        # The reference puts streamSid both inside `start` and beside it; either will do.
        stream_sid = _require_sid(start if "streamSid" in start else msg, "streamSid", "start")
        outer_sid = msg.get("streamSid")
        if outer_sid is not None and outer_sid != stream_sid:
            raise _invalid("'start' carries two different stream sids")
        call_sid = _require_sid(start, "callSid", "start")
        account_sid = _require_sid(start, "accountSid", "start")

        tracks_raw = start.get("tracks", ["inbound"])
        if (
            not isinstance(tracks_raw, list)
            or len(tracks_raw) > 4
            or not all(isinstance(t, str) and len(t) <= 32 for t in tracks_raw)
        ):
            raise _invalid("'start.tracks' is not a short list of strings")
        params = start.get("customParameters", {})
        if (
            not isinstance(params, dict)
            or len(params) > MAX_PARAMETERS
            or not all(isinstance(v, str) for v in params.values())
        ):
            raise _invalid("'start.customParameters' is not a string map")
        # The values come back from our own TwiML, but the start message is not signed:
        # clean them here so nothing behind this point meets text it cannot store or log.
        parameters = {
            clean_text(k, MAX_PARAMETER_CHARS): clean_text(v, MAX_PARAMETER_CHARS)
            for k, v in params.items()
        }
        # Documented as always mu-law/8000/1; tolerate its absence, not wrong types.
        fmt = start.get("mediaFormat")
        if fmt is None:
            encoding, sample_rate, channels = "audio/x-mulaw", 8000, 1
        elif isinstance(fmt, dict):
            encoding = clean_text(_require_str(fmt, "encoding", "start"), 64)
            sample_rate = _to_int(fmt.get("sampleRate"), "sampleRate", "start")
            channels = _to_int(fmt.get("channels"), "channels", "start")
        else:
            raise _invalid("'start.mediaFormat' is not an object")

        self._state = StreamState.STREAMING
        self.stream_sid = stream_sid
        self.call_sid = call_sid
        sid = json.dumps(stream_sid)
        self._media_prefix = '{"event":"media","streamSid":' + sid + ',"media":{"payload":"'
        self._mark_prefix = '{"event":"mark","streamSid":' + sid + ',"mark":{"name":'
        self._clear_text = '{"event":"clear","streamSid":' + sid + "}"
        self._events.append(
            StreamStarted(
                stream_sid=stream_sid,
                call_sid=call_sid,
                account_sid=account_sid,
                custom_parameters=parameters,
                tracks=tuple(clean_text(t, 32) for t in tracks_raw),
                encoding=encoding,
                sample_rate=sample_rate,
                channels=channels,
            )
        )

    # --------------------------------------------------------------- outbound

    def send_media(self, payload: bytes) -> None:
        """Queue mu-law audio for the caller; then write :meth:`data_to_send`.

        Send whole multiples of 160 bytes (20 ms), with a mark after each or after a few,
        so a barge-in can tell how much was heard. Raises :class:`LocalProtocolError` unless
        the stream is ``STREAMING``.
        """
        self._require_open("send_media")
        encoded = binascii.b2a_base64(payload, newline=False).decode("ascii")
        self._outgoing.append(self._media_prefix + encoded + '"}}')

    def send_mark(self, name: str) -> None:
        """Queue a mark; Twilio echoes it (a :class:`MarkPlayed`) once everything queued
        before it has played, or when a ``clear`` drops it. Give every mark a unique name."""
        self._require_open("send_mark")
        self._outgoing.append(self._mark_prefix + json.dumps(name) + "}}")

    def send_clear(self) -> None:
        """Queue a ``clear`` that stops the caller's playback at once.

        Media and mark messages still waiting in this object (queued but not yet taken by
        :meth:`data_to_send`) are discarded: the caller must not hear them, and their marks
        will never be echoed, so count only marks actually written. The clear is placed
        first, ahead of anything still queued, so a barge-in never waits behind audio.
        Write :meth:`data_to_send` next, immediately.
        """
        self._require_open("send_clear")
        # Only media, marks and clears are ever queued; once media and marks are dropped,
        # whatever remains is an earlier clear, which this one supersedes.
        self._outgoing = [self._clear_text]

    def data_to_send(self) -> list[str]:
        """Return, and forget, the outgoing text frames; write them to the socket in order."""
        out = self._outgoing
        self._outgoing = []
        return out

    @property
    def has_data_to_send(self) -> bool:
        return bool(self._outgoing)

    def _require_open(self, what: str) -> None:
        if self._state is not StreamState.STREAMING:
            raise LocalProtocolError(f"{what}() while the stream is {self._state.name}")
