"""Native SIP: the bridge's own listener (``BRIDGE_SIP_LISTEN``) and a SIP call's RTP as a
phone leg for :class:`~bridge.session.CallSession`.

:class:`SipEndpoint` runs the sans-I/O :class:`~bridge.protocols.sip.uas.SipServer` on a UDP
socket: it binds an RTP port for each offered call, answers it, and once the ACK comes starts
the call. :class:`SipDriver` is that call's phone leg: RTP in, RTP out on the pacer's clock
(so the bridge knows exactly what the caller heard), BYE on either side.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import random
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, cast

import structlog

from bridge.adapters.dual_stack import is_ipv6_socket, peer_address, socket_destination
from bridge.adapters.sip_transport import SipListener, TcpSipListener, UdpSipListener
from bridge.call.call_logic import CallLogic
from bridge.call.recording import CallRecorder
from bridge.call.records import EndReason
from bridge.errors import LocalProtocolError, RemoteProtocolError
from bridge.protocols.phone import MarkPlayed
from bridge.protocols.rtp import Codec, RtpReceiver, RtpSender
from bridge.protocols.rtp_leg import RtpPhoneLeg
from bridge.protocols.sdp import Answer
from bridge.protocols.sip.uas import (
    CallEnded,
    CallEstablished,
    CallOffered,
    DtmfInfo,
    MediaChanged,
    SipServer,
    TransferAnswered,
    UasConfig,
)
from bridge.session import CallSession, SessionDeps
from bridge.settings import Settings
from bridge.storage.base import NewCall

log = structlog.get_logger("bridge.sip")

Address = tuple[str, int]
_PORT_TRIES = 50
# A REFER's answer: Timer F (32 s over UDP) bounds it already; this only guards the wait.
REFER_TIMEOUT_S = 40.0


class SipDriver:
    """One SIP call's RTP as a :class:`~bridge.session.PhoneDriver`."""

    # The bridge paces RTP itself: a mark per frame costs no message, and keeps what was
    # heard exact to the frame.
    chunk_ms = 20
    mark_chunks = 1

    def __init__(self, endpoint: SipEndpoint, call_id: str, answer: Answer, rtp: _Rtp) -> None:
        self.endpoint = endpoint
        self.call_id = call_id
        self._loop = asyncio.get_running_loop()
        codec = Codec.PCMA if answer.codec == "PCMA" else Codec.PCMU
        ssrc = secrets.randbits(32)
        receiver = RtpReceiver(
            answer.payload_type,
            answer.telephone_event,
            remote_addr=(answer.remote_address, answer.remote_port),
            own_ssrc=ssrc,
        )
        sender = RtpSender(
            codec,
            ssrc=ssrc,
            sequence=secrets.randbits(16),
            timestamp=secrets.randbits(32),
            start=self._loop.time(),
            ptime_ms=20,
        )
        self._leg = RtpPhoneLeg(receiver, sender)
        self.rtp = rtp
        rtp.driver = self
        self._last_rx = self._loop.time()
        self._held = False  # on hold the caller sends nothing, and that is no reason to end
        self._sending = True
        self.media_changed(answer)
        self.gone = False  # the caller hung up: no BYE of ours, nothing more to play
        self._expired = False
        self.bad_input: RemoteProtocolError | None = None
        self._inbound = asyncio.Event()

    @property
    def leg(self) -> RtpPhoneLeg:
        return self._leg

    # -- fed by the endpoint ------------------------------------------------------------------

    @property
    def last_activity(self) -> float:
        return self._loop.time() if self._held else self._last_rx

    def datagram(self, data: bytes, addr: Address) -> None:
        now = self._loop.time()
        self._leg.receive_datagram(data, addr, now)
        self._last_rx = now
        self._inbound.set()

    def media_changed(self, answer: Answer) -> None:
        """A re-INVITE was answered: hold, resume or a new address (RFC 3264 section 8.4)."""
        held = answer.on_hold or answer.remote_address in ("0.0.0.0", "::")
        self._leg.receiver.relatch(None if held else (answer.remote_address, answer.remote_port))
        # We answered recvonly or inactive: RTP must stop, though the pacer's clock runs on.
        self._sending = answer.direction.sends and not held
        self._held = held or not answer.direction.receives
        self._last_rx = self._loop.time()  # the idle clock restarts on resume

    def caller_hung_up(self) -> None:
        self.gone = True
        self._leg.stop()
        self._inbound.set()

    def session_expired(self) -> None:
        """The caller's side stopped refreshing the session (RFC 4028); the SIP server has
        sent its BYE. Like a leg gone quiet, the call ends as ``timeout``."""
        self.gone = True
        self._expired = True
        self._inbound.set()

    def dtmf(self, digit: str) -> None:
        self._leg.receive_dtmf(digit)
        self._inbound.set()

    # -- what CallSession drives --------------------------------------------------------------

    async def read(self, logic: CallLogic, after: Callable[[], Awaitable[None]]) -> None:
        while True:
            await self._inbound.wait()
            self._inbound.clear()
            if self._expired:
                logic.end(EndReason.TIMEOUT)
                return
            logic.receive_phone(self._leg.events_received(), self._loop.time())
            await after()
            if logic.end_reason is not None:
                return

    def wake(self) -> None:
        """Nothing to do: RTP goes out on the pacer's clock whatever is queued."""

    async def write_now(self) -> bool:
        """Never: RTP goes out on the pacer's clock."""
        return False

    async def write(self) -> None:
        """The pacer: every frame at its deadline, never drifting; marks reported as sent."""
        self._leg.sender.restart_clock(self._loop.time())
        while True:
            now = self._loop.time()
            deadline = self._leg.next_deadline(now)
            if deadline > now:
                await asyncio.sleep(deadline - now)
                now = self._loop.time()
            self._send_due(now)

    def _send_due(self, now: float) -> None:
        to = self._leg.remote_addr
        for packet in self._leg.datagrams_due(now):
            if to is not None and self._sending:
                self.rtp.send(packet, to)
        self._leg.handle_timer(now)
        if self._leg.has_events:
            self._inbound.set()  # marks and released packets for the reader

    async def play(self, audio: bytes, mark: str, recorder: CallRecorder | None) -> None:
        if self.gone:
            return
        self._leg.send_clear()
        self._leg.events_received()
        self._leg.send_media(audio)
        self._leg.send_mark(mark)
        deadline = self._loop.time() + len(audio) / 8000 + 3.0
        while self._loop.time() < deadline:
            now = self._loop.time()
            await asyncio.sleep(max(0.0, self._leg.next_deadline(now) - now))
            self._send_due(self._loop.time())
            if any(
                isinstance(e, MarkPlayed) and e.name == mark for e in self._leg.events_received()
            ):
                return

    async def transfer(self, target: str) -> tuple[bool, str]:
        """A blind transfer by REFER; on 2xx the call ends (with our BYE)."""
        status = await self.endpoint.refer(self.call_id, target)
        if 200 <= status < 300:
            return True, ""
        return False, f"the phone system answered SIP {status}"

    async def close(self) -> None:
        if not self.gone:
            self.endpoint.hang_up(self.call_id)
        self.rtp.close()
        sender, received = self._leg.sender, self._leg.receiver.stats
        log.info(
            "sip.rtp_stats",
            sip_call_id=self.call_id,
            packets_sent=sender.packets_sent,
            frames_skipped=sender.frames_skipped,
            **{f"received_{k}": v for k, v in dataclasses.asdict(received).items()},
        )


