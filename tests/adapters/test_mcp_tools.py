"""McpToolSource against a real MCP server: the SDK's own server over streamable HTTP, served
by uvicorn on 127.0.0.1 inside each test, behind a gate that checks a bearer token.

The server speaks the current protocol; with ``legacy=True`` the gate refuses it the way a
server from before 2026-07-28 does, so the client falls back to the ``initialize`` handshake
that most MCP servers in the field still use. Deadlines under test are short; waits for what
must happen are generous.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types.version import HANDSHAKE_PROTOCOL_VERSIONS
from pydantic import BaseModel
from structlog.testing import capture_logs

from bridge.adapters import mcp_tools
from bridge.adapters.mcp_tools import McpToolSource, McpUnavailable, ToolResult, ToolSpec
from bridge.devtools.ports import free_port

TOKEN = "tok-7f3a9c-never-logged"
HEADERS = {"Authorization": f"Bearer {TOKEN}", "X-Tenant": "acme"}

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class Slot(BaseModel):
    date: str
    free: int


def make_server(release: asyncio.Event) -> MCPServer:
    server = MCPServer("test-tools")

    @server.tool(description="Free tables for a date and party size.")
    def check_availability(date: str, people: int = 2) -> Slot:
        return Slot(date=date, free=10 - people)

    @server.tool(structured_output=False)
    def greet(name: str) -> str:
        """Say hello."""
        return f"Hello, {name}!"

    @server.tool()
    def broken() -> str:
        """Always fails, the way a tool reports its own errors."""
        raise ToolError("the kitchen is closed today")

    @server.tool()
    async def slow() -> str:
        """Answers only once the test lets it (or after a while)."""
        async with asyncio.timeout(10):
            await release.wait()
        return "late"

    @server.tool(structured_output=False)
    def huge() -> str:
        """A result far over the size cap."""
        return "é" * 20_000

    @server.tool()
    def tenant(ctx: Context) -> str:
        """The X-Tenant header this call arrived with."""
        request = ctx.request_context.request
        return request.headers.get("x-tenant", "") if request is not None else ""

    # Valid MCP names that no realtime model accepts as a function name.
    for bad in ("calendar.find", "has space", "x" * 65):
        server.add_tool(lambda: "never offered", name=bad, description="skipped")
    return server


class Gate:
    """ASGI middleware in front of the MCP app: records the Authorization headers it sees,
    refuses a wrong token with 401, and (``legacy``) refuses the 2026-07-28 protocol."""

    def __init__(self, app: Any, token: str | None, legacy: bool) -> None:
        self.app = app
        self.token = token
        self.legacy = legacy
        self.authorizations: list[str] = []
        self.versions: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = {k.decode(): v.decode() for k, v in scope["headers"]}
            self.authorizations.append(headers.get("authorization", ""))
            version = headers.get("mcp-protocol-version")
            if version is not None:
                self.versions.append(version)
            if self.token is not None and headers.get("authorization") != f"Bearer {self.token}":
                await _reply(send, 401, {"error": "invalid_token"})
                return
            if self.legacy and version is not None and version not in HANDSHAKE_PROTOCOL_VERSIONS:
                error = {"code": -32600, "message": "Unsupported protocol version"}
                await _reply(send, 400, {"jsonrpc": "2.0", "id": None, "error": error})
                return
        await self.app(scope, receive, send)


async def _reply(send: Send, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


@dataclass
class Running:
    url: str
    gate: Gate
    server: MCPServer
    release: asyncio.Event


@asynccontextmanager
async def serve(*, token: str | None = TOKEN, legacy: bool = False) -> AsyncIterator[Running]:
    release = asyncio.Event()
    mcp_server = make_server(release)
    gate = Gate(mcp_server.streamable_http_app(), token, legacy)
    # Bound before uvicorn starts, so the port cannot be taken in between.
    sock = socket.socket()
    sock.bind(("127.0.0.1", free_port()))
    port = sock.getsockname()[1]
    config = uvicorn.Config(gate, log_config=None, lifespan="on", timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(10):
            while not server.started:
                assert not task.done(), "the MCP server did not start"
                await asyncio.sleep(0.01)
        yield Running(f"http://127.0.0.1:{port}/mcp", gate, mcp_server, release)
    finally:
        release.set()
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()


@pytest.fixture(params=["current", "legacy"])
async def running(request: pytest.FixtureRequest) -> AsyncIterator[Running]:
    async with serve(legacy=request.param == "legacy") as r:
        yield r


def source(running: Running, headers: dict[str, str] | None = None) -> McpToolSource:
    return McpToolSource("calendar", running.url, HEADERS if headers is None else headers)


async def test_lists_tools_with_their_schemas(running: Running) -> None:
    tools = await source(running).list_tools()
    by_name = {t.name: t for t in tools}
    assert set(by_name) == {"check_availability", "greet", "broken", "slow", "huge", "tenant"}
    spec = by_name["check_availability"]
    assert isinstance(spec, ToolSpec)
    assert spec.description == "Free tables for a date and party size."
    assert spec.parameters["type"] == "object"
    assert spec.parameters["properties"]["date"]["type"] == "string"
    assert spec.parameters["properties"]["people"]["type"] == "integer"
    assert spec.parameters["required"] == ["date"]
    assert by_name["greet"].description == "Say hello."
    # A tool without arguments still spells out an (empty) object schema.
    assert by_name["broken"].parameters["properties"] == {}
    # The client tries the current protocol first; a legacy server makes it fall back.
    assert running.gate.versions[0] == "2026-07-28"
    fell_back = set(running.gate.versions) & set(HANDSHAKE_PROTOCOL_VERSIONS)
    assert bool(fell_back) == running.gate.legacy


async def test_invalid_tool_names_are_skipped_with_a_warning(running: Running) -> None:
    with capture_logs() as logs:
        tools = await source(running).list_tools()
    assert all(t.name not in {"calendar.find", "has space", "x" * 65} for t in tools)
    skipped = [e for e in logs if e["event"] == "mcp.tool_skipped"]
    assert sorted(e["tool"] for e in skipped) == sorted(["calendar.find", "has space", "x" * 65])
    assert all(e["log_level"] == "warning" and e["server"] == "calendar" for e in skipped)
    listed = [e for e in logs if e["event"] == "mcp.listed"]
    assert listed == [
        {"event": "mcp.listed", "log_level": "info", "server": "calendar", "tools": 6}
    ]


async def test_headers_reach_the_server_and_never_the_logs(running: Running) -> None:
    tools = source(running)
    with capture_logs() as logs:
        await tools.list_tools()
        result = await tools.call_tool("tenant", {}, timeout_s=5)
    assert result == ToolResult(ok=True, output='{"result": "acme"}')
    assert running.gate.authorizations
    assert set(running.gate.authorizations) == {f"Bearer {TOKEN}"}
    assert TOKEN not in repr(logs)
    assert TOKEN not in repr(tools)


async def test_call_returns_structured_content_as_json(running: Running) -> None:
    result = await source(running).call_tool("check_availability", {"date": "friday"}, timeout_s=5)
    assert result.ok
    assert json.loads(result.output) == {"date": "friday", "free": 8}


async def test_call_returns_text_content_when_nothing_is_structured(running: Running) -> None:
    result = await source(running).call_tool("greet", {"name": "Ada"}, timeout_s=5)
    assert result == ToolResult(ok=True, output="Hello, Ada!")


async def test_tool_error_becomes_an_error_result_with_its_text(running: Running) -> None:
    with capture_logs() as logs:
        result = await source(running).call_tool("broken", {}, timeout_s=5)
    assert result.ok is False
    # The SDK's server prefixes "Error executing tool broken: ".
    assert "the kitchen is closed today" in json.loads(result.output)["error"]
    failed = [e for e in logs if e["event"] == "mcp.call_failed"]
    assert failed and failed[0]["reason"] == "tool_error" and failed[0]["tool"] == "broken"
    # The error text is the tool's answer: only at debug level.
    assert all("kitchen" not in repr(e) for e in logs if e["log_level"] != "debug")


async def test_unknown_tool_is_an_error_result(running: Running) -> None:
    result = await source(running).call_tool("no_such_tool", {}, timeout_s=5)
    assert result.ok is False
    assert "error" in json.loads(result.output)


async def test_slow_tool_times_out_within_the_bound(running: Running) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    with capture_logs() as logs:
        result = await source(running).call_tool("slow", {}, timeout_s=0.5)
    elapsed = loop.time() - started
    assert result == ToolResult(ok=False, output='{"error": "timed out after 0.5 s"}')
    assert elapsed < 2.0
    failed = [e for e in logs if e["event"] == "mcp.call_failed"]
    assert failed and failed[0]["reason"] == "timeout" and failed[0]["log_level"] == "warning"


async def test_cancelling_a_call_propagates(running: Running) -> None:
    call = asyncio.create_task(source(running).call_tool("slow", {}, timeout_s=30))
    await asyncio.sleep(0.3)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(call, 5)


async def test_long_result_is_cut_with_a_note(running: Running) -> None:
    result = await source(running).call_tool("huge", {}, timeout_s=5)
    assert result.ok
    kept, note = result.output.rsplit("\n", 1)
    assert len(kept.encode()) <= mcp_tools.MAX_OUTPUT_BYTES
    assert set(kept) == {"é"}
    assert note.startswith("[result cut:") and "40000 bytes" in note


async def test_listing_is_kept_until_refreshed(running: Running) -> None:
    tools = source(running)
    first = await tools.list_tools()
    running.server.add_tool(lambda: "new", name="added_later", description="late")
    assert await tools.list_tools() == first
    refreshed = await tools.refresh()
    assert "added_later" in {t.name for t in refreshed}
    assert await tools.list_tools() == refreshed


async def test_more_than_the_cap_of_tools_is_cut(running: Running) -> None:
    for i in range(mcp_tools.MAX_TOOLS + 5):
        running.server.add_tool(lambda: "x", name=f"extra_{i:03d}", description="filler")
    with capture_logs() as logs:
        tools = await source(running).list_tools()
    assert len(tools) == mcp_tools.MAX_TOOLS
    cut = [e for e in logs if e["event"] == "mcp.tools_cut"]
    assert cut and cut[0]["log_level"] == "warning" and cut[0]["kept"] == mcp_tools.MAX_TOOLS


async def test_wrong_token_is_refused_and_named_without_the_token() -> None:
    async with serve(token="the-right-one") as running:
        tools = source(running, headers={"Authorization": f"Bearer {TOKEN}"})
        with pytest.raises(McpUnavailable) as refused:
            await tools.list_tools()
        message = str(refused.value)
        assert "calendar" in message and "401" in message
        assert TOKEN not in message and "the-right-one" not in message
        result = await tools.call_tool("greet", {"name": "Ada"}, timeout_s=5)
        assert result.ok is False
        assert "401" in json.loads(result.output)["error"]


async def test_server_down() -> None:
    tools = McpToolSource("calendar", f"http://127.0.0.1:{free_port()}/mcp", HEADERS)
    with capture_logs() as logs:
        with pytest.raises(
            McpUnavailable, match=r"^MCP server 'calendar' is unavailable: it could not be reached$"
        ):
            await tools.list_tools()
        result = await tools.call_tool("greet", {"name": "Ada"}, timeout_s=5)
    assert result == ToolResult(
        ok=False, output='{"error": "the tool service could not be reached"}'
    )
    events = [(e["event"], e["reason"]) for e in logs if e["log_level"] != "debug"]
    assert events == [("mcp.list_failed", "unreachable"), ("mcp.call_failed", "unreachable")]
    assert TOKEN not in repr(logs)


async def test_unresponsive_server_times_out_the_listing_then_is_not_asked_for_a_while() -> None:
    # Accepts connections and never answers.
    held: list[asyncio.StreamWriter] = []
    listener = await asyncio.start_server(lambda _r, w: held.append(w), "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    tools = McpToolSource("calendar", f"http://127.0.0.1:{port}/mcp", HEADERS, timeout_s=0.5)
    loop = asyncio.get_running_loop()
    try:
        with pytest.raises(
            McpUnavailable, match=r"'calendar' is unavailable: timed out after 0\.5 s"
        ):
            await asyncio.wait_for(tools.list_tools(), 5)
        assert len(held) == 1
        # The failure is remembered: the next caller learns of it at once.
        started = loop.time()
        with pytest.raises(McpUnavailable, match="timed out"):
            await tools.list_tools()
        assert loop.time() - started < 0.2
        assert len(held) == 1
        # A refresh always asks again.
        with pytest.raises(McpUnavailable, match="timed out"):
            await asyncio.wait_for(tools.refresh(), 5)
        assert len(held) == 2
    finally:
        for writer in held:
            writer.close()
        listener.close()
        await asyncio.wait_for(listener.wait_closed(), 5)


async def test_concurrent_callers_share_one_listing(running: Running) -> None:
    await source(running).list_tools()
    one_listing = len(running.gate.authorizations)
    tools = source(running)
    results = await asyncio.gather(*(tools.list_tools() for _ in range(5)))
    assert all(r == results[0] for r in results)
    assert len(running.gate.authorizations) == 2 * one_listing


async def test_a_caller_hanging_up_does_not_cancel_the_listing_for_others(running: Running) -> None:
    tools = source(running)
    first = asyncio.create_task(tools.list_tools())
    second = asyncio.create_task(tools.list_tools())
    await asyncio.sleep(0)  # both are waiting on the one fetch
    first.cancel()
    assert len(await asyncio.wait_for(second, 5)) == 6
    with pytest.raises(asyncio.CancelledError):
        await first
