"""Server-side digest authentication for SIP (RFC 3261 §22, RFC 2617, RFC 8760), pure.

How the SIP layer uses it for an INVITE from outside the allow-list:

1. No ``Authorization`` for our realm: answer 401 with the headers from
   :func:`challenge_headers` (SHA-256 first, then MD5, one shared nonce).
2. Otherwise :func:`parse_authorization` each ``Authorization`` value (None: not Digest,
   skip it; :class:`~bridge.protocols.sip.message.SipParseError`: answer 400) and pass the
   one whose ``realm`` is ours to :func:`verify`:
   ``OK`` serve the call; ``STALE`` challenge again with ``stale=True`` (the client retries
   without asking the user); ``INVALID`` answer 403 or a fresh 401.

Nonces are stateless: a timestamp, random bytes and an HMAC over both and the realm, so no
challenge needs remembering; the server that issued one checks it and its age with its own
secret and the same clock it stamped it with. Time (``now``, seconds) and
secrets are parameters; nothing here reads a clock. The nonce count (``nc``) is not tracked
here, so a captured response passes :func:`verify` for as long as its nonce is fresh
(``max_age``); the SIP server remembers each response it took a call with, so a copy of an
INVITE cannot start a second call.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import re
import secrets
import struct
from dataclasses import dataclass, field

from bridge.errors import LocalProtocolError
from bridge.protocols.sip.message import SipParseError

__all__ = [
    "CLOCK_SKEW_S",
    "NONCE_MAX_AGE_S",
    "DigestCredentials",
    "DigestResult",
    "challenge_headers",
    "make_nonce",
    "nonce_status",
    "parse_authorization",
    "verify",
]

# Long enough for a client to answer a challenge and for INVITE retransmissions; short
# enough that a captured response is not worth much.
NONCE_MAX_AGE_S = 300
# Instances' clocks may disagree a little; a nonce from slightly in the future is still ours.
CLOCK_SKEW_S = 5
MAX_AUTHORIZATION_CHARS = 4096
MAX_PARAMS = 32

_NONCE_RANDOM_BYTES = 12
_NONCE_MAC_BYTES = 16
_NONCE_BYTES = 8 + _NONCE_RANDOM_BYTES + _NONCE_MAC_BYTES
_HASHES = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}
_TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_HEX_RE = re.compile(r"[0-9a-fA-F]+")
_NONCE_RE = re.compile(rf"[A-Za-z0-9_-]{{{_NONCE_BYTES * 4 // 3}}}")  # 36 bytes, no padding


class DigestResult(enum.Enum):
    OK = "ok"
    STALE = "stale"  # right password, old nonce: challenge again with stale=true
    INVALID = "invalid"


@dataclass(frozen=True, slots=True)
class DigestCredentials:
    """One parsed ``Authorization: Digest …`` value. ``params`` holds every parameter,
    names lower-cased, including unknown ones."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str = "MD5"
    qop: str | None = None
    nc: str | None = None
    cnonce: str | None = None
    opaque: str | None = None
    params: dict[str, str] = field(default_factory=dict)


# -- nonces ---------------------------------------------------------------------------------


def _nonce_mac(secret: bytes, realm: str, stamp_and_random: bytes) -> bytes:
    message = realm.encode("utf-8") + b"\x00" + stamp_and_random
    return hmac.new(secret, message, hashlib.sha256).digest()[:_NONCE_MAC_BYTES]


def make_nonce(secret: bytes, realm: str, now: float, random: bytes | None = None) -> str:
    """A signed nonce for ``realm`` issued at ``now``. ``random`` (12 bytes) is for tests;
    by default fresh random bytes make every nonce unique."""
    if random is None:
        random = secrets.token_bytes(_NONCE_RANDOM_BYTES)
    if len(random) != _NONCE_RANDOM_BYTES:
        raise LocalProtocolError(f"random must be {_NONCE_RANDOM_BYTES} bytes")
    body = struct.pack(">Q", max(int(now), 0)) + random
    return base64.urlsafe_b64encode(body + _nonce_mac(secret, realm, body)).decode("ascii")


def nonce_status(
    nonce: str, secret: bytes, realm: str, now: float, max_age: float = NONCE_MAX_AGE_S
) -> DigestResult:
    """Whether ``nonce`` was made with ``secret`` for ``realm`` (else INVALID) and is younger
    than ``max_age`` seconds (else STALE)."""
    # b64decode would skip stray characters; a nonce we made has exactly this shape.
    if not _NONCE_RE.fullmatch(nonce):
        return DigestResult.INVALID
    try:
        raw = base64.urlsafe_b64decode(nonce.encode("ascii"))
    except (binascii.Error, ValueError):
        return DigestResult.INVALID
    if len(raw) != _NONCE_BYTES:
        return DigestResult.INVALID
    body, mac = raw[:-_NONCE_MAC_BYTES], raw[-_NONCE_MAC_BYTES:]
    if not hmac.compare_digest(mac, _nonce_mac(secret, realm, body)):
        return DigestResult.INVALID
    (issued,) = struct.unpack(">Q", body[:8])
    age = now - issued
    if age < -CLOCK_SKEW_S:
        return DigestResult.INVALID
    return DigestResult.STALE if age > max_age else DigestResult.OK


