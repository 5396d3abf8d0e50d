"""Call control for OpenAI's SIP connector: ``POST {OPENAI_API_BASE}/v1/realtime/calls/{id}/
accept|reject|refer|hangup``, with the API key as a bearer token.

Each request is short (the caller is ringing or on the line) and retried a couple of times
when OpenAI could not answer (a connection error, a timeout, a 5xx); a 4xx is final. A 404
means the call is already gone (the caller hung up, another accept won): nothing to do, and
not an error. Nothing logged or raised here carries the key.
"""

from __future__ import annotations

import asyncio
from enum import StrEnum
from typing import Any

import httpx
import structlog

from bridge.protocols.openai_sip import calls_url

log = structlog.get_logger("bridge.openai_calls")

ATTEMPTS = 3
RETRY_DELAYS_S = (0.2, 0.6)
TIMEOUT = httpx.Timeout(5.0, connect=3.0)


class Outcome(StrEnum):
    DONE = "done"
    GONE = "gone"  # 404: the call no longer exists
    FAILED = "failed"


class OpenAiCalls:
    """The four call-control requests for one API base and key. ``aclose()`` when done."""

    def __init__(
        self, api_base: str, api_key: str | None, client: httpx.AsyncClient | None = None
    ) -> None:
        self._base = api_base
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = client or httpx.AsyncClient(
            timeout=TIMEOUT, follow_redirects=False, trust_env=not _loopback(api_base)
        )

    async def accept(self, call_id: str, session: dict[str, Any]) -> Outcome:
        """Answer the call with ``session`` (type, model, instructions, audio, tools...)."""
        return await self._post(call_id, "accept", session)

    async def reject(self, call_id: str, status_code: int = 603) -> Outcome:
        """Refuse the call with a SIP status (OpenAI's default is 603 Decline)."""
        return await self._post(call_id, "reject", {"status_code": status_code})

    async def refer(self, call_id: str, target_uri: str) -> Outcome:
        """Transfer the caller to a ``tel:`` or ``sip:`` URI (a SIP REFER to the trunk)."""
        return await self._post(call_id, "refer", {"target_uri": target_uri})

    async def hangup(self, call_id: str) -> Outcome:
        return await self._post(call_id, "hangup", None)

    async def _post(self, call_id: str, action: str, body: dict[str, Any] | None) -> Outcome:
        url = calls_url(self._base, call_id, action)
        for attempt in range(ATTEMPTS):
            if attempt:
                await asyncio.sleep(RETRY_DELAYS_S[min(attempt, len(RETRY_DELAYS_S)) - 1])
            try:
                response = await self._client.post(
                    url, json=body if body is not None else {}, headers=self._headers
                )
            except (httpx.TransportError, httpx.InvalidURL) as exc:
                log.warning(
                    "openai_calls.unreachable", action=action, call_sid=call_id,
                    error=type(exc).__name__, attempt=attempt + 1,
                )  # fmt: skip
                continue
            status = response.status_code
            if 200 <= status < 300:
                log.info("openai_calls.done", action=action, call_sid=call_id)
                return Outcome.DONE
            if status == 404:
                log.info("openai_calls.call_gone", action=action, call_sid=call_id)
                return Outcome.GONE
            log.warning(
                "openai_calls.refused", action=action, call_sid=call_id, status=status,
                attempt=attempt + 1,
            )  # fmt: skip
            if status < 500:
                return Outcome.FAILED  # our request is wrong: repeating it will not help
        return Outcome.FAILED

    async def aclose(self) -> None:
        await self._client.aclose()


def _loopback(base: str) -> bool:
    """A test server or a local relay: no proxy from the environment could reach it."""
    try:
        host = httpx.URL(base).host
    except httpx.InvalidURL:
        return False
    return host in ("localhost", "::1") or host.startswith("127.")
