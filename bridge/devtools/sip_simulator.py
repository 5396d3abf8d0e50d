"""Act as a SIP phone for one call against the bridge's SIP listener.

:func:`simulate_sip_call` is the SIP twin of :func:`bridge.devtools.simulator.simulate_call`:
a :class:`~bridge.devtools.sip_phone.SipPhone` dials ``sip:USER@HOST:PORT`` and the same
:class:`~bridge.devtools.playout.CallerScript` plays the caller, one 20 ms tick per RTP slot
of the phone: silent through the greeting, each utterance in turn, optional barge-in
(``barge_in_at`` seconds into the first reply) and RFC 4733 digits after the first reply.
Then the phone hangs up and the call record is fetched from the bridge's HTTP API, found by
the phone's Call-ID (``sip_call_id``).

What the caller hears is the bridge's RTP played out of a small jitter buffer, one frame
per tick. The bridge sends silence frames while the agent is quiet, so a frame counts as
agent speech when it is not the codec's silence frame: that is what barge-in timing and the
caller's turn-taking go by, as Twilio's playback buffer does for the Twilio simulation.

Used by ``bridge simulate --sip`` and the SIP load benchmark. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from bridge.codecs.g711 import alaw_to_ulaw
from bridge.devtools.playout import FRAME_BYTES, CallerScript, PlayTick
from bridge.devtools.simulator import (
    BargeInRecord,
    CallProbe,
    _fetch_record,  # the same polling as the Twilio simulation, once the SID is known
    http_client,
)
from bridge.devtools.sip_phone import (
    DEFAULT_FROM_USER,
    PhoneStats,
    ReceivedRtp,
    SipCallError,
    SipPhone,
)
from bridge.protocols.rtp import Codec
from bridge.protocols.sdp import Answer

__all__ = [
    "SipSimulationResult",
    "describe",
    "fetch_sip_record",
    "simulate_sip_call",
]

_HTTP_TIMEOUT_S = 10.0
_FIND_RECORD_S = 5.0
# The caller's jitter buffer: what the network delivers beyond this is dropped, oldest first.
_MAX_BUFFER_FRAMES = 6


@dataclass(slots=True)
class SipSimulationResult:
    """Everything the simulated SIP caller saw. ``heard_audio`` is the call timeline as heard
    (8 kHz mu-law, one frame per 20 ms tick, silence where nothing played);
    ``received_audio`` is every audio payload the bridge sent, in arrival order, as mu-law.
    ``received`` holds each RTP packet with its arrival time; ``hung_up_by`` is ``"caller"``
    or ``"bridge"``."""

    call_id: str
    answer: Answer | None = None
    heard_audio: bytes = b""
    received_audio: bytes = b""
    received: list[ReceivedRtp] = field(default_factory=list)
    barge_ins: list[BargeInRecord] = field(default_factory=list)
    digits_sent: list[str] = field(default_factory=list)
    hung_up_by: str | None = None
    timed_out: bool = False
    call_record: dict[str, Any] | None = None
    stats: PhoneStats = field(default_factory=PhoneStats)
    # Frames the caller's jitter buffer dropped because the bridge sent faster than 20 ms.
    dropped_frames: int = 0
    # What a phone would complain about: no answer to BYE, say. Empty when all is well.
    protocol_problems: list[str] = field(default_factory=list)

    @property
    def call_sid(self) -> str | None:
        """The bridge's own SID for the call (``SI…``), once the record was found."""
        record = self.call_record
        sid = None if record is None else record.get("call_sid")
        return sid if isinstance(sid, str) else None

    @property
    def answered(self) -> bool:
        return self.answer is not None


