"""Twilio's HTTP side: the voice webhook, the media socket's door, and status callbacks.

Every request is authenticated before it costs anything: a forged webhook gets 403 and no
call record; a forged upgrade is refused before the socket is accepted, and a stream whose
per-call token does not check out is closed 1008 before any model session is opened.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import structlog
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from bridge.adapters.twilio_auth import TwilioAuth
from bridge.call.records import CallStatus, EndReason
from bridge.errors import CLOSE_POLICY_VIOLATION
from bridge.metrics import BridgeMetrics
from bridge.protocols.stream_token import mint_stream_token
from bridge.protocols.twiml import connect_stream
from bridge.session import CallSession, SessionDeps
from bridge.settings import Settings
from bridge.storage.base import StoreUnavailableError

log = structlog.get_logger("bridge.webhooks")

_MAX_FORM_FIELD = 256  # Twilio's fields are short; anything longer is not from Twilio
_FAILED_CALL_STATUSES = {"busy", "failed", "no-answer", "canceled"}


def _state(request: Request | WebSocket) -> tuple[Settings, TwilioAuth, BridgeMetrics]:
    state = request.app.state
    return state.settings, state.twilio_auth, state.metrics


async def _signed_form(request: Request, path: str) -> dict[str, str] | None:
    """The POSTed form if its signature checks out, else None."""
    _, auth, metrics = _state(request)
    form = await request.form()
    params = {k: v for k, v in form.items() if isinstance(v, str)}
    signature = request.headers.get("x-twilio-signature")
    if not auth.webhook_ok(path, request.url.query, params, signature):
        metrics.rejected.labels("signature").inc()
        log.warning("twilio.bad_signature", path=path)
        return None
    return params


async def voice(request: Request) -> Response:
    params = await _signed_form(request, "/twilio/voice")
    if params is None:
        return PlainTextResponse("forbidden\n", status_code=403)
    call_sid = params.get("CallSid", "")
    if not call_sid or len(call_sid) > 64:
        return PlainTextResponse("CallSid missing\n", status_code=400)
    settings, _, _ = _state(request)
    token = mint_stream_token(request.app.state.token_secret, call_sid, time.time())
    twiml = connect_stream(
        settings.media_stream_url,
        settings.public_http_url("/twilio/stream-status"),
        {
            "from": params.get("From", "")[:_MAX_FORM_FIELD],
            "to": params.get("To", "")[:_MAX_FORM_FIELD],
            "token": token,
        },
    )
    log.info("call.answered", call_sid=call_sid)
    return Response(twiml, media_type="text/xml")


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
    await CallSession(websocket, deps).run()


async def call_status(request: Request) -> Response:
    params = await _signed_form(request, "/twilio/status")
    if params is None:
        return PlainTextResponse("forbidden\n", status_code=403)
    call_sid = params.get("CallSid", "")
    status = params.get("CallStatus", "")
    log.info("twilio.call_status", call_sid=call_sid, call_status=status)
    store = request.app.state.store
    if call_sid and (status == "completed" or status in _FAILED_CALL_STATUSES):
        final = CallStatus.COMPLETED if status == "completed" else CallStatus.FAILED
        try:
            # Idempotent: when the media session already finished the call, or Twilio
            # retries the callback, this is a no-op; an unknown call is one too.
            await store.finish_call(call_sid, final, EndReason.CALLER_HANGUP, datetime.now(UTC))
        except StoreUnavailableError as exc:
            log.error("store.finish_failed", call_sid=call_sid, error=str(exc))
            # The failure shows in Twilio's debugger; the call is still ended by its session
            # or, if that died too, by the lease sweep.
            return PlainTextResponse("store unavailable\n", status_code=503)
    return Response(status_code=204)


async def stream_status(request: Request) -> Response:
    params = await _signed_form(request, "/twilio/stream-status")
    if params is None:
        return PlainTextResponse("forbidden\n", status_code=403)
    fields: dict[str, Any] = {
        "call_sid": params.get("CallSid"),
        "stream_sid": params.get("StreamSid"),
        "stream_event": params.get("StreamEvent"),
    }
    if params.get("StreamError"):
        fields["stream_error"] = params["StreamError"][:_MAX_FORM_FIELD]
        log.warning("twilio.stream_status", **fields)
    else:
        log.info("twilio.stream_status", **fields)
    return Response(status_code=204)


def twilio_routes() -> list[Route | WebSocketRoute]:
    return [
        Route("/twilio/voice", voice, methods=["POST"]),
        WebSocketRoute("/twilio/media", media),
        Route("/twilio/status", call_status, methods=["POST"]),
        Route("/twilio/stream-status", stream_status, methods=["POST"]),
    ]
