"""Tools from MCP servers (streamable HTTP), offered to the realtime model as function tools.

An ``[mcp.NAME]`` entry in the agents file becomes one ``McpToolSource``: ``list_tools`` says
what the server offers (as the function-tool specs a realtime model takes), ``call_tool`` runs
one tool while a caller is on the line and always answers with something the model can talk
about, never an exception.

One MCP client per operation
    Every ``list_tools`` fetch and every ``call_tool`` opens its own client (HTTP connection,
    handshake, request, close) instead of sharing a long-lived session. MCP servers expire
    idle sessions, restart and sit behind load balancers; a shared session would need
    liveness tracking, reconnects, and a retry rule for tool calls that may already have run
    (booking a table twice is worse than failing once). Its task group would also have to
    live in a background task that the app starts and stops. A fresh client per call has
    none of that state: a server that restarted between two calls is simply reached again.
    The price is a handshake per call (``server/discover``, or ``initialize`` on servers from
    before the 2026-07-28 protocol) and the tool listing the SDK fetches to check a result
    against the tool's output schema: three HTTP requests per call on a current server, six
    or seven on an older one, all on one connection; small next to what a tool that is
    worth calling mid-conversation takes.

The listing
    Fetched once and kept; every caller waiting for it shares one fetch. A failed fetch is
    remembered for ``RETRY_AFTER_S``, so a server that is down costs one timeout, not one
    per call that starts while it is down.

Secrets
    ``headers`` usually carry a bearer token: they go to the server and nowhere else. Logs
    name the server and the tool, never header values, and never arguments or results above
    debug level (they are what the caller said and what was found about them).
"""

from __future__ import annotations

import asyncio
import copy
import functools
import json
import re
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx2
import structlog
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client
from mcp.types import (
    CallToolResult,
    EmbeddedResource,
    Implementation,
    TextContent,
    TextResourceContents,
    Tool,
)

from bridge import __version__
from bridge.errors import BridgeError

log = structlog.get_logger("bridge.mcp")

# What a realtime model accepts as a function name. MCP itself allows more (dots, up to 128
# characters), so some valid MCP tools cannot be offered at all.
_FUNCTION_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")

MAX_TOOLS = 128
"""Tools kept from one server: every tool's schema goes into the model's session, and a
server listing hundreds would crowd out the agent's own instructions."""

MAX_OUTPUT_BYTES = 16 * 1024
"""A result longer than this (UTF-8) is cut: the model reads it aloud or reasons over it
mid-call, and a huge one only adds latency and cost."""

_MAX_PAGES = 32
"""Listing pages followed at most, so a server whose cursor never ends cannot stall loading."""

_HTTP_SLACK_S = 1.0
"""The HTTP client's own timeouts sit this far behind the operation's deadline: the deadline
is what ends an operation; the HTTP timeouts only stop a close that would otherwise hang."""

RETRY_AFTER_S = 30.0
"""After a failed listing, how long ``list_tools`` answers from that failure."""

_ERROR_TEXT_CHARS = 500
"""A server's own error message is passed to the model, cut to this length."""


class McpUnavailable(BridgeError):
    """An MCP server could not be listed: unreachable, refused us, timed out or answered
    something that is not MCP. The message names the server and why, never its headers."""

    def __init__(self, server: str, reason: str) -> None:
        super().__init__(f"MCP server {server!r} is unavailable: {reason}")
        self.server = server
        self.reason = reason


@dataclass(frozen=True)
class ToolSpec:
    """One tool as a realtime model's function tool: ``parameters`` is its JSON input schema.
    Specs are shared between calls: treat ``parameters`` as read-only."""

    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(frozen=True)
class ToolResult:
    """What to hand the model: on success the tool's output; otherwise ``{"error": ...}``."""

    ok: bool
    output: str


@dataclass(frozen=True)
class _Failure:
    """A failed operation, said three ways: a static reason for logs, a sentence for the
    operator (``McpUnavailable``), and a short error for the model."""

    reason: str
    detail: str
    for_model: str


