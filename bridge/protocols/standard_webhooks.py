"""Standard Webhooks (https://www.standardwebhooks.com/), as OpenAI signs its webhooks. Pure.

A webhook carries ``webhook-id``, ``webhook-timestamp`` (Unix seconds) and
``webhook-signature``: space-separated ``v1,<base64 HMAC-SHA256>`` entries, any of which
may match (several appear while a secret is being rotated). The HMAC key is the secret
with its ``whsec_`` prefix removed, base64-decoded; the signed text is
``{id}.{timestamp}.{raw body}``.

:func:`check_webhook` says whether one delivery is genuine and fresh; a
:class:`ReplayGuard` then says whether its id was seen before. Time comes in as ``now``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections import OrderedDict
from enum import StrEnum

__all__ = ["TOLERANCE_S", "ReplayGuard", "Verdict", "check_webhook", "sign_webhook", "webhook_key"]

#: How far a delivery's timestamp may be from now, either way (the SDKs' default).
TOLERANCE_S = 300
_PREFIX = "whsec_"
# A header longer than this is not from a sender we know: a few signatures at most.
_MAX_SIGNATURE_HEADER = 4096
_MAX_ID = 256


class Verdict(StrEnum):
    OK = "ok"
    MISSING = "missing_headers"
    STALE = "stale_timestamp"
    FORGED = "bad_signature"


def webhook_key(secret: str) -> bytes:
    """The HMAC key of a signing secret: ``whsec_`` stripped, the rest base64-decoded.
    Raises ``ValueError`` when the rest is not base64 (a misconfigured secret)."""
    body = secret.strip().removeprefix(_PREFIX)
    try:
        return base64.b64decode(body, validate=True)
    except binascii.Error:
        raise ValueError("the webhook secret is not base64 after its whsec_ prefix") from None


def _signature(key: bytes, msg_id: str, timestamp: str, body: bytes) -> bytes:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest())


def sign_webhook(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value for a delivery (fakes and tests sign with it)."""
    return "v1," + _signature(key, msg_id, str(timestamp), body).decode()


def check_webhook(
    key: bytes,
    msg_id: str | None,
    timestamp: str | None,
    signature: str | None,
    body: bytes,
    now: float,
    tolerance_s: float = TOLERANCE_S,
) -> Verdict:
    """Whether a delivery is genuine and fresh. Only ``OK`` may cost anything."""
    if not msg_id or not timestamp or not signature:
        return Verdict.MISSING
    if len(msg_id) > _MAX_ID or len(signature) > _MAX_SIGNATURE_HEADER:
        return Verdict.FORGED
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
        return Verdict.STALE
    # Both directions: an old delivery may be a replay, a future one a pre-signed forgery.
    if abs(now - int(timestamp)) > tolerance_s:
        return Verdict.STALE
    expected = _signature(key, msg_id, timestamp, body)
    matched = False
    for entry in signature.split(" "):
        version, _, value = entry.partition(",")
        # Every entry is compared (no early exit), each in constant time.
        if version == "v1" and hmac.compare_digest(value.encode(), expected):
            matched = True
    return Verdict.OK if matched else Verdict.FORGED


class ReplayGuard:
    """Webhook ids already taken, in bounded memory.

    An id only needs remembering while its timestamp is fresh: a later replay of it fails
    the timestamp check anyway. So ids are kept with their timestamps and dropped once they
    are older than the tolerance; a flood of fresh ids is capped at ``limit`` (oldest out).
    """

    def __init__(self, tolerance_s: float = TOLERANCE_S, limit: int = 50_000) -> None:
        self._tolerance = tolerance_s
        self._limit = limit
        self._seen: OrderedDict[str, float] = OrderedDict()

    def take(self, msg_id: str, timestamp: float, now: float) -> bool:
        """Remember ``msg_id``; False when it was taken before (a replay)."""
        self._forget_old(now)
        if msg_id in self._seen:
            return False
        self._seen[msg_id] = timestamp
        while len(self._seen) > self._limit:
            self._seen.popitem(last=False)
        return True

    def release(self, msg_id: str) -> None:
        """The delivery could not be handled (the sender will retry it): forget it."""
        self._seen.pop(msg_id, None)

    def _forget_old(self, now: float) -> None:
        # Insertion order is close to timestamp order; a stray late entry only stays longer.
        while self._seen:
            msg_id, stamp = next(iter(self._seen.items()))
            if now - stamp <= self._tolerance:
                break
            del self._seen[msg_id]

    def __len__(self) -> int:
        return len(self._seen)
