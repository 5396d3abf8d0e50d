"""A stand-in for Twilio's REST API (``POST /2010-04-01/Accounts/{sid}/Calls.json``).

It checks HTTP basic auth like Twilio, records every request with its exact form fields, and
answers as Twilio does: 201 with the new call, or an error body ``{"code", "message", ...}``.
Use it in process (``transport()``, an ``httpx.MockTransport``) or as a real HTTP server on a
free 127.0.0.1 port (``serving()``), for code in another process such as ``bridge call``.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

ACCOUNT_SID = "AC" + "1f" * 16
AUTH_TOKEN = "twilio-auth-token-do-not-leak-5e3c"


@dataclass
class SeenRequest:
    method: str
    path: str
    authorized: bool
    form: list[tuple[str, str]]
    content_type: str

    def field(self, name: str) -> list[str]:
        return [value for key, value in self.form if key == name]


@dataclass
class FakeTwilioRest:
    account_sid: str = ACCOUNT_SID
    auth_token: str = AUTH_TOKEN
    requests: list[SeenRequest] = field(default_factory=list)
    # Set to (status, JSON body) to refuse the next calls the way Twilio does.
    error: tuple[int, Any] | None = None
    created: list[str] = field(default_factory=list)

    def handle(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, Any]:
        seen = SeenRequest(
            method=method,
            path=path,
            authorized=self._auth_ok(headers.get("authorization")),
            form=parse_qsl(body.decode(), keep_blank_values=True),
            content_type=headers.get("content-type", ""),
        )
        self.requests.append(seen)
        if not seen.authorized:
            return 401, {"code": 20003, "message": "Authenticate", "status": 401}
        if method != "POST" or path != f"/2010-04-01/Accounts/{self.account_sid}/Calls.json":
            return 404, {"code": 20404, "message": "The requested resource was not found"}
        if self.error is not None:
            return self.error
        sid = "CA" + secrets.token_hex(16)
        self.created.append(sid)
        return 201, {
            "sid": sid,
            "account_sid": self.account_sid,
            "to": seen.field("To")[0] if seen.field("To") else None,
            "from": seen.field("From")[0] if seen.field("From") else None,
            "status": "queued",
        }

    def _auth_ok(self, header: str | None) -> bool:
        expected = base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        return header == f"Basic {expected}"

    def transport(self) -> httpx.MockTransport:
        def respond(request: httpx.Request) -> httpx.Response:
            status, body = self.handle(
                request.method,
                request.url.path,
                {k.lower(): v for k, v in request.headers.items()},
                request.read(),
            )
            return httpx.Response(status, json=body)

        return httpx.MockTransport(respond)

    def app(self) -> Starlette:
        async def endpoint(request: Request) -> JSONResponse:
            status, body = self.handle(
                request.method,
                request.url.path,
                {k.lower(): v for k, v in request.headers.items()},
                await request.body(),
            )
            return JSONResponse(body, status_code=status)

        return Starlette(routes=[Route("/{path:path}", endpoint, methods=["GET", "POST"])])


@asynccontextmanager
async def serving(fake: FakeTwilioRest) -> AsyncIterator[str]:
    """``fake`` as a real HTTP server on 127.0.0.1; yields its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    config = uvicorn.Config(fake.app(), log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        for _ in range(500):
            if server.started:
                break
            await asyncio.sleep(0.01)
        assert server.started
        yield base
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()