class _Rtp(asyncio.DatagramProtocol):
    """One call's RTP socket."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.driver: SipDriver | None = None
        self._ipv6 = False  # bound to "::": IPv4 peers are sent to as IPv4-mapped

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        self._ipv6 = is_ipv6_socket(transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self.driver is not None:
            self.driver.datagram(data, peer_address(addr))

    def send(self, data: bytes, to: Address) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(data, socket_destination(to, self._ipv6))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class SipEndpoint:
    """The SIP listeners of ``BRIDGE_SIP_LISTEN`` (UDP and TCP) and the calls they bring.
    ``await start()``; ``close()`` at shutdown."""

    def __init__(self, settings: Settings, deps: SessionDeps, spawn: Callable[[Any], None]) -> None:
        self.entries = settings.sip_listeners
        host, port = self.entries[0][1], self.entries[0][2]
        self.host, self.port = host, port
        self.advertise = settings.sip_advertise or (
            host if host not in ("0.0.0.0", "::") else "127.0.0.1"
        )
        self.ports = settings.rtp_port_range
        allow = tuple(
            ipaddress.ip_network(net.strip(), strict=False)
            for net in settings.sip_allow.split(",")
            if net.strip()
        )
        password = settings.sip_password.get_secret_value() if settings.sip_password else None
        self.listeners: list[SipListener] = []
        for transport, _, entry_port in self.entries:
            server = SipServer(
                UasConfig(
                    advertise_host=self.advertise,
                    port=entry_port,
                    transport=transport.upper(),
                    allow=allow,
                    username=settings.sip_username,
                    password=password,
                    max_calls=settings.sip_max_calls,
                ),
                others_active=self._calls_elsewhere(len(self.listeners)),
                overloaded=self._refuse_overloaded,
            )
            kind = TcpSipListener if transport == "tcp" else UdpSipListener
            self.listeners.append(kind(server, self._handle))
        self.deps = deps
        self._spawn = spawn
        self._loop = asyncio.get_running_loop()
        self._pending: dict[str, tuple[_Rtp, Answer, CallOffered]] = {}
        self._drivers: dict[str, SipDriver] = {}
        self._listener_of: dict[str, SipListener] = {}  # by SIP Call-ID
        self._referring: dict[str, asyncio.Future[int]] = {}  # transfers awaiting an answer

    def _refuse_overloaded(self) -> bool:
        """Whether an INVITE about to be taken is refused because the bridge runs late."""
        if not self.deps.overload.busy:
            return False
        self.deps.metrics.rejected.labels("overloaded").inc()
        log.warning("sip.refused_overloaded")
        return True

    def _calls_elsewhere(self, index: int) -> Callable[[], int]:
        def count() -> int:
            return sum(
                listener.server.active_calls
                for n, listener in enumerate(self.listeners)
                if n != index
            )

        return count

    async def start(self) -> None:
        for listener, (transport, host, port) in zip(self.listeners, self.entries, strict=True):
            await listener.start(host, port)
            log.info(
                "sip.listening", transport=transport, host=host, port=port, advertise=self.advertise
            )

    def stop_accepting(self) -> None:
        """The bridge drains: new INVITEs get 503; calls in progress go on."""
        for listener in self.listeners:
            listener.server.accepting = False

    def close(self) -> None:
        for rtp, _, _ in self._pending.values():
            rtp.close()
        for listener in self.listeners:
            listener.close()

    async def refer(self, call_id: str, target: str) -> int:
        """Send a REFER for ``call_id``; its final status (408 if none came in time)."""
        listener = self._listener_of.get(call_id)
        if listener is None:
            return 481
        answer: asyncio.Future[int] = self._loop.create_future()
        self._referring[call_id] = answer
        listener.server.refer(call_id, target, self._loop.time())
        listener.pump()
        try:
            return await asyncio.wait_for(answer, REFER_TIMEOUT_S)
        except TimeoutError:
            return 408
        finally:
            self._referring.pop(call_id, None)

    def hang_up(self, call_id: str) -> None:
        if (listener := self._listener_of.get(call_id)) is not None:
            listener.server.hang_up(call_id, self._loop.time())
            listener.pump()

    def _handle(self, listener: SipListener, event: Any) -> None:
        match event:
            case CallOffered(call_id=call_id):
                if call_id in self._listener_of:
                    # The same Call-ID live on another transport: never two calls in one.
                    listener.server.reject(call_id, 482, "Loop Detected", self._loop.time())
                    return
                self._listener_of[call_id] = listener
                self._spawn(self._offer(listener, event))
            case CallEstablished(call_id=call_id):
                if (pending := self._pending.pop(call_id, None)) is not None:
                    rtp, answer, offer = pending
                    # Known at once, not when the task first runs: a BYE right behind the
                    # ACK must find the call, or the session would outlive its caller.
                    established = SipDriver(self, call_id, answer, rtp)
                    self._drivers[call_id] = established
                    self._spawn(self._serve(established, offer))
            case CallEnded(call_id=call_id, reason=reason):
                log.info("sip.call_ended", sip_call_id=call_id, reason=reason)
                if (driver := self._drivers.get(call_id)) is not None:
                    if reason == "session_expired":
                        driver.session_expired()
                    else:
                        driver.caller_hung_up()
                else:
                    self._listener_of.pop(call_id, None)
                    if (pending := self._pending.pop(call_id, None)) is not None:
                        pending[0].close()
            case DtmfInfo(call_id=call_id, digit=digit):
                if (driver := self._drivers.get(call_id)) is not None:
                    driver.dtmf(digit)
            case TransferAnswered(call_id=call_id, status=status):
                if (waiting := self._referring.get(call_id)) is not None and not waiting.done():
                    waiting.set_result(status)
            case MediaChanged(call_id=call_id, answer=answer):
                if (driver := self._drivers.get(call_id)) is not None:
                    driver.media_changed(answer)

    async def _offer(self, listener: SipListener, offer: CallOffered) -> None:
        rtp = await self._bind_rtp()
        now = self._loop.time()
        if rtp is None:
            log.warning("sip.no_rtp_port", sip_call_id=offer.call_id)
            listener.server.reject(offer.call_id, 503, "Service Unavailable", now)
            self._listener_of.pop(offer.call_id, None)
        else:
            assert rtp.transport is not None
            port = rtp.transport.get_extra_info("sockname")[1]
            try:
                answer = listener.server.answer(offer.call_id, port, now)
            except LocalProtocolError:  # cancelled while the RTP port was being bound
                rtp.close()
                return
            self._pending[offer.call_id] = (rtp, answer, offer)
        listener.pump()

    async def _bind_rtp(self) -> _Rtp | None:
        for _ in range(_PORT_TRIES):
            port = random.randrange(self.ports.start, self.ports.stop) & ~1  # even, by custom
            if port < self.ports.start:
                continue
            try:
                _, rtp = await self._loop.create_datagram_endpoint(
                    _Rtp, local_addr=(self.host, port)
                )
            except OSError:
                continue
            return rtp
        return None

    async def _serve(self, driver: SipDriver, offer: CallOffered) -> None:
        call_sid = "SI" + secrets.token_hex(16)
        call_log = log.bind(call_sid=call_sid, sip_call_id=offer.call_id)
        new_call = NewCall(
            call_sid=call_sid,
            stream_sid="",
            from_number=offer.from_user,
            to_number=offer.to_user,
            provider=self.deps.target.provider.value,
            model=self.deps.target.model_name,
            started_at=datetime.now(UTC),
            channel="sip",
            sip_call_id=offer.call_id[:255],
        )
        agent = None
        if (hub := self.deps.agent_hub) is not None:
            agent = hub.pick(offer.to_user)
            new_call = dataclasses.replace(new_call, agent=agent.name)
        self.deps.live_calls.add(call_sid)
        try:
            await CallSession(self.deps, driver, new_call, call_log, agent).run(create_record=True)
        finally:
            self.deps.live_calls.discard(call_sid)
            self._drivers.pop(offer.call_id, None)
            self._listener_of.pop(offer.call_id, None)
            with contextlib.suppress(Exception):
                driver.rtp.close()


__all__ = ["SipDriver", "SipEndpoint"]
