"""The model leg's socket against a real websockets server on loopback: every event arrives,
in order, whichever way send() writes it, and a closed socket is a ProviderError."""

from __future__ import annotations

import asyncio
import secrets
import ssl
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from websockets.asyncio.server import ServerConnection, serve

from bridge.adapters.realtime_socket import RealtimeSocket, proxy_for, tls_context
from bridge.errors import ProviderError


class Sink:
    def __init__(self) -> None:
        self.received: list[str] = []

    async def handler(self, ws: ServerConnection) -> None:
        async for message in ws:
            assert isinstance(message, str)
            self.received.append(message)
            if message == "close now":
                await ws.close(1011)
                return


@pytest.fixture
async def sink() -> AsyncIterator[tuple[Sink, str]]:
    sink = Sink()
    async with serve(sink.handler, "127.0.0.1", 0, compression=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield sink, f"ws://127.0.0.1:{port}"


async def _until(check: Callable[[], bool], timeout_s: float = 5.0) -> None:
    for _ in range(int(timeout_s / 0.005)):
        if check():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("the condition never came true")


def _server_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    return context


async def test_wss_connections_share_one_verifying_tls_context(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tls_contexts_built: list[Any]
) -> None:
    # Building a TLS context reads the whole trust store: about 30 ms of CPU on the loop that
    # carries every live call's audio. Calls start, reconnect and roll over all day.
    trusted, stranger = trustme.CA(), trustme.CA()
    store = tmp_path / "ca.pem"
    trusted.cert_pem.write_to_path(str(store))
    monkeypatch.setenv("SSL_CERT_FILE", str(store))  # read by the default trust store
    tls_context.cache_clear()
    sink = Sink()
    try:
        async with (
            serve(sink.handler, "127.0.0.1", 0, ssl=_server_tls(trusted)) as good,
            serve(sink.handler, "127.0.0.1", 0, ssl=_server_tls(stranger)) as unknown,
        ):
            good_port = next(iter(good.sockets)).getsockname()[1]
            for n in range(3):
                socket = await RealtimeSocket.open(f"wss://127.0.0.1:{good_port}", {})
                async with socket:
                    await socket.send(f"call {n}")
                    await _until(lambda count=n + 1: len(sink.received) == count)
            # Still verified: a certificate the trust store does not vouch for is refused.
            unknown_port = next(iter(unknown.sockets)).getsockname()[1]
            with pytest.raises(ProviderError, match="SSLCertVerificationError"):
                await RealtimeSocket.open(f"wss://127.0.0.1:{unknown_port}", {})
    finally:
        tls_context.cache_clear()  # built while the trust store was the test's
    assert sink.received == ["call 0", "call 1", "call 2"]
    assert len(tls_contexts_built) == 1


class ConnectProxy:
    """An HTTP proxy that tunnels ``CONNECT`` requests, noting where each tunnel went."""

    def __init__(self) -> None:
        self.tunnels: list[str] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        method, target = head.split(b" ")[:2]
        assert method == b"CONNECT"
        self.tunnels.append(target.decode())
        host, port = target.decode().rsplit(":", 1)
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            finally:
                sink.close()

        await asyncio.gather(
            pipe(reader, up_writer), pipe(up_reader, writer), return_exceptions=True
        )


@pytest.fixture
def environment_reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Counts the reads of the proxy settings (a walk over the whole environment each); the
    cache of resolved proxies is emptied before and after."""
    real = urllib.request.getproxies
    reads: list[int] = []

    def counted() -> dict[str, str]:
        reads.append(1)
        return real()

    monkeypatch.setattr(urllib.request, "getproxies", counted)
    for name in ("no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    proxy_for.cache_clear()
    yield reads
    proxy_for.cache_clear()


async def test_a_proxy_in_the_environment_is_read_once_and_used(
    sink: tuple[Sink, str], monkeypatch: pytest.MonkeyPatch, environment_reads: list[int]
) -> None:
    # Operators behind an egress proxy set it in the environment; websockets would read the
    # whole environment again on the event loop for every call's connection.
    server, url = sink
    proxy = ConnectProxy()
    async with await asyncio.start_server(proxy.handle, "127.0.0.1", 0) as tunnel:
        port = tunnel.sockets[0].getsockname()[1]
        monkeypatch.setenv("ws_proxy", f"http://127.0.0.1:{port}")
        for n in range(3):
            socket = await RealtimeSocket.open(url + "/v1/realtime?model=m", {})
            async with socket:
                await socket.send(f"call {n}")
                await _until(lambda count=n + 1: len(server.received) == count)
    assert proxy.tunnels == [url.removeprefix("ws://")] * 3
    assert server.received == ["call 0", "call 1", "call 2"]
    assert len(environment_reads) == 1


async def test_no_proxy_still_sends_the_model_straight_there(
    sink: tuple[Sink, str], monkeypatch: pytest.MonkeyPatch, environment_reads: list[int]
) -> None:
    server, url = sink
    monkeypatch.setenv("ws_proxy", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    socket = await RealtimeSocket.open(url, {})
    async with socket:
        await socket.send("straight")
        await _until(lambda: server.received == ["straight"])
    monkeypatch.delenv("no_proxy")
    proxy_for.cache_clear()
    with pytest.raises(ProviderError, match="unreachable"):  # through the dead proxy
        await RealtimeSocket.open(url, {}, timeout_s=2.0)


async def test_every_event_arrives_in_order(sink: tuple[Sink, str]) -> None:
    server, url = sink
    socket = await RealtimeSocket.open(url, {})
    async with socket:
        assert socket._direct, "this websockets release lost what the direct path needs"
        events = [f'{{"type":"input_audio_buffer.append","n":{n}}}' for n in range(2000)]
        for event in events:
            await socket.send(event)
        await _until(lambda: len(server.received) == len(events))
    assert server.received == events


async def test_a_full_buffer_waits_instead_of_writing_past_it(sink: tuple[Sink, str]) -> None:
    server, url = sink
    socket = await RealtimeSocket.open(url, {})
    async with socket:
        conn = socket._conn
        conn.transport.set_write_buffer_limits(high=1)  # every write fills the buffer
        big = "x" * 200_000
        for _ in range(20):
            await socket.send(big)
            # Back-pressure is honoured: a send into a full buffer waits for it to drain,
            # so at most the frame just written is waiting, never a growing pile.
            assert conn.transport.get_write_buffer_size() <= len(big) + 14
        await _until(lambda: len(server.received) == 20)


async def test_a_closed_socket_is_a_provider_error(sink: tuple[Sink, str]) -> None:
    _, url = sink
    socket = await RealtimeSocket.open(url, {})
    await socket.send("close now")
    await _until(lambda: socket.close_code is not None)
    with pytest.raises(ProviderError):
        await socket.send("too late")
    await socket.close()


async def test_frames_of_every_length_encoding_arrive_whole(sink: tuple[Sink, str]) -> None:
    server, url = sink
    socket = await RealtimeSocket.open(url, {})
    async with socket:
        # Short, 16-bit and 64-bit lengths, at and around each boundary, with non-ASCII text.
        events = ["é" * (size // 2) + "x" * (size % 2) for size in (0, 1, 125, 126, 65536, 70000)]
        for event in events:
            await socket.send(event)
        await _until(lambda: len(server.received) == len(events))
    assert server.received == events


async def test_caller_audio_draws_no_key_of_its_own(
    sink: tuple[Sink, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The common case (an open socket, nothing else queued) takes a pooled key: websockets'
    own framing, which reads the system's randomness once per frame, is not used."""
    server, url = sink
    socket = await RealtimeSocket.open(url, {})
    drawn: list[int] = []
    real = secrets.token_bytes

    def counted(n: int | None = None) -> bytes:
        drawn.append(n or 0)
        return real(n)

    monkeypatch.setattr(secrets, "token_bytes", counted)
    async with socket:
        for n in range(500):
            await socket.send(f'{{"type":"input_audio_buffer.append","n":{n}}}')
        await _until(lambda: len(server.received) == 500)
        assert drawn == []


async def test_a_frame_queued_by_the_protocol_goes_out_first(sink: tuple[Sink, str]) -> None:
    """A control frame websockets has queued but not yet written (a ping, say) leaves before
    the next text, so nothing is reordered or left behind."""
    server, url = sink
    socket = await RealtimeSocket.open(url, {})
    async with socket:
        conn = socket._conn
        conn.protocol.send_ping(b"queued")
        assert conn.protocol.writes, "the ping waits in the protocol"
        await socket.send("after the ping")
        assert not conn.protocol.writes, "the ping was written with the text, not left behind"
        await _until(lambda: server.received == ["after the ping"])
