"""Act as Twilio for one phone call against a running bridge.

:func:`simulate_call` posts the signed voice webhook, reads the TwiML, opens the signed
Media Streams WebSocket and plays a caller in real time: mu-law frames every 20 ms, the
caller's utterances in turn, mark echoes from a model of Twilio's playback buffer
(:mod:`bridge.devtools.playout`), ``clear`` honoured at once, optional DTMF and barge-in.
Afterwards it sends the call-status callback and fetches the call record.

Used by ``bridge simulate`` and by end-to-end tests. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import binascii
import functools
import json
import secrets
import ssl
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx
from twilio.request_validator import RequestValidator
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.protocol import State

from bridge.adapters.realtime_socket import write_now
from bridge.devtools.playout import BYTES_PER_MS, FRAME_S, CallerScript, Playout, PlayTick
from bridge.errors import BridgeError

__all__ = [
    "BargeInRecord",
    "CallProbe",
    "CallRefused",
    "ClearRecord",
    "SimulationError",
    "SimulationResult",
    "fetch_call_record",
    "format_transcript",
    "http_client",
    "parse_twiml",
    "sign",
    "simulate_call",
]

_HTTP_TIMEOUT_S = 10.0
_MAX_REDIRECTS = 3
_RECORD_WAIT_S = 3.0


class SimulationError(BridgeError):
    """The bridge refused the call (webhook or WebSocket handshake) or answered nonsense.
    ``status`` is the HTTP status when there was one."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class CallRefused(SimulationError):
    """The bridge answered the call only to turn it away (TwiML ``<Say>`` then ``<Hangup>``,
    after any ``<Redirect>`` was followed): it is draining or overloaded. ``said`` is what
    the caller heard."""

    def __init__(self, said: str) -> None:
        super().__init__(f"the bridge turned the call away: {said!r}", 200)
        self.said = said


class CallProbe(Protocol):
    """What a load test hooks into one simulated call (``simulate_call(probe=...)``). Each
    method runs on the media path of a call, 50 times a second or more: keep it cheap."""

    def caller_frame(self, audio: bytes, due: float) -> bytes:
        """The next caller frame, about to be sent; its 20 ms slot began at ``due``
        (``time.monotonic()``). Return the frame to send in its place (e.g. tagged)."""
        ...

    def media(self, audio: bytes, at: float) -> None:
        """A ``media`` message from the bridge arrived at ``at``, carrying ``audio``."""
        ...

    def clear(self, at: float, heard_ms: float) -> None:
        """A ``clear`` from the bridge arrived at ``at``, when the caller had heard
        ``heard_ms`` of the answer it cut (what the bridge's truncate should say)."""
        ...


@dataclass(frozen=True, slots=True)
class ClearRecord:
    """A ``clear`` from the bridge: when (``time.monotonic()``) and how much of the playing
    segment the caller had heard by then: ``segment_played_ms`` in whole 20 ms ticks (the
    tick under way counted whole), ``heard_ms`` as far as the clock had got into that tick."""

    at: float
    segment_played_ms: float
    heard_ms: float


@dataclass(frozen=True, slots=True)
class BargeInRecord:
    """The caller started talking over the agent, ``reply_played_ms`` into its reply."""

    started_at: float
    reply_played_ms: float


@dataclass(slots=True)
class SimulationResult:
    """Everything the simulated caller saw. ``heard_audio`` is the call timeline as heard
    (8 kHz mu-law, silence where nothing played); ``received_audio`` is every media payload
    the bridge sent, including audio later dropped by a ``clear``."""

    call_sid: str
    stream_sid: str
    twiml_parameters: dict[str, str]
    heard_audio: bytes = b""
    received_audio: bytes = b""
    clears: list[ClearRecord] = field(default_factory=list)
    barge_ins: list[BargeInRecord] = field(default_factory=list)
    marks_echoed: int = 0
    # Loop times: the last mark echoed (the last agent audio "played") and when the bridge
    # closed the stream, to see how soon after its last words a call was hung up.
    last_mark_at: float | None = None
    closed_at: float | None = None
    close_code: int | None = None
    call_record: dict[str, Any] | None = None
    closed_by_bridge: bool = False
    timed_out: bool = False
    stream_url: str = ""
    # What real Twilio would flag: malformed or unknown messages from the bridge, a wrong
    # streamSid, a status callback that was not answered with 2xx. Empty when all is well.
    protocol_problems: list[str] = field(default_factory=list)
    # One entry per caller utterance, in order (``time.monotonic()``): when its last frame
    # was sent, and the tick at which the caller first heard agent audio after it (None:
    # none before the call ended). How long a caller waits for an answer, as it lived it.
    # ``replies_arrived_at``: when that audio's first media message arrived, finer than a
    # tick (playback only starts on the next one).
    utterances_ended_at: list[float] = field(default_factory=list)
    replies_heard_at: list[float | None] = field(default_factory=list)
    replies_arrived_at: list[float | None] = field(default_factory=list)

    def reply_waits(self, *, arrived: bool = False) -> list[float | None]:
        """Seconds from the end of each caller utterance to the first agent audio heard
        after it (to a 20 ms tick), or with ``arrived`` to its arrival; None where none."""
        ends = self.utterances_ended_at
        replies = self.replies_arrived_at if arrived else self.replies_heard_at
        return [
            None if reply is None else reply - ended
            for ended, reply in zip(ends, replies, strict=True)
        ]


