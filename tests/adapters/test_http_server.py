"""The guarded HTTP protocol on real sockets in this process: the header deadline and the
connection cap. Deadlines are short; waits for what must happen are generous."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import uvicorn
from structlog.testing import capture_logs
from uvicorn.server import ServerState

from bridge.adapters import http_server
from bridge.adapters.http_server import (
    accept_backlog,
    default_max_connections,
    guarded_protocol,
)

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class App:
    """Answers 200 at once, or once ``release`` is set when the path is /slow."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.two_in_flight = asyncio.Event()
        self.in_flight = 0

    async def __call__(
        self,
        scope: dict[str, Any],
        receive: Callable[[], Awaitable[dict[str, Any]]],
        send: Callable[[dict[str, Any]], Awaitable[None]],
    ) -> None:
        if scope["path"] == "/slow":
            self.in_flight += 1
            if self.in_flight == 2:
                self.two_in_flight.set()
            await self.release.wait()
        elif scope["path"] == "/sleep":
            await asyncio.sleep(1.0)
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
        )
        await send({"type": "http.response.body", "body": b"ok"})


@asynccontextmanager
async def serve(
    app: App, header_timeout_s: float, max_connections: int
) -> AsyncIterator[Callable[[], Awaitable[Streams]]]:
    # uvicorn's own keep-alive timer is set long, so every close seen here is the guard's.
    config = uvicorn.Config(app, log_config=None, lifespan="off", timeout_keep_alive=60)
    state = ServerState()
    protocol = guarded_protocol(header_timeout_s, max_connections)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: protocol(config=config, server_state=state, app_state={}, _loop=loop),
        "127.0.0.1",
        0,
    )
    port = server.sockets[0].getsockname()[1]
    opened: list[asyncio.StreamWriter] = []

    async def connect() -> Streams:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        opened.append(writer)
        return reader, writer

    try:
        yield connect
    finally:
        app.release.set()
        for writer in opened:
            writer.close()
        for connection in list(state.connections):
            connection.shutdown()
        server.close()
        await server.wait_closed()


async def closed_by_server(reader: asyncio.StreamReader, within: float = 10.0) -> bytes:
    """What arrived before the server closed the connection."""
    data = b""
    async with asyncio.timeout(within):
        try:
            while chunk := await reader.read(4096):
                data += chunk
        except ConnectionResetError:
            pass  # closed while bytes were still arriving
    return data


async def until(check: Callable[[], object], within: float = 15.0) -> None:
    for _ in range(int(within / 0.05)):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("timed out")


async def still_open(reader: asyncio.StreamReader) -> bool:
    try:
        async with asyncio.timeout(0.3):
            await reader.read(1)
    except TimeoutError:
        return True
    return False


async def response(streams: Streams, path: str = "/") -> bytes:
    reader, writer = streams
    writer.write(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
    async with asyncio.timeout(10):
        head = await reader.readuntil(b"\r\n\r\n")
        return head + await reader.readexactly(2)


async def test_a_silent_connection_is_closed_after_the_header_timeout() -> None:
    loop = asyncio.get_running_loop()
    with capture_logs() as logs:
        async with serve(App(), header_timeout_s=0.3, max_connections=10) as connect:
            reader, _ = await connect()
            started = loop.time()
            assert await closed_by_server(reader) == b""
            assert loop.time() - started >= 0.2
            await until(lambda: [e for e in logs if e["event"] == "server.header_timeout"])
    [line] = [e for e in logs if e["event"] == "server.header_timeout"]
    assert line["closed"] == 1


async def test_headers_sent_a_byte_at_a_time_do_not_extend_the_deadline() -> None:
    async with serve(App(), header_timeout_s=0.3, max_connections=10) as connect:
        reader, writer = await connect()
        request = b"GET / HTTP/1.1\r\nHost: test\r\nX-Padding: " + b"a" * 200
        closed = asyncio.create_task(closed_by_server(reader))
        with pytest.raises(ConnectionError):
            for byte in request:
                if closed.done():
                    raise ConnectionResetError
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(0.02)
        assert await closed == b""


async def test_a_slow_answer_is_not_cut_and_keep_alive_gets_a_new_deadline() -> None:
    async with serve(App(), header_timeout_s=0.3, max_connections=10) as connect:
        streams = await connect()
        # The app takes longer than the header timeout: the deadline ended with the headers.
        assert (await response(streams, "/sleep")).startswith(b"HTTP/1.1 200")
        assert (await response(streams)).startswith(b"HTTP/1.1 200")
        # Idle after a response: closed by the header deadline, not uvicorn's 60 s keep-alive.
        assert await closed_by_server(streams[0]) == b""


async def test_at_the_cap_the_connection_waiting_longest_is_dropped() -> None:
    async with serve(App(), header_timeout_s=60, max_connections=3) as connect:
        first, second, third = [await connect() for _ in range(3)]
        newcomer = await connect()
        assert await closed_by_server(first[0]) == b""
        assert await still_open(second[0])
        assert await still_open(third[0])
        assert (await response(newcomer)).startswith(b"HTTP/1.1 200")


async def test_at_the_cap_with_no_one_waiting_a_newcomer_is_refused() -> None:
    app = App()
    with capture_logs() as logs:
        async with serve(app, header_timeout_s=60, max_connections=2) as connect:
            busy = [await connect() for _ in range(2)]
            for _, writer in busy:
                writer.write(b"GET /slow HTTP/1.1\r\nHost: test\r\n\r\n")
            async with asyncio.timeout(10):
                await app.two_in_flight.wait()
            refused = await connect()
            assert await closed_by_server(refused[0]) == b""
            app.release.set()
            for reader, _ in busy:
                async with asyncio.timeout(10):
                    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
            await until(lambda: [e for e in logs if e["event"] == "server.connection_cap"])
    [line] = [e for e in logs if e["event"] == "server.connection_cap"]
    assert (line["refused"], line["dropped_waiting"]) == (1, 0)


async def test_closes_are_logged_as_counts_not_one_line_each(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(http_server, "REPORT_GATHER_S", 0.2)
    with capture_logs() as logs:
        async with serve(App(), header_timeout_s=60, max_connections=2) as connect:
            for _ in range(12):
                await connect()

            def dropped() -> int:
                lines = [e for e in logs if e["event"] == "server.connection_cap"]
                return sum(e["dropped_waiting"] for e in lines)

            await until(lambda: dropped() >= 10)
    lines = [e for e in logs if e["event"] == "server.connection_cap"]
    assert dropped() == 10
    assert 1 <= len(lines) <= 2
    assert all(e["log_level"] == "warning" for e in lines)


def test_the_default_cap_and_backlog_fit_the_descriptor_limit() -> None:
    assert default_max_connections(1024) == 480
    assert default_max_connections(256) == 96
    assert default_max_connections(1 << 20) == 4096
    assert default_max_connections(None) == 4096
    assert default_max_connections(40) == 16
    for limit in (256, 1024, 4096):
        cap = default_max_connections(limit)
        assert cap + 3 * accept_backlog(limit, cap) + 64 <= limit
    assert accept_backlog(1 << 20, 4096) == 2048
    assert accept_backlog(None, 4096) == 2048
