"""``POST /openai/webhook``: OpenAI's signed webhooks, of which the bridge takes one,
``realtime.call.incoming`` (the SIP connector offering a call).

Off (404) while ``OPENAI_WEBHOOK_SECRET`` is unset. A delivery is checked before it costs
anything: a missing, forged or stale signature (Standard Webhooks, 300 s either way) and a
``webhook-id`` seen before are refused with a 4xx, and no REST call is made for them; nor for
a call id this bridge is already handling or has in its call log. A genuine offer is answered
200 at once; accepting or rejecting the call runs in the background.
"""

from __future__ import annotations

import contextlib
import time

import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bridge.adapters.http_body import BodyRefused, read_body
from bridge.adapters.openai_calls import OpenAiCalls
from bridge.errors import ConfigurationError
from bridge.openai_sip import OpenAiSipConnector
from bridge.protocols.openai_sip import IncomingCall, parse_incoming
from bridge.protocols.standard_webhooks import ReplayGuard, Verdict, check_webhook, webhook_key
from bridge.settings import Settings
from bridge.storage.base import StoreUnavailableError

log = structlog.get_logger("bridge.openai_webhook")

# An incoming-call event is a few kilobytes (the INVITE's headers); more is not OpenAI's.
MAX_BODY_BYTES = 64 * 1024
BODY_READ_TIMEOUT_S = 10.0


class OpenAiWebhook:
    """What the route needs: the signing key, the replay guard and the connector."""

    def __init__(self, key: bytes, connector: OpenAiSipConnector) -> None:
        self.key = key
        self.connector = connector
        self.replays = ReplayGuard()


def _answer(status: int, message: str) -> Response:
    return JSONResponse({"error" if status >= 400 else "status": message}, status_code=status)


async def openai_webhook(request: Request) -> Response:
    state = request.app.state
    hook: OpenAiWebhook | None = getattr(state, "openai_webhook", None)
    if hook is None:
        return _answer(404, "not found")  # OPENAI_WEBHOOK_SECRET unset: the route is off
    try:
        body = await read_body(request, MAX_BODY_BYTES, BODY_READ_TIMEOUT_S)
    except BodyRefused:
        return _answer(413, "body too large or not received in time")
    headers = request.headers
    msg_id = headers.get("webhook-id")
    now = time.time()
    verdict = check_webhook(
        hook.key, msg_id, headers.get("webhook-timestamp"), headers.get("webhook-signature"),
        body, now,
    )  # fmt: skip
    if verdict is not Verdict.OK or msg_id is None:
        state.metrics.rejected.labels("openai_signature").inc()
        log.warning("openai_webhook.refused", reason=verdict.value)
        return _answer(400 if verdict is Verdict.MISSING else 401, verdict.value)
    if not hook.replays.take(msg_id, float(headers["webhook-timestamp"]), now):
        state.metrics.rejected.labels("openai_replay").inc()
        log.warning("openai_webhook.replayed")
        return _answer(409, "webhook-id already seen")
    offer = parse_incoming(body)
    if isinstance(offer, str):
        log.info("openai_webhook.ignored", event_type=offer)
        return _answer(200, "ignored")
    if offer is None:
        log.warning("openai_webhook.bad_event")
        return _answer(400, "not a realtime.call.incoming event")
    return await _offer(request, hook, msg_id, offer)


async def _offer(
    request: Request, hook: OpenAiWebhook, msg_id: str, offer: IncomingCall
) -> Response:
    state, connector = request.app.state, hook.connector
    # Claimed before the store is asked, so a second delivery meanwhile is refused too.
    if not connector.claim(offer.call_id):
        log.warning("openai_webhook.duplicate_call", call_sid=offer.call_id)
        return _answer(409, "call already being handled")
    try:
        known = await state.store.get_call(offer.call_id)
    except StoreUnavailableError as exc:
        # OpenAI retries a failed delivery: let that retry through.
        connector.release(offer.call_id)
        hook.replays.release(msg_id)
        log.error("store.unavailable", path="/openai/webhook", error=str(exc))
        return _answer(503, "store unavailable")
    if known is not None:
        connector.release(offer.call_id)
        log.warning("openai_webhook.call_known", call_sid=offer.call_id)
        return _answer(409, "call already handled")
    state.background.spawn(
        connector.serve(offer, draining=state.drain.draining, overloaded=state.overload.busy)
    )
    log.info("openai_webhook.call_offered", call_sid=offer.call_id)
    return _answer(200, "ok")


def openai_routes() -> list[Route]:
    return [Route("/openai/webhook", openai_webhook, methods=["POST"])]


def openai_webhook_key(settings: Settings) -> bytes | None:
    """The signing key of ``OPENAI_WEBHOOK_SECRET`` (``None``: the connector is off).
    Raises ``ConfigurationError`` for a secret that cannot be one, at start-up."""
    secret = settings.openai_webhook_secret
    if secret is None or not secret.get_secret_value().strip():
        return None
    try:
        return webhook_key(secret.get_secret_value())
    except ValueError as exc:
        raise ConfigurationError(f"OPENAI_WEBHOOK_SECRET: {exc}") from None


def start_openai_sip(
    app: Starlette, settings: Settings, key: bytes, stack: contextlib.AsyncExitStack
) -> None:
    """Turn the connector on: the route answers from now on. Calls still live at shutdown
    are ended (and hung up at OpenAI) before the REST client closes."""
    if settings.openai_api_key is None:
        log.warning(
            "openai_sip.no_api_key",
            detail="OPENAI_WEBHOOK_SECRET is set but OPENAI_API_KEY is not: calls cannot be "
            "accepted",
        )
    calls = OpenAiCalls(
        settings.openai_api_base,
        settings.openai_api_key.get_secret_value() if settings.openai_api_key else None,
    )
    connector = OpenAiSipConnector(settings, app.state.session_deps, calls)
    stack.push_async_callback(connector.aclose)
    # Unwinds first: live calls end (and say hangup) while the REST client is open.
    stack.push_async_callback(app.state.background.cancel_all)
    app.state.openai_webhook = OpenAiWebhook(key, connector)
    log.info("openai_sip.ready", api_base=settings.openai_api_base, max_calls=connector.max_calls)
