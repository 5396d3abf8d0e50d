"""OpenAI's SIP connector, the parts that are data: the ``realtime.call.incoming`` webhook,
the session an ``accept`` carries, a transfer's ``target_uri`` and the sideband's URL. Pure.

The webhook's ``sip_headers`` are the caller's own INVITE headers, relayed: untrusted text.
They are read leniently (a missing or odd header leaves a field empty) and only ever used
to route and to label the call record, never as proof of who is calling.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from bridge.protocols.dialects import DIALECTS, SessionConfig, build_session_update
from bridge.protocols.sip.fields import SipParseError, parse_uri

__all__ = [
    "CALL_INCOMING",
    "IncomingCall",
    "accept_session",
    "parse_incoming",
    "refer_uri",
    "sideband_url",
]

CALL_INCOMING = "realtime.call.incoming"
# OpenAI's call ids are rtc_ and hex; a little room for other characters, none for a
# slash or anything else that would change the REST path they are put in.
_CALL_ID = re.compile(r"rtc_[A-Za-z0-9_-]{1,120}")
_MAX_USER = 64  # a phone number or a short SIP user; longer is not a number to route on
_MAX_CALL_ID_HEADER = 255  # what the call record keeps of the SIP Call-ID
_MAX_HEADERS = 200


@dataclass(frozen=True, slots=True)
class IncomingCall:
    """One call OpenAI offers. ``from_user``/``to_user``: the user parts of the SIP From and
    To (a number, ``+`` kept), empty when absent or unreadable."""

    call_id: str
    from_user: str
    to_user: str
    sip_call_id: str | None


def parse_incoming(body: bytes) -> IncomingCall | str | None:
    """The call in a webhook body; the event's type (a string) when it is some other event,
    to be ignored; ``None`` when it is not a well-formed ``realtime.call.incoming``."""
    try:
        event = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if type(event) is not dict or type(event.get("type")) is not str:
        return None
    kind: str = event["type"]
    if kind != CALL_INCOMING:
        return kind[:64]
    data = event.get("data")
    if type(data) is not dict:
        return None
    call_id = data.get("call_id")
    if type(call_id) is not str or not _CALL_ID.fullmatch(call_id):
        return None
    headers = _headers(data.get("sip_headers"))
    call_id_header = headers.get("call-id", "")
    return IncomingCall(
        call_id=call_id,
        from_user=sip_user(headers.get("from", "")),
        to_user=sip_user(headers.get("to", "")),
        sip_call_id=_printable(call_id_header)[:_MAX_CALL_ID_HEADER] or None,
    )


def _headers(raw: object) -> dict[str, str]:
    """Header name (lower case) -> the first value given for it. The first, because a
    repeated From or To is not something a trunk sends; whoever added the second did."""
    out: dict[str, str] = {}
    if type(raw) is not list:
        return out
    for entry in raw[:_MAX_HEADERS]:
        if type(entry) is not dict:
            continue
        name, value = entry.get("name"), entry.get("value")
        if type(name) is str and type(value) is str:
            out.setdefault(name.strip().lower(), value)
    return out


def sip_user(value: str) -> str:
    """The user part of a From/To value (``sip:``, ``sips:`` or ``tel:``), or empty."""
    value = value.strip()
    if value.lower().startswith("tel:") or value.lower().startswith("<tel:"):
        number = value.strip("<>").split(":", 1)[1]
        user = number.split(">", 1)[0].split(";", 1)[0]
    else:
        try:
            user = parse_uri(value).user or ""
        except SipParseError:
            return ""
        user = user.split(";", 1)[0]  # user parameters (;phone-context=…) are not the number
    user = unquote(user)
    if len(user) > _MAX_USER or not user.isprintable() or not user.isascii():
        return ""
    return user


def _printable(value: str) -> str:
    return "".join(ch for ch in value if ch.isprintable())


def accept_session(config: SessionConfig, model: str) -> dict[str, Any]:
    """The body of ``POST /v1/realtime/calls/{id}/accept``: the agent's GA session.

    It is the ``session.update`` the bridge sends on its own sockets, less the audio
    formats: on a SIP call the codec is negotiated in SDP between the trunk and OpenAI,
    and a format here could only contradict it. The model is chosen here (a sideband
    cannot change it later).
    """
    session = build_session_update(DIALECTS["openai"], config)["session"]
    audio = session.get("audio", {})
    for direction in ("input", "output"):
        if isinstance(audio.get(direction), dict):
            audio[direction].pop("format", None)
    return {"type": "realtime", "model": model, **{k: v for k, v in session.items() if k != "type"}}


def refer_uri(target: str) -> str:
    """A transfer target (an E.164 number or a SIP URI, as the agents file allows) as the
    ``target_uri`` OpenAI's ``refer`` takes: ``tel:`` for a number, the URI as it is."""
    if target.startswith("+"):
        return "tel:" + target
    return target


def sideband_url(api_base: str, call_id: str) -> str:
    """The sideband WebSocket of ``call_id``: ``api_base`` with ``ws(s)`` for ``http(s)``,
    path ``/v1/realtime``, query ``call_id``."""
    parts = urlsplit(api_base.rstrip("/"))
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    query = "call_id=" + quote(call_id, safe="")
    return urlunsplit((scheme, parts.netloc, parts.path + "/v1/realtime", query, ""))


def calls_url(api_base: str, call_id: str, action: str) -> str:
    """``{api_base}/v1/realtime/calls/{call_id}/{action}``."""
    return f"{api_base.rstrip('/')}/v1/realtime/calls/{quote(call_id, safe='')}/{action}"