def sign(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """The ``X-Twilio-Signature`` Twilio would send for ``url`` and form ``params``."""
    signature: str = RequestValidator(auth_token).compute_signature(url, dict(params))
    return signature


def parse_twiml(text: str) -> tuple[str, dict[str, str]]:
    """Return the ``<Connect><Stream url>`` and its ``<Parameter>`` name/value pairs.
    Raises :class:`SimulationError` when the TwiML holds no bidirectional stream."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise SimulationError(f"the voice webhook answered invalid XML: {exc}") from None
    stream = root.find("./Connect/Stream") if root.tag == "Response" else None
    url = stream.get("url") if stream is not None else None
    if stream is None or not url:
        raise SimulationError("the TwiML has no <Response><Connect><Stream url=...>")
    params: dict[str, str] = {}
    for param in stream.findall("Parameter"):
        name = param.get("name")
        if name is not None:
            params[name] = param.get("value", "")
    return url, params


def _ws_base(http_base: str) -> str:
    base = http_base.rstrip("/")
    if base.startswith("https://"):
        return "wss://" + base[len("https://") :]
    if base.startswith("http://"):
        return "ws://" + base[len("http://") :]
    return base


def _reachable_url(url: str, base_url: str, public_base: str, *, ws: bool = True) -> str:
    """Where to connect for the TwiML ``url`` (a stream's, or with ``ws=False`` a
    redirect's): the same path, on ``base_url``'s host. The public prefix (a tunnel or proxy
    the simulator may not reach) is swapped out."""
    scheme: Callable[[str], str] = _ws_base if ws else _http_base
    public = scheme(public_base)
    absolute = urljoin(public + "/", url)
    if absolute.startswith(public + "/"):
        return scheme(base_url) + absolute[len(public) :]
    parts = urlsplit(absolute)
    base = urlsplit(scheme(base_url))
    return urlunsplit((base.scheme, base.netloc, parts.path, parts.query, ""))


def _http_base(base_url: str) -> str:
    return base_url.rstrip("/")


def _is_loopback(url: str) -> bool:
    return urlsplit(url).hostname in ("127.0.0.1", "localhost", "::1")


def http_client(base: str) -> httpx.AsyncClient:
    """A client for one simulated call to the server at ``base``. Proxy settings from the
    environment apply, except to a loopback server, which no proxy could reach."""
    trust_env = not _is_loopback(base)
    return httpx.AsyncClient(trust_env=trust_env, verify=_tls_context(trust_env))


@functools.cache
def _tls_context(trust_env: bool) -> ssl.SSLContext:
    # One per process. httpx would build one for every client, reading the whole CA bundle
    # each time: 35-80 ms of CPU here, during which every other call simulated on the same
    # event loop misses its 20 ms frames. A load test starts a hundred such clients.
    return httpx.create_ssl_context(trust_env=trust_env)


class _Stream:
    """One media stream from the caller's side: the socket, the playout, what was seen."""

    def __init__(
        self,
        ws: ClientConnection,
        result: SimulationResult,
        account_sid: str,
        probe: CallProbe | None = None,
    ) -> None:
        self.ws = ws
        self.probe = probe
        self.result = result
        self.account_sid = account_sid
        self.playout = Playout()
        self.sid_json = json.dumps(result.stream_sid)
        self.seq = 0
        self.heard = bytearray()
        self.received = bytearray()
        self.due_marks: list[str] = []
        # The last tick: when it began, what it played and of which segment. A tick plays the
        # 20 ms that follow it, so a clear arriving within them cuts it part-way.
        self.tick_at = 0.0
        self.tick_played_ms = 0.0
        self.tick_segment = 0

    async def send(self, event: str, body: str) -> None:
        """Send one Twilio message; ``body`` is its own JSON member, already encoded."""
        self.seq += 1
        text = (
            f'{{"event":"{event}","sequenceNumber":"{self.seq}",{body},'
            f'"streamSid":{self.sid_json}}}'
        )
        if not write_now(self.ws, text):  # a hundred callers: the lighter path when it can
            await self.ws.send(text)

    async def flush_due_marks(self) -> None:
        # Swap first: a clear handled while this awaits must not echo them a second time.
        due, self.due_marks = self.due_marks, []
        await self.echo_marks(due)

    async def echo_marks(self, names: list[str]) -> None:
        for name in names:
            await self.send("mark", f'"mark":{{"name":{json.dumps(name)}}}')
            self.result.marks_echoed += 1
            self.result.last_mark_at = asyncio.get_running_loop().time()

    async def send_start(self, call_sid: str, params: Mapping[str, str]) -> None:
        await self.ws.send('{"event":"connected","protocol":"Call","version":"1.0.0"}')
        start = {
            "accountSid": self.account_sid,
            "streamSid": self.result.stream_sid,
            "callSid": call_sid,
            "tracks": ["inbound"],
            "customParameters": dict(params),
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        }
        await self.send("start", '"start":' + json.dumps(start))

    async def send_stop(self, call_sid: str) -> None:
        stop = {"accountSid": self.account_sid, "callSid": call_sid}
        await self.send("stop", '"stop":' + json.dumps(stop))

    def tick(self, now: float) -> PlayTick:
        """Play the 20 ms from ``now``."""
        tick = self.playout.tick()
        self.tick_at = now
        self.tick_played_ms = tick.played_bytes / BYTES_PER_MS
        self.tick_segment = self.playout.segments
        return tick

    def heard_ms(self, now: float) -> float:
        """How much of the playing (or last) segment the caller had heard at ``now``."""
        playout = self.playout
        if playout.segments != self.tick_segment:
            return 0.0  # it began after the last tick: not a sample of it played yet
        into_tick = max(0.0, (now - self.tick_at) * 1000)
        last = self.tick_played_ms
        return playout.segment_played_ms - last + min(last, into_tick)

    async def read(self) -> None:
        """Handle the bridge's messages until the socket closes."""
        try:
            async for message in self.ws:
                if isinstance(message, str):
                    await self._handle(message)
                else:
                    self.result.protocol_problems.append("binary frame from the bridge")
        finally:
            self.result.closed_at = asyncio.get_running_loop().time()

    async def _handle(self, text: str) -> None:
        problems = self.result.protocol_problems
        try:
            msg = json.loads(text)
        except ValueError:
            problems.append("message is not JSON")
            return
        if not isinstance(msg, dict):
            problems.append("message is not a JSON object")
            return
        event = msg.get("event")
        if msg.get("streamSid") != self.result.stream_sid:
            problems.append(f"{event!r} message with a wrong or missing streamSid")
        body = msg.get(event) if isinstance(event, str) else None
        if event == "media":
            payload = body.get("payload") if isinstance(body, dict) else None
            try:
                if not isinstance(payload, str):
                    raise ValueError("no payload")
                audio = binascii.a2b_base64(payload, strict_mode=True)
            except ValueError:
                problems.append("media without a base64 media.payload")
                return
            now = time.monotonic()
            if self.probe is not None:
                self.probe.media(audio, now)
            self.received += audio
            self.playout.push_media(audio)
            arrived_at = self.result.replies_arrived_at
            if audio and arrived_at and arrived_at[-1] is None:
                arrived_at[-1] = now
        elif event == "mark":
            name = body.get("name") if isinstance(body, dict) else None
            if not isinstance(name, str):
                problems.append("mark without mark.name")
                return
            self.playout.push_mark(name)
        elif event == "clear":
            now = time.monotonic()
            heard = self.heard_ms(now)
            if self.probe is not None:
                self.probe.clear(now, heard)
            self.result.clears.append(ClearRecord(now, self.playout.segment_played_ms, heard))
            # Marks already reached are echoed as well, then everything still queued.
            dropped = self.due_marks + self.playout.clear()
            self.due_marks = []
            await self.echo_marks(dropped)
        else:
            problems.append(f"unknown event {event!r}")

    async def play(self, script: CallerScript, deadline: float, reader: asyncio.Task[None]) -> None:
        """Send one inbound frame per 20 ms on an absolute schedule until the script ends,
        the deadline passes or the socket closes."""
        start = time.monotonic()
        frame = 0
        while not script.done:
            due = start + frame * FRAME_S
            if due >= deadline:
                self.result.timed_out = True
                return
            delay = due - time.monotonic()
            if delay > 0:
                # A plain sleep: waiting on the reader as well would cost a future and a
                # timer per frame, and a closed socket is noticed one frame later at most.
                await asyncio.sleep(delay)
            if reader.done():
                return
            # Marks reached during the last 20 ms are echoed now that their audio has played.
            await self.flush_due_marks()
            tick = self.tick(time.monotonic())
            self.due_marks = list(tick.marks)
            self.heard += tick.audio
            heard_at = self.result.replies_heard_at
            if tick.played_bytes and heard_at and heard_at[-1] is None:
                heard_at[-1] = time.monotonic()
            said = script.utterances_said
            step = script.step(tick)
            if step.barge_in_ms is not None:
                self.result.barge_ins.append(BargeInRecord(time.monotonic(), step.barge_in_ms))
            for digit in step.digits:
                dtmf = {"track": "inbound_track", "digit": digit}
                await self.send("dtmf", '"dtmf":' + json.dumps(dtmf))
            if script.done:
                return
            frame += 1
            audio = step.audio if self.probe is None else self.probe.caller_frame(step.audio, due)
            payload = binascii.b2a_base64(audio, newline=False).decode("ascii")
            await self.send(
                "media",
                f'"media":{{"track":"inbound","chunk":"{frame}",'
                f'"timestamp":"{(frame - 1) * 20}","payload":"{payload}"}}',
            )
            if script.utterances_said > said:  # that frame was the utterance's last
                self.result.utterances_ended_at.append(time.monotonic())
                self.result.replies_heard_at.append(None)
                self.result.replies_arrived_at.append(None)


def _remaining(deadline: float, cap: float = _HTTP_TIMEOUT_S) -> float:
    return max(0.5, min(cap, deadline - time.monotonic()))


async def simulate_call(
    base_url: str,
    *,
    auth_token: str | None,
    caller_utterances: list[bytes],
    barge_in_at: float | None = None,
    barge_in_every: int = 0,
    review_token: str | None = None,
    from_number: str = "+15551230000",
    to_number: str = "+15557650000",
    call_sid: str | None = None,
    reply_silence_s: float = 0.8,
    max_duration_s: float = 60.0,
    digits: list[str] | None = None,
    signature_url_base: str | None = None,
    account_sid: str | None = None,
    initial_silence_s: float = 0.5,
    send_status_callback: bool = True,
    fetch_record: bool = True,
    probe: CallProbe | None = None,
) -> SimulationResult:
    """Place one simulated call to the bridge at ``base_url`` and return what happened.

    ``caller_utterances`` are 8 kHz mu-law clips said in order; see
    :class:`~bridge.devtools.playout.CallerScript` for the turn-taking, ``barge_in_at``,
    ``digits``, ``reply_silence_s`` and ``initial_silence_s``.

    ``signature_url_base`` is the public URL the bridge signs against
    (``BRIDGE_PUBLIC_URL``) when it differs from ``base_url``. Signatures are always
    computed over the public URLs (the stream URL exactly as the TwiML wrote it), but
    every request goes to ``base_url``. ``auth_token=None`` sends no signatures.

    ``probe`` sees every caller frame before it is sent and every ``media`` and ``clear``
    as it arrives (see :class:`CallProbe`). A load test that reads the call records itself,
    or a server that keeps none, passes ``fetch_record=False``; one whose server has no
    status callback route passes ``send_status_callback=False``.

    ``max_duration_s`` bounds the webhook and the stream; if it runs out the call is
    stopped anyway (``timed_out``). The status callback (``CallStatus=completed``, as
    Twilio sends it) and the call-record fetch take at most a few seconds more.

    Raises :class:`SimulationError` when the webhook or the WebSocket handshake is
    refused or the bridge cannot be reached. A socket the bridge closes is not an error:
    see ``close_code`` and ``closed_by_bridge``.
    """
    deadline = time.monotonic() + max_duration_s
    base = base_url.rstrip("/")
    public = (signature_url_base or base_url).rstrip("/")
    call_sid = call_sid or "CA" + secrets.token_hex(16)
    account_sid = account_sid or "AC" + secrets.token_hex(16)
    form = voice_form(call_sid, account_sid, from_number, to_number)
    async with http_client(base) as http:
        stream_url, params = await _answer(http, base, public, auth_token, form, deadline)
        result = SimulationResult(
            call_sid, "MZ" + secrets.token_hex(16), params, stream_url=stream_url
        )
        script = CallerScript(
            list(caller_utterances),
            barge_in_at=barge_in_at,
            barge_in_every=barge_in_every,
            reply_silence_s=reply_silence_s,
            initial_silence_s=initial_silence_s,
            digits=list(digits or []),
        )
        started = time.monotonic()
        await _run_stream(
            result,
            script,
            connect_url=_reachable_url(stream_url, base, public),
            headers=_signed(auth_token, stream_url, {}),
            account_sid=account_sid,
            deadline=deadline,
            probe=probe,
        )
        if send_status_callback:
            form.update(CallStatus="completed", CallDuration=str(int(time.monotonic() - started)))
            try:
                status = await http.post(
                    base + "/twilio/status",
                    data=form,
                    headers=_signed(auth_token, public + "/twilio/status", form),
                    timeout=_HTTP_TIMEOUT_S,
                )
                if not status.is_success:
                    result.protocol_problems.append(f"status callback got {status.status_code}")
            except httpx.HTTPError as exc:
                result.protocol_problems.append(f"status callback failed: {exc!r}")
        if fetch_record:
            url = f"{base}/api/calls/{call_sid}"
            result.call_record = await _fetch_record(http, url, review_token)
    return result


async def _answer(
    http: httpx.AsyncClient,
    base: str,
    public: str,
    auth_token: str | None,
    form: dict[str, str],
    deadline: float,
) -> tuple[str, dict[str, str]]:
    """POST the voice webhook and follow its ``<Redirect>``s, as Twilio does (a few at most);
    the stream URL and parameters of the ``<Connect>`` it ends with."""
    url = public + "/twilio/voice"
    for _ in range(_MAX_REDIRECTS + 1):
        try:
            response = await http.post(
                _reachable_url(url, base, public, ws=False),
                data=form,
                headers=_signed(auth_token, url, form),
                timeout=_remaining(deadline),
            )
        except httpx.HTTPError as exc:
            raise SimulationError(f"cannot reach the bridge at {base}: {exc!r}") from exc
        if response.status_code != 200:
            raise SimulationError(
                f"voice webhook answered {response.status_code}", response.status_code
            )
        turned_away = _redirect_or_refusal(response.text)
        if turned_away is None:
            return parse_twiml(response.text)
        url = turned_away
    raise SimulationError(f"the voice webhook redirected more than {_MAX_REDIRECTS} times")


def _redirect_or_refusal(text: str) -> str | None:
    """The URL of a TwiML ``<Redirect>``; None for anything else. Raises
    :class:`CallRefused` for a ``<Say>`` and ``<Hangup>`` with no stream."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError:
        return None  # parse_twiml says what is wrong with it
    if root.tag != "Response" or root.find("Connect") is not None:
        return None
    redirect = root.find("Redirect")
    if redirect is not None and redirect.text:
        return redirect.text.strip()
    if root.find("Hangup") is not None:
        raise CallRefused(" ".join((say.text or "").strip() for say in root.iter("Say")))
    return None


def voice_form(call_sid: str, account_sid: str, from_number: str, to_number: str) -> dict[str, str]:
    """The form of Twilio's voice webhook for a new inbound call."""
    return {
        "AccountSid": account_sid,
        "CallSid": call_sid,
        "From": from_number,
        "To": to_number,
        "CallStatus": "ringing",
        "Direction": "inbound",
        "ApiVersion": "2010-04-01",
    }


def _signed(auth_token: str | None, url: str, params: Mapping[str, str]) -> dict[str, str]:
    return {"X-Twilio-Signature": sign(auth_token, url, params)} if auth_token else {}


async def _run_stream(
    result: SimulationResult,
    script: CallerScript,
    *,
    connect_url: str,
    headers: dict[str, str],
    account_sid: str,
    deadline: float,
    probe: CallProbe | None = None,
) -> None:
    loopback = _is_loopback(connect_url)
    # The webhook's trust, and its one context, for a bridge behind TLS.
    tls: dict[str, Any] = (
        {"ssl": _tls_context(not loopback)} if urlsplit(connect_url).scheme == "wss" else {}
    )
    try:
        ws = await connect(
            connect_url,
            additional_headers=headers,
            open_timeout=_remaining(deadline),
            close_timeout=2.0,
            compression=None,
            max_size=16 * 1024 * 1024,
            proxy=None if loopback else True,
            **tls,
        )
    except InvalidStatus as exc:
        code = exc.response.status_code
        raise SimulationError(f"media stream handshake refused with {code}", code) from exc
    except (OSError, TimeoutError, InvalidHandshake) as exc:
        raise SimulationError(f"cannot open the media stream {connect_url}: {exc!r}") from exc
    stream = _Stream(ws, result, account_sid, probe)
    reader = asyncio.create_task(stream.read())
    try:
        try:
            await stream.send_start(result.call_sid, result.twiml_parameters)
            await stream.play(script, deadline, reader)
        except ConnectionClosed:
            pass
        result.closed_by_bridge = ws.state is not State.OPEN
        if not result.closed_by_bridge:
            try:
                await stream.flush_due_marks()
                await stream.send_stop(result.call_sid)
            except ConnectionClosed:
                result.closed_by_bridge = True
        await ws.close()  # bounded by close_timeout
        await asyncio.wait({reader}, timeout=5.0)
    finally:
        if not reader.done():
            reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await ws.close()
    failure = None if reader.cancelled() else reader.exception()
    if failure is not None and not isinstance(failure, ConnectionClosed):
        raise failure  # a bug in the simulator's reader: do not hide it
    result.close_code = ws.close_code
    result.heard_audio = bytes(stream.heard)
    result.received_audio = bytes(stream.received)


async def fetch_call_record(
    http: httpx.AsyncClient, base_url: str, call_sid: str, review_token: str | None
) -> dict[str, Any] | None:
    """The bridge's record of ``call_sid`` once it is no longer in progress (waits a few
    seconds at most; None when there is none). For callers that passed
    ``simulate_call(fetch_record=False)``."""
    return await _fetch_record(http, f"{base_url.rstrip('/')}/api/calls/{call_sid}", review_token)


async def _fetch_record(
    http: httpx.AsyncClient, url: str, review_token: str | None
) -> dict[str, Any] | None:
    """The call record, polled briefly: the last turn may be written just after close."""
    headers = {"Authorization": f"Bearer {review_token}"} if review_token else {}
    until = time.monotonic() + _RECORD_WAIT_S
    latest: dict[str, Any] | None = None
    while True:
        try:
            response = await http.get(url, headers=headers, timeout=_RECORD_WAIT_S)
        except httpx.HTTPError:
            response = None
        if response is not None and response.status_code == 200:
            try:
                data = response.json()
            except ValueError:
                data = None
            if isinstance(data, dict):
                latest = data
                if data.get("status") != "in_progress":
                    return latest
        elif response is not None and response.status_code != 404:
            return latest  # refused (401/403) or broken: retrying will not help
        if time.monotonic() >= until:
            return latest
        await asyncio.sleep(0.2)


def format_transcript(call_record: Mapping[str, Any]) -> str:
    """The call record as text, one line per turn or event in time order, e.g.
    ``[  1.02s] caller: text``; an interrupted agent turn shows what the caller heard and
    the reply in full."""
    rows: list[tuple[float, str]] = []
    for turn in call_record.get("turns") or []:
        text = turn.get("text", "")
        line = f"{_stamp(turn.get('start_ms'))} {turn.get('role', '?')}: {text}"
        if turn.get("interrupted"):
            # ``text`` is what the caller heard before cutting in; show the rest too.
            full = turn.get("full_text")
            line += (
                f'  [interrupted; full reply: "{full}"]'
                if full and full != text
                else "  [interrupted]"
            )
        rows.append((_ms(turn.get("start_ms")), line))
    for event in call_record.get("events") or []:
        extra = ", ".join(f"{k}={v}" for k, v in event.items() if k not in ("type", "at_ms"))
        line = f"{_stamp(event.get('at_ms'))} * {event.get('type', '?')}"
        rows.append((_ms(event.get("at_ms")), line + (f" ({extra})" if extra else "")))
    rows.sort(key=lambda row: row[0])  # stable: turns before events at the same instant
    return "\n".join(line for _, line in rows)


def _ms(value: object) -> float:
    return float(value) if isinstance(value, int | float) else 0.0


def _stamp(value: object) -> str:
    return f"[{_ms(value) / 1000:6.2f}s]"
