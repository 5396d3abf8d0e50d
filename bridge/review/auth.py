"""Who may read the call log (the JSON API and the pages).

Transcripts are private. With ``BRIDGE_REVIEW_TOKEN`` set, every request must carry it as a
bearer token; without one, only requests from this machine (loopback) are answered.
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
    if token is not None and token.get_secret_value().strip():
        return _bearer_matches(request.headers.get("authorization"), token)
    client = request.client
    return client is not None and _is_loopback(client.host)


def _bearer_matches(header: str | None, token: SecretStr) -> bool:
    if header is None:
        return False
    scheme, _, presented = header.strip().partition(" ")
    presented = presented.strip()
    if scheme.lower() != "bearer" or not presented:
        return False
    # Compare bytes: compare_digest on str refuses non-ASCII, and a header may hold anything.
    return hmac.compare_digest(
        presented.encode("utf-8", "surrogateescape"),
        token.get_secret_value().strip().encode("utf-8"),
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
