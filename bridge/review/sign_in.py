"""The sign-in form of the call-log pages and the sign-out button's target.

Signing in means typing ``BRIDGE_REVIEW_TOKEN`` once; the answer sets the signed cookie of
``bridge.review.page_auth`` and sends the person where they were going.
"""

from __future__ import annotations

import math
import time
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import Response

from bridge.review.html import page_text, render, see_other
from bridge.review.page_auth import (
    SIGN_IN_PATH,
    Access,
    page_access,
    safe_next,
    same_origin_post,
    session_cookie,
    token_matches,
)
from bridge.review.throttle import SignInThrottle
from bridge.settings import Settings

WRONG_TOKEN = "That token is not right."
NO_TOKEN_TEXT = (
    "Signing in needs BRIDGE_REVIEW_TOKEN to be set on the bridge. Until then the call log "
    "is only shown on this machine (loopback), without signing in.\n"
)
FORGED_TEXT = "This form was sent from another site.\n"
TOO_MANY_TEXT = "Too many wrong tokens from this address; wait a few minutes and try again.\n"

# The form never needs more than this; a bigger body is not a person signing in.
_MAX_FORM_BYTES = 8192


async def sign_in_form(request: Request) -> Response:
    """The form; someone already let in goes straight on to ``next``."""
    settings = _settings(request)
    target = safe_next(request.query_params.get("next"))
    if session_cookie(settings) is None:
        return _without_token(request, target)
    if page_access(request, settings) is Access.ALLOWED:
        return see_other(target)
    return render("sign_in.html", {"next": target, "error": None, "signed_in": False})


async def sign_in(request: Request) -> Response:
    """Check the typed token: right, set the cookie and go on (303); wrong, the form (401)."""
    settings = _settings(request)
    cookie = session_cookie(settings)
    if not same_origin_post(request):
        return page_text(FORGED_TEXT, 403)
    if cookie is None:
        return _without_token(request, safe_next(request.query_params.get("next")))
    throttle = _throttle(request)
    client = request.client.host if request.client is not None else ""
    wait_s = throttle.retry_after(client, time.monotonic())
    if wait_s > 0:
        return page_text(TOO_MANY_TEXT, 429, headers={"Retry-After": str(math.ceil(wait_s))})
    fields = await _read_form(request)
    if fields is None:
        return page_text("That is not the sign-in form.\n", 400)
    target = safe_next(fields.get("next"))
    if not token_matches(fields.get("token", ""), settings.review_token):
        throttle.failed(client, time.monotonic())
        context = {"next": target, "error": WRONG_TOKEN, "signed_in": False}
        return render("sign_in.html", context, status_code=401)
    return see_other(target, headers={"Set-Cookie": cookie.set_cookie_header(cookie.issue())})


async def sign_out(request: Request) -> Response:
    """Forget the sign-in and show the form again."""
    if not same_origin_post(request):
        return page_text(FORGED_TEXT, 403)
    cookie = session_cookie(_settings(request))
    if cookie is None:
        return see_other("/calls")
    return see_other(SIGN_IN_PATH, headers={"Set-Cookie": cookie.clear_cookie_header()})


async def _read_form(request: Request) -> dict[str, str] | None:
    """The url-encoded form's fields (first value of each), or ``None`` when the body is too
    big or not a form. Read by hand so a huge or chunked body is cut off early."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_FORM_BYTES:
            return None
    try:
        parsed = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=8)
    except (UnicodeDecodeError, ValueError):
        return None
    return {name: values[0] for name, values in parsed.items()}


def _without_token(request: Request, target: str) -> Response:
    # No token: loopback needs no sign-in, and nobody else can sign in at all.
    if page_access(request, _settings(request)) is Access.ALLOWED:
        return see_other(target)
    return page_text(NO_TOKEN_TEXT, 403)


def _throttle(request: Request) -> SignInThrottle:
    # One per app, made on first use so that every app (and every test's app) has its own.
    state = request.app.state
    throttle: SignInThrottle | None = getattr(state, "sign_in_throttle", None)
    if throttle is None:
        throttle = state.sign_in_throttle = SignInThrottle()
    return throttle


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings
