"""What the hostile sessions of ``bridge fuzz`` are made of: a signed voice webhook, Twilio
frames (well formed or not), a WebSocket client, and a raw-socket client for what no
WebSocket library will send (invalid UTF-8, a frame cut off by a TCP reset).

Every read and wait here is bounded; nothing connects anywhere but the target bridge.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import secrets
import socket
import struct
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bridge.devtools import simulator
from bridge.devtools.simulator import SimulationError, parse_twiml, sign

__all__ = [
    "SILENCE_B64",
    "Answer",
    "FuzzContext",
    "Outcome",
    "RawSocket",
    "Target",
    "answer_call",
    "await_close",
    "check_twiml",
    "connected_frame",
    "expect_refused",
    "media_frame",
    "new_call_sid",
    "open_media",
    "post_voice",
    "serve_stream",
    "start_frame",
    "stop_frame",
    "upgrade_request",
    "voice_form",
    "ws_frame",
]

SILENCE_B64 = base64.b64encode(b"\xff" * 160).decode("ascii")  # 20 ms of mu-law silence
CLOSE_WAIT_S = 5.0  # how long a refused stream may take to be closed
SERVE_WAIT_S = 8.0  # how long a good stream may take to hear the agent's greeting
_OPEN_TIMEOUT_S = 5.0
_MAX_SIZE = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Target:
    """The bridge under test and the secrets it was started with."""

    base_url: str  # http://127.0.0.1:PORT, also its BRIDGE_PUBLIC_URL
    auth_token: str
    review_token: str
    stream_secret: bytes

    @property
    def host(self) -> str:
        return urlsplit(self.base_url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        return urlsplit(self.base_url).port or 80

    @property
    def media_url(self) -> str:
        """The ``<Stream url>`` the bridge writes in TwiML (and Twilio signs)."""
        return "ws" + self.base_url.removeprefix("http") + "/twilio/media"

    def upgrade_signature(self) -> str:
        return sign(self.auth_token, self.media_url, {})


@dataclass(slots=True)
class Outcome:
    """What one hostile session saw. ``legit_streams`` counts the valid streams it opened on
    purpose (each may cost one model session); ``label`` is a short summary such as the close
    code; ``notes`` are surprises worth reporting."""

    legit_streams: int = 0
    label: str = ""
    notes: list[str] = field(default_factory=list)
    twiml_checked: int = 0
    twiml_not_xml: list[str] = field(default_factory=list)


@dataclass(slots=True)
class FuzzContext:
    target: Target
    http: httpx.AsyncClient
    hold_s: float  # how long slow and idle clients hold their connection


@dataclass(frozen=True, slots=True)
class Answer:
    call_sid: str
    stream_url: str
    params: dict[str, str]


def new_call_sid() -> str:
    return "CA" + secrets.token_hex(16)


def voice_form(call_sid: str, from_number: str, to_number: str) -> dict[str, str]:
    return simulator.voice_form(call_sid, "AC" + "0" * 32, from_number, to_number)


def check_twiml(text: str, out: Outcome) -> None:
    """Count a TwiML reply and remember it when it is not XML at all."""
    out.twiml_checked += 1
    try:
        ET.fromstring(text)
    except ET.ParseError as exc:
        lines = text.split("\n")  # the parser counts lines by "\n" alone, not by \x0b
        line = exc.position[0]
        where = lines[line - 1] if 0 < line <= len(lines) else text
        out.twiml_not_xml.append(f"{exc}: {where.strip()[:160]!a}")


async def post_voice(
    ctx: FuzzContext, form: dict[str, str], out: Outcome, signature: str | None = "valid"
) -> httpx.Response:
    """POST the voice webhook; a 200 reply is checked for being XML."""
    url = ctx.target.base_url + "/twilio/voice"
    headers = {}
    if signature == "valid":
        headers["X-Twilio-Signature"] = sign(ctx.target.auth_token, url, form)
    elif signature is not None:
        headers["X-Twilio-Signature"] = signature
    response = await ctx.http.post(url, data=form, headers=headers)
    if response.status_code == 200:
        check_twiml(response.text, out)
    return response


async def answer_call(
    ctx: FuzzContext,
    out: Outcome,
    call_sid: str | None = None,
    from_number: str = "+15551230000",
    to_number: str = "+15557650000",
) -> Answer:
    """A signed voice webhook for a (new) call; raises :class:`SimulationError` unless the
    bridge answers with a ``<Connect><Stream>``."""
    call_sid = call_sid or new_call_sid()
    response = await post_voice(ctx, voice_form(call_sid, from_number, to_number), out)
    if response.status_code != 200:
        raise SimulationError(f"voice webhook answered {response.status_code}")
    stream_url, params = parse_twiml(response.text)
    return Answer(call_sid, stream_url, params)


def connected_frame() -> str:
    return '{"event":"connected","protocol":"Call","version":"1.0.0"}'


def start_frame(call_sid: Any, params: Any, stream_sid: str | None = None) -> tuple[str, str]:
    """A ``start`` message and its stream SID. Values are JSON-encoded as given, so a lone
    surrogate in a string goes out as a ``\\udXXX`` escape in otherwise valid JSON."""
    stream_sid = stream_sid or "MZ" + secrets.token_hex(16)
    start = {
        "accountSid": "AC" + "0" * 32,
        "streamSid": stream_sid,
        "callSid": call_sid,
        "tracks": ["inbound"],
        "customParameters": params,
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
    }
    message = {"event": "start", "sequenceNumber": "1", "start": start, "streamSid": stream_sid}
    return json.dumps(message), stream_sid


def media_frame(stream_sid: str, chunk: int, timestamp: Any = None) -> str:
    stamp = str((chunk - 1) * 20) if timestamp is None else timestamp
    media = {"track": "inbound", "chunk": str(chunk), "timestamp": stamp, "payload": SILENCE_B64}
    message = {"event": "media", "sequenceNumber": str(chunk + 1), "media": media}
    return json.dumps({**message, "streamSid": stream_sid})


def stop_frame(stream_sid: str, call_sid: str) -> str:
    stop = {"accountSid": "AC" + "0" * 32, "callSid": call_sid}
    return json.dumps({"event": "stop", "stop": stop, "streamSid": stream_sid})


async def open_media(
    ctx: FuzzContext, url: str | None = None, signature: str | None = "valid"
) -> ClientConnection:
    """Open the media WebSocket; ``signature=None`` sends none, any other string is sent
    as is. Raises ``InvalidStatus`` when the handshake is refused."""
    headers = {}
    if signature == "valid":
        headers["X-Twilio-Signature"] = ctx.target.upgrade_signature()
    elif signature is not None:
        headers["X-Twilio-Signature"] = signature
    return await connect(
        url or ctx.target.media_url,
        additional_headers=headers,
        open_timeout=_OPEN_TIMEOUT_S,
        close_timeout=2.0,
        compression=None,
        max_size=_MAX_SIZE,
        proxy=None,
    )


async def await_close(ws: ClientConnection, wait_s: float = CLOSE_WAIT_S) -> tuple[str, int]:
    """Read until the bridge closes the socket. Returns the close code (or ``open`` when it
    was still open after ``wait_s``, and then closes it) and how many media messages came."""
    media = 0
    try:
        async with asyncio.timeout(wait_s):
            async for message in ws:
                if isinstance(message, str) and '"media"' in message[:40]:
                    media += 1
    except TimeoutError:
        await ws.close()
        return "open", media
    except ConnectionClosed:
        pass
    return str(ws.close_code), media


async def expect_refused(ws: ClientConnection, out: Outcome) -> None:
    """The stream must be closed without ever being served; note anything else."""
    code, media = await await_close(ws)
    out.label = code
    if media:
        out.notes.append(f"refused stream was served ({media} media messages)")
    if code == "open":
        out.notes.append(f"refused stream still open after {CLOSE_WAIT_S:g} s")


async def serve_stream(
    ctx: FuzzContext, answer: Answer, token: str, keep_open: bool = False
) -> tuple[ClientConnection, str, str] | None:
    """Start a valid stream and wait for the agent's first audio (proof a model session was
    opened for it). Unless ``keep_open``, stop it and wait for the close; else hand back the
    socket and its stream SID. None when the bridge never served it."""
    ws = await open_media(ctx, answer.stream_url)
    start, stream_sid = start_frame(answer.call_sid, {**answer.params, "token": token})
    await ws.send(connected_frame())
    await ws.send(start)
    served = False
    with contextlib.suppress(TimeoutError, ConnectionClosed):
        async with asyncio.timeout(SERVE_WAIT_S):
            async for message in ws:
                if isinstance(message, str) and '"media"' in message[:40]:
                    served = True
                    break
    if served and keep_open:
        return ws, stream_sid, answer.call_sid
    with contextlib.suppress(ConnectionClosed):
        await ws.send(stop_frame(stream_sid, answer.call_sid))
    await await_close(ws)
    return (ws, stream_sid, answer.call_sid) if served else None


# ------------------------------------------------------------------ raw sockets


def ws_frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    """One client-to-server WebSocket frame (RFC 6455 §5.2), masked as clients must."""
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class RawSocket:
    """A TCP connection to the bridge driven byte by byte."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, target: Target) -> RawSocket:
        async with asyncio.timeout(_OPEN_TIMEOUT_S):
            reader, writer = await asyncio.open_connection(target.host, target.port)
        return cls(reader, writer)

    @classmethod
    async def upgrade(cls, target: Target, signature: str | None = "valid") -> RawSocket:
        """Do the WebSocket handshake by hand; raises ``ConnectionError`` unless it is 101."""
        raw = await cls.open(target)
        await raw.send(upgrade_request(target, signature))
        status = await raw.read_head()
        if not status.startswith("HTTP/1.1 101"):
            await raw.close()
            raise ConnectionError(f"upgrade answered {status!r}")
        return raw

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def send_text(self, text: str | bytes) -> None:
        await self.send(ws_frame(0x1, text.encode() if isinstance(text, str) else text))

    async def read_head(self) -> str:
        """The status line of an HTTP response (its headers are read and dropped)."""
        async with asyncio.timeout(_OPEN_TIMEOUT_S):
            head = await self.reader.readuntil(b"\r\n\r\n")
        return head.split(b"\r\n", 1)[0].decode("latin-1")

    async def close_code(self, wait_s: float = CLOSE_WAIT_S) -> str:
        """Read server frames until a close frame (its code) or EOF (``eof``); ``open`` if
        neither came within ``wait_s``."""
        try:
            async with asyncio.timeout(wait_s):
                while True:
                    head = await self.reader.readexactly(2)
                    n = head[1] & 0x7F
                    if n == 126:
                        n = struct.unpack("!H", await self.reader.readexactly(2))[0]
                    elif n == 127:
                        n = struct.unpack("!Q", await self.reader.readexactly(8))[0]
                    payload = await self.reader.readexactly(n)
                    if head[0] & 0x0F == 0x8:
                        return str(struct.unpack("!H", payload[:2])[0]) if n >= 2 else "1005"
        except (asyncio.IncompleteReadError, ConnectionError):
            return "eof"
        except TimeoutError:
            return "open"

    async def reset(self) -> None:
        """Drop the connection with a TCP RST (SO_LINGER 0), as a crashed peer would."""
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(2.0):
                await self.writer.wait_closed()


def upgrade_request(target: Target, signature: str | None = "valid") -> bytes:
    key = base64.b64encode(os.urandom(16)).decode("ascii")
    lines = [
        "GET /twilio/media HTTP/1.1",
        f"Host: {target.host}:{target.port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    if signature == "valid":
        lines.append(f"X-Twilio-Signature: {target.upgrade_signature()}")
    elif signature is not None:
        lines.append(f"X-Twilio-Signature: {signature}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")
