"""CPU of one caller-audio frame written to the model's socket, both ways in the same run.

The bridge writes fifty ``input_audio_buffer.append`` frames a second per call to its model.
This times ``write_now`` (pooled mask keys, :mod:`bridge.adapters.client_frames`) against
websockets' own framing through its sans-I/O protocol (a key from ``os.urandom`` per frame),
alternating rounds on one loopback connection to a websockets server in a child process, so
that only the writer's CPU is counted, on uvloop as the bridge is. Best round of each; the
ratio is what carries over to another machine.

    python -m bridge.devtools.bench frames [--frames 20000] [--rounds 5]
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.server import ServerConnection, serve

from bridge.adapters.realtime_socket import RealtimeSocket, write_now
from bridge.devtools.child_process import piped_child
from bridge.devtools.uvloop_runner import run_on_uvloop

__all__ = ["FramesReport", "format_frames", "run_frames"]

_YIELD_EVERY = 50  # frames between turns of the loop, so the socket drains as in a call


@dataclass(frozen=True, slots=True)
class FramesReport:
    frames: int
    rounds: int
    pooled_us: float  # best round, CPU microseconds per frame
    websockets_us: float

    @property
    def ratio(self) -> float:
        return self.pooled_us / self.websockets_us


def _websockets_framing(conn: ClientConnection, text: str) -> bool:
    """What ``write_now`` did before it framed client frames itself."""
    conn.protocol.send_text(text.encode())
    conn.send_data()
    return True


async def _round(
    conn: ClientConnection, text: str, frames: int, write: Callable[[ClientConnection, str], bool]
) -> float:
    started = time.process_time()
    for n in range(frames):
        if conn.paused:  # the server is behind: let it catch up, as a call would
            await conn.drain()
        if not write(conn, text):
            raise RuntimeError("the connection cannot take a frame")
        if n % _YIELD_EVERY == 0:
            await asyncio.sleep(0)
    return (time.process_time() - started) / frames * 1e6


async def _measure(url: str, frames: int, rounds: int) -> FramesReport:
    socket = await RealtimeSocket.open(url, {})
    async with socket:
        conn = socket._conn
        audio = base64.b64encode(os.urandom(160)).decode()  # 20 ms of mu-law
        text = json.dumps({"type": "input_audio_buffer.append", "audio": audio})
        pooled: list[float] = []
        plain: list[float] = []
        for _ in range(rounds):
            plain.append(await _round(conn, text, frames, _websockets_framing))
            pooled.append(await _round(conn, text, frames, write_now))
    return FramesReport(frames, rounds, min(pooled), min(plain))


async def _sink(ws: ServerConnection) -> None:
    async for _ in ws:
        pass


async def _serve_sink() -> None:
    """The child: a websockets server that reads and drops every frame until stdin closes."""
    async with serve(_sink, "127.0.0.1", 0, compression=None, max_size=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        print(port, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


async def _run(frames: int, rounds: int) -> FramesReport:
    async with piped_child("bridge.devtools.bench_frames", "--sink") as child:
        assert child.stdout is not None
        line = await asyncio.wait_for(child.stdout.readline(), timeout=20)
        if not line.strip().isdigit():
            raise RuntimeError("the sink did not start")
        return await _measure(f"ws://127.0.0.1:{int(line)}", frames, rounds)


def run_frames(frames: int = 20_000, rounds: int = 5) -> FramesReport:
    """Both ways on uvloop, the event loop the bridge serves on."""
    return run_on_uvloop(_run(frames, rounds))


def format_frames(report: FramesReport) -> str:
    return "\n".join(
        [
            f"frames: one caller-audio frame written to the model's socket, CPU of the writer, "
            f"best of {report.rounds} rounds of {report.frames}",
            "",
            f"  websockets' framing (a urandom call per key)  {report.websockets_us:6.2f} us/frame",
            f"  write_now (pooled mask keys)                   {report.pooled_us:6.2f} us/frame"
            f"  {report.ratio:.2f}x",
        ]
    )


if __name__ == "__main__":
    if sys.argv[1:] == ["--sink"]:
        asyncio.run(_serve_sink())
    else:
        print(format_frames(run_frames()))
