"""Twilio's HTTP side: the voice webhook, the media socket's door, and status callbacks.

Every request is authenticated before it costs anything: a forged webhook gets 403 and no
call record; a forged upgrade is refused before the socket is accepted, and a stream whose
per-call token does not check out is closed 1008 before any model session is opened.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode

import structlog
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from bridge.adapters.http_body import BodyRefused, read_body
from bridge.adapters.twilio_auth import TwilioAuth
from bridge.call.records import CallStatus, EndReason
from bridge.errors import CLOSE_POLICY_VIOLATION
from bridge.metrics import BridgeMetrics
from bridge.protocols.stream_token import mint_stream_token
from bridge.protocols.twilio import clean_text, is_sid
from bridge.protocols.twiml import connect_stream, dial, hang_up, redirect, say_and_hang_up
from bridge.session import SessionDeps
from bridge.settings import Settings
from bridge.storage.base import CallStore, StoreUnavailableError
from bridge.twilio_session import serve_twilio_stream

log = structlog.get_logger("bridge.webhooks")

_MAX_FORM_FIELD = 128  # Twilio's fields are short; anything longer is not from Twilio
# A Twilio webhook form is a few kilobytes at most; more is not from Twilio.
MAX_FORM_BYTES = 64 * 1024
MAX_FORM_FIELDS = 200
# A form must arrive within this long: a body that trickles in holds a connection and a task.
FORM_READ_TIMEOUT_S = 10.0
_FAILED_CALL_STATUSES = {"busy", "failed", "no-answer", "canceled"}
# A call that reaches a draining bridge is sent back through the public URL once (where the
# load balancer, told by /readyz, picks a bridge that takes calls), marked with this query
# parameter; if it lands on a draining bridge again the caller hears this and is hung up.
DRAINED_PARAM = "drained"
DRAINING_MESSAGE = "Sorry, this line is being updated. Please call again in a minute. Goodbye."
# The same for a bridge too far behind to take another call (bridge.overload).
BUSY_PARAM = "busy"
BUSY_MESSAGE = "Sorry, all our lines are busy. Please call again in a few minutes. Goodbye."


def _state(request: Request | WebSocket) -> tuple[Settings, TwilioAuth, BridgeMetrics]:
    state = request.app.state
    return state.settings, state.twilio_auth, state.metrics


class _BadForm(Exception):
    """The request body is not a form Twilio would send; the status code says why."""

    def __init__(self, status_code: int, reason: str) -> None:
        super().__init__(reason)
        self.status_code = status_code


async def _read_form(request: Request) -> dict[str, str]:
    """The URL-encoded body as a dict, read within a size and a time limit."""
    try:
        body = await read_body(request, MAX_FORM_BYTES, FORM_READ_TIMEOUT_S)
    except BodyRefused as refused:
        raise _BadForm(refused.status, refused.reason) from None
    try:
        # Percent-escapes decode as UTF-8 with replacement, so no value holds a lone surrogate.
        pairs = parse_qsl(
            body.decode("latin-1"), keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS
        )
    except ValueError:
        raise _BadForm(400, "too many form fields") from None
    return dict(pairs)


async def _signed_form(request: Request, path: str) -> dict[str, str] | Response:
    """The POSTed form if its signature checks out, else the response to answer with."""
    _, auth, metrics = _state(request)
    try:
        params = await _read_form(request)
    except _BadForm as exc:
        metrics.rejected.labels("bad_request").inc()
        log.warning("twilio.bad_request", path=path, reason=str(exc))
        return PlainTextResponse(f"{exc}\n", status_code=exc.status_code)
    signature = request.headers.get("x-twilio-signature")
    if not auth.webhook_ok(path, request.url.query, params, signature):
        metrics.rejected.labels("signature").inc()
        log.warning("twilio.bad_signature", path=path)
        return PlainTextResponse("forbidden\n", status_code=403)
    return params


async def voice(request: Request) -> Response:
    params = await _signed_form(request, "/twilio/voice")
    if isinstance(params, Response):
        return params
    call_sid = params.get("CallSid", "")
    if not is_sid(call_sid):
        log.warning("twilio.bad_request", path="/twilio/voice", reason="no valid CallSid")
        return PlainTextResponse("CallSid missing or invalid\n", status_code=400)
    settings, _, _ = _state(request)
    if request.app.state.drain.draining:
        return _elsewhere(request, settings, call_sid, DRAINED_PARAM, DRAINING_MESSAGE)
    if request.app.state.overload.busy:
        request.app.state.metrics.rejected.labels("overloaded").inc()
        return _elsewhere(request, settings, call_sid, BUSY_PARAM, BUSY_MESSAGE)
    token = mint_stream_token(request.app.state.token_secret, call_sid, time.time())
    parameters = {
        "from": clean_text(params.get("From", ""), _MAX_FORM_FIELD),
        "to": clean_text(params.get("To", ""), _MAX_FORM_FIELD),
        "token": token,
    }
    # An outbound call names its agent in the (signed) URL: the callee's number is `To`.
    if (agent := request.query_params.get("agent")) is not None:
        hub = request.app.state.session_deps.agent_hub
        if hub is not None and hub.agents.get(agent) is not None:
            parameters["agent"] = agent
        else:
            log.warning("twilio.unknown_agent", call_sid=call_sid)
    twiml = connect_stream(
        settings.media_stream_url,
        settings.public_http_url("/twilio/stream-status"),
        parameters,
        action_url=settings.public_http_url("/twilio/after-stream"),
    )
    log.info("call.answered", call_sid=call_sid)
    return Response(twiml, media_type="text/xml")


def _elsewhere(
    request: Request, settings: Settings, call_sid: str, param: str, message: str
) -> Response:
    """This bridge takes no new calls now: send the call to another through the public URL,
    once per reason (``param`` marks it); the second time the caller hears ``message``."""
    why = "draining" if param == DRAINED_PARAM else "overloaded"
    query = dict(request.query_params)
    if param in query:
        log.warning(f"call.refused_{why}", call_sid=call_sid)
        return Response(say_and_hang_up(message), media_type="text/xml")
    query[param] = "1"
    url = settings.public_http_url("/twilio/voice") + "?" + urlencode(query)
    log.info(f"call.redirected_{why}", call_sid=call_sid)
    return Response(redirect(url), media_type="text/xml")


async def after_stream(request: Request) -> Response:
    """The ``<Connect>`` action: the stream has ended. A call the agent transferred is
    dialed to its target; any other call is hung up."""
    params = await _signed_form(request, "/twilio/after-stream")
    if isinstance(params, Response):
        return params
    call_sid = params.get("CallSid", "")
    target = request.app.state.session_deps.pending_transfers.pop(call_sid, None)
    if target is None:
        return Response(hang_up(), media_type="text/xml")
    log.info("call.transferred", call_sid=call_sid)
    return Response(dial(target), media_type="text/xml")


async def media(websocket: WebSocket) -> None:
    _, auth, metrics = _state(websocket)
    if not auth.upgrade_ok(websocket.headers.get("x-twilio-signature")):
        metrics.rejected.labels("signature").inc()
        log.warning("twilio.bad_signature", path="/twilio/media")
        # Closing before accepting refuses the handshake: no socket, no session, no cost.
        await websocket.close(CLOSE_POLICY_VIOLATION)
        return
    await websocket.accept()
    deps: SessionDeps = websocket.app.state.session_deps
    await serve_twilio_stream(websocket, deps)


async def call_status(request: Request) -> Response:
    """Twilio's word that a call is over. The session that served a call knows best how it
    ended (a provider failure, the agent hanging up), so this only finishes a call that no
    live session owns: a bridge that died, or a stream that never started."""
    params = await _signed_form(request, "/twilio/status")
    if isinstance(params, Response):
        return params
    call_sid = params.get("CallSid", "")
    status = params.get("CallStatus", "")
    if not is_sid(call_sid):
        return Response(status_code=204)
    log.info("twilio.call_status", call_sid=call_sid, call_status=clean_text(status, 32))
    if status != "completed" and status not in _FAILED_CALL_STATUSES:
        return Response(status_code=204)
    final = CallStatus.COMPLETED if status == "completed" else CallStatus.FAILED
    state = request.app.state
    if call_sid in state.session_deps.live_calls:
        log.info("twilio.call_status_left_to_session", call_sid=call_sid)
        return Response(status_code=204)
    try:
        finished = await _finish_unowned(request, call_sid, final)
    except StoreUnavailableError as exc:
        log.error("store.finish_failed", call_sid=call_sid, error=str(exc))
        # The failure shows in Twilio's debugger; the call is still ended by its session
        # or, if that died too, by the lease sweep.
        return PlainTextResponse("store unavailable\n", status_code=503)
    if not finished:
        # Another instance's session serves it. Should that session die before writing its
        # end, finish the call once it has had ample time to do so itself.
        log.info("twilio.call_status_deferred", call_sid=call_sid, after_s=state.owner_grace_s)
        state.background.spawn(_finish_later(state.store, call_sid, final, state.owner_grace_s))
    return Response(status_code=204)


async def _finish_unowned(request: Request, call_sid: str, final: CallStatus) -> bool:
    state = request.app.state
    now = datetime.now(UTC)
    # Idempotent: a call already finished, or unknown, is left as it is.
    finished: bool = await state.store.finish_unowned_call(
        call_sid,
        final,
        EndReason.CALLER_HANGUP,
        now,
        now - timedelta(seconds=state.settings.lease_s),
    )
    return finished


async def _finish_later(store: CallStore, call_sid: str, final: CallStatus, delay: float) -> None:
    await asyncio.sleep(delay)
    try:
        await store.finish_call(call_sid, final, EndReason.CALLER_HANGUP, datetime.now(UTC))
    except StoreUnavailableError as exc:
        log.error("store.finish_failed", call_sid=call_sid, error=str(exc))


async def stream_status(request: Request) -> Response:
    params = await _signed_form(request, "/twilio/stream-status")
    if isinstance(params, Response):
        return params
    fields: dict[str, Any] = {
        key: clean_text(params.get(name, ""), 64)
        for key, name in (
            ("call_sid", "CallSid"),
            ("stream_sid", "StreamSid"),
            ("stream_event", "StreamEvent"),
        )
    }
    if params.get("StreamError"):
        fields["stream_error"] = clean_text(params["StreamError"], 256)
        log.warning("twilio.stream_status", **fields)
    else:
        log.info("twilio.stream_status", **fields)
    return Response(status_code=204)


def twilio_routes() -> list[Route | WebSocketRoute]:
    return [
        Route("/twilio/voice", voice, methods=["POST"]),
        Route("/twilio/after-stream", after_stream, methods=["POST"]),
        WebSocketRoute("/twilio/media", media),
        Route("/twilio/status", call_status, methods=["POST"]),
        Route("/twilio/stream-status", stream_status, methods=["POST"]),
    ]
