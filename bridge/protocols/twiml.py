"""TwiML the bridge answers with. Pure string building; every value is XML-escaped."""

from __future__ import annotations

from collections.abc import Mapping
from xml.sax.saxutils import quoteattr


def connect_stream(stream_url: str, status_url: str, parameters: Mapping[str, str]) -> str:
    """``<Connect><Stream>``: a bidirectional media stream, with ``<Parameter>``s that come
    back in the stream's ``start.customParameters``. Nothing follows ``</Connect>``, so when
    the bridge closes the socket the call ends."""
    params = "".join(
        f"\n      <Parameter name={quoteattr(name)} value={quoteattr(value)}/>"
        for name, value in parameters.items()
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        "<Response>\n"
        "  <Connect>\n"
        f"    <Stream url={quoteattr(stream_url)} statusCallback={quoteattr(status_url)}"
        ' statusCallbackMethod="POST">'
        f"{params}\n"
        "    </Stream>\n"
        "  </Connect>\n"
        "</Response>\n"
    )
