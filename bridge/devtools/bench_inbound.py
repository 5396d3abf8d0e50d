"""CPU of one caller-audio frame read from a Twilio media socket, both ways in the same run.

A media socket brings fifty ``media`` frames a second per call. This times a uvicorn server
reading them with :class:`~bridge.adapters.server_frames.LeanWebSocketProtocol`, as ``bridge
serve`` does, against uvicorn's own WebSocket protocol, in alternating rounds. The frames come
from a client in a child process, one at a time with a pause between them as a call's would,
so each arrives in a read of its own and only the server's CPU is counted, on uvloop as the
bridge serves. The application reads each message and does nothing with it, so the figure is
the socket's road alone. Best round of each; the ratio is what carries over to another machine.

    python -m bridge.devtools.bench inbound [--frames 20000] [--rounds 5]
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import sys
import time
from dataclasses import dataclass
from typing import Any

import uvicorn
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from bridge.adapters.server_frames import LeanWebSocketProtocol
from bridge.devtools.child_process import piped_child
from bridge.devtools.uvloop_runner import run_on_uvloop

__all__ = ["InboundReport", "format_inbound", "run_inbound"]

_GAP_S = 0.0001  # between the sender's frames: each frame its own read, as in a call
_ROUND_TIMEOUT_S = 120.0


@dataclass(frozen=True, slots=True)
class InboundReport:
    frames: int
    rounds: int
    lean_us: float  # best round, CPU microseconds per frame
    uvicorn_us: float

    @property
    def ratio(self) -> float:
        return self.lean_us / self.uvicorn_us


class _Reader:
    """The application: takes every message of one socket and counts them."""

    def __init__(self) -> None:
        self.expected = 0
        self.received = 0
        self.began = 0.0  # process CPU time when the socket opened
        self.done = asyncio.Event()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            return
        await receive()  # websocket.connect
        self.began = time.process_time()
        await send({"type": "websocket.accept"})
        while (await receive())["type"] == "websocket.receive":
            self.received += 1
            if self.received == self.expected:
                self.done.set()


async def _round(
    sender: asyncio.subprocess.Process, protocol: type[WebSocketsSansIOProtocol], frames: int
) -> float:
    """CPU microseconds per frame read by a fresh server with ``protocol``."""
    reader = _Reader()
    reader.expected = frames
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    config = uvicorn.Config(
        reader,
        ws=protocol,
        log_config=None,
        access_log=False,
        lifespan="off",
        ws_max_size=256 * 1024,
        ws_ping_interval=None,
        ws_per_message_deflate=False,
    )
    server = uvicorn.Server(config)
    # Listening already, so the sender's connection waits in the backlog until uvicorn runs.
    serving = asyncio.create_task(server.serve(sockets=[listener]))
    try:
        assert sender.stdin is not None and sender.stdout is not None
        sender.stdin.write(f"ws://127.0.0.1:{port}/media {frames}\n".encode())
        await sender.stdin.drain()
        await asyncio.wait_for(reader.done.wait(), _ROUND_TIMEOUT_S)
        spent = time.process_time() - reader.began
        if (await asyncio.wait_for(sender.stdout.readline(), 10)).strip() != b"sent":
            raise RuntimeError("the sender failed")
        return spent / frames * 1e6
    finally:
        server.should_exit = True
        await serving
        listener.close()


def _media_frames(frames: int) -> list[str]:
    payload = base64.b64encode(os.urandom(160)).decode()  # 20 ms of mu-law
    return [
        json.dumps(
            {
                "event": "media",
                "sequenceNumber": str(n + 2),
                "media": {
                    "track": "inbound",
                    "chunk": str(n + 1),
                    "timestamp": str(n * 20),
                    "payload": payload,
                },
                "streamSid": "MZ00000000000000000000000000000000",
            }
        )
        for n in range(frames)
    ]


def _send() -> None:
    """The child: for each ``URL COUNT`` line on stdin, send that many media frames."""
    from websockets.sync.client import connect

    for line in sys.stdin:
        url, count = line.split()
        texts = _media_frames(int(count))
        with connect(url, compression=None) as ws:
            for text in texts:
                ws.send(text)
                time.sleep(_GAP_S)
        print("sent", flush=True)


async def _run(frames: int, rounds: int) -> InboundReport:
    lean: list[float] = []
    plain: list[float] = []
    async with piped_child("bridge.devtools.bench_inbound", "--send") as sender:
        for _ in range(rounds):
            plain.append(await _round(sender, WebSocketsSansIOProtocol, frames))
            lean.append(await _round(sender, LeanWebSocketProtocol, frames))
    return InboundReport(frames, rounds, min(lean), min(plain))


def run_inbound(frames: int = 20_000, rounds: int = 5) -> InboundReport:
    """Both ways on uvloop, the event loop the bridge serves on."""
    return run_on_uvloop(_run(frames, rounds))


def format_inbound(report: InboundReport) -> str:
    return "\n".join(
        [
            f"inbound: one caller-audio frame read from a media socket, CPU of the server, "
            f"best of {report.rounds} rounds of {report.frames}",
            "",
            f"  uvicorn's WebSocket protocol  {report.uvicorn_us:6.2f} us/frame",
            f"  LeanWebSocketProtocol         {report.lean_us:6.2f} us/frame  {report.ratio:.2f}x",
        ]
    )


if __name__ == "__main__":
    if sys.argv[1:] == ["--send"]:
        _send()
    else:
        print(format_inbound(run_inbound()))
