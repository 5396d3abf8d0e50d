"""SIP messages (RFC 3261 §7, §20) as immutable values: parse a datagram, read the headers a
UAS needs, build responses, serialize.

The transport adapter does this with every datagram:

1. ``msg = parse_message(data)``. On :class:`SipParseError` it may answer ``error.status``
   (400, 505 or 513) if enough of the request was readable to build a response;
   otherwise it drops the datagram. Nothing else escapes the parser, whatever the bytes.
2. For a request, stamp the source address on the top Via with :func:`with_source` before
   the transaction layer sees it, so every response goes back where the request came from.
3. Answer with :func:`response_for` and write :func:`serialize` of it.

``Content-Length`` is framing, not content: the parser consumes it (the body it frames is
``msg.body``) and :func:`serialize` always writes the true length. Header names are kept in
their full, canonical spelling; compact forms (``v``, ``f``, ``i`` …) are expanded on input.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypeAlias

from bridge.errors import LocalProtocolError
from bridge.protocols.sip.fields import (
    TOKEN,
    TOKEN_RE,
    NameAddress,
    SipParseError,
    SipUri,
    Via,
    parse_name_address,
    parse_params,
    parse_uri,
    parse_via,
    split_list,
)

__all__ = [
    "MAX_HEADERS",
    "MAX_LINE_CHARS",
    "MAX_MESSAGE_BYTES",
    "CSeq",
    "NameAddress",
    "SipMessage",
    "SipParseError",
    "SipRequest",
    "SipResponse",
    "SipUri",
    "Via",
    "canonical_name",
    "headers_of",
    "parse_message",
    "parse_name_address",
    "parse_params",
    "parse_uri",
    "parse_via",
    "response_for",
    "serialize",
    "split_list",
    "with_source",
]

# A UDP datagram cannot exceed 64 KiB; trunk INVITEs with large SDP stay far below it.
MAX_MESSAGE_BYTES = 64 * 1024
# Real messages carry 10-30 headers; 200 leaves room for proxies' Via/Record-Route stacks.
MAX_HEADERS = 200
# One (unfolded) header line. Long Via stacks come as several headers, not one huge line.
MAX_LINE_CHARS = 8 * 1024
MAX_CSEQ = 2**31 - 1
MAX_METHOD_CHARS = 32


# RFC 3261 §7.3.3 plus the compact forms later RFCs registered (IANA "Header Fields").
COMPACT_FORMS = {
    "a": "Accept-Contact",
    "b": "Referred-By",
    "c": "Content-Type",
    "d": "Request-Disposition",
    "e": "Content-Encoding",
    "f": "From",
    "i": "Call-ID",
    "j": "Reject-Contact",
    "k": "Supported",
    "l": "Content-Length",
    "m": "Contact",
    "o": "Event",
    "r": "Refer-To",
    "s": "Subject",
    "t": "To",
    "u": "Allow-Events",
    "v": "Via",
    "x": "Session-Expires",
}
# Spellings whose capitalisation is not simply "Word-Word".
_SPECIAL_NAMES = {
    "call-id": "Call-ID",
    "cseq": "CSeq",
    "www-authenticate": "WWW-Authenticate",
    "mime-version": "MIME-Version",
    "min-se": "Min-SE",
    "rack": "RAck",
    "rseq": "RSeq",
    "p-asserted-identity": "P-Asserted-Identity",
}

_CSEQ_RE = re.compile(rf"([0-9]{{1,10}})\s+({TOKEN})")
_STATUS_RE = re.compile(r"SIP/2\.0 ([1-6][0-9][0-9])(?: (.*))?", re.IGNORECASE)
_URI_RE = re.compile(r"([A-Za-z][A-Za-z0-9+\-.]*):\S+")
# Control characters other than tab never appear in a legitimate header or start line.
_CONTROL_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")

Headers: TypeAlias = tuple[tuple[str, str], ...]


def canonical_name(name: str) -> str:
    """The full, canonically capitalised form of a header name (compact forms expanded)."""
    lower = name.lower()
    if len(lower) == 1 and lower in COMPACT_FORMS:
        return COMPACT_FORMS[lower]
    if lower in _SPECIAL_NAMES:
        return _SPECIAL_NAMES[lower]
    return "-".join(part.capitalize() for part in lower.split("-"))


# -- values read from headers -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CSeq:
    number: int
    method: str


# -- the messages ---------------------------------------------------------------------------


class _Headers:
    """Header access shared by requests and responses. Lookups are by any spelling."""

    __slots__ = ()
    headers: Headers

    def get(self, name: str) -> str | None:
        """The first value of header ``name``, or None."""
        wanted = canonical_name(name)
        for key, value in self.headers:
            if key == wanted:
                return value
        return None

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name`` in order, comma-separated lists split into entries
        (use for Via, Record-Route, Route, Contact)."""
        wanted = canonical_name(name)
        return [item for key, value in self.headers if key == wanted for item in split_list(value)]

    @property
    def call_id(self) -> str:
        value = self._single("Call-ID")
        if not value or any(char in value for char in " \t"):
            raise SipParseError("malformed Call-ID")
        return value

    @property
    def cseq(self) -> CSeq:
        match = _CSEQ_RE.fullmatch(self._single("CSeq"))
        if match is None or int(match[1]) > MAX_CSEQ:
            raise SipParseError("malformed CSeq")
        return CSeq(int(match[1]), match[2])

    @property
    def from_(self) -> NameAddress:
        return parse_name_address(self._single("From"))

    @property
    def to(self) -> NameAddress:
        return parse_name_address(self._single("To"))

    @property
    def vias(self) -> list[Via]:
        return [parse_via(item) for item in self.get_all("Via")]

    @property
    def top_via(self) -> Via:
        items = self.get_all("Via")
        if not items:
            raise SipParseError("no Via")
        return parse_via(items[0])

    @property
    def max_forwards(self) -> int | None:
        value = self.get("Max-Forwards")
        if value is None:
            return None
        # Leading zeros are legal ("0068" in RFC 4475); more than 255 hops is not a network.
        if not (value.isascii() and value.isdigit() and len(value) <= 10 and int(value) <= 255):
            raise SipParseError("malformed Max-Forwards")
        return int(value)

    @property
    def contact(self) -> SipUri | None:
        """The first Contact's URI; None when absent or ``*``."""
        items = self.get_all("Contact")
        if not items or items[0] == "*":
            return None
        return parse_uri(items[0])

    @property
    def content_type(self) -> str | None:
        """The media type, lower-cased, without parameters (``application/sdp``)."""
        value = self.get("Content-Type")
        return None if value is None else value.split(";", 1)[0].strip().lower()

    def _single(self, name: str) -> str:
        values = [value for key, value in self.headers if key == name]
        if len(values) != 1:
            raise SipParseError(f"expected exactly one {name}, got {len(values)}")
        return values[0]


