"""``POST /api/calls``: place an outbound call through Twilio; the callee talks to the agent.

Placing a call costs money, so the route is guarded more tightly than the call log:

- it does not exist (404) until ``BRIDGE_API_TOKEN`` is set;
- the bearer token is checked, in constant time, before the request is looked at any further
  (wrong or missing: 401 and nothing sent to Twilio); the review token never works here,
  even when an operator set both to the same value;
- the body is small JSON (at most 4 KiB) with E.164 numbers, else 422;
- a token bucket per app limits how fast calls are placed (429 with ``Retry-After``).

When the callee answers, Twilio requests the voice webhook ``{BRIDGE_PUBLIC_URL}/twilio/voice``
(with ``?agent=NAME`` when the request chose an agent) like for any incoming call.

State on ``app.state`` (all optional, made when first needed): ``outbound_http``, the shared
``httpx.AsyncClient`` (``close_outbound_client`` closes it at shutdown); ``outbound_bucket``,
the ``TokenBucket``; ``agents``, a registry with ``get(name)``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from bridge.adapters.http_body import BodyRefused, read_body
from bridge.adapters.twilio_rest import (
    MACHINE_DETECTION_MODES,
    TwilioRestError,
    create_call,
    is_e164,
    last_digits,
    new_client,
)
from bridge.review.auth import bearer_matches, configured_token
from bridge.settings import Settings

log = structlog.get_logger("bridge.outbound")

MAX_BODY_BYTES = 4 * 1024
BODY_READ_TIMEOUT_S = 10.0
TWILIO_TIMEOUT_S = 10.0
DEFAULT_BURST = 10
DEFAULT_PER_SECOND = 1.0
MAX_AGENT_NAME = 100
_FIELDS = frozenset({"to", "from", "agent", "machine_detection"})
_NO_STORE = {"Cache-Control": "no-store"}


class TokenBucket:
    """``burst`` calls at once, then ``per_second`` on average. One per app, not per client:
    the limit is on what the account spends, whoever holds the token."""

    def __init__(
        self,
        burst: int = DEFAULT_BURST,
        per_second: float = DEFAULT_PER_SECOND,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if burst < 1 or per_second <= 0:
            raise ValueError("a token bucket needs burst >= 1 and per_second > 0")
        self.burst = burst
        self.per_second = per_second
        self._clock = clock
        self._tokens = float(burst)
        self._at = clock()

    def take(self) -> float:
        """Take one token: 0 when granted, else the seconds until one will be there."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.per_second)
        self._at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return 0.0
        return (1 - self._tokens) / self.per_second


class _Refused(Exception):
    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code


def outbound_routes() -> list[Route]:
    """The route, ready for ``Starlette(routes=[...])``. ``GET /api/calls`` (the call log)
    shares the path and keeps its own route."""
    return [Route("/api/calls", place_call, methods=["POST"], name="api_place_call")]


async def place_call(request: Request) -> Response:
    settings: Settings = request.app.state.settings
    if configured_token(settings.api_token) is None:
        return PlainTextResponse("Not Found", status_code=404)
    if not _authorized(request, settings):
        return _json(
            {"error": "a valid BRIDGE_API_TOKEN bearer token is required"},
            401,
            {"WWW-Authenticate": "Bearer"},
        )
    if request.app.state.drain.draining:
        # A stopping bridge starts no new calls; the client tries again (another bridge).
        return _json(
            {"error": "this bridge is shutting down; try again"}, 503, {"Retry-After": "5"}
        )
    if request.app.state.overload.busy:
        # Its event loop runs late: another call would make every live call worse.
        request.app.state.metrics.rejected.labels("overloaded").inc()
        log.warning("outbound.refused_overloaded")
        return _json({"error": "this bridge is overloaded; try again"}, 503, {"Retry-After": "5"})
    try:
        call = _validate(await _read_json(request), request, settings)
        account_sid, auth_token = _twilio_credentials(settings)
    except _Refused as exc:
        return _json({"error": str(exc)}, exc.status_code)
    wait_s = _bucket(request).take()
    if wait_s > 0:
        retry = str(max(1, math.ceil(wait_s)))
        return _json({"error": "too many calls; slow down"}, 429, {"Retry-After": retry})
    try:
        sid = await create_call(
            outbound_http(request.app),
            settings.twilio_api_base,
            account_sid,
            auth_token,
            to=call.to,
            from_=call.from_,
            url=voice_webhook_url(settings, call.agent),
            status_callback=settings.public_http_url("/twilio/status"),
            machine_detection=call.machine_detection,
            timeout_s=TWILIO_TIMEOUT_S,
        )
    except TwilioRestError as exc:
        # Twilio's messages often quote the numbers, so they stay out of logs above debug;
        # without a status the message is the bridge's own (Twilio unreachable, say).
        log.warning(
            "outbound.refused",
            agent=call.agent,
            to=last_digits(call.to),
            twilio_status=exc.status,
            twilio_code=exc.code,
            error=str(exc) if exc.status is None else None,
        )
        log.debug("outbound.refused_detail", error=str(exc))
        reply: dict[str, Any] = {"error": str(exc)}
        if exc.twilio_message is not None:
            reply["twilio_message"] = exc.twilio_message
        if exc.code is not None:
            reply["twilio_code"] = exc.code
        return _json(reply, 502)
    log.info(
        "outbound.placed",
        call_sid=sid,
        agent=call.agent or "default",
        to=last_digits(call.to),
        from_=last_digits(call.from_),
        machine_detection=call.machine_detection,
    )
    log.debug("outbound.numbers", call_sid=sid, to=call.to, from_=call.from_)
    return _json({"call_sid": sid}, 201)


