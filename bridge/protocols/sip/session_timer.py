"""RFC 4028 session timers, as the answering side.

Asterisk (``timers=yes``), FreeSWITCH and many SBCs offer a session timer: they refresh the
call with a re-INVITE or UPDATE every half interval, and drop a call whose far end refuses
the timer after 15 to 30 minutes. The bridge accepts the timer with the caller's side as the
refresher (it never has to send refreshes of its own), answers every refresh, and ends a
call whose refreshes stop, since its caller is gone.
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.protocols.sip.message import SipParseError, SipRequest, parse_params

__all__ = [
    "MIN_SE",
    "SessionTimer",
    "expires_after",
    "negotiate",
    "response_headers",
    "unsupported_requirements",
]

#: The smallest interval accepted (RFC 4028 section 4: 90 s at the least); shorter gets 422.
MIN_SE = 90
_MAX_INTERVAL = 24 * 3600


@dataclass(frozen=True, slots=True)
class SessionTimer:
    interval: int  # seconds
    refresher: str  # "uac": the caller's side refreshes


def unsupported_requirements(request: SipRequest) -> list[str]:
    """The option tags in ``Require`` the bridge does not support (all but ``timer``)."""
    return [tag for tag in request.get_all("Require") if tag.lower() != "timer"]


def negotiate(request: SipRequest) -> SessionTimer | int | None:
    """The timer to run for this INVITE or refresh: a :class:`SessionTimer`; ``None`` for no
    timer; or the smallest interval the bridge takes (answer 422 with ``Min-SE``) when the
    offered one is shorter. Raises :class:`SipParseError` for a malformed header."""
    value = request.get("Session-Expires")
    if value is None:
        return None
    seconds, _, params = value.partition(";")
    seconds = seconds.strip()
    if not (seconds.isascii() and seconds.isdigit()) or len(seconds) > 10:
        raise SipParseError("malformed Session-Expires")
    interval = int(seconds)
    if interval < MIN_SE:
        return MIN_SE
    refresher = (parse_params(params, "Session-Expires").get("refresher") or "uac").lower()
    required = any(tag.lower() == "timer" for tag in request.get_all("Require"))
    if refresher == "uas" and not required:
        # The caller asked the bridge to refresh, which it does not do: leaving the timer
        # out of the answer means no session expiry at all (RFC 4028 section 7.2).
        return None
    return SessionTimer(min(interval, _MAX_INTERVAL), "uas" if refresher == "uas" else "uac")


def response_headers(timer: SessionTimer) -> list[tuple[str, str]]:
    """What a 2xx carries once a timer runs (RFC 4028 section 9)."""
    return [
        ("Require", "timer"),
        ("Session-Expires", f"{timer.interval};refresher={timer.refresher}"),
    ]


def expires_after(timer: SessionTimer) -> float | None:
    """Seconds after a refresh at which the call is given up, if the caller's side is the
    refresher: the interval less min(32 s, a third of it) (RFC 4028 section 10)."""
    if timer.refresher != "uac":
        return None
    return timer.interval - min(32.0, timer.interval / 3)