@dataclass(frozen=True, slots=True)
class SipRequest(_Headers):
    method: str
    uri: str
    headers: Headers
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class SipResponse(_Headers):
    status: int
    reason: str
    headers: Headers
    body: bytes = b""


SipMessage: TypeAlias = SipRequest | SipResponse


# -- parsing --------------------------------------------------------------------------------


def parse_message(data: bytes) -> SipMessage:
    """Parse one complete message (a UDP datagram). Raises only :class:`SipParseError`.

    The mandatory headers (Via, From, To, Call-ID, CSeq; Max-Forwards when present) are
    checked here, so their accessors on the result cannot fail. Other accessors (``vias``
    beyond the top one, ``contact``) validate when read and raise :class:`SipParseError`.
    """
    if len(data) > MAX_MESSAGE_BYTES:
        raise SipParseError("message too large", 513)
    # RFC 3261 §7.5: ignore CRLFs before the start line (keep-alives, sloppy stacks).
    data = data.lstrip(b"\r\n")
    head, body, had_separator = _split_head(data)
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        raise SipParseError("header section is not UTF-8") from None
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    start, header_lines = lines[0], lines[1:]
    if not had_separator and header_lines and header_lines[-1] == "":
        header_lines.pop()
    parsed = _parse_headers(header_lines)
    body = _frame_body(parsed, body)
    headers = tuple(item for item in parsed if item[0] != "Content-Length")
    message = _parse_start(start, headers, body)
    _check_mandatory(message)
    return message


def _split_head(data: bytes) -> tuple[bytes, bytes, bool]:
    crlf, lf = data.find(b"\r\n\r\n"), data.find(b"\n\n")
    if crlf == -1 and lf == -1:
        # No blank line: a bodiless message whose sender omitted the final CRLF.
        return data, b"", False
    if lf == -1 or (crlf != -1 and crlf < lf):
        return data[:crlf], data[crlf + 4 :], True
    return data[:lf], data[lf + 2 :], True


def _parse_headers(lines: list[str]) -> list[tuple[str, str]]:
    unfolded: list[str] = []
    for line in lines:
        if len(line) > MAX_LINE_CHARS:
            raise SipParseError("header line too long", 513)
        if _CONTROL_RE.search(line):
            raise SipParseError("control character in header section")
        if line[:1] in (" ", "\t"):
            if not unfolded:
                raise SipParseError("continuation line before any header")
            unfolded[-1] = unfolded[-1].rstrip() + " " + line.strip()
            if len(unfolded[-1]) > MAX_LINE_CHARS:
                raise SipParseError("folded header too long", 513)
        else:
            unfolded.append(line)
            if len(unfolded) > MAX_HEADERS:
                raise SipParseError("too many headers", 513)
    headers: list[tuple[str, str]] = []
    for line in unfolded:
        name, colon, value = line.partition(":")
        name = name.rstrip(" \t")
        if not colon or not TOKEN_RE.fullmatch(name):
            raise SipParseError("malformed header line")
        headers.append((canonical_name(name), value.strip(" \t")))
    return headers


