"""The per-call stream token: proof that a media stream belongs to a call we answered.

The voice webhook (signed by Twilio) mints ``token = "<expiry>.<mac>"`` where ``expiry`` is
Unix seconds and ``mac`` the URL-safe base64 of an HMAC-SHA256 (first 18 bytes) over the call
SID and the expiry under a server secret. The media socket's ``start`` message carries it back
in ``customParameters``; checking it needs no shared state, so any bridge instance that has
the secret can accept the stream. Pure: time comes in as ``now``.

A token has exactly one spelling. ``int()`` and ``str.isdigit()`` accept ``"0"``-padded
numbers and digits of other scripts, so a lenient parser would let one spent token be
presented again under another spelling; the strict pattern below is the only way in.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass

DEFAULT_TTL_S = 120  # covers the webhook answer, any <Say> before <Connect>, and the handshake

# ASCII digits without a leading zero, a dot, and 24 URL-safe base64 characters (18 bytes
# encode without padding, so every MAC has one spelling too).
_TOKEN = re.compile(r"([1-9][0-9]{0,11})\.([A-Za-z0-9_-]{24})", re.ASCII)


@dataclass(frozen=True, slots=True)
class StreamToken:
    """A token in its one canonical form."""

    expiry: int
    mac: str


def parse_stream_token(text: object) -> StreamToken | None:
    """The token's parts, or None when ``text`` is not a token's exact shape."""
    if not isinstance(text, str):
        return None
    match = _TOKEN.fullmatch(text)
    if match is None:
        return None
    return StreamToken(int(match[1]), match[2])


def _mac(secret: bytes, call_sid: str, expiry: int) -> str:
    message = f"{call_sid}.{expiry}".encode("utf-8", "surrogatepass")
    digest = hmac.new(secret, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:18]).decode("ascii")


def mint_stream_token(secret: bytes, call_sid: str, now: float, ttl_s: int = DEFAULT_TTL_S) -> str:
    """A token for ``call_sid`` valid until ``now + ttl_s``; put it in a ``<Parameter>``."""
    expiry = int(now) + ttl_s
    return f"{expiry}.{_mac(secret, call_sid, expiry)}"


def check_stream_token(secret: bytes, call_sid: str, token: object, now: float) -> bool:
    """True when ``token`` was minted for ``call_sid`` with ``secret`` and has not expired.
    Never raises, whatever ``call_sid`` and ``token`` hold."""
    parsed = parse_stream_token(token)
    if parsed is None or now > parsed.expiry:
        return False
    return hmac.compare_digest(_mac(secret, call_sid, parsed.expiry), parsed.mac)


class StreamedCalls:
    """Call SIDs that have had a stream on this instance, kept while their token could still
    be presented.

    Twilio opens one stream per call, so a second stream for a call is a replay: of the token,
    or of the (timestamp-free) signed voice webhook, which mints a fresh token for the same
    call. Keying on the call rather than the token refuses both. Only this instance's streams
    are known here; the call store refuses a second stream across instances.
    """

    def __init__(self) -> None:
        self._until: dict[str, float] = {}
        self._prune_above = 64

    def claim(self, call_sid: str, until: float, now: float) -> bool:
        """Mark ``call_sid`` streamed until ``until``; False if it already was."""
        self._prune(now)
        if self._until.get(call_sid, now - 1) >= now:
            return False
        self._until[call_sid] = until
        return True

    def __len__(self) -> int:
        return len(self._until)

    def _prune(self, now: float) -> None:
        # Pruning is a full pass, so it runs only when the map has doubled since the last one.
        if len(self._until) > self._prune_above:
            self._until = {sid: t for sid, t in self._until.items() if t >= now}
            self._prune_above = max(64, 2 * len(self._until))
