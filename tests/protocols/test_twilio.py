"""Twilio Media Streams protocol object: reference frames in, events out; send_* in, wire out."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from bridge.errors import (
    CLOSE_INVALID_PAYLOAD,
    CLOSE_MESSAGE_TOO_BIG,
    CLOSE_PROTOCOL_ERROR,
    CLOSE_UNSUPPORTED_DATA,
    LocalProtocolError,
    RemoteProtocolError,
)
from bridge.protocols.twilio import (
    MAX_MESSAGE_CHARS,
    Connected,
    DtmfReceived,
    MarkPlayed,
    MediaReceived,
    StreamStarted,
    StreamState,
    StreamStopped,
    TwilioMediaStream,
    UnknownEvent,
)

SID = "MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"

# The frames below are copied from the protocol reference (media payload made real).
CONNECTED = '{ "event": "connected", "protocol": "Call", "version": "1.0.0" }'
START = """{
  "event": "start",
  "sequenceNumber": "1",
  "start": {
    "accountSid": "ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
    "streamSid": "MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
    "callSid": "CAXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
    "tracks": ["inbound"],
    "customParameters": {
      "from": "+15551230000",
      "to": "+15557650000",
      "token": "3q2-7wVf0yY8kQeS"
    },
    "mediaFormat": { "encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1 }
  },
  "streamSid": "MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
}"""
AUDIO = bytes(range(256))[:160]
MEDIA = json.dumps(
    {
        "event": "media",
        "sequenceNumber": "3",
        "media": {
            "track": "inbound",
            "chunk": "1",
            "timestamp": "5",
            "payload": base64.b64encode(AUDIO).decode(),
        },
        "streamSid": SID,
    }
)
DTMF = """{
  "event": "dtmf",
  "streamSid": "MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
  "sequenceNumber": "5",
  "dtmf": { "track": "inbound_track", "digit": "1" }
}"""
MARK = """{
  "event": "mark",
  "sequenceNumber": "4",
  "streamSid": "MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
  "mark": { "name": "g0-item_asst_001-17" }
}"""
STOP = """{
  "event": "stop",
  "sequenceNumber": "5",
  "stop": {
    "accountSid": "ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
    "callSid": "CAXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
  },
  "streamSid": "MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
}"""
SILENCE_B64 = (  # 160 bytes of mu-law silence, verbatim from the reference
    "//////////////////////////////////////////////////////////////////////////////////////////"
    "//////////////////////////////////////////////////////////////////////////////////////////"
    "/////////////////////////////////w=="
)


def started() -> TwilioMediaStream:
    stream = TwilioMediaStream()
    stream.receive_text(CONNECTED)
    stream.receive_text(START)
    stream.events_received()
    return stream


def media_frame(**media: Any) -> str:
    return json.dumps({"event": "media", "streamSid": SID, "media": media})


def expect_error(stream: TwilioMediaStream, text: str, code: int) -> RemoteProtocolError:
    with pytest.raises(RemoteProtocolError) as info:
        stream.receive_text(text)
    assert info.value.close_code == code
    return info.value


# ------------------------------------------------------------------ inbound


def test_reference_call_produces_events_in_order() -> None:
    stream = TwilioMediaStream()
    assert stream.state.name == "AWAITING_START"
    for frame in (CONNECTED, START, MEDIA, DTMF, MARK, STOP):
        stream.receive_text(frame)
    events = stream.events_received()
    assert events == [
        Connected("Call", "1.0.0"),
        StreamStarted(
            stream_sid=SID,
            call_sid="CAXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
            account_sid="ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
            custom_parameters={
                "from": "+15551230000",
                "to": "+15557650000",
                "token": "3q2-7wVf0yY8kQeS",
            },
            tracks=("inbound",),
            encoding="audio/x-mulaw",
            sample_rate=8000,
            channels=1,
        ),
        MediaReceived(AUDIO, timestamp_ms=5, chunk=1),
        DtmfReceived("1"),
        MarkPlayed("g0-item_asst_001-17"),
        StreamStopped(),
    ]
    assert stream.state is StreamState.STOPPED
    assert stream.stream_sid == SID
    assert stream.call_sid == "CAXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
    assert stream.events_received() == []


def test_connected_is_optional() -> None:
    stream = TwilioMediaStream()
    stream.receive_text(START)
    assert isinstance(stream.events_received()[0], StreamStarted)
    assert stream.state is StreamState.STREAMING


def test_numbers_may_be_ints() -> None:
    stream = started()
    stream.receive_text(media_frame(chunk=7, timestamp=140, payload=SILENCE_B64))
    assert stream.events_received() == [MediaReceived(b"\xff" * 160, 140, 7)]


def test_start_defaults_when_optional_fields_absent() -> None:
    stream = TwilioMediaStream()
    stream.receive_text(
        json.dumps(
            {"event": "start", "start": {"streamSid": SID, "callSid": "CA1", "accountSid": "AC1"}}
        )
    )
    [event] = stream.events_received()
    assert isinstance(event, StreamStarted)
    assert event.custom_parameters == {}
    assert event.tracks == ("inbound",)
    assert (event.encoding, event.sample_rate, event.channels) == ("audio/x-mulaw", 8000, 1)


def test_media_on_other_track_is_ignored_and_track_is_optional() -> None:
    stream = started()
    stream.receive_text(media_frame(track="outbound", chunk="1", timestamp="0", payload="AAAA"))
    assert stream.events_received() == []
    stream.receive_text(media_frame(chunk="2", timestamp="20", payload="AAAA"))
    assert stream.events_received() == [MediaReceived(b"\x00\x00\x00", 20, 2)]


def test_unknown_events_are_reported_once_each_not_errors() -> None:
    stream = started()
    stream.receive_text('{"event": "future-thing", "streamSid": "MZ1"}')
    stream.receive_text('{"event": "future-thing"}')
    stream.receive_text('{"event": "other"}')
    assert stream.events_received() == [UnknownEvent("future-thing"), UnknownEvent("other")]
    assert stream.unknown_event_count == 3
    assert stream.state is StreamState.STREAMING


def test_unknown_event_before_start_is_not_an_error() -> None:
    stream = TwilioMediaStream()
    stream.receive_text('{"event": "hello"}')
    assert stream.events_received() == [UnknownEvent("hello")]


def test_unknown_and_duplicate_mark_names_are_plain_events() -> None:
    stream = started()
    for _ in range(2):
        stream.receive_text(json.dumps({"event": "mark", "mark": {"name": "never-sent"}}))
    assert stream.events_received() == [MarkPlayed("never-sent"), MarkPlayed("never-sent")]


def test_frames_after_stop_are_ignored() -> None:
    stream = started()
    stream.receive_text(STOP)
    stream.events_received()
    stream.receive_text(MEDIA)
    stream.receive_text("not json at all")
    stream.receive_text("x" * (MAX_MESSAGE_CHARS + 1))
    stream.receive_text(STOP)
    assert stream.events_received() == []
    assert stream.state is StreamState.STOPPED


def test_events_received_drains() -> None:
    stream = started()
    stream.receive_text(MEDIA)
    assert len(stream.events_received()) == 1
    assert stream.events_received() == []


# ------------------------------------------------------------- bad inbound


def test_oversized_frame_is_1009() -> None:
    stream = started()
    big = media_frame(chunk="1", timestamp="0", payload="A" * MAX_MESSAGE_CHARS)
    expect_error(stream, big, CLOSE_MESSAGE_TOO_BIG)


def test_frame_at_the_limit_is_accepted() -> None:
    stream = started()
    frame = media_frame(chunk="1", timestamp="0", payload="")
    frame = frame + " " * (MAX_MESSAGE_CHARS - len(frame))
    assert len(frame) == MAX_MESSAGE_CHARS
    stream.receive_text(frame)
    assert stream.events_received() == [MediaReceived(b"", 0, 1)]


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "{",
        "[1, 2]",
        '"media"',
        "null",
        "{}",
        '{"event": 3}',
        '{"event": null}',
        "[" * 10_000 + "]" * 10_000,
    ],
)
def test_malformed_frames_are_1007(text: str) -> None:
    expect_error(started(), text, CLOSE_INVALID_PAYLOAD)


@pytest.mark.parametrize("frame", [MEDIA, MARK, DTMF, STOP])
def test_messages_before_start_are_1002(frame: str) -> None:
    stream = TwilioMediaStream()
    stream.receive_text(CONNECTED)
    error = expect_error(stream, frame, CLOSE_PROTOCOL_ERROR)
    assert "before 'start'" in str(error)


def test_second_start_is_1002() -> None:
    error = expect_error(started(), START, CLOSE_PROTOCOL_ERROR)
    assert "second" in str(error)


def test_connected_after_start_is_1002() -> None:
    expect_error(started(), CONNECTED, CLOSE_PROTOCOL_ERROR)


@pytest.mark.parametrize(
    "payload",
    ["AAA", "AA=A", "=AAA", "AA==AA==", "AA AA", "AAA*", "//8=\n", "ééé="],
)
def test_invalid_base64_is_1007(payload: str) -> None:
    expect_error(
        started(), media_frame(chunk="1", timestamp="0", payload=payload), CLOSE_INVALID_PAYLOAD
    )


@pytest.mark.parametrize(
    "frame",
    [
        '{"event": "media", "streamSid": "MZ1"}',
        '{"event": "media", "media": "AAAA"}',
        media_frame(chunk="1", timestamp="0"),
        media_frame(chunk="1", timestamp="0", payload=5),
        media_frame(chunk="1", payload="AAAA"),
        media_frame(timestamp="0", payload="AAAA"),
        media_frame(chunk="one", timestamp="0", payload="AAAA"),
        media_frame(chunk="1", timestamp="-20", payload="AAAA"),
        media_frame(chunk="1", timestamp=1.5, payload="AAAA"),
        media_frame(chunk=True, timestamp="0", payload="AAAA"),
        '{"event": "mark"}',
        '{"event": "mark", "mark": {}}',
        '{"event": "mark", "mark": {"name": 1}}',
        '{"event": "dtmf", "dtmf": {"track": "inbound_track"}}',
        '{"event": "dtmf"}',
    ],
)
def test_missing_or_mistyped_fields_are_1007(frame: str) -> None:
    expect_error(started(), frame, CLOSE_INVALID_PAYLOAD)


def _start_with(**changes: Any) -> str:
    msg = json.loads(START)
    for key, value in changes.items():
        if value is None:
            del msg["start"][key]
        else:
            msg["start"][key] = value
    return json.dumps(msg)


@pytest.mark.parametrize(
    "frame",
    [
        '{"event": "start"}',
        '{"event": "start", "start": []}',
        _start_with(callSid=None),
        _start_with(accountSid=None),
        _start_with(callSid=42),
        _start_with(tracks="inbound"),
        _start_with(customParameters={"token": 5}),
        _start_with(customParameters=["token"]),
        _start_with(mediaFormat="audio/x-mulaw"),
        _start_with(mediaFormat={"encoding": "audio/x-mulaw"}),
        _start_with(streamSid="MZother"),
        json.dumps({"event": "start", "start": {"callSid": "CA1", "accountSid": "AC1"}}),
    ],
)
def test_bad_start_is_1007_and_stream_stays_closed(frame: str) -> None:
    stream = TwilioMediaStream()
    expect_error(stream, frame, CLOSE_INVALID_PAYLOAD)
    assert stream.state is StreamState.AWAITING_START
    assert stream.stream_sid is None
    with pytest.raises(LocalProtocolError):
        stream.send_clear()


def test_binary_frames_are_always_1003() -> None:
    for stream in (TwilioMediaStream(), started()):
        with pytest.raises(RemoteProtocolError) as info:
            stream.receive_bytes(b'{"event": "media"}')
        assert info.value.close_code == CLOSE_UNSUPPORTED_DATA


# ------------------------------------------------------------------ outbound


def test_send_media_matches_reference_shape() -> None:
    stream = started()
    stream.send_media(b"\xff" * 160)
    [text] = stream.data_to_send()
    assert json.loads(text) == {
        "event": "media",
        "streamSid": SID,
        "media": {"payload": SILENCE_B64},
    }


def test_silence_payload_is_the_reference_string() -> None:
    assert len(SILENCE_B64) == 216
    stream = started()
    stream.send_media(b"\xff" * 160)
    sent = json.loads(stream.data_to_send()[0])
    assert sent["media"]["payload"] == SILENCE_B64
    # ... and the bridge's own output parses back to the same 160 bytes.
    stream.receive_text(media_frame(chunk="1", timestamp="0", payload=sent["media"]["payload"]))
    assert stream.events_received() == [MediaReceived(b"\xff" * 160, 0, 1)]


def test_send_mark_and_clear_match_reference_shapes() -> None:
    stream = started()
    stream.send_mark("g0-item_asst_001-17")
    stream.send_clear()
    stream.send_mark('odd "name" \\ é')
    mark2 = stream.data_to_send()
    assert [json.loads(t) for t in mark2] == [
        {"event": "clear", "streamSid": SID},
        {"event": "mark", "streamSid": SID, "mark": {"name": 'odd "name" \\ é'}},
    ]
    stream.send_mark("g0-item_asst_001-17")
    assert json.loads(stream.data_to_send()[0]) == {
        "event": "mark",
        "streamSid": SID,
        "mark": {"name": "g0-item_asst_001-17"},
    }


def test_stream_sid_is_json_escaped_in_output() -> None:
    stream = TwilioMediaStream()
    stream.receive_text(
        json.dumps(
            {"event": "start", "start": {"streamSid": 'MZ"\\', "callSid": "CA", "accountSid": "AC"}}
        )
    )
    stream.send_media(b"\x01")
    stream.send_mark("m")
    stream.send_clear()
    stream.send_media(b"\x01")
    for text in stream.data_to_send():
        assert json.loads(text)["streamSid"] == 'MZ"\\'


def test_data_to_send_drains_in_order() -> None:
    stream = started()
    assert not stream.has_data_to_send
    stream.send_media(b"\x00" * 160)
    stream.send_mark("a")
    stream.send_media(b"\x01" * 160)
    stream.send_mark("b")
    assert stream.has_data_to_send
    sent = [json.loads(t) for t in stream.data_to_send()]
    assert [m["event"] for m in sent] == ["media", "mark", "media", "mark"]
    assert [m["mark"]["name"] for m in sent if m["event"] == "mark"] == ["a", "b"]
    assert base64.b64decode(sent[2]["media"]["payload"]) == b"\x01" * 160
    assert not stream.has_data_to_send
    assert stream.data_to_send() == []


def test_send_clear_drops_unsent_media_and_marks_and_goes_first() -> None:
    stream = started()
    stream.send_media(b"\x00" * 160)
    stream.send_mark("already-written")
    written = stream.data_to_send()
    assert len(written) == 2

    stream.send_media(b"\x01" * 160)
    stream.send_mark("unsent-1")
    stream.send_media(b"\x02" * 160)
    stream.send_mark("unsent-2")
    stream.send_clear()
    stream.send_media(b"\x03" * 160)  # audio for the next turn, after the clear
    stream.send_mark("after")
    sent = [json.loads(t) for t in stream.data_to_send()]
    assert sent[0] == {"event": "clear", "streamSid": SID}
    assert [m["event"] for m in sent] == ["clear", "media", "mark"]
    assert base64.b64decode(sent[1]["media"]["payload"]) == b"\x03" * 160
    assert sent[2]["mark"]["name"] == "after"


def test_repeated_clears_collapse_to_one() -> None:
    stream = started()
    stream.send_clear()
    stream.send_media(b"\x00")
    stream.send_clear()
    assert stream.data_to_send() == [
        json.dumps({"event": "clear", "streamSid": SID}, separators=(",", ":"))
    ]


def test_send_before_start_or_after_stop_is_a_local_error() -> None:
    stream = TwilioMediaStream()
    with pytest.raises(LocalProtocolError):
        stream.send_media(b"\xff")
    with pytest.raises(LocalProtocolError):
        stream.send_mark("m")
    with pytest.raises(LocalProtocolError):
        stream.send_clear()
    stream.receive_text(START)
    stream.receive_text(STOP)
    with pytest.raises(LocalProtocolError):
        stream.send_media(b"\xff")
    assert not stream.has_data_to_send
