"""The short road for whole text frames reads every byte stream as uvicorn's own protocol does:
the same messages to the application, the same bytes back to the client, the same close.

Each stream is fed, cut at random places, to both protocols over a recording transport, with
the event loop run between pieces so the application takes its messages as it would. One
difference is allowed, in the short road's favour: uvicorn drops the messages that arrived in
the same read as a malformed frame, where the short road has already handed them on."""

from __future__ import annotations

import asyncio
import random
import struct
from typing import Any

import pytest
import uvicorn
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.frames import Frame, Opcode

from bridge.adapters.server_frames import (
    QUEUED_BEFORE_PAUSE,
    READ_AT,
    LeanWebSocketProtocol,
    frame_extent,
    has_lean_path,
)

MAX_SIZE = 4096
HANDSHAKE = (
    b"GET /twilio/media HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)


class _Transport(asyncio.Transport):
    """What the protocol writes, and whether it closed the connection."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False
        self.paused = False
        self.pauses = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.paused = True
        self.pauses += 1

    def resume_reading(self) -> None:
        self.paused = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8000)}.get(
            name, default
        )


class _Side:
    """One protocol under test, with an application that keeps what it receives (and apart,
    when each message was read and taken). ``take_delay_s``: how long the application is
    busy after each message before it asks for the next."""

    def __init__(self, protocol_class: type[WebSocketsSansIOProtocol]) -> None:
        self.received: list[dict[str, Any]] = []
        self.read_at: list[float | None] = []
        self.taken_at: list[float] = []
        self.take_delay_s = 0.0
        self.taking = asyncio.Event()  # cleared: the application stops taking messages
        self.taking.set()
        self.failed: str | None = None

        async def app(scope: Any, receive: Any, send: Any) -> None:
            assert (await receive())["type"] == "websocket.connect"
            await send({"type": "websocket.accept"})
            while True:
                message = await receive()
                self.taken_at.append(asyncio.get_running_loop().time())
                self.read_at.append(message.pop(READ_AT, None))
                self.received.append(message)
                if message["type"] == "websocket.disconnect":
                    return
                if self.take_delay_s:
                    await asyncio.sleep(self.take_delay_s)
                await self.taking.wait()

        config = uvicorn.Config(
            app,
            log_config=None,
            ws_max_size=MAX_SIZE,
            ws_ping_interval=None,
            ws_per_message_deflate=False,
            lifespan="off",
        )
        config.load()
        self.protocol = protocol_class(config, ServerState(), {})
        self.transport = _Transport()
        self.protocol.connection_made(self.transport)

    async def feed(self, data: bytes) -> None:
        if self.failed:
            return
        try:
            self.protocol.data_received(data)
        except Exception as exc:  # as the event loop would: drop the connection
            # uvicorn raises when invalid UTF-8 and a close frame arrive in one read.
            self.failed = type(exc).__name__
            self.transport.closed = True
            self.protocol.connection_lost(exc)
        for _ in range(5):  # the application's task takes what was queued
            await asyncio.sleep(0)

    async def open(self) -> int:
        await self.feed(HANDSHAKE)
        assert self.transport.written.startswith(b"HTTP/1.1 101")
        return len(self.transport.written)


def _frame(opcode: Opcode, data: bytes, *, fin: bool = True, mask: bool = True) -> bytes:
    return Frame(opcode, data, fin=fin).serialize(mask=mask, extensions=[])


def _text(rng: random.Random, size: int) -> bytes:
    return bytes(rng.choice(b'abc"{}:,0123456789') for _ in range(size))


def _random_frame(rng: random.Random) -> bytes:
    """Mostly what a caller's socket carries; sometimes anything a client could send."""
    kind = rng.random()
    size = rng.choice([0, 5, 125, 126, 300, 395, 65535 % MAX_SIZE, MAX_SIZE])
    if kind < 0.7:
        return _frame(Opcode.TEXT, _text(rng, size))
    bad = rng.choice(
        [
            "binary",
            "ping",
            "pong",
            "fragmented",
            "unmasked",
            "bad_utf8",
            "oversized",
            "rsv1",
            "reserved_opcode",
            "close",
            "long_length",
        ]
    )
    match bad:
        case "binary":
            return _frame(Opcode.BINARY, _text(rng, size))
        case "ping":
            return _frame(Opcode.PING, b"hi")
        case "pong":
            return _frame(Opcode.PONG, b"")
        case "fragmented":
            return _frame(Opcode.TEXT, b"part-", fin=False) + _frame(Opcode.CONT, b"two")
        case "unmasked":
            return _frame(Opcode.TEXT, b"plain", mask=False)
        case "bad_utf8":
            return _frame(Opcode.TEXT, b"ok\xff\xfe")
        case "oversized":
            return _frame(Opcode.TEXT, b"x" * (MAX_SIZE + 1))
        case "rsv1":
            data = bytearray(_frame(Opcode.TEXT, b"squeezed"))
            data[0] |= 0x40
            return bytes(data)
        case "reserved_opcode":
            data = bytearray(_frame(Opcode.TEXT, b"odd"))
            data[0] = 0x83
            return bytes(data)
        case "close":
            return _frame(Opcode.CLOSE, struct.pack("!H", 1000) + b"bye")
        case _:  # a 64-bit length for a short payload: legal, if wasteful
            payload = b'{"event":"media"}'
            return struct.pack("!BBQ", 0x81, 0xFF, len(payload)) + b"\0\0\0\0" + payload
    raise AssertionError(bad)


def _cuts(rng: random.Random, stream: bytes) -> list[bytes]:
    pieces, at = [], 0
    while at < len(stream):
        step = rng.choice([1, 2, 3, 7, 64, 395, 1000, len(stream)])
        pieces.append(stream[at : at + step])
        at += step
    return pieces


async def test_this_uvicorn_and_websockets_have_what_the_short_road_needs() -> None:
    # If an upgrade takes something away, the short road turns itself off, silently costing
    # every call the CPU it saves: this says so instead.
    assert has_lean_path(_Side(LeanWebSocketProtocol).protocol)


@pytest.mark.parametrize(
    ("frame", "extent"),
    [
        (b"\x81\x85abcd", (6, 5)),
        (b"\x81\x05", (2, 5)),
        (b"\x81\xfe\x01\x8b", (8, 395)),
        (b"\x81\xff" + (70000).to_bytes(8, "big") + b"abcd", (14, 70000)),
        (b"\x81", None),
        (b"\x81\xfe\x01", None),
        (b"\x81\xff\0\0", None),
    ],
)
def test_a_frame_header_gives_where_its_payload_lies(
    frame: bytes, extent: tuple[int, int] | None
) -> None:
    assert frame_extent(frame, 0) == extent
    assert frame_extent(b"junk" + frame, 4) == (
        None if extent is None else (extent[0] + 4, extent[1])
    )


@pytest.mark.parametrize("seed", range(300))
async def test_any_stream_reads_as_uvicorn_reads_it(seed: int) -> None:
    rng = random.Random(seed)
    stream = b"".join(_random_frame(rng) for _ in range(rng.randint(1, 12)))
    lean, plain = _Side(LeanWebSocketProtocol), _Side(WebSocketsSansIOProtocol)
    assert await lean.open() == await plain.open()
    for piece in _cuts(rng, stream):
        await lean.feed(piece)
        await plain.feed(piece)
        if not (lean.transport.closed or plain.transport.closed):
            # Piece by piece while open; a malformed frame may be refused a piece later, once
            # it is whole, where websockets refuses it from its first bytes.
            assert lean.received == plain.received
            assert lean.transport.written == plain.transport.written
    if plain.failed == "InvalidState":
        _assert_close_honoured(lean, plain)
        return
    assert lean.transport.written == plain.transport.written
    assert lean.transport.closed == plain.transport.closed
    assert lean.failed == plain.failed
    for side in (lean, plain):
        if not side.failed:
            side.protocol.connection_lost(None)
            await side.feed(b"")
    _assert_same_reading(lean.received, plain.received)


def _assert_close_honoured(lean: _Side, plain: _Side) -> None:
    """Invalid UTF-8 and the client's close in one read: uvicorn raises out of
    ``data_received`` and the connection drops; here the close is answered and the
    application told the client's code. What uvicorn wrote and passed on before it failed
    is here too (with what it dropped for sharing the read: pongs, messages)."""
    assert lean.failed is None and lean.transport.closed
    written = bytes(lean.transport.written)
    assert written.startswith(bytes(plain.transport.written))
    at, replies = len(plain.transport.written), []
    while (extent := frame_extent(written, at)) is not None:
        replies.append(written[at])
        at = extent[0] + extent[1]
    assert at == len(written) and replies[-1] == 0x88  # whole frames, a close reply last
    last = lean.received[-1]
    assert last["type"] == "websocket.disconnect" and last["code"] not in (1005, 1006)
    kept = iter(lean.received[:-1])
    assert all(message in kept for message in plain.received[:-1])  # in order, none invented


def _assert_same_reading(lean: list[dict[str, Any]], plain: list[dict[str, Any]]) -> None:
    """Equal, but for messages uvicorn dropped because a malformed frame shared their read."""
    if lean == plain:
        return
    assert plain and plain[-1]["type"] == "websocket.disconnect"
    assert plain[-1]["code"] in (1002, 1007, 1009), "only a failure may drop messages"
    closed_at = next(i for i, m in enumerate(lean) if m["type"] == "websocket.disconnect")
    assert lean[closed_at] == plain[-1]
    kept = iter(lean[:closed_at])
    assert all(message in kept for message in plain[:-1])  # in order, none invented


async def test_media_frames_never_reach_websockets_parser() -> None:
    rng = random.Random(7)
    side = _Side(LeanWebSocketProtocol)
    await side.open()
    parsed: list[bytes] = []
    conn = side.protocol.conn
    feed = conn.receive_data

    def counting(data: bytes | bytearray) -> None:
        parsed.append(bytes(data))
        feed(data)

    conn.receive_data = counting  # type: ignore[method-assign]
    frames = [
        b'{"event":"media","sequenceNumber":"%d","media":{"payload":"%s"}}'
        % (n, b"/" * rng.choice([4, 216, 300]))
        for n in range(200)
    ]
    for piece in _cuts(rng, b"".join(_frame(Opcode.TEXT, text) for text in frames)):
        await side.feed(piece)
    assert [m["text"].encode() for m in side.received] == frames
    assert parsed == []
    # A ping still goes to websockets, which answers it, and the road opens again after it.
    await side.feed(_frame(Opcode.PING, b"hi") + _frame(Opcode.TEXT, b"after"))
    assert len(parsed) == 1
    assert side.transport.written.endswith(b"\x8a\x02hi")  # the pong
    assert side.received[-1]["text"] == "after"


async def test_a_read_cut_after_a_header_leaves_the_reading_in_step() -> None:
    # A read that ends right after a frame's mask key: a parser given those bytes takes the
    # header and waits for the payload with nothing buffered, which must not pass for the
    # start of the next frame. Here it follows the end of a fragmented message.
    media = _frame(Opcode.TEXT, b'{"event":"media"}')
    stream = [
        _frame(Opcode.TEXT, b"one", fin=False),
        _frame(Opcode.CONT, b"-two") + media[:6],
        media[6:] + media,
    ]
    lean, plain = _Side(LeanWebSocketProtocol), _Side(WebSocketsSansIOProtocol)
    await lean.open()
    await plain.open()
    for piece in stream:
        await lean.feed(piece)
        await plain.feed(piece)
    texts = [m.get("text") for m in lean.received]
    assert texts == ["one-two", '{"event":"media"}', '{"event":"media"}']
    assert lean.received == plain.received and not lean.transport.closed


async def test_invalid_text_read_with_the_close_frame_still_closes_cleanly() -> None:
    side = _Side(LeanWebSocketProtocol)
    await side.open()
    await side.feed(
        _frame(Opcode.TEXT, b'{"event":"media"}')
        + _frame(Opcode.TEXT, b"\xff\xfe")
        + _frame(Opcode.CLOSE, b"\x03\xe8bye")
    )
    assert side.failed is None
    assert side.received == [
        {"type": "websocket.receive", "text": '{"event":"media"}'},
        {"type": "websocket.disconnect", "code": 1000, "reason": "bye"},
    ]
    assert side.transport.written.endswith(b"\x88\x05\x03\xe8bye") and side.transport.closed


async def test_frames_in_the_same_bytes_as_the_request_go_the_long_way() -> None:
    # uvicorn hands over the upgrade request alone; were a frame's header to come with it,
    # websockets might be inside that frame, so this socket is read by websockets throughout.
    lean, plain = _Side(LeanWebSocketProtocol), _Side(WebSocketsSansIOProtocol)
    media = _frame(Opcode.TEXT, b'{"event":"media"}')
    for side in (lean, plain):
        await side.feed(HANDSHAKE + media[:6])
        await side.feed(media[6:] + media)
    assert lean.received == plain.received
    assert [m["text"] for m in lean.received] == ['{"event":"media"}'] * 2


async def test_a_message_carries_when_it_was_read_not_when_it_was_taken() -> None:
    # A mark echo dates the caller's playout: what counts is when it came off the socket, not
    # when a busy application got round to it. Both roads stamp it: a whole frame (short)
    # and a fragmented message (websockets).
    side = _Side(LeanWebSocketProtocol)
    await side.open()
    side.take_delay_s = 0.05
    loop = asyncio.get_running_loop()
    before = loop.time()
    side.protocol.data_received(
        _frame(Opcode.TEXT, b"first")
        + _frame(Opcode.TEXT, b"sec", fin=False)
        + _frame(Opcode.CONT, b"ond")
    )
    after = loop.time()
    for _ in range(50):  # bounded: the application takes the second after its delay
        if len(side.received) == 2:
            break
        await asyncio.sleep(0.01)
    assert [m["text"] for m in side.received] == ["first", "second"]
    first, second = side.read_at
    assert first is not None and second is not None
    assert before <= first <= second <= after
    assert side.taken_at[1] - second >= 0.05
    # uvicorn's own protocol stamps nothing.
    plain = _Side(WebSocketsSansIOProtocol)
    await plain.open()
    await plain.feed(_frame(Opcode.TEXT, b"first"))
    assert plain.read_at == [None] and plain.received[0]["text"] == "first"


def _media(n: int) -> bytes:
    return _frame(Opcode.TEXT, b'{"event":"media","media":{"payload":"%d"}}' % n)


async def test_a_socket_read_frame_by_frame_is_never_paused() -> None:
    # A call's task takes each caller frame long before the next one: pausing the socket
    # after each, and resuming it when taken, would only cost two epoll changes a frame.
    side = _Side(LeanWebSocketProtocol)
    await side.open()
    for n in range(200):
        await side.feed(_media(n))
    assert len(side.received) == 200
    assert side.transport.pauses == 0 and not side.transport.paused


async def test_an_application_that_stops_taking_messages_stops_the_reading() -> None:
    side = _Side(LeanWebSocketProtocol)
    await side.open()
    await side.feed(_media(0))
    side.taking.clear()  # busy after the first message
    await side.feed(_media(1))
    n = 2
    while not side.transport.paused and n < 100:  # bounded: it must pause long before
        await side.feed(_media(n))
        n += 1
    assert side.transport.paused
    assert side.protocol.queue.qsize() == QUEUED_BEFORE_PAUSE
    assert len(side.received) == 2  # the first, and the one it is busy with
    # Frames read in the same bytes as the pausing one are queued all the same, as uvicorn
    # queues them; the reading stops after that read.
    side.protocol.data_received(_media(n) + _media(n + 1))
    assert side.protocol.queue.qsize() == QUEUED_BEFORE_PAUSE + 2
    # Taking them all resumes the reading, and every frame arrives in order, once.
    side.taking.set()
    for _ in range(50):  # bounded: the application takes one message per step
        if not side.transport.paused:
            break
        await asyncio.sleep(0)
    assert not side.transport.paused and side.transport.pauses == 1
    assert [m["text"] for m in side.received] == [
        f'{{"event":"media","media":{{"payload":"{k}"}}}}' for k in range(n + 2)
    ]


async def test_waiting_for_a_frame_does_not_look_up_the_running_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # asyncio.Queue looks the running loop up for every wait, a getpid() system call on
    # CPython 3.11: fifty a second per call for nothing. The queue knows its loop.
    side = _Side(LeanWebSocketProtocol)
    await side.open()
    lookups = 0
    real = asyncio.events._get_running_loop

    def counting() -> asyncio.AbstractEventLoop | None:
        nonlocal lookups
        lookups += 1
        return real()

    monkeypatch.setattr(asyncio.events, "_get_running_loop", counting)
    for n in range(100):
        await side.feed(_media(n))
    assert len(side.received) == 100
    assert lookups == 0
