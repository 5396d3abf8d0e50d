"""A local realtime-API server (OpenAI GA, OpenAI beta, Inworld or xAI) over a real WebSocket.

It checks the handshake the way each provider does, validates ``session.update``, runs an
energy voice detector on the appended audio, answers each caller turn with a scripted
reply streamed as 100 ms audio deltas (faster than real time), cancels on barge-in, judges
truncations, and makes the function calls a script asks for (then waits for their outputs),
so the bridge's realtime client can be tested against something that behaves like the real
servers. It is also the bridge's built-in ``local`` agent.

Use it as an async context manager::

    async with FakeRealtimeServer("openai", script=demo_script()) as server:
        ...connect to server.url, then inspect server.sessions[0]...

The wire logic is the sans-I/O :class:`~bridge.devtools.fake_session.FakeSession`; this
module only moves its events between the socket and the clock.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import json
import math
import secrets
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from bridge.adapters.realtime_socket import write_now
from bridge.devtools.fake_config import Dialect
from bridge.devtools.fake_records import (
    AbortConnection,
    CloseConnection,
    FakeFaults,
    FakeSessionRecord,
    TruncateRecord,
)
from bridge.devtools.fake_response import DEFAULT_DELTA_MS, check_delta_ms
from bridge.devtools.fake_script import FakeScript, Reply, demo_script, load_script
from bridge.devtools.fake_session import FakeSession
from bridge.devtools.fake_vad import VadParams
from bridge.errors import ConfigurationError

__all__ = [
    "Dialect",
    "FakeFaults",
    "FakeRealtimeServer",
    "FakeSessionRecord",
    "FakeTap",
    "TruncateRecord",
    "VadParams",
    "add_fake_realtime_arguments",
    "main",
    "run_fake_realtime",
]

INWORLD_PATH = "/api/v1/realtime/session"
OPENAI_PATH = "/v1/realtime"
_SEND_TIMEOUT_S = 5.0  # a client that cannot take one event in this long is dropped
_STOP_TIMEOUT_S = 5.0
_MAX_MESSAGE = 16 * 1024 * 1024  # appends may carry up to 15 MiB of audio
_DEFAULT_SCRIPT = FakeScript(
    greeting=Reply("Hello, you are talking to the local test agent. How can I help you today?")
)


class FakeTap(Protocol):
    """What a load test hooks into the fake's sockets (``FakeRealtimeServer(tap=...)``), to
    time messages on this process's clock. Each method runs for every message of every
    session: keep it cheap."""

    def opened(self, record: FakeSessionRecord, at: float) -> None:
        """A session was accepted at ``at``."""
        ...

    def received(self, record: FakeSessionRecord, text: str, at: float) -> None:
        """A text message arrived at ``at``, before the session handles it."""
        ...

    def sending(self, record: FakeSessionRecord, event: dict[str, Any], at: float) -> None:
        """``event`` is about to be encoded and sent; the tap may change it in place."""
        ...


class _Wake:
    """Wakes one session's writer. The writer sleeps until the session's next deadline
    (``until``); a message read only needs to wake it when it left something to send or
    brought a deadline nearer. Waking it for every caller frame, 50 times a second per
    session, cost more than handling the frames."""

    __slots__ = ("event", "until")

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.until = math.inf  # while the writer waits: when it will look again by itself

    def after_read(self, session: FakeSession) -> None:
        if session.has_data_to_send():
            self.event.set()
            return
        deadline = session.next_deadline()
        if deadline is not None and deadline < self.until:
            self.event.set()


class FakeRealtimeServer:
    """A realtime server for one dialect; ``await start()`` (or ``async with``) to listen.

    ``api_key``, when set, must be presented (``Bearer`` for OpenAI, also Azure's
    ``api-key`` header; ``Basic`` for Inworld). ``realtime_factor`` is how many times faster
    than real time replies stream. ``sessions`` gains one record per accepted connection.
    ``tap`` sees every message on every session's socket (see :class:`FakeTap`).
    """

    def __init__(
        self,
        dialect: str = "openai",
        *,
        script: FakeScript | None = None,
        api_key: str | None = None,
        faults: FakeFaults | None = None,
        vad: VadParams | None = None,
        realtime_factor: float = 4.0,
        session_limit_s: float | None = None,
        continue_script: bool = False,
        tap: FakeTap | None = None,
        delta_ms: tuple[int, ...] = DEFAULT_DELTA_MS,
    ) -> None:
        try:
            self.dialect = Dialect(dialect)
        except ValueError as exc:
            choices = ", ".join(d.value for d in Dialect)
            raise ConfigurationError(f"unknown dialect {dialect!r}; use one of {choices}") from exc
        if not realtime_factor > 0:
            raise ConfigurationError(f"realtime_factor must be > 0, got {realtime_factor}")
        try:
            #: The lengths of the answers' audio deltas, in turn.
            self.delta_ms = check_delta_ms(tuple(delta_ms))
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None
        self.script = script if script is not None else _DEFAULT_SCRIPT
        self.api_key = api_key
        self.faults = faults if faults is not None else FakeFaults()
        self.vad = vad if vad is not None else VadParams()
        self.realtime_factor = realtime_factor
        self.sessions: list[FakeSessionRecord] = []
        #: Each session's maximum length (``None``: an hour); it ends as OpenAI's do.
        self.session_limit_s = session_limit_s
        #: While true, every handshake is refused with ``refusal_status``: 503, the provider
        #: is down; 429, the account is over its rate or concurrency limit.
        self.refusing = False
        self.refusal_status = 503
        #: A new session goes on with the script where the sessions before it left off, as
        #: one conversation would across a client's reconnects (else each starts afresh).
        self.continue_script = continue_script
        self.tap = tap
        #: One shot: the next session to open drops itself this way (``"1011"``, ``"reset"``)
        #: right after its first caller transcript, before answering it; then this clears.
        self.drop_after_transcript: str | None = None
        self._progress = (0, 0)
        self._live: dict[int, tuple[FakeSession, _Wake]] = {}
        self._server: Server | None = None
        self._host = "127.0.0.1"

    # ------------------------------------------------------------ lifecycle

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listen on ``host:port`` (0 picks a free port); read :attr:`url` afterwards."""
        if self._server is not None:
            raise RuntimeError("FakeRealtimeServer is already started")
        self._host = host
        self._server = await serve(
            self._serve_connection,
            host,
            port,
            process_request=self._check_handshake,
            max_size=_MAX_MESSAGE,
            close_timeout=2.0,
        )

    async def stop(self) -> None:
        """Close every connection and stop listening; returns when all handlers are done."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        try:
            async with asyncio.timeout(_STOP_TIMEOUT_S):
                await server.wait_closed()
        except TimeoutError:
            for connection in server.connections:
                connection.transport.abort()
            await server.wait_closed()

    async def __aenter__(self) -> FakeRealtimeServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FakeRealtimeServer is not started")
        return int(next(iter(self._server.sockets)).getsockname()[1])

    @property
    def url(self) -> str:
        """The WebSocket URL without query; Inworld clients add ``?key=…&protocol=realtime``."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        path = INWORLD_PATH if self.dialect is Dialect.INWORLD else OPENAI_PATH
        return f"ws://{host}:{self.port}{path}"

    def _resume_point(self) -> tuple[int, int]:
        if not self.continue_script:
            return (0, 0)
        points = [self._progress, *(session.progress for session, _ in self._live.values())]
        return max(points)

    def drop_sessions(self, how: str = "1011") -> int:
        """Fail every open session now (see ``FakeSession.drop``); returns how many."""
        live = list(self._live.values())
        for session, wake in live:
            session.drop(how)
            wake.event.set()
        return len(live)

    # ------------------------------------------------------------ handshake

    def _check_handshake(self, connection: ServerConnection, request: Request) -> Response | None:
        parts = urlsplit(request.path)
        query = dict(parse_qsl(parts.query))
        if self.refusing:
            if self.refusal_status == 429:
                message = "Rate limit reached for sessions; try again later."
                return _refuse(connection, 429, "rate_limit_exceeded", message)
            return _refuse(connection, self.refusal_status, "server_error", "Server overloaded.")
        if self.faults.reject_auth:
            return _refuse(connection, 401, "invalid_api_key", "Incorrect API key provided.")
        if self.dialect is Dialect.INWORLD:
            if parts.path != INWORLD_PATH:
                return _refuse(connection, 404, "not_found", f"No route for {parts.path}.")
            if not query.get("key") or query.get("protocol") != "realtime":
                message = "The query must carry key=<session id> and protocol=realtime."
                return _refuse(connection, 400, "invalid_request", message)
        else:
            if not parts.path.endswith("/realtime"):
                return _refuse(connection, 404, "not_found", f"No route for {parts.path}.")
            beta = request.headers.get("OpenAI-Beta") == "realtime=v1" or "api-version" in query
            if self.dialect is Dialect.OPENAI_BETA and not beta:
                return _refuse(
                    connection,
                    400,
                    "invalid_request",
                    "This server speaks the beta protocol: send OpenAI-Beta: realtime=v1.",
                )
        if not self._authorized(request.headers):
            return _refuse(connection, 401, "invalid_api_key", "Incorrect API key provided.")
        return None

    def _authorized(self, headers: Headers) -> bool:
        auth = headers.get("Authorization")
        if self.dialect is Dialect.INWORLD:
            if self.api_key is None:
                return auth is None or auth.startswith(("Basic ", "Bearer "))
            return auth is not None and _same(auth, f"Basic {self.api_key}")
        if self.api_key is None:
            return auth is None or auth.startswith("Bearer ")
        azure_key = headers.get("api-key")
        if azure_key is not None and _same(azure_key, self.api_key):
            return True
        return auth is not None and _same(auth, f"Bearer {self.api_key}")

    # ------------------------------------------------------------ one connection

    async def _serve_connection(self, ws: ServerConnection) -> None:
        request = ws.request
        assert request is not None  # the handshake has completed
        query = dict(parse_qsl(urlsplit(request.path).query))
        record = FakeSessionRecord(
            dialect=self.dialect.value, headers=dict(request.headers.raw_items()), query=query
        )
        self.sessions.append(record)
        now = time.monotonic()
        if self.tap is not None:
            self.tap.opened(record, now)
        session = FakeSession(
            self.dialect,
            record,
            script=self.script,
            faults=self.faults,
            vad=self.vad,
            realtime_factor=self.realtime_factor,
            delta_ms=self.delta_ms,
            now=now,
            epoch=time.time(),
            tag=secrets.token_hex(3),
            model=query.get("model") or query.get("deployment"),
            session_limit_s=self.session_limit_s,
            resume=self._resume_point(),
        )
        session.drop_after_transcript = self.drop_after_transcript
        self.drop_after_transcript = None
        session.start(beta_header="OpenAI-Beta" in request.headers)
        wake = _Wake()
        self._live[id(session)] = (session, wake)
        try:
            async with asyncio.TaskGroup() as group:
                writer = group.create_task(self._write(ws, session, wake, record))
                await self._read(ws, session, wake)
                writer.cancel()
        finally:
            record.closed = True
            self._live.pop(id(session), None)
            self._progress = max(self._progress, session.progress)

    async def _read(self, ws: ServerConnection, session: FakeSession, wake: _Wake) -> None:
        tap, record = self.tap, session.record
        try:
            async for message in ws:
                if isinstance(message, str):
                    now = time.monotonic()
                    if tap is not None:
                        tap.received(record, message, now)
                    session.receive_text(message, now)
                else:
                    session.receive_bytes(message, time.monotonic())
                wake.after_read(session)
        except ConnectionClosed:
            pass

    async def _write(
        self,
        ws: ServerConnection,
        session: FakeSession,
        wake: _Wake,
        record: FakeSessionRecord,
    ) -> None:
        tap = self.tap
        try:
            while True:
                # Anything the reader queues from here on wakes the wait below at once.
                for out in session.data_to_send():
                    if isinstance(out, CloseConnection):
                        await ws.close(out.code, out.reason)
                        return
                    if isinstance(out, AbortConnection):
                        ws.transport.abort()
                        return
                    if tap is not None:
                        tap.sending(record, out, time.monotonic())
                    text = json.dumps(out)
                    if not write_now(ws, text):
                        async with asyncio.timeout(_SEND_TIMEOUT_S):
                            await ws.send(text)
                    if out["type"] == "input_audio_buffer.speech_started":
                        record.speech_started_at.append(time.monotonic())
                deadline = session.next_deadline()
                wake.until = math.inf if deadline is None else deadline
                delay = None if deadline is None else max(0.0, deadline - time.monotonic())
                try:
                    async with asyncio.timeout(delay):
                        await wake.event.wait()
                except TimeoutError:
                    pass
                wake.event.clear()
                session.advance(time.monotonic())
        except TimeoutError:
            ws.transport.abort()  # the client stopped reading: drop it like a real server
        except ConnectionClosed:
            pass


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def _refuse(connection: ServerConnection, status: int, code: str, message: str) -> Response:
    body = {
        "error": {
            "type": "invalid_request_error",
            "code": code,
            "message": message,
            "param": None,
            "event_id": None,
        }
    }
    response = connection.respond(status, json.dumps(body) + "\n")
    response.headers["Content-Type"] = "application/json"
    return response


