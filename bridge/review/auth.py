"""Who may read the call log (the JSON API and the pages).

Transcripts are private. With ``BRIDGE_REVIEW_TOKEN`` set, every API request must carry it as
a bearer token (the pages also accept the signed cookie of ``bridge.review.page_auth``);
without one, only requests from this machine (loopback) are answered.
"""

from __future__ import annotations

import hmac
import ipaddress

from pydantic import SecretStr
from starlette.requests import Request


def review_access_allowed(request: Request, token: SecretStr | None) -> bool:
    """Whether ``request`` may read the call log. On ``False`` answer 401 and reveal nothing.

    An empty token counts as unset (``BRIDGE_REVIEW_TOKEN=`` in a ``.env``): loopback only,
    rather than a token that an empty ``Bearer`` header would match.
    """
    if configured_token(token) is not None:
        return bearer_matches(request.headers.get("authorization"), token)
    return from_loopback(request)


def configured_token(token: SecretStr | None) -> str | None:
    """The review token in force, stripped; ``None`` when unset or blank (loopback only)."""
    if token is None:
        return None
    value = token.get_secret_value().strip()
    return value or None


def from_loopback(request: Request) -> bool:
    """Whether ``request`` came from this machine (IPv4, IPv6 or IPv4-mapped loopback)."""
    client = request.client
    return client is not None and _is_loopback(client.host)


def bearer_matches(header: str | None, token: SecretStr | None) -> bool:
    """Whether an ``Authorization`` header carries the configured token as a bearer token.
    Always ``False`` when no token is configured."""
    expected = configured_token(token)
    if header is None or expected is None:
        return False
    scheme, _, presented = header.strip().partition(" ")
    presented = presented.strip()
    if scheme.lower() != "bearer" or not presented:
        return False
    return secrets_equal(presented, expected)


def secrets_equal(presented: str, expected: str) -> bool:
    """Constant-time comparison of a secret someone typed or sent with the real one."""
    # Compare bytes: compare_digest on str refuses non-ASCII, and input may hold anything.
    return hmac.compare_digest(
        presented.encode("utf-8", "surrogateescape"), expected.encode("utf-8")
    )


def _is_loopback(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        # Not an address at all (a unix socket, a test client's made-up name): not loopback.
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback
