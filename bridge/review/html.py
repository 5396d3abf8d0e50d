"""Rendering the call-log pages: the Jinja2 environment, the headers every page carries,
and the one stylesheet.

Transcripts and caller IDs are untrusted text, so autoescaping is always on and templates
never mark anything safe. The pages run no script at all, which the Content-Security-Policy
enforces.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response

CSS_PATH = "/calls/static/review.css"

# Nothing but our own stylesheet, forms, audio and images may load; no script, no frames.
_CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; media-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": _CSP,
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}

_CSS = resources.files("bridge.review").joinpath("static/review.css").read_bytes()
# The stylesheet is named by its content, so browsers may keep it for a long time and still
# never show an old one after an upgrade.
_CSS_VERSION = hashlib.sha256(_CSS).hexdigest()[:12]

_ENV = Environment(
    loader=PackageLoader("bridge.review", "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_ENV.globals["css_url"] = f"{CSS_PATH}?v={_CSS_VERSION}"


def render(
    template: str,
    context: dict[str, Any],
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    """The named template filled with ``context``, with the page headers."""
    body = _ENV.get_template(template).render(**context)
    return HTMLResponse(body, status_code=status_code, headers={**PAGE_HEADERS, **(headers or {})})


def page_text(
    text: str, status_code: int, headers: dict[str, str] | None = None
) -> PlainTextResponse:
    """A short plain-text answer (a refusal) with the page headers."""
    return PlainTextResponse(
        text, status_code=status_code, headers={**PAGE_HEADERS, **(headers or {})}
    )


def see_other(location: str, headers: dict[str, str] | None = None) -> Response:
    """A 303 to ``location`` (a path on this site), with the page headers."""
    return Response(
        status_code=303, headers={**PAGE_HEADERS, "Location": location, **(headers or {})}
    )


async def stylesheet(request: Request) -> Response:
    """The pages' CSS; public (the sign-in form needs it too) and cacheable."""
    return Response(
        _CSS,
        media_type="text/css; charset=utf-8",
        headers={
            "Cache-Control": "public, max-age=86400",
            "X-Content-Type-Options": "nosniff",
        },
    )
