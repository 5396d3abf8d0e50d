"""The per-call stream token: proof that a media stream belongs to a call we answered.

The voice webhook (signed by Twilio) mints ``token = "<expiry>.<mac>"`` where ``mac`` is an
HMAC-SHA256 over the call SID and the expiry under a server secret. The media socket's
``start`` message carries it back in ``customParameters``; checking it needs no shared state,
so any bridge instance that has the secret can accept the stream. Pure: time comes in as ``now``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

DEFAULT_TTL_S = 120  # covers the webhook answer, any <Say> before <Connect>, and the handshake


def _mac(secret: bytes, call_sid: str, expiry: int) -> str:
    digest = hmac.new(secret, f"{call_sid}.{expiry}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:18]).decode()


def mint_stream_token(secret: bytes, call_sid: str, now: float, ttl_s: int = DEFAULT_TTL_S) -> str:
    """A token for ``call_sid`` valid until ``now + ttl_s``; put it in a ``<Parameter>``."""
    expiry = int(now) + ttl_s
    return f"{expiry}.{_mac(secret, call_sid, expiry)}"


def check_stream_token(secret: bytes, call_sid: str, token: str, now: float) -> bool:
    """True when ``token`` was minted for ``call_sid`` with ``secret`` and has not expired."""
    expiry_text, _, mac = token.partition(".")
    if not expiry_text.isdigit() or not mac or len(token) > 100:
        return False
    expiry = int(expiry_text)
    good = hmac.compare_digest(_mac(secret, call_sid, expiry), mac)
    return good and now <= expiry


class SpentTokens:
    """Tokens already used to start a stream on this instance, kept until they expire.

    Twilio opens one stream per call, so a token seen twice is a replay. Only this instance's
    streams are known here; across instances the short TTL bounds what a replay could do.
    """

    def __init__(self) -> None:
        self._expiry: dict[str, int] = {}

    def spend(self, token: str, now: float) -> bool:
        """Mark ``token`` used; False if it already was. Call only for tokens that checked out."""
        self._prune(now)
        if token in self._expiry:
            return False
        expiry_text = token.partition(".")[0]
        self._expiry[token] = int(expiry_text) if expiry_text.isdigit() else int(now)
        return True

    def _prune(self, now: float) -> None:
        if len(self._expiry) > 64:
            self._expiry = {t: e for t, e in self._expiry.items() if e >= now}
