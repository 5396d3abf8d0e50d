"""The values inside SIP header fields (RFC 3261 §19, §20, §25): URIs, name-addresses,
Via entries, parameters and comma lists, read strictly. Everything raises
:class:`SipParseError`, nothing else, for whatever a peer wrote.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import TypeAlias

from bridge.errors import RemoteProtocolError

__all__ = [
    "TOKEN",
    "TOKEN_RE",
    "NameAddress",
    "Params",
    "SipParseError",
    "SipUri",
    "Via",
    "parse_name_address",
    "parse_params",
    "parse_uri",
    "parse_via",
    "split_list",
]

TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"
TOKEN_RE = re.compile(TOKEN)
_HOST_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9\-.]*[A-Za-z0-9])?\.?")
_SENT_BY_RE = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-.]+)(?:\s*:\s*([0-9]{1,5}))?")
_VIA_RE = re.compile(rf"SIP\s*/\s*2\.0\s*/\s*({TOKEN})\s+(.+)", re.IGNORECASE)
_URI_RE = re.compile(r"([A-Za-z][A-Za-z0-9+\-.]*):\S+")
_ESCAPED_RE = re.compile(r"\\(.)")

Params: TypeAlias = dict[str, str | None]


class SipParseError(RemoteProtocolError):
    """The peer sent something that is not an acceptable SIP message. ``status`` is the
    response to answer with when the request can still be answered (400; 513 when the
    message or a line is too large; 505 for another SIP version); ``close_code`` means
    nothing for SIP."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class SipUri:
    """A ``sip:``/``sips:`` URI. ``host`` keeps IPv6 brackets out (``::1``); ``port`` is None
    when absent (5060, or 5061 for ``sips``, by default). Parameter names are lower-cased;
    a flag parameter (``;lr``) has the value None."""

    scheme: str
    user: str | None
    host: str
    port: int | None
    params: Params = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class NameAddress:
    """A From/To/Contact value: optional display name, the URI text as written, and the
    header parameters after it. Parse ``uri`` with :func:`parse_uri` when it must be SIP."""

    display_name: str | None
    uri: str
    params: Params = field(default_factory=dict)

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")


@dataclass(frozen=True, slots=True)
class Via:
    """One Via entry. ``rport`` is True for a bare ``;rport`` (the sender asks us to fill it),
    an int once filled, None when absent (RFC 3581)."""

    transport: str
    host: str
    port: int | None
    params: Params = field(default_factory=dict)

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def received(self) -> str | None:
        return self.params.get("received")

    @property
    def rport(self) -> int | bool | None:
        if "rport" not in self.params:
            return None
        value = self.params["rport"]
        return True if value is None else _port(value, "Via rport")

    @property
    def sent_by(self) -> tuple[str, int | None]:
        return self.host, self.port


def split_list(value: str) -> list[str]:
    """Split a comma-separated header value, leaving commas inside quotes or ``<…>`` alone."""
    items: list[str] = []
    depth, quoted, escaped, start = 0, False, False, 0
    for index, char in enumerate(value):
        if escaped:
            escaped = False
        elif quoted:
            if char == "\\":
                escaped = True
            elif char == '"':
                quoted = False
        elif char == '"':
            quoted = True
        elif char == "<":
            depth += 1
        elif char == ">":
            depth = max(depth - 1, 0)
        elif char == "," and depth == 0:
            items.append(value[start:index].strip())
            start = index + 1
    items.append(value[start:].strip())
    return [item for item in items if item]


def parse_params(text: str, what: str) -> Params:
    """``;a=b;c`` (leading ``;`` optional) as a dict with lower-cased names."""
    params: Params = {}
    for part in text.split(";"):
        part = part.strip()
        if not part:
            continue
        name, equals, value = part.partition("=")
        name = name.strip().lower()
        if not TOKEN_RE.fullmatch(name):
            raise SipParseError(f"malformed {what} parameter")
        params[name] = value.strip() if equals else None
    return params


def _port(text: str, what: str) -> int:
    if not (text.isascii() and text.isdigit() and len(text) <= 5 and 0 < int(text) <= 65535):
        raise SipParseError(f"malformed port in {what}")
    return int(text)


