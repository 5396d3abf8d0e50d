"""SIP over TCP: messages framed by Content-Length, however the bytes arrive."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.protocols.sip.message import SipParseError, SipRequest, parse_message
from bridge.protocols.sip.stream import SipStreamFramer

PROPERTY = settings(derandomize=True, deadline=None, max_examples=200)


def message(body: str = "", length_header: str = "Content-Length", extra: str = "") -> bytes:
    return (
        "OPTIONS sip:agent@127.0.0.1:5060 SIP/2.0\r\n"
        "Via: SIP/2.0/TCP 127.0.0.1:40000;branch=z9hG4bK-1\r\n"
        "From: <sip:pbx@127.0.0.1>;tag=1\r\nTo: <sip:agent@127.0.0.1>\r\n"
        f"Call-ID: c1\r\nCSeq: 1 OPTIONS\r\n{extra}"
        f"{length_header}: {len(body.encode())}\r\n\r\n{body}"
    ).encode()


def test_back_to_back_messages_with_bodies_are_split_exactly() -> None:
    first, second = message("v=0\r\n"), message("x" * 300, length_header="l")
    chunk = SipStreamFramer().feed(first + second)
    assert chunk.messages == [first, second] and chunk.pings == 0
    assert isinstance(parse_message(chunk.messages[1]), SipRequest)


def test_a_message_in_pieces_comes_out_once_whole() -> None:
    framer = SipStreamFramer()
    data = message("hello body")
    out = [m for i in range(0, len(data), 7) for m in framer.feed(data[i : i + 7]).messages]
    assert out == [data] and framer.pending == 0


def test_keepalive_pings_are_counted_and_stray_line_ends_skipped() -> None:
    framer = SipStreamFramer()
    assert framer.feed(b"\r\n").pings == 0  # half a ping so far
    assert framer.feed(b"\r\n").pings == 1
    chunk = framer.feed(b"\r\n\r\n\r\n\r\n" + b"\r\n" + message())
    assert chunk.pings == 2 and chunk.messages == [message()]


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (message().replace(b"Content-Length: 0\r\n", b""), 400),
        (message(extra="Content-Length: 5\r\n"), 400),
        (message().replace(b"Content-Length: 0", b"Content-Length: -1"), 400),
        (message().replace(b"Content-Length: 0", b"Content-Length: 99999999999"), 400),
        (message().replace(b"Content-Length: 0", b"Content-Length: 70000"), 513),
        (b"INVITE " + b"x" * 70_000, 513),
    ],
    ids=["missing", "conflicting", "negative", "huge-number", "body-too-large", "no-end"],
)
def test_unframeable_streams_raise_the_protocols_own_error(data: bytes, status: int) -> None:
    with pytest.raises(SipParseError) as caught:
        SipStreamFramer().feed(data)
    assert caught.value.status == status


@PROPERTY
@given(st.lists(st.text(max_size=200), min_size=1, max_size=5), st.data())
def test_any_split_of_any_messages_gives_back_the_same_messages(
    bodies: list[str], data: st.DataObject
) -> None:
    stream = b"".join(message(body) for body in bodies)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    framer = SipStreamFramer()
    out: list[bytes] = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        out += framer.feed(stream[start:end]).messages
    assert out == [message(body) for body in bodies]


@PROPERTY
@given(st.lists(st.binary(max_size=300), max_size=6))
def test_arbitrary_bytes_only_raise_sip_parse_error(pieces: list[bytes]) -> None:
    framer = SipStreamFramer(max_message=1024)
    try:
        for piece in pieces:
            for item in framer.feed(piece).messages:
                assert len(item) <= 1024
    except SipParseError:
        pass
    assert framer.pending <= 1024 + 300
