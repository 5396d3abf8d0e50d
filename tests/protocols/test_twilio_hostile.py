"""Hostile input to the Twilio Media Streams object: the defects fuzzing found, and properties
that hold for any frame at all (hypothesis). Only ``RemoteProtocolError`` may escape, and
whatever is accepted is in range and safe to store, log and write into XML."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_twilio import START, media_frame, started

from bridge.errors import CLOSE_INVALID_PAYLOAD, RemoteProtocolError
from bridge.protocols.twilio import (
    MAX_NUMBER,
    MAX_UNKNOWN_EVENT_NAMES,
    Connected,
    DtmfReceived,
    MarkPlayed,
    MediaReceived,
    StreamStarted,
    StreamStopped,
    TwilioMediaStream,
    UnknownEvent,
)

PROPERTY = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)


def _start(**changes: Any) -> str:
    msg = json.loads(START)
    msg["start"].update(changes)
    return json.dumps(msg)


def _refused(stream: TwilioMediaStream, text: str) -> RemoteProtocolError:
    with pytest.raises(RemoteProtocolError) as info:
        stream.receive_text(text)
    return info.value


# -- the defects -------------------------------------------------------------------------


def test_a_lone_surrogate_call_sid_is_refused_as_bad_input() -> None:
    # Before: accepted, then the token MAC over it raised UnicodeEncodeError in the session.
    error = _refused(TwilioMediaStream(), START.replace("CAXXXXXXXX", "CA\\ud800XXXXXXX"))
    assert error.close_code == CLOSE_INVALID_PAYLOAD


@pytest.mark.parametrize("key", ["callSid", "accountSid", "streamSid"])
@pytest.mark.parametrize("value", ["", "CA 1", "CA\x00", "CA\u00e91", "C" * 65])
def test_sids_must_be_short_printable_ascii(key: str, value: str) -> None:
    error = _refused(TwilioMediaStream(), _start(**{key: value}))
    assert error.close_code == CLOSE_INVALID_PAYLOAD


def test_custom_parameters_are_cleaned_so_the_record_can_be_written() -> None:
    # Before: a lone surrogate in `from` made every store write of the call fail.
    stream = TwilioMediaStream()
    text = _start(customParameters={"from": "+1555\ud800", "to": "\x00+1666\x0b", "x": "y" * 999})
    stream.receive_text(text)
    [started_event] = stream.events_received()
    assert isinstance(started_event, StreamStarted)
    params = started_event.custom_parameters
    assert params["from"] == "+1555\ufffd"
    assert params["to"] == "\ufffd+1666\ufffd"
    assert len(params["x"]) == 128
    for value in params.values():
        value.encode("utf-8")


@pytest.mark.parametrize(
    "timestamp",
    [
        "9223372036854775808",
        str(MAX_NUMBER + 1),
        2**63,
        "+5",
        " 5",
        "5_0",
        "\u0663",
        "\uff15",
        "-1",
    ],
)
def test_out_of_range_or_oddly_written_numbers_are_1007(timestamp: object) -> None:
    # Before: "9223372036854775808" was accepted and later failed every store write.
    error = _refused(started(), media_frame(chunk="1", timestamp=timestamp, payload="AAAA"))
    assert error.close_code == CLOSE_INVALID_PAYLOAD


def test_the_largest_number_is_accepted() -> None:
    stream = started()
    stream.receive_text(media_frame(chunk="1", timestamp=str(MAX_NUMBER), payload="AAAA"))
    assert stream.events_received() == [MediaReceived(b"\x00\x00\x00", MAX_NUMBER, 1)]


@pytest.mark.parametrize("digit", ["\ud800", "12", "x", "", "\uff11", 1, [], {"k": 1}, None])
def test_a_dtmf_digit_must_be_a_keypad_key(digit: object) -> None:
    frame = json.dumps({"event": "dtmf", "dtmf": {"track": "inbound_track", "digit": digit}})
    error = _refused(started(), frame)
    assert error.close_code == CLOSE_INVALID_PAYLOAD


def test_every_keypad_key_is_a_digit() -> None:
    stream = started()
    for digit in "0123456789*#ABCD":
        stream.receive_text(json.dumps({"event": "dtmf", "dtmf": {"digit": digit}}))
    assert [e.digit for e in stream.events_received() if isinstance(e, DtmfReceived)] == list(
        "0123456789*#ABCD"
    )


def test_unknown_event_names_cost_bounded_memory_and_are_reported_a_few_times() -> None:
    # Before: every distinct 60 KB name was kept for the life of the socket.
    stream = started()
    for n in range(2000):
        stream.receive_text(json.dumps({"event": f"{n:05d}" + "x" * 1000}))
    reported = stream.events_received()
    assert len(reported) == MAX_UNKNOWN_EVENT_NAMES
    assert all(isinstance(e, UnknownEvent) and len(e.name) <= 40 for e in reported)
    assert stream.unknown_event_count == 2000
    assert len(stream._unknown_names) == MAX_UNKNOWN_EVENT_NAMES


def test_unknown_event_names_are_cleaned_for_the_log() -> None:
    stream = TwilioMediaStream()
    stream.receive_text('{"event": "bad\\ud800name\\u0000"}')
    assert stream.events_received() == [UnknownEvent("bad\ufffdname\ufffd")]


# -- properties over any frame -----------------------------------------------------------

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.sampled_from(["", "0", "5", "\ud800", "\x00", "9223372036854775808", "\u0663", "+1"])
)
_json = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_events = st.sampled_from(["connected", "start", "media", "mark", "dtmf", "stop", "other"])


@st.composite
def _frames(draw: st.DrawFn) -> str:
    """A frame shaped like a Twilio message with any field possibly replaced by junk."""
    event = draw(_events)
    base: dict[str, Any] = json.loads(START) if event == "start" else {"event": event}
    if event == "media":
        base["media"] = {"track": "inbound", "chunk": "1", "timestamp": "0", "payload": "AAAA"}
    elif event == "mark":
        base["mark"] = {"name": "m"}
    elif event == "dtmf":
        base["dtmf"] = {"digit": "1"}
    target = base.get(event, base) if isinstance(base.get(event), dict) else base
    for key in draw(st.lists(st.sampled_from([*sorted(target), "event", "extra"]), max_size=3)):
        target[key] = draw(_json)
    return json.dumps(base)


def _check_event(event: object) -> None:
    """What an accepted event may hold: in-range numbers and text that encodes as UTF-8."""
    match event:
        case MediaReceived(timestamp_ms=ts, chunk=chunk):
            assert 0 <= ts <= MAX_NUMBER and 0 <= chunk <= MAX_NUMBER
        case StreamStarted() as s:
            for text in (s.stream_sid, s.call_sid, s.account_sid):
                assert text.isascii() and text.isprintable() and 0 < len(text) <= 64
            for text in [*s.custom_parameters, *s.custom_parameters.values(), *s.tracks]:
                text.encode("utf-8")
            text = s.encoding
            text.encode("utf-8")
            assert 0 <= s.sample_rate <= MAX_NUMBER and 0 <= s.channels <= MAX_NUMBER
        case DtmfReceived(digit=digit):
            assert digit in "0123456789*#ABCD" and len(digit) == 1
        case UnknownEvent(name=name):
            assert name.isprintable() and len(name) <= 40
        case Connected(protocol=p, version=v):
            assert p.isprintable() and v.isprintable()
        case MarkPlayed(name=name):
            assert isinstance(name, str)
        case StreamStopped():
            pass
        case _:
            raise AssertionError(f"unexpected event {event!r}")


@PROPERTY
@given(st.lists(_frames() | st.text(max_size=40), min_size=1, max_size=6))
def test_any_frames_raise_only_remote_protocol_errors(frames: list[str]) -> None:
    stream = TwilioMediaStream()
    for frame in [*frames[:1], START, *frames[1:]]:
        try:
            stream.receive_text(frame)
        except RemoteProtocolError as exc:
            assert exc.close_code in (1002, 1007, 1009)
            return
        for event in stream.events_received():
            _check_event(event)


@PROPERTY
@given(st.binary(max_size=64))
def test_any_bytes_decoded_leniently_raise_only_remote_protocol_errors(data: bytes) -> None:
    stream = started()
    try:
        stream.receive_text(data.decode("utf-8", "surrogateescape"))
    except RemoteProtocolError:
        return
    for event in stream.events_received():
        _check_event(event)
