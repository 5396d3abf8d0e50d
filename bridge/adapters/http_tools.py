"""HTTP tools: the model's tool call as a signed POST to the tool's URL.

The body is ``{"call_sid", "agent", "tool", "arguments"}`` and ``X-Bridge-Signature`` is
``sha256=`` and the hex HMAC-SHA256 of the exact body bytes, keyed by the tool's secret (or
``BRIDGE_TOOL_SECRET``), so the receiving service can tell the bridge from anyone else. The
reply's JSON is what the model gets. Whatever goes wrong (a timeout, an error status, a reply
that is not JSON, one too large) becomes a short error the model can talk about; nothing
raises to the call, and a slow tool never holds up the call's audio (it runs in a task of
its own).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

import httpx
import structlog

__all__ = ["MAX_REPLY_BYTES", "ToolOutcome", "call_http_tool", "signature"]

log = structlog.get_logger("bridge.tools")

#: A reply larger than this is refused: the model's context is not a place for bulk data.
MAX_REPLY_BYTES = 16 * 1024


@dataclass(frozen=True, slots=True)
class ToolOutcome:
    ok: bool
    output: str  # the JSON text given to the model


def signature(secret: bytes, body: bytes) -> str:
    """The ``X-Bridge-Signature`` value for ``body``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def _error(message: str) -> ToolOutcome:
    return ToolOutcome(False, json.dumps({"error": message}))


async def call_http_tool(
    client: httpx.AsyncClient,
    *,
    url: str,
    secret: bytes | None,
    timeout_s: float,
    call_sid: str,
    agent: str,
    tool: str,
    arguments: dict[str, Any],
) -> ToolOutcome:
    """POST one tool call and read its answer, within ``timeout_s`` in all."""
    body = json.dumps(
        {"call_sid": call_sid, "agent": agent, "tool": tool, "arguments": arguments},
        separators=(",", ":"),
    ).encode()
    headers = {"Content-Type": "application/json", "User-Agent": "bridge-tools"}
    if secret is not None:
        headers["X-Bridge-Signature"] = signature(secret, body)
    try:
        async with client.stream(
            "POST", url, content=body, headers=headers, timeout=timeout_s
        ) as response:
            if response.status_code >= 400:
                log.warning("tool.http_status", tool=tool, status=response.status_code)
                return _error(f"the tool answered HTTP {response.status_code}")
            reply = bytearray()
            async for chunk in response.aiter_bytes():
                reply += chunk
                if len(reply) > MAX_REPLY_BYTES:
                    log.warning("tool.reply_too_large", tool=tool, limit=MAX_REPLY_BYTES)
                    return _error("the tool's reply was too large")
    except httpx.TimeoutException:
        log.warning("tool.timeout", tool=tool, timeout_s=timeout_s)
        return _error(f"the tool did not answer within {timeout_s:g} s")
    except httpx.HTTPError as exc:
        log.warning("tool.unreachable", tool=tool, error=type(exc).__name__)
        return _error("the tool could not be reached")
    try:
        value = json.loads(reply) if reply else None
    except ValueError:
        log.warning("tool.reply_not_json", tool=tool)
        return _error("the tool's reply was not JSON")
    return ToolOutcome(True, json.dumps(value, separators=(",", ":"), ensure_ascii=False))