def _frame_body(headers: list[tuple[str, str]], rest: bytes) -> bytes:
    declared = [value for name, value in headers if name == "Content-Length"]
    if not declared:
        return rest  # UDP: the body is the rest of the datagram (RFC 3261 §18.3)
    if len(declared) > 1:
        raise SipParseError("several Content-Length headers")
    value = declared[0]
    if not (value.isascii() and value.isdigit() and len(value) <= 6):
        raise SipParseError("malformed Content-Length")
    length = int(value)
    if length > len(rest):
        raise SipParseError("body shorter than Content-Length")
    return rest[:length]  # bytes beyond it are ignored on UDP (§18.3)


def _parse_start(line: str, headers: Headers, body: bytes) -> SipMessage:
    if len(line) > MAX_LINE_CHARS:
        raise SipParseError("start line too long", 513)
    if _CONTROL_RE.search(line):
        raise SipParseError("control character in start line")
    if line[:4].upper() == "SIP/":
        match = _STATUS_RE.fullmatch(line)
        if match is None:
            raise SipParseError("malformed status line")
        return SipResponse(int(match[1]), (match[2] or "").strip(), headers, body)
    parts = line.split(" ")
    if len(parts) != 3:
        raise SipParseError("malformed request line")
    method, uri, version = parts
    if len(method) > MAX_METHOD_CHARS or not TOKEN_RE.fullmatch(method):
        raise SipParseError("malformed method")
    if not _URI_RE.fullmatch(uri):
        raise SipParseError("malformed Request-URI")
    if version.upper() != "SIP/2.0":
        raise SipParseError("unsupported SIP version", 505)
    return SipRequest(method, uri, headers, body)


def _check_mandatory(message: SipMessage) -> None:
    # Each accessor validates what it reads; read them all once so the caller may trust them.
    _ = (message.call_id, message.from_, message.to, message.top_via, message.max_forwards)
    cseq = message.cseq
    if isinstance(message, SipRequest) and cseq.method != message.method:
        raise SipParseError("CSeq method differs from the request method")


# -- header values --------------------------------------------------------------------------


def response_for(
    request: SipRequest,
    status: int,
    reason: str,
    extra_headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    *,
    to_tag: str | None = None,
) -> SipResponse:
    """A response to ``request`` per RFC 3261 §8.2.6: every Via in order, From, To, Call-ID
    and CSeq copied; ``to_tag`` added to To unless To already has a tag or ``status`` is 100.
    For 101-299 to an INVITE, Record-Route is copied too (§12.1.1). Then ``extra_headers``
    (Contact, Allow, Content-Type, …), in order. Serialize the result with :func:`serialize`.
    """
    if not 100 <= status <= 699:
        raise LocalProtocolError(f"status {status} out of range")
    copied = {"Via", "From", "To", "Call-ID", "CSeq"}
    if request.method == "INVITE" and 100 < status < 300:
        copied.add("Record-Route")
    headers: list[tuple[str, str]] = []
    for name, value in request.headers:
        if name not in copied:
            continue
        if name == "To" and to_tag is not None and status != 100 and request.to.tag is None:
            value = f"{value};tag={to_tag}"
        headers.append((name, value))
    headers += [(canonical_name(name), value) for name, value in extra_headers]
    return SipResponse(status, reason, tuple(headers), body)


def with_source(request: SipRequest, host: str, port: int) -> SipRequest:
    """``request`` with ``received=host`` on its top Via, and ``rport=port`` when the Via
    asked for it with a bare ``rport`` (RFC 3581). Responses then go back to the source."""
    for index, (name, value) in enumerate(request.headers):
        if name != "Via":
            continue
        items = split_list(value)
        top = items[0]
        via = parse_via(top)
        head = top.partition(";")[0].strip()
        params = dict(via.params)
        params["received"] = host
        if via.rport is True:
            params["rport"] = str(port)
        text = head + "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())
        new = ", ".join([text, *items[1:]])
        headers = (*request.headers[:index], ("Via", new), *request.headers[index + 1 :])
        return SipRequest(request.method, request.uri, headers, request.body)
    raise LocalProtocolError("request without Via")


def serialize(message: SipMessage) -> bytes:
    """The wire form: start line, headers in order, a true ``Content-Length``, the body.
    Raises :class:`LocalProtocolError` if a field would break the framing (CR/LF in it)."""
    if isinstance(message, SipRequest):
        start = f"{message.method} {message.uri} SIP/2.0"
    else:
        start = f"SIP/2.0 {message.status} {message.reason}"
    lines = [start]
    for name, value in message.headers:
        if name == "Content-Length":
            continue
        if not TOKEN_RE.fullmatch(name) or _CONTROL_RE.search(value):
            raise LocalProtocolError(f"header {name!r} would break the message framing")
        lines.append(f"{name}: {value}")
    if _CONTROL_RE.search(start):
        raise LocalProtocolError("control character in the start line")
    lines.append(f"Content-Length: {len(message.body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + message.body


def headers_of(pairs: Sequence[tuple[str, str]]) -> Headers:
    """Headers for a hand-built message, with names in canonical spelling."""
    return tuple((canonical_name(name), value) for name, value in pairs)
