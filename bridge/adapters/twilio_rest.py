"""Placing outbound calls through Twilio's REST API (``POST …/Accounts/{sid}/Calls.json``).

Plain httpx rather than the ``twilio`` package: the package's async client needs aiohttp and
takes a region or an edge, not an arbitrary base URL, while ``TWILIO_API_BASE`` must be able
to point at any server (a regional edge, a proxy, a test double). The request is a form POST
with HTTP basic auth, which is all the SDK would send anyway.

No error raised here ever carries the auth token: messages are built from the status code,
Twilio's own ``code``/``message`` and the exception type, and scrubbed besides.
"""

from __future__ import annotations

import json
import re
from typing import Final
from urllib.parse import quote

import httpx

# E.164: a plus, then a country code that never starts with 0, at most 15 digits in all.
# Seven is the shortest number worth dialing.
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
_CALL_SID = re.compile(r"CA[0-9a-fA-F]{32}")
MACHINE_DETECTION_MODES: Final = ("Enable", "DetectMessageEnd")
STATUS_CALLBACK_EVENTS: Final = ("initiated", "ringing", "answered", "completed")
# Twilio's messages are a sentence or two; a reply far longer is not Twilio's.
_MAX_MESSAGE_CHARS = 500


class TwilioRestError(Exception):
    """Twilio did not create the call. ``status`` is the HTTP status (``None`` when Twilio was
    not reached or the reply made no sense), ``code`` and ``twilio_message`` are Twilio's own
    error code and text when it sent them."""

    def __init__(
        self,
        description: str,
        *,
        status: int | None = None,
        code: int | None = None,
        twilio_message: str | None = None,
    ) -> None:
        super().__init__(description)
        self.status = status
        self.code = code
        self.twilio_message = twilio_message


def new_client(base: str, timeout_s: float = 10) -> httpx.AsyncClient:
    """A client for ``base``. Proxy settings from the environment apply, except to a
    loopback base (a test server or a local relay), which no proxy could reach."""
    try:
        host = httpx.URL(base).host
    except httpx.InvalidURL:
        host = ""
    loopback = host in ("localhost", "127.0.0.1", "::1") or host.startswith("127.")
    return httpx.AsyncClient(timeout=timeout_s, follow_redirects=False, trust_env=not loopback)


def is_e164(number: str) -> bool:
    return _E164.fullmatch(number) is not None


def last_digits(number: str, keep: int = 4) -> str:
    """A phone number with all but its last ``keep`` digits hidden, for logs."""
    return "…" + number[-keep:] if len(number) > keep else "…"


async def create_call(
    client: httpx.AsyncClient,
    base: str,
    account_sid: str,
    auth_token: str,
    *,
    to: str,
    from_: str,
    url: str,
    status_callback: str,
    machine_detection: str | None = None,
    timeout_s: float = 10,
) -> str:
    """Ask Twilio to dial ``to`` from ``from_``; when the callee answers, Twilio fetches the
    voice webhook ``url`` (POST). Returns the new call's SID (``CA`` + 32 hex digits).

    Raises ``TwilioRestError`` when Twilio refuses, cannot be reached, or answers nonsense.
    """
    if machine_detection is not None and machine_detection not in MACHINE_DETECTION_MODES:
        raise ValueError(f"machine_detection must be one of {', '.join(MACHINE_DETECTION_MODES)}")
    endpoint = f"{base.rstrip('/')}/2010-04-01/Accounts/{quote(account_sid, safe='')}/Calls.json"
    form: list[tuple[str, str]] = [
        ("To", to),
        ("From", from_),
        ("Url", url),
        ("Method", "POST"),
        ("StatusCallback", status_callback),
        ("StatusCallbackMethod", "POST"),
        *(("StatusCallbackEvent", event) for event in STATUS_CALLBACK_EVENTS),
    ]
    if machine_detection is not None:
        form.append(("MachineDetection", machine_detection))

    def scrub(text: str) -> str:
        return text.replace(auth_token, "***") if auth_token else text

    try:
        response = await client.post(
            endpoint,
            data=_form_body(form),
            auth=httpx.BasicAuth(account_sid, auth_token),
            headers={"Accept": "application/json"},
            timeout=timeout_s,
        )
    except httpx.TimeoutException:
        raise TwilioRestError(
            f"Twilio did not answer within {timeout_s:g} s ({_host(base)})"
        ) from None
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        detail = scrub(str(exc)) or type(exc).__name__
        raise TwilioRestError(f"could not reach Twilio at {_host(base)}: {detail}") from None

    body: object = None
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    if not response.is_success:
        code, message = _twilio_error(body)
        if message is not None:
            message = scrub(message)
        described = f"Twilio refused the call (HTTP {response.status_code}"
        described += f", code {code})" if code is not None else ")"
        described += f": {message}" if message else ""
        raise TwilioRestError(
            described, status=response.status_code, code=code, twilio_message=message
        )
    sid = body.get("sid") if isinstance(body, dict) else None
    if not isinstance(sid, str) or _CALL_SID.fullmatch(sid) is None:
        raise TwilioRestError(
            f"Twilio answered HTTP {response.status_code} without a call SID",
            status=response.status_code,
        )
    return sid


def _form_body(form: list[tuple[str, str]]) -> dict[str, str | list[str]]:
    """The fields as httpx wants them: a repeated name (StatusCallbackEvent) as a list."""
    out: dict[str, str | list[str]] = {}
    for name, value in form:
        if name in out:
            previous = out[name]
            out[name] = [*previous, value] if isinstance(previous, list) else [previous, value]
        else:
            out[name] = value
    return out


def _twilio_error(body: object) -> tuple[int | None, str | None]:
    """Twilio's ``code`` and ``message`` from an error reply, when it has them."""
    if not isinstance(body, dict):
        return None, None
    code = body.get("code")
    message = body.get("message")
    return (
        code if isinstance(code, int) and not isinstance(code, bool) else None,
        message[:_MAX_MESSAGE_CHARS] if isinstance(message, str) and message else None,
    )


def _host(base: str) -> str:
    """The host of ``base``, for messages: never the path or any credentials in the URL."""
    try:
        return httpx.URL(base).host or base
    except httpx.InvalidURL:
        return "an invalid TWILIO_API_BASE"
