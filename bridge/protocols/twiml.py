"""TwiML the bridge answers with. Pure string building: every value is XML-escaped, and
characters XML 1.0 cannot carry at all are left out, so the answer always parses."""

from __future__ import annotations

import re
from collections.abc import Mapping
from xml.sax.saxutils import quoteattr

# Everything outside XML 1.0's Char production: C0 controls but tab, newline and carriage
# return; lone surrogates; U+FFFE and U+FFFF. No escape makes these legal, not even &#0;.
_NOT_XML = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_attr(value: str) -> str:
    """``value`` as a quoted XML attribute value that any XML parser accepts."""
    return quoteattr(_NOT_XML.sub("", value))


def connect_stream(stream_url: str, status_url: str, parameters: Mapping[str, str]) -> str:
    """``<Connect><Stream>``: a bidirectional media stream, with ``<Parameter>``s that come
    back in the stream's ``start.customParameters``. Nothing follows ``</Connect>``, so when
    the bridge closes the socket the call ends."""
    params = "".join(
        f"\n      <Parameter name={xml_attr(name)} value={xml_attr(value)}/>"
        for name, value in parameters.items()
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        "<Response>\n"
        "  <Connect>\n"
        f"    <Stream url={xml_attr(stream_url)} statusCallback={xml_attr(status_url)}"
        ' statusCallbackMethod="POST">'
        f"{params}\n"
        "    </Stream>\n"
        "  </Connect>\n"
        "</Response>\n"
    )