# ---------------------------------------------------------------- command line

_FAULTS = ("reject-auth", "refuse-session", "late-transcripts", "noise", "no-server-cancel")


def add_fake_realtime_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``bridge fake-realtime`` options; then call :func:`run_fake_realtime`."""
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=0, help="port (0 picks a free one)")
    parser.add_argument("--dialect", choices=[d.value for d in Dialect], default="openai")
    parser.add_argument("--script", metavar="FILE.json", help="replies to play (default: demo)")
    parser.add_argument("--api-key", help="key clients must present (default: any)")
    parser.add_argument(
        "--fault",
        action="append",
        choices=_FAULTS,
        default=[],
        help="misbehave on purpose (repeatable)",
    )
    parser.add_argument("--close-after-ms", type=int, help="drop each connection after this long")
    parser.add_argument(
        "--realtime-factor",
        type=float,
        default=4.0,
        help="how many times faster than real time replies stream",
    )
    parser.add_argument(
        "--session-limit-s",
        type=float,
        help="end each session after this long as OpenAI does at 60 minutes (session_expired, "
        "then close 1001): to watch a bridge roll over",
    )


async def run_fake_realtime(args: argparse.Namespace) -> None:
    """Serve until cancelled; prints the URL to stdout once listening."""
    chosen = set(args.fault or ())
    faults = FakeFaults(
        reject_auth="reject-auth" in chosen,
        refuse_session="refuse-session" in chosen,
        late_transcripts="late-transcripts" in chosen,
        noise="noise" in chosen,
        no_server_cancel="no-server-cancel" in chosen,
        close_after_ms=args.close_after_ms,
    )
    script = load_script(args.script) if args.script else demo_script()
    server = FakeRealtimeServer(
        args.dialect,
        script=script,
        api_key=args.api_key,
        faults=faults,
        realtime_factor=args.realtime_factor,
        session_limit_s=args.session_limit_s,
        # One conversation across a client's sessions, as a real model's re-seeded context
        # would make it: a rolled-over call does not start the script again.
        continue_script=args.session_limit_s is not None,
    )
    await server.start(args.host, args.port)
    try:
        print(server.url, flush=True)
        await asyncio.Event().wait()
    finally:
        await server.stop()


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m bridge.devtools.fake_realtime``: serve until Ctrl-C."""
    parser = argparse.ArgumentParser(prog="fake-realtime", description=__doc__.split("\n")[0])
    add_fake_realtime_arguments(parser)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_fake_realtime(args))


if __name__ == "__main__":
    main()
