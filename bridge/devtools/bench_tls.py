"""CPU of opening one ``wss://`` connection to a realtime server, both ways in the same run.

A call opens its model session at its start, and again at each reconnect and rollover. Left
to itself, each ``wss://`` connection builds a TLS context of its own, reading the whole trust
store, on the event loop that carries every live call's audio; the bridge builds one for the
process (:func:`~bridge.adapters.realtime_socket.tls_context`). This opens connections to a
TLS websockets server in a child process (its certificate from a throwaway CA, added to the
system's trust store in a file that ``SSL_CERT_FILE`` points at, so that a context reads as
much as it would in production), alternating rounds of each way, and counts only the opener's
CPU, on uvloop as the bridge is: the TLS handshake, the WebSocket handshake and, the first
way, the context and the proxy settings read again from the environment (the bridge reads
them once per URL, :func:`~bridge.adapters.realtime_socket.proxy_for`). Best round of each;
the ratio is what carries over to another machine.

    python -m bridge.devtools.bench tls [--connections 20] [--rounds 3]
"""

from __future__ import annotations

import asyncio
import os
import ssl
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from bridge.adapters.realtime_socket import RealtimeSocket, tls_context
from bridge.devtools.child_process import piped_child
from bridge.devtools.uvloop_runner import run_on_uvloop

__all__ = ["TlsReport", "format_tls", "run_tls"]

_START_TIMEOUT_S = 20.0


@dataclass(frozen=True, slots=True)
class TlsReport:
    connections: int
    rounds: int
    shared_ms: float  # best round, CPU milliseconds per connection
    per_connection_ms: float

    @property
    def ratio(self) -> float:
        return self.shared_ms / self.per_connection_ms


async def _open_own_context(url: str) -> None:
    """What the bridge did before: websockets' defaults, a context built for this connection
    and the proxy looked up in the environment again."""
    conn = await connect(url, compression=None)
    await conn.close()


async def _open_shared(url: str) -> None:
    socket = await RealtimeSocket.open(url, {})
    await socket.close()


async def _round(url: str, connections: int, open_one: Callable[[str], Awaitable[None]]) -> float:
    started = time.process_time()
    for _ in range(connections):
        await open_one(url)
    return (time.process_time() - started) / connections * 1000


async def _measure(url: str, connections: int, rounds: int) -> TlsReport:
    tls_context()  # built once per process, as at a bridge's first call: not in the rounds
    shared: list[float] = []
    own: list[float] = []
    for _ in range(rounds):
        own.append(await _round(url, connections, _open_own_context))
        shared.append(await _round(url, connections, _open_shared))
    return TlsReport(connections, rounds, min(shared), min(own))


async def _echo_nothing(ws: ServerConnection) -> None:
    async for _ in ws:
        pass


async def _serve_tls() -> None:
    """The child: a TLS websockets server; prints its port and its CA's file, serves until
    stdin closes."""
    import trustme  # a development dependency, like the benchmark

    ca = trustme.CA()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    with tempfile.TemporaryDirectory() as workdir:
        ca_file = Path(workdir) / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        async with serve(_echo_nothing, "127.0.0.1", 0, ssl=context) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            print(port, ca_file, flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


async def _run(connections: int, rounds: int) -> TlsReport:
    async with piped_child("bridge.devtools.bench_tls", "--server") as child:
        assert child.stdout is not None
        line = await asyncio.wait_for(child.stdout.readline(), timeout=_START_TIMEOUT_S)
        port, _, ca_file = line.decode().strip().partition(" ")
        if not port.isdigit() or not ca_file:
            raise RuntimeError("the TLS server did not start")
        with tempfile.TemporaryDirectory() as workdir:
            store = _trust_store(Path(workdir), Path(ca_file))
            return await _measure_trusting(store, f"wss://127.0.0.1:{port}", connections, rounds)


def _trust_store(workdir: Path, ca_file: Path) -> Path:
    """The system's trust store (where it is one file) with the server's CA added."""
    system = b""
    paths = ssl.get_default_verify_paths()
    for name in (os.environ.get(paths.openssl_cafile_env), paths.cafile, paths.openssl_cafile):
        if name and os.path.isfile(name):
            system = Path(name).read_bytes() + b"\n"
            break
    store = workdir / "store.pem"
    store.write_bytes(system + ca_file.read_bytes())
    return store


async def _measure_trusting(store: Path, url: str, connections: int, rounds: int) -> TlsReport:
    # Both ways read the default trust store, which this points at the one with the
    # server's CA in it.
    before = os.environ.get("SSL_CERT_FILE")
    os.environ["SSL_CERT_FILE"] = str(store)
    tls_context.cache_clear()
    try:
        return await _measure(url, connections, rounds)
    finally:
        tls_context.cache_clear()
        if before is None:
            del os.environ["SSL_CERT_FILE"]
        else:
            os.environ["SSL_CERT_FILE"] = before


def run_tls(connections: int = 20, rounds: int = 3) -> TlsReport:
    """Both ways on uvloop, the event loop the bridge serves on."""
    return run_on_uvloop(_run(connections, rounds))


def format_tls(report: TlsReport) -> str:
    return "\n".join(
        [
            "tls: one wss:// connection to a realtime server opened, CPU of the opener "
            f"(TLS and WebSocket handshakes included), best of {report.rounds} rounds of "
            f"{report.connections}",
            "",
            f"  a TLS context built for each connection  {report.per_connection_ms:7.2f} ms",
            f"  the bridge's one context                 {report.shared_ms:7.2f} ms"
            f"  {report.ratio:.2f}x",
        ]
    )


if __name__ == "__main__":
    if sys.argv[1:] == ["--server"]:
        asyncio.run(_serve_tls())
    else:
        print(format_tls(run_tls()))
