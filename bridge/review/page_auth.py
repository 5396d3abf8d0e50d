"""Who may see the call-log pages, and the signed cookie that remembers a sign-in.

With ``BRIDGE_REVIEW_TOKEN`` set, a person signs in once by typing the token; the answer is
a cookie signed with a key derived from the token, so rotating the token signs everyone
out. A request with the bearer header is let in as well (scripts, curl). Without a token the
pages answer only on loopback, as the API does. ``page_access`` decides; the page routes
turn its answer into a response.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable
from enum import Enum
from urllib.parse import urlsplit

from itsdangerous import BadSignature, TimestampSigner
from pydantic import SecretStr
from starlette.requests import Request

from bridge.review.auth import bearer_matches, configured_token, from_loopback, secrets_equal
from bridge.settings import Settings

SESSION_MAX_AGE_S = 12 * 3600
SIGN_IN_PATH = "/calls/sign-in"
SIGN_OUT_PATH = "/calls/sign-out"
DEFAULT_NEXT = "/calls"

_COOKIE_VALUE = b"reviewer"
_KEY_LABEL = b"bridge review page cookie v1"


class Access(Enum):
    """What a page request gets: the page, the sign-in form, or a flat refusal."""

    ALLOWED = "allowed"
    SIGN_IN = "sign_in"
    LOOPBACK_ONLY = "loopback_only"


class SessionCookie:
    """Issues and checks the sign-in cookie for one review token.

    ``clock`` returns Unix seconds; tests pass their own to age a cookie.
    """

    def __init__(self, token: str, *, secure: bool, clock: Callable[[], float] = time.time) -> None:
        # A derived key, never the token itself: the cookie must not be a way to test
        # guesses of the token offline any faster than signing in would be.
        key = hmac.new(token.encode("utf-8"), _KEY_LABEL, hashlib.sha256).digest()
        self._signer = _ClockedSigner(key, salt="bridge.review.session", clock=clock)
        self.secure = secure
        # "__Host-" makes the browser refuse the cookie unless it is Secure, host-only and
        # Path=/, so a sibling subdomain cannot plant one. Browsers only honour it over https.
        self.name = "__Host-bridge_review" if secure else "bridge_review"

    def issue(self) -> str:
        """A fresh cookie value carrying the time it was issued."""
        return self._signer.sign(_COOKIE_VALUE).decode("ascii")

    def valid(self, value: str | None) -> bool:
        """Whether ``value`` was issued by this token less than 12 hours ago."""
        if not value:
            return False
        try:
            payload = self._signer.unsign(value.encode("utf-8"), max_age=SESSION_MAX_AGE_S)
        except (BadSignature, UnicodeError):
            return False
        return hmac.compare_digest(payload, _COOKIE_VALUE)

    def set_cookie_header(self, value: str) -> str:
        """The ``Set-Cookie`` value that stores a sign-in.

        ``SameSite=Lax``: a link to a call pasted in a chat or a ticket opens signed in
        (``Strict`` would send the person to the sign-in form first), while the browser
        still never sends the cookie on another site's POST, image or frame request. The
        pages only read on GET, so a cross-site top-level GET can do no harm.
        """
        parts = [f"{self.name}={value}", "Path=/", f"Max-Age={SESSION_MAX_AGE_S}", "HttpOnly"]
        parts.append("SameSite=Lax")
        if self.secure:
            parts.append("Secure")
        return "; ".join(parts)

    def clear_cookie_header(self) -> str:
        """The ``Set-Cookie`` value that removes the sign-in."""
        parts = [f"{self.name}=", "Path=/", "Max-Age=0", "HttpOnly", "SameSite=Lax"]
        if self.secure:
            parts.append("Secure")
        return "; ".join(parts)


class _ClockedSigner(TimestampSigner):
    def __init__(self, key: bytes, *, salt: str, clock: Callable[[], float]) -> None:
        super().__init__(key, salt=salt)
        self._clock = clock

    def get_timestamp(self) -> int:
        return int(self._clock())


def session_cookie(settings: Settings) -> SessionCookie | None:
    """The cookie for the configured review token; ``None`` when no token is set."""
    token = configured_token(settings.review_token)
    if token is None:
        return None
    return SessionCookie(token, secure=settings.public_url.lower().startswith("https://"))


def page_access(request: Request, settings: Settings) -> Access:
    """May ``request`` see a page? ``SIGN_IN``: send them to the form; ``LOOPBACK_ONLY``: no
    token is set and the request came from elsewhere."""
    cookie = session_cookie(settings)
    if cookie is None:
        return Access.ALLOWED if from_loopback(request) else Access.LOOPBACK_ONLY
    if bearer_matches(request.headers.get("authorization"), settings.review_token):
        return Access.ALLOWED
    if cookie.valid(request.cookies.get(cookie.name)):
        return Access.ALLOWED
    return Access.SIGN_IN


def signed_in_by_cookie(request: Request, settings: Settings) -> bool:
    """Whether a sign-in cookie is what lets ``request`` in (so a sign-out button makes sense)."""
    cookie = session_cookie(settings)
    return cookie is not None and cookie.valid(request.cookies.get(cookie.name))


def token_matches(presented: str, token: SecretStr | None) -> bool:
    """Whether the token typed into the sign-in form is the configured one."""
    expected = configured_token(token)
    if expected is None or not presented.strip():
        return False
    return secrets_equal(presented.strip(), expected)


def safe_next(raw: str | None) -> str:
    """Where to go after signing in: a path on this site, else the call list.

    Only a path that starts with one ``/`` is kept: ``//evil.example`` and ``/\\evil.example``
    are read by browsers as another host, and a scheme would leave the site.
    """
    if not raw or not raw.startswith("/") or raw.startswith(("//", "/\\")):
        return DEFAULT_NEXT
    if any(ord(char) < 0x21 or ord(char) == 0x7F or char == "\\" for char in raw):
        return DEFAULT_NEXT
    parts = urlsplit(raw)
    if parts.scheme or parts.netloc:
        return DEFAULT_NEXT
    return raw


def same_origin_post(request: Request) -> bool:
    """A form POST from one of our own pages, or from a client that is not a browser.

    Browsers say where a request comes from in ``Sec-Fetch-Site``; older ones only in
    ``Origin``, which is ``null`` under our ``Referrer-Policy: no-referrer`` and then proves
    nothing either way. One naming another site is a forged form.
    """
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site.lower() == "same-origin"
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return True
    host = request.headers.get("host", "")
    parts = urlsplit(origin)
    return parts.scheme in {"http", "https"} and parts.netloc.lower() == host.lower()