class McpToolSource:
    """The tools of one MCP server reached over streamable HTTP at ``url``.

    ``timeout_s`` bounds a listing; each ``call_tool`` brings its own bound. The listing is
    fetched once and kept; ``refresh`` fetches it again (when the agents file is reloaded).
    """

    def __init__(
        self, name: str, url: str, headers: dict[str, str], timeout_s: float = 10.0
    ) -> None:
        self.name = name
        self.url = url
        self._headers = dict(headers)
        self.timeout_s = timeout_s
        self._tools: list[ToolSpec] | None = None
        # Many calls can start at once: they share one fetch rather than queue for their own,
        # which during an outage would make the tenth caller wait ten timeouts.
        self._fetching: asyncio.Task[list[ToolSpec]] | None = None
        self._failed: tuple[float, str] | None = None  # when the last fetch failed, and why
        _tls_context()  # built now, while the agents file loads, not during a call

    def __repr__(self) -> str:
        # Only the name: headers carry tokens, and some servers take theirs in the URL.
        return f"McpToolSource({self.name!r})"

    async def list_tools(self) -> list[ToolSpec]:
        """The server's tools, fetched on first use and kept. Raises ``McpUnavailable``; for
        ``RETRY_AFTER_S`` after a failed fetch it does so at once, without asking the server
        again, so a server that is down does not hold up every call that starts meanwhile."""
        if self._tools is not None:
            return list(self._tools)
        if self._failed is not None:
            failed_at, reason = self._failed
            if time.monotonic() - failed_at < RETRY_AFTER_S:
                raise McpUnavailable(self.name, reason)
        return list(await self._fetch())

    async def refresh(self) -> list[ToolSpec]:
        """Fetch the listing again (joining a fetch already under way). Raises
        ``McpUnavailable`` and keeps the listing it had, so a server that is down for a moment
        does not take the agent's tools with it."""
        return list(await self._fetch())

    async def _fetch(self) -> list[ToolSpec]:
        if self._fetching is None or self._fetching.done():
            self._fetching = asyncio.create_task(self._fetch_tools())
            # When every waiter was cancelled, nobody else would look at a failure.
            self._fetching.add_done_callback(_retrieve)
        # Shielded: one caller hanging up must not cancel the fetch the others wait for.
        return await asyncio.shield(self._fetching)

    async def call_tool(self, tool: str, arguments: dict[str, Any], timeout_s: float) -> ToolResult:
        """Run ``tool`` within ``timeout_s``. Every failure comes back as an error result the
        model can talk about; only cancellation (the call ended) propagates."""
        started = time.monotonic()
        log.debug("mcp.call", server=self.name, tool=tool, arguments=arguments)
        statuses: list[int] = []
        deadline = asyncio.timeout(timeout_s)
        try:
            async with deadline, self._client(timeout_s, statuses) as client:
                result = await client.call_tool(tool, arguments)
        except BaseException as exc:
            failure = self._failure(exc, deadline, timeout_s, statuses)
            log.warning(
                "mcp.call_failed",
                server=self.name,
                tool=tool,
                reason=failure.reason,
                exc_type=_leaf(exc).__class__.__name__,
                elapsed_ms=_ms_since(started),
            )
            return ToolResult(ok=False, output=_error_json(failure.for_model))
        elapsed_ms = _ms_since(started)
        if result.is_error:
            text = _joined_text(result) or "the tool failed without saying why"
            log.info(
                "mcp.call_failed",
                server=self.name,
                tool=tool,
                reason="tool_error",
                elapsed_ms=elapsed_ms,
            )
            log.debug("mcp.tool_error", server=self.name, tool=tool, error=text)
            return ToolResult(ok=False, output=_error_json(text[:_ERROR_TEXT_CHARS]))
        output = _success_output(result)
        log.info("mcp.called", server=self.name, tool=tool, elapsed_ms=elapsed_ms)
        log.debug("mcp.result", server=self.name, tool=tool, output=output)
        return ToolResult(ok=True, output=_cut(output))

    async def _fetch_tools(self) -> list[ToolSpec]:
        statuses: list[int] = []
        deadline = asyncio.timeout(self.timeout_s)
        try:
            async with deadline, self._client(self.timeout_s, statuses) as client:
                listed = await _list_all(client)
        except BaseException as exc:
            failure = self._failure(exc, deadline, self.timeout_s, statuses)
            log.warning(
                "mcp.list_failed",
                server=self.name,
                reason=failure.reason,
                exc_type=_leaf(exc).__class__.__name__,
            )
            self._failed = (time.monotonic(), failure.detail)
            raise McpUnavailable(self.name, failure.detail) from exc
        specs = self._specs(listed)
        log.info("mcp.listed", server=self.name, tools=len(specs))
        self._tools, self._failed = specs, None
        return specs

    def _specs(self, listed: list[Tool]) -> list[ToolSpec]:
        specs: list[ToolSpec] = []
        seen: set[str] = set()
        for tool in listed:
            if not _FUNCTION_NAME.fullmatch(tool.name) or tool.name in seen:
                log.warning(
                    "mcp.tool_skipped",
                    server=self.name,
                    tool=tool.name[:100],
                    reason="duplicate" if tool.name in seen else "invalid_name",
                )
                continue
            if len(specs) == MAX_TOOLS:
                log.warning("mcp.tools_cut", server=self.name, listed=len(listed), kept=MAX_TOOLS)
                break
            seen.add(tool.name)
            specs.append(_spec(tool))
        return specs

    @asynccontextmanager
    async def _client(self, timeout_s: float, statuses: list[int]) -> AsyncIterator[Client]:
        """A connected MCP client; ``statuses`` collects the HTTP status of each POST, so a
        refusal can be reported as the server's "401" rather than the SDK's generic error."""

        async def note_status(response: httpx2.Response) -> None:
            # Only POSTs carry requests; a 405 for the optional GET stream or the closing
            # DELETE is a server declining extras, not a failure.
            if response.request.method == "POST":
                statuses.append(response.status_code)

        http = httpx2.AsyncClient(
            headers=self._headers,
            verify=_tls_context(),
            timeout=httpx2.Timeout(timeout_s + _HTTP_SLACK_S),
            event_hooks={"response": [note_status]},
        )
        async with http:
            transport = streamable_http_client(self.url, http_client=http)
            # No response cache: each client lives for one operation, and the listing is
            # kept above, where ``refresh`` controls it.
            info = Implementation(name="bridge", version=__version__)
            async with Client(transport, cache=None, client_info=info) as client:
                yield client

    def _failure(
        self,
        exc: BaseException,
        deadline: asyncio.Timeout,
        timeout_s: float,
        statuses: list[int],
    ) -> _Failure:
        """Sort a failed operation, or re-raise what must not be swallowed."""
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            # Our caller is being cancelled (the phone call ended): that must reach it as a
            # plain CancelledError, whatever the SDK's task groups made of it on the way.
            if isinstance(exc, asyncio.CancelledError):
                raise exc
            raise asyncio.CancelledError() from exc
        if deadline.expired():
            return _timed_out(timeout_s)
        if isinstance(exc, Exception):
            return _sort(_leaf(exc), timeout_s, statuses)
        if isinstance(exc, BaseExceptionGroup) and exc.subgroup(asyncio.CancelledError):
            raise asyncio.CancelledError() from exc
        raise exc


def _retrieve(task: asyncio.Task[list[ToolSpec]]) -> None:
    if not task.cancelled():
        task.exception()


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One TLS context for every client. Building one loads the trust store, which blocks
    the event loop for tens of milliseconds: once per tool call would stall every call's
    audio each time."""
    return httpx2.create_ssl_context()


async def _list_all(client: Client) -> list[Tool]:
    tools: list[Tool] = []
    cursor: str | None = None
    for _ in range(_MAX_PAGES):
        page = await client.list_tools(cursor=cursor)
        tools += page.tools
        cursor = page.next_cursor
        # Past the cap nothing more is kept; one extra tool is enough to warn about the cut.
        if cursor is None or len(tools) > MAX_TOOLS:
            break
    return tools


def _spec(tool: Tool) -> ToolSpec:
    parameters = copy.deepcopy(tool.input_schema)
    # MCP requires an object schema; a realtime model also wants "properties" spelled out,
    # even for a tool without arguments.
    parameters.setdefault("type", "object")
    if parameters["type"] == "object":
        parameters.setdefault("properties", {})
    return ToolSpec(
        name=tool.name,
        description=tool.description or tool.title or "",
        parameters=parameters,
    )


def _success_output(result: CallToolResult) -> str:
    if result.structured_content is not None:
        return json.dumps(result.structured_content, ensure_ascii=False)
    return _joined_text(result)


def _joined_text(result: CallToolResult) -> str:
    """The result's text. Images, audio and links mean nothing on a phone line: they are
    named, so the model knows something was left out."""
    parts: list[str] = []
    for block in result.content:
        if isinstance(block, TextContent):
            parts.append(block.text)
        elif isinstance(block, EmbeddedResource) and isinstance(
            block.resource, TextResourceContents
        ):
            parts.append(block.resource.text)
        else:
            parts.append(f"[{block.type} content left out]")
    return "\n".join(parts)


def _cut(output: str) -> str:
    data = output.encode()
    if len(data) <= MAX_OUTPUT_BYTES:
        return output
    kept = data[:MAX_OUTPUT_BYTES].decode(errors="ignore")
    return f"{kept}\n[result cut: {len(data)} bytes, only the first {MAX_OUTPUT_BYTES} kept]"


def _error_json(message: str) -> str:
    return json.dumps({"error": message}, ensure_ascii=False)


def _seconds(timeout_s: float) -> str:
    return f"{timeout_s:g}"


def _timed_out(timeout_s: float) -> _Failure:
    text = f"timed out after {_seconds(timeout_s)} s"
    return _Failure(reason="timeout", detail=text, for_model=text)


def _leaf(exc: BaseException) -> BaseException:
    """The first real error inside the exception groups that the SDK's task groups wrap
    failures in."""
    while isinstance(exc, BaseExceptionGroup):
        inner = [e for e in exc.exceptions if not isinstance(e, asyncio.CancelledError)]
        exc = (inner or list(exc.exceptions))[0]
    return exc


def _sort(exc: BaseException, timeout_s: float, statuses: list[int]) -> _Failure:
    if isinstance(exc, TimeoutError | httpx2.TimeoutException):
        return _timed_out(timeout_s)
    if statuses and statuses[-1] >= 400:
        # The SDK turns an HTTP refusal into a generic JSON-RPC error; the status says more.
        status = statuses[-1]
        return _Failure(
            reason=f"http_{status}",
            detail=f"it answered HTTP {status}",
            for_model=f"the tool service refused the request (HTTP {status})",
        )
    if isinstance(exc, httpx2.TransportError | OSError):
        return _Failure(
            reason="unreachable",
            detail="it could not be reached",
            for_model="the tool service could not be reached",
        )
    if isinstance(exc, MCPError):
        # A JSON-RPC error the server chose to send (unknown tool, bad arguments): its
        # message is meant for the client and may help the model put things right.
        message = exc.message[:_ERROR_TEXT_CHARS] or "the tool service reported an error"
        return _Failure(
            reason="protocol_error",
            detail=f"it answered with error {exc.code}",
            for_model=message,
        )
    return _Failure(
        reason="protocol_error",
        detail=f"its answer could not be used ({exc.__class__.__name__})",
        for_model="the tool service sent an answer that could not be used",
    )


def _ms_since(started: float) -> int:
    return round((time.monotonic() - started) * 1000)