def _authorized(request: Request, settings: Settings) -> bool:
    """The API token, and not the review token: both compared in constant time, always both,
    so the answer's timing says nothing about which one was close."""
    header = request.headers.get("authorization")
    api_ok = bearer_matches(header, settings.api_token)
    review_ok = bearer_matches(header, settings.review_token)
    if api_ok and review_ok:
        log.error(
            "outbound.misconfigured",
            detail="BRIDGE_API_TOKEN equals BRIDGE_REVIEW_TOKEN: outbound calls are refused "
            "until it is a token of its own",
        )
    return api_ok and not review_ok


@dataclass(frozen=True, slots=True)
class _Call:
    to: str
    from_: str
    agent: str | None
    machine_detection: str | None


async def _read_json(request: Request) -> object:
    try:
        body = await read_body(request, MAX_BODY_BYTES, BODY_READ_TIMEOUT_S)
    except BodyRefused as refused:
        raise _Refused(refused.status, refused.reason) from None
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise _Refused(
            422, 'the body must be JSON like {"to": "+15557650000", "from": "+15551230000"}'
        ) from None


def _validate(data: object, request: Request, settings: Settings) -> _Call:
    if not isinstance(data, dict):
        raise _Refused(422, "the body must be a JSON object")
    unknown = sorted(str(key) for key in data if key not in _FIELDS)
    if unknown:
        raise _Refused(
            422,
            f"unknown field(s) {', '.join(unknown)}; expected to, from, agent, machine_detection",
        )
    to = _number(data.get("to"), "to")
    if to is None:
        raise _Refused(422, "to is required: the number to call, E.164 (e.g. +15557650000)")
    from_ = _number(data.get("from"), "from")
    if from_ is None:
        from_ = settings.outbound_from or None
    if from_ is None:
        raise _Refused(
            422,
            "from is required: the caller ID, a Twilio number in E.164 (BRIDGE_OUTBOUND_FROM, "
            "which would be used otherwise, is not set)",
        )
    agent = _agent(data.get("agent"), request)
    mode = data.get("machine_detection")
    if mode is not None and mode not in MACHINE_DETECTION_MODES:
        raise _Refused(
            422, f"machine_detection must be one of {', '.join(MACHINE_DETECTION_MODES)}"
        )
    return _Call(to, from_, agent, mode)


def _number(value: object, field: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not is_e164(value):
        raise _Refused(
            422, f"{field} must be an E.164 number: + and 7 to 15 digits, e.g. +15557650000"
        )
    return value


def _agent(value: object, request: Request) -> str | None:
    """The agent's name when the request chose one that exists. Without an agent registry
    on the app, only the one agent there is, ``default``, can be chosen."""
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_AGENT_NAME:
        raise _Refused(422, f"agent must be an agent's name (at most {MAX_AGENT_NAME} characters)")
    # The agents in force now (the hub's snapshot follows reloads); a bare app in tests may
    # carry its own registry instead.
    deps = getattr(request.app.state, "session_deps", None)
    hub = getattr(deps, "agent_hub", None)
    registry = hub.agents if hub is not None else getattr(request.app.state, "agents", None)
    if registry is None:
        known = value == "default"
    else:
        try:
            known = registry.get(value) is not None
        except KeyError:
            known = False
    if not known:
        raise _Refused(422, f"there is no agent named {value!r}")
    return value


def _twilio_credentials(settings: Settings) -> tuple[str, str]:
    token = settings.twilio_auth_token
    secret = token.get_secret_value() if token is not None else ""
    if not settings.twilio_account_sid or not secret:
        raise _Refused(
            503, "outbound calls need TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN to be set"
        )
    return settings.twilio_account_sid, secret


def voice_webhook_url(settings: Settings, agent: str | None) -> str:
    """The URL Twilio requests when the callee answers: the voice webhook, naming the agent."""
    url = settings.public_http_url("/twilio/voice")
    return url + "?" + urlencode({"agent": agent}) if agent else url


def _bucket(request: Request) -> TokenBucket:
    state = request.app.state
    bucket = getattr(state, "outbound_bucket", None)
    if bucket is None:
        bucket = state.outbound_bucket = TokenBucket()
    return bucket


def outbound_http(app: Starlette) -> httpx.AsyncClient:
    """The app's one client for Twilio's REST API, made on first use."""
    state = app.state
    client = getattr(state, "outbound_http", None)
    if client is None:
        client = state.outbound_http = new_client(state.settings.twilio_api_base)
    return client


async def close_outbound_client(app: Starlette) -> None:
    """Close the shared client, if one was made; for the app's shutdown."""
    state = app.state
    client = getattr(state, "outbound_http", None)
    if client is not None:
        state.outbound_http = None
        await client.aclose()


def _json(body: dict[str, Any], status: int, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(body, status_code=status, headers={**_NO_STORE, **(headers or {})})
