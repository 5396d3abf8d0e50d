"""TwiML the bridge answers with. Pure string building: every value is XML-escaped, and
characters XML 1.0 cannot carry at all are left out, so the answer always parses."""

from __future__ import annotations

import re
from collections.abc import Mapping
from xml.sax.saxutils import escape, quoteattr

# Everything outside XML 1.0's Char production: C0 controls but tab, newline and carriage
# return; lone surrogates; U+FFFE and U+FFFF. No escape makes these legal, not even &#0;.
_NOT_XML = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_attr(value: str) -> str:
    """``value`` as a quoted XML attribute value that any XML parser accepts."""
    return quoteattr(_NOT_XML.sub("", value))


def connect_stream(
    stream_url: str,
    status_url: str,
    parameters: Mapping[str, str],
    action_url: str | None = None,
) -> str:
    """``<Connect><Stream>``: a bidirectional media stream, with ``<Parameter>``s that come
    back in the stream's ``start.customParameters``. Nothing follows ``</Connect>``, so when
    the bridge closes the socket the call ends; with ``action_url`` Twilio first asks that
    URL what to do next (hang up, or dial a transfer target)."""
    params = "".join(
        f"\n      <Parameter name={xml_attr(name)} value={xml_attr(value)}/>"
        for name, value in parameters.items()
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        "<Response>\n"
        f"  <Connect{'' if action_url is None else f' action={xml_attr(action_url)}'}>\n"
        f"    <Stream url={xml_attr(stream_url)} statusCallback={xml_attr(status_url)}"
        ' statusCallbackMethod="POST">'
        f"{params}\n"
        "    </Stream>\n"
        "  </Connect>\n"
        "</Response>\n"
    )


def hang_up() -> str:
    return '<?xml version="1.0" encoding="UTF-8"?>\n<Response>\n  <Hangup/>\n</Response>\n'


def dial(target: str) -> str:
    """``<Dial>`` a phone number, or a SIP URI (``<Sip>``): a blind transfer."""
    if target.startswith(("sip:", "sips:")):
        inner = f"<Sip>{escape(_NOT_XML.sub('', target))}</Sip>"
    else:
        inner = f"<Number>{escape(_NOT_XML.sub('', target))}</Number>"
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Response>\n  <Dial>{inner}</Dial>\n</Response>\n'
    )


def redirect(url: str) -> str:
    """``<Redirect>``: Twilio asks ``url`` (POST, signed) what to do with the call instead."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<Response>\n'
        f'  <Redirect method="POST">{escape(_NOT_XML.sub("", url))}</Redirect>\n'
        "</Response>\n"
    )


def say_and_hang_up(text: str) -> str:
    """``<Say>`` a sentence in Twilio's voice, then hang up: never a dead line."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<Response>\n'
        f"  <Say>{escape(_NOT_XML.sub('', text))}</Say>\n  <Hangup/>\n"
        "</Response>\n"
    )