class _Ear:
    """What the caller hears: the bridge's audio out of a small jitter buffer, one 20 ms
    frame per tick, with silence while the buffer is dry."""

    def __init__(self, phone: SipPhone, answer: Answer) -> None:
        self._received = phone.received
        self._next = 0
        self._pt = answer.payload_type
        self._alaw = answer.codec == "PCMA"
        codec = Codec.PCMA if self._alaw else Codec.PCMU
        self._silence = bytes((codec.silence_byte,)) * FRAME_BYTES
        self._ulaw_silence = bytes((Codec.PCMU.silence_byte,)) * FRAME_BYTES
        self._buffer = bytearray()
        self.received = bytearray()
        self.dropped_frames = 0

    def tick(self) -> PlayTick:
        received = self._received
        while self._next < len(received):
            packet = received[self._next]
            self._next += 1
            if packet.payload_type == self._pt:
                self._buffer += packet.payload
                self.received += self._ulaw(packet.payload)
        excess = len(self._buffer) - _MAX_BUFFER_FRAMES * FRAME_BYTES
        if excess > 0:
            frames = -(-excess // FRAME_BYTES)
            del self._buffer[: frames * FRAME_BYTES]
            self.dropped_frames += frames
        if len(self._buffer) < FRAME_BYTES:
            return PlayTick(self._ulaw_silence, 0, ())
        frame = bytes(self._buffer[:FRAME_BYTES])
        del self._buffer[:FRAME_BYTES]
        played = 0 if frame == self._silence else FRAME_BYTES
        return PlayTick(self._ulaw(frame), played, ())

    def _ulaw(self, payload: bytes) -> bytes:
        return alaw_to_ulaw(payload) if self._alaw else payload


class _Caller:
    """The script, driven by the phone's RTP clock: one tick per slot."""

    def __init__(
        self, phone: SipPhone, ear: _Ear, script: CallerScript, probe: CallProbe | None = None
    ) -> None:
        self.phone = phone
        self.probe = probe
        self.ear = ear
        self.script = script
        self.heard = bytearray()
        self.barge_ins: list[BargeInRecord] = []
        self.digits: list[str] = []
        self.problems: list[str] = []
        self.done = asyncio.Event()

    def slot(self, now: float) -> bytes | None:
        if self.done.is_set():
            return None
        tick = self.ear.tick()
        self.heard += tick.audio
        step = self.script.step(tick)
        if step.barge_in_ms is not None:
            self.barge_ins.append(BargeInRecord(time.monotonic(), step.barge_in_ms))
        if step.digits:
            try:
                self.phone.send_dtmf("".join(step.digits))
                self.digits += step.digits
            except SipCallError as exc:
                self.problems.append(str(exc))
        if self.script.done:
            self.done.set()
            return None
        if self.probe is not None:
            return self.probe.caller_frame(step.audio, now)
        return step.audio


async def _first(*events: asyncio.Event, within_s: float) -> bool:
    """Wait until any of ``events`` is set, at most ``within_s`` seconds; False if none is."""
    waiters = [asyncio.create_task(event.wait()) for event in events]
    try:
        done, _ = await asyncio.wait(
            waiters, timeout=max(0.0, within_s), return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
    return bool(done)


async def simulate_sip_call(
    target: str,
    *,
    caller_utterances: list[bytes],
    barge_in_at: float | None = None,
    barge_in_every: int = 0,
    digits: list[str] | None = None,
    base_url: str | None = None,
    review_token: str | None = None,
    username: str | None = None,
    password: str | None = None,
    from_user: str = DEFAULT_FROM_USER,
    reply_silence_s: float = 0.8,
    initial_silence_s: float = 0.5,
    max_duration_s: float = 60.0,
    sip_timeout_s: float = 10.0,
    probe: CallProbe | None = None,
) -> SipSimulationResult:
    """Place one call to ``target`` (``sip:USER@HOST:PORT``) and return what happened.

    ``caller_utterances`` (8 kHz mu-law), ``barge_in_at``, ``digits``, ``reply_silence_s``
    and ``initial_silence_s`` mean what they mean for the Twilio simulation
    (:class:`~bridge.devtools.playout.CallerScript`), as does ``barge_in_every``. ``probe``
    sees each caller frame (its ``caller_frame`` only: what the bridge sent is in
    ``received``, with arrival times). ``username``/``password`` answer a
    digest challenge. The conversation is bounded by ``max_duration_s`` (then the phone
    hangs up anyway: ``timed_out``); each SIP exchange by ``sip_timeout_s``.

    With ``base_url`` (the bridge's HTTP address) the call record is fetched afterwards,
    with ``review_token`` as the bearer token. Raises
    :class:`~bridge.devtools.sip_phone.SipCallError` (a
    :class:`~bridge.devtools.simulator.SimulationError`) when the call cannot be placed; a
    bridge that hangs up is not an error: see ``hung_up_by``.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max_duration_s
    async with SipPhone(
        target,
        from_user=from_user,
        username=username,
        password=password,
        timeout_s=min(sip_timeout_s, max_duration_s),
    ) as phone:
        result = SipSimulationResult(phone.call_id, received=phone.received, stats=phone.stats)
        answer = await phone.dial()
        result.answer = answer
        script = CallerScript(
            list(caller_utterances),
            barge_in_at=barge_in_at,
            barge_in_every=barge_in_every,
            reply_silence_s=reply_silence_s,
            initial_silence_s=initial_silence_s,
            digits=list(digits or []),
        )
        ear = _Ear(phone, answer)
        caller = _Caller(phone, ear, script, probe)
        phone.frame_source = caller.slot
        # The RTP stopping on its own is a failure of the phone: hang_up() raises it.
        finished = await _first(
            caller.done, phone.ended, phone.rtp_stopped, within_s=deadline - loop.time()
        )
        result.timed_out = not finished
        caller.done.set()
        phone.frame_source = None
        if not phone.ended.is_set():
            try:
                await phone.hang_up()
            except SipCallError as exc:
                result.protocol_problems.append(str(exc))
        result.hung_up_by = phone.hung_up_by
        result.heard_audio = bytes(caller.heard)
        result.received_audio = bytes(ear.received)
        result.barge_ins = caller.barge_ins
        result.digits_sent = caller.digits
        result.dropped_frames = ear.dropped_frames
        result.protocol_problems += caller.problems
    if base_url is not None:
        result.call_record = await fetch_sip_record(base_url, result.call_id, review_token)
    return result


async def fetch_sip_record(
    base_url: str,
    sip_call_id: str,
    review_token: str | None,
    *,
    wait_s: float = _FIND_RECORD_S,
) -> dict[str, Any] | None:
    """The record of the SIP call with Call-ID ``sip_call_id`` from ``GET /api/calls``
    (``channel: "sip"``), then in full once it is no longer in progress. None when it does
    not show up within ``wait_s`` or the API refuses the token."""
    base = base_url.rstrip("/")
    headers = {"Authorization": f"Bearer {review_token}"} if review_token else {}
    until = time.monotonic() + wait_s
    async with http_client(base) as http:
        while True:
            response: httpx.Response | None = None
            with contextlib.suppress(httpx.HTTPError):
                response = await http.get(
                    f"{base}/api/calls",
                    params={"limit": "200"},
                    headers=headers,
                    timeout=_HTTP_TIMEOUT_S,
                )
            if response is not None and response.status_code in (401, 403):
                return None  # the wrong token: retrying will not help
            sid = _find_sid(response, sip_call_id)
            if sid is not None:
                return await _fetch_record(http, f"{base}/api/calls/{sid}", review_token)
            if time.monotonic() >= until:
                return None
            await asyncio.sleep(0.2)


def _find_sid(response: httpx.Response | None, sip_call_id: str) -> str | None:
    if response is None or response.status_code != 200:
        return None
    try:
        calls = response.json().get("calls")
    except (ValueError, AttributeError):
        return None
    for call in calls if isinstance(calls, list) else []:
        if isinstance(call, dict) and call.get("sip_call_id") == sip_call_id:
            sid = call.get("call_sid")
            return sid if isinstance(sid, str) else None
    return None


def describe(result: SipSimulationResult) -> str:
    """One line about the call, as ``bridge simulate`` prints it before the transcript."""
    sid = result.call_sid or "(no record)"
    return (
        f"call {sid} (SIP Call-ID {result.call_id}): {len(result.barge_ins)} barge-in(s), "
        f"hung up by {result.hung_up_by or 'nobody'}" + (", timed out" if result.timed_out else "")
    )