def challenge_headers(
    realm: str,
    secret: bytes,
    now: float,
    *,
    stale: bool = False,
    header: str = "WWW-Authenticate",
    random: bytes | None = None,
) -> list[tuple[str, str]]:
    """The challenge headers for a 401 (or, with ``header="Proxy-Authenticate"``, a 407):
    SHA-256 first, as RFC 8760 §2.4 orders by preference, then MD5 for older phones."""
    nonce = make_nonce(secret, realm, now, random)
    tail = ", stale=true" if stale else ""
    return [
        (
            header,
            f'Digest realm="{_quote(realm)}", nonce="{nonce}", algorithm={name}, qop="auth"{tail}',
        )
        for name in ("SHA-256", "MD5")
    ]


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


# -- parsing --------------------------------------------------------------------------------


def parse_authorization(value: str) -> DigestCredentials | None:
    """Parse an ``Authorization``/``Proxy-Authorization`` value. None when the scheme is not
    Digest; :class:`SipParseError` when a Digest value is malformed or lacks a required
    parameter."""
    if len(value) > MAX_AUTHORIZATION_CHARS:
        raise SipParseError("Authorization too long")
    parts = value.strip().split(None, 1)
    if not parts or parts[0].lower() != "digest":
        return None
    rest = parts[1] if len(parts) > 1 else ""
    params = _parse_auth_params(rest)
    missing = {"username", "realm", "nonce", "uri", "response"} - params.keys()
    if missing:
        raise SipParseError(f"Authorization lacks {', '.join(sorted(missing))}")
    return DigestCredentials(
        username=params["username"],
        realm=params["realm"],
        nonce=params["nonce"],
        uri=params["uri"],
        response=params["response"],
        algorithm=params.get("algorithm", "MD5"),
        qop=params.get("qop"),
        nc=params.get("nc"),
        cnonce=params.get("cnonce"),
        opaque=params.get("opaque"),
        params=params,
    )


def _parse_auth_params(text: str) -> dict[str, str]:
    """``name=token`` or ``name="quoted \\" string, with commas"`` pairs separated by commas."""
    params: dict[str, str] = {}
    index, length = 0, len(text)
    while True:
        while index < length and text[index] in " \t,":
            index += 1
        if index >= length:
            return params
        equals = text.find("=", index)
        if equals == -1:
            raise SipParseError("Authorization parameter without a value")
        name = text[index:equals].strip().lower()
        if not _TOKEN_RE.fullmatch(name):
            raise SipParseError("malformed Authorization parameter name")
        index = equals + 1
        while index < length and text[index] in " \t":
            index += 1
        if index < length and text[index] == '"':
            value, index = _read_quoted(text, index)
        else:
            end = index
            while end < length and text[end] not in ", \t":
                end += 1
            value, index = text[index:end], end
            if not _TOKEN_RE.fullmatch(value):
                raise SipParseError("malformed Authorization parameter value")
        while index < length and text[index] in " \t":
            index += 1
        if index < length and text[index] != ",":
            raise SipParseError("junk after Authorization parameter")
        if name in params:
            raise SipParseError(f"repeated Authorization parameter {name}")
        params[name] = value
        if len(params) > MAX_PARAMS:
            raise SipParseError("too many Authorization parameters")


def _read_quoted(text: str, start: int) -> tuple[str, int]:
    out: list[str] = []
    index = start + 1
    while index < len(text):
        char = text[index]
        if char == "\\" and index + 1 < len(text):
            out.append(text[index + 1])
            index += 2
        elif char == '"':
            return "".join(out), index + 1
        else:
            out.append(char)
            index += 1
    raise SipParseError("unterminated quoted string in Authorization")


# -- verifying ------------------------------------------------------------------------------


def _hex(name: str, text: str) -> str:
    # surrogatepass: a hostile lone surrogate must make a wrong digest, not an exception.
    return _HASHES[name](text.encode("utf-8", "surrogatepass")).hexdigest()


def expected_response(credentials: DigestCredentials, method: str, password: str) -> str | None:
    """The response the client should have sent, or None for an algorithm or qop this server
    does not offer (``-sess`` variants, ``auth-int``)."""
    algorithm = credentials.algorithm.upper()
    if algorithm not in _HASHES:
        return None
    ha1 = _hex(algorithm, f"{credentials.username}:{credentials.realm}:{password}")
    ha2 = _hex(algorithm, f"{method}:{credentials.uri}")
    if credentials.qop is None:
        return _hex(algorithm, f"{ha1}:{credentials.nonce}:{ha2}")
    if credentials.qop.lower() != "auth" or credentials.nc is None or credentials.cnonce is None:
        return None
    return _hex(
        algorithm,
        f"{ha1}:{credentials.nonce}:{credentials.nc}:{credentials.cnonce}:auth:{ha2}",
    )


def verify(
    credentials: DigestCredentials,
    *,
    method: str,
    username: str,
    password: str,
    realm: str,
    secret: bytes,
    now: float,
    max_age: float = NONCE_MAX_AGE_S,
) -> DigestResult:
    """Check ``credentials`` from a request with ``method`` against the one account this
    server knows. STALE only when everything but the nonce's age is right (RFC 2617 §3.2.1),
    so a wrong password is never retried silently."""
    status = nonce_status(credentials.nonce, secret, realm, now, max_age)
    if status is DigestResult.INVALID or credentials.realm != realm:
        return DigestResult.INVALID
    expected = expected_response(credentials, method, password)
    got = credentials.response
    if expected is None or not (got.isascii() and _HEX_RE.fullmatch(got)):
        return DigestResult.INVALID
    # compare_digest on bytes of equal meaning: lower-case hex on both sides.
    same_response = hmac.compare_digest(expected.encode("ascii"), got.lower().encode("ascii"))
    same_user = hmac.compare_digest(credentials.username.encode("utf-8"), username.encode("utf-8"))
    if not (same_response and same_user):
        return DigestResult.INVALID
    return status
