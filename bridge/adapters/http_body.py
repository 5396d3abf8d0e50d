"""A request body read with a size cap and a deadline: what every route that takes a body
from the network needs before it parses anything."""

from __future__ import annotations

import asyncio

from starlette.requests import ClientDisconnect, Request


class BodyRefused(Exception):
    """The body could not be taken: ``status`` is the HTTP answer, ``reason`` says why."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


async def read_body(request: Request, max_bytes: int, timeout_s: float) -> bytes:
    """The whole body, or ``BodyRefused``: 413 past ``max_bytes`` (declared or sent), 408
    when it does not arrive within ``timeout_s``, 400 when the client goes away."""
    too_large = BodyRefused(413, f"the body is larger than {max_bytes} bytes")
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > max_bytes:
        raise too_large
    body = bytearray()
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                body += chunk
                if len(body) > max_bytes:
                    raise too_large
    except TimeoutError:
        raise BodyRefused(408, "the body did not arrive in time") from None
    except ClientDisconnect:
        raise BodyRefused(400, "the client went away before the body was complete") from None
    return bytes(body)