def _host(text: str, what: str) -> str:
    if text.startswith("["):
        if not text.endswith("]"):
            raise SipParseError(f"malformed IPv6 host in {what}")
        try:
            return str(ipaddress.IPv6Address(text[1:-1]))
        except ValueError:
            raise SipParseError(f"malformed IPv6 host in {what}") from None
    if not _HOST_RE.fullmatch(text):
        raise SipParseError(f"malformed host in {what}")
    return text


def _host_port(text: str, what: str) -> tuple[str, int | None]:
    if text.startswith("["):
        end = text.find("]")
        host, rest = text[: end + 1], text[end + 1 :]
        if end == -1 or (rest and not rest.startswith(":")):
            raise SipParseError(f"malformed host in {what}")
        return _host(host, what), _port(rest[1:], what) if rest else None
    host, colon, port = text.partition(":")
    return _host(host, what), _port(port, what) if colon else None


def parse_via(value: str) -> Via:
    """One Via entry (after :func:`split_list`)."""
    head, _, params = value.partition(";")
    match = _VIA_RE.fullmatch(head.strip())
    if match is None:
        raise SipParseError("malformed Via")
    sent_by = _SENT_BY_RE.fullmatch(match[2].strip())
    if sent_by is None:
        raise SipParseError("malformed Via sent-by")
    port = _port(sent_by[2], "Via") if sent_by[2] is not None else None
    via = Via(match[1].upper(), _host(sent_by[1], "Via"), port, parse_params(params, "Via"))
    _ = via.rport  # validate a filled rport now, not when the transport reads it
    return via


def parse_name_address(value: str) -> NameAddress:
    """A From/To/Contact value: ``"Name" <uri>;params``, ``Name <uri>``, ``<uri>`` or a bare
    URI (whose ``;params`` are then header parameters, RFC 3261 §20.10)."""
    value = value.strip()
    display: str | None = None
    if value.startswith('"'):
        end = _closing_quote(value)
        display = _ESCAPED_RE.sub(r"\1", value[1:end])
        value = value[end + 1 :].lstrip()
        if not value.startswith("<"):
            raise SipParseError("display name without <URI>")
    if "<" in value:
        before, _, rest = value.partition("<")
        uri, closed, params = rest.partition(">")
        if not closed or "<" in uri:
            raise SipParseError("unbalanced <> in address")
        if display is None and before.strip():
            display = before.strip()
        if params.strip() and not params.lstrip().startswith(";"):
            raise SipParseError("junk after address")
        uri = uri.strip()
    else:
        uri, _, params = value.partition(";")
        uri = uri.strip()  # RFC 4475 §3.1.1.1: "sip:… ;   tag = …"
        if "," in uri or " " in uri:
            raise SipParseError("malformed address")
    if not _URI_RE.fullmatch(uri):
        raise SipParseError("malformed URI in address")
    return NameAddress(display, uri, parse_params(params, "address"))


def _closing_quote(value: str) -> int:
    index = 1
    while index < len(value):
        if value[index] == "\\":
            index += 2
            continue
        if value[index] == '"':
            return index
        index += 1
    raise SipParseError("unterminated quoted string")


def parse_uri(text: str) -> SipUri:
    """A ``sip:``/``sips:`` URI, bare or in a name-address (``"Bob" <sip:bob@host>;tag=x``:
    the display name and header parameters are dropped). Raises :class:`SipParseError`."""
    text = text.strip()
    if "<" in text or text.startswith('"'):
        text = parse_name_address(text).uri
    scheme, colon, rest = text.partition(":")
    scheme = scheme.lower()
    if not colon or scheme not in ("sip", "sips"):
        raise SipParseError("not a sip: or sips: URI")
    rest = rest.split("?", 1)[0]  # URI headers (?subject=…) matter to no UAS here
    user: str | None = None
    if "@" in rest:
        userinfo, _, rest = rest.rpartition("@")
        user = userinfo.split(":", 1)[0]  # a password in a URI is deprecated: never keep it
        if not user or any(c in user for c in ' <>"'):
            raise SipParseError("malformed user in URI")
    hostport, _, params = rest.partition(";")
    host, port = _host_port(hostport, "URI")
    return SipUri(scheme, user, host, port, parse_params(params, "URI"))


# -- building -------------------------------------------------------------------------------
