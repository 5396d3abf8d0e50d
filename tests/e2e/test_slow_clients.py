"""Slow clients, connections that send nothing or their headers a byte at a time, are closed by
the header deadline and the connection cap, and /healthz and signed webhooks keep working
meanwhile, on a bridge with fewer descriptors than the attack has connections."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

import httpx

from .conftest import RunningBridge, run_bridge
from .twilio_client import answer_call

HEADER_TIMEOUT_S = 2.0
# Soft below hard: the bridge raises it to 256, and its cap becomes (256 - 64) // 2 = 96.
FD_LIMITS = (128, 256)
IDLE = 260
BYTE_SENDERS = 40
# Everything the server must do happens within this long; a busy machine is slow, not wrong.
MARGIN_S = 20.0
# Valid so far, never finished: at 0.1 s a byte it would take over 40 s.
SLOW_HEADERS = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: " + b"a" * 400

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def log_lines(bridge: RunningBridge, event: str) -> list[dict[str, Any]]:
    lines = []
    for line in bridge.log().splitlines():
        if f'"{event}"' in line:
            entry = json.loads(line)
            if entry.get("event") == event:
                lines.append(entry)
    return lines


async def seconds_until_closed(reader: asyncio.StreamReader, opened_at: float) -> float:
    """How long after ``opened_at`` the server closed a connection that never sent a byte."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(HEADER_TIMEOUT_S + MARGIN_S):
        with contextlib.suppress(ConnectionResetError):
            assert await reader.read(4096) == b""
    return loop.time() - opened_at


async def send_headers_slowly(host: str, port: int) -> tuple[bytes, float]:
    """Dribble ``SLOW_HEADERS``; returns what came back and how long the server kept it."""
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), MARGIN_S)
    opened_at = loop.time()
    received = b""
    try:
        for byte in SLOW_HEADERS:
            if loop.time() - opened_at > HEADER_TIMEOUT_S + MARGIN_S:
                raise AssertionError("the server kept a byte-at-a-time sender open")
            writer.write(bytes([byte]))
            await writer.drain()
            try:
                async with asyncio.timeout(0.1):
                    chunk = await reader.read(4096)
            except TimeoutError:
                continue
            if not chunk:
                break
            received += chunk
    except ConnectionError:
        pass
    finally:
        writer.close()
    return received, loop.time() - opened_at


async def open_idle(host: str, port: int, count: int) -> list[tuple[Streams, float]]:
    """``count`` connections that send nothing, opened a few at a time."""
    loop = asyncio.get_running_loop()
    opened: list[tuple[Streams, float]] = []
    for start in range(0, count, 16):
        batch = await asyncio.gather(
            *(
                asyncio.wait_for(asyncio.open_connection(host, port), MARGIN_S)
                for _ in range(min(16, count - start))
            )
        )
        opened += [(streams, loop.time()) for streams in batch]
        await asyncio.sleep(0.02)
    return opened


async def test_slow_clients_are_closed_and_healthz_and_webhooks_still_answer(
    tmp_path: Path,
) -> None:
    env = {"BRIDGE_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S)}
    with run_bridge(tmp_path, env, fd_limits=FD_LIMITS) as bridge:
        [limits] = log_lines(bridge, "server.limits")
        assert (limits["fd_limit"], limits["max_connections"]) == (256, 96)
        host, port = "127.0.0.1", int(bridge.url.rsplit(":", 1)[1])

        idle: list[tuple[Streams, float]] = []
        senders: list[asyncio.Task[tuple[bytes, float]]] = []
        try:
            idle = await open_idle(host, port, IDLE)
            senders = [
                asyncio.create_task(send_headers_slowly(host, port)) for _ in range(BYTE_SENDERS)
            ]
            await asyncio.sleep(0.3)

            # At the cap, full of slow connections: a real request still gets in.
            async with httpx.AsyncClient() as http:
                health = await http.get(f"{bridge.url}/healthz", timeout=MARGIN_S)
            assert health.status_code == 200
            _, stream_url, parameters = await answer_call(bridge.url)
            assert stream_url.endswith("/twilio/media") and "token" in parameters

            closed_after = await asyncio.gather(
                *(seconds_until_closed(reader, at) for (reader, _), at in idle)
            )
            assert max(closed_after) < HEADER_TIMEOUT_S + MARGIN_S
            for received, kept_for in await asyncio.gather(*senders):
                assert received == b""
                assert kept_for < HEADER_TIMEOUT_S + MARGIN_S
        finally:
            for task in senders:
                task.cancel()
            await asyncio.gather(*senders, return_exceptions=True)
            for (_, writer), _ in idle:
                writer.close()

        async with httpx.AsyncClient() as http:
            assert (await http.get(f"{bridge.url}/healthz", timeout=MARGIN_S)).status_code == 200

        # Counts are reported a little later, at most one line per few seconds.
        for _ in range(int(MARGIN_S / 0.2)):
            if log_lines(bridge, "server.connection_cap") and log_lines(
                bridge, "server.header_timeout"
            ):
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)
        cap_lines = log_lines(bridge, "server.connection_cap")
        timeout_lines = log_lines(bridge, "server.header_timeout")
        log = bridge.log()

    closes = sum(line["dropped_waiting"] + line["refused"] for line in cap_lines)
    assert 1 <= len(cap_lines) <= 5 < closes
    assert all(line["level"] == "warning" for line in cap_lines)
    assert 1 <= len(timeout_lines) <= 5
    assert "Traceback" not in log
    assert "out of system resource" not in log and "Too many open files" not in log
