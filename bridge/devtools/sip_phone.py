"""A SIP phone (a user agent client) on UDP, for placing calls to the bridge's SIP listener.

:class:`SipPhone` places one call the way a desk phone or a trunk would:

1. ``INVITE`` with an SDP offer of PCMU, PCMA and telephone-event
   (:func:`bridge.protocols.sdp.build_offer`), retransmitted on RFC 3261 Timer A until the
   bridge answers; ``100``/``180``/``183`` are noted, a ``401``/``407`` challenge is answered
   with digest credentials when the phone has them (RFC 8760: SHA-256 preferred, then MD5);
2. ``ACK`` for the ``200``, then RTP both ways from one socket (symmetric RTP): the caller's
   audio on its own 20 ms clock (:class:`bridge.protocols.rtp.RtpSender`'s deadline grid, so
   it never drifts), silence when there is nothing to say, RFC 4733 DTMF in place of audio;
3. every RTP packet the bridge sends is recorded with its arrival time (loop time);
4. ``BYE`` to hang up, or ``200`` to the bridge's own ``BYE``.

Messages are built and parsed with :mod:`bridge.protocols.sip.message`, SDP with
:mod:`bridge.protocols.sdp`, RTP with :mod:`bridge.protocols.rtp`. Each phone owns its two
sockets and its tasks and shares nothing, so one event loop can run many phones at once
(the SIP load benchmark runs fifty). Every wait is bounded; a call that cannot go on raises
:class:`SipCallError`.

Typical use::

    async with SipPhone("sip:agent@127.0.0.1:5060") as phone:
        await phone.dial()
        phone.send_audio(ulaw)
        phone.send_dtmf("42")
        await asyncio.sleep(5)
        await phone.hang_up()
    heard = [packet.payload for packet in phone.received]
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import struct
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, cast

from bridge.codecs.g711 import ulaw_to_alaw
from bridge.devtools.simulator import SimulationError
from bridge.errors import LocalProtocolError
from bridge.protocols import sdp
from bridge.protocols.rtp import Codec, RtpError, RtpSender, build_packet, parse_packet
from bridge.protocols.sip import digest
from bridge.protocols.sip.message import (
    SipParseError,
    SipRequest,
    SipResponse,
    headers_of,
    parse_message,
    parse_name_address,
    parse_uri,
    response_for,
    serialize,
    split_list,
)

__all__ = [
    "DEFAULT_FROM_USER",
    "FrameSource",
    "PhoneStats",
    "ReceivedRtp",
    "SipCallError",
    "SipPhone",
    "SipTarget",
    "digest_authorization",
]

DEFAULT_FROM_USER = "+15551230000"
USER_AGENT = "bridge-sip-phone"
# RFC 3261 §17: retransmission intervals over UDP (Timer A and E start at T1, E caps at T2).
T1_S = 0.5
T2_S = 4.0
FRAME_BYTES = 160  # 20 ms of G.711 at 8 kHz
PTIME_MS = 20
# RFC 4733: a key held for 100 ms, updated every packet, the end packet sent three times,
# then a short pause before the next key, as a keypad sends them.
DTMF_HELD_FRAMES = 5
DTMF_END_REPEATS = 3
DTMF_PAUSE_FRAMES = 3
DTMF_VOLUME = 10  # -10 dBm0
_DTMF_EVENTS = {digit: code for code, digit in enumerate("0123456789*#ABCD")}
# Auth rounds before giving up: one challenge, and one more if the nonce went stale.
_MAX_AUTH_ROUNDS = 2
# Linux's receive timestamps (socket(7)); the socket module does not name them.
_SO_TIMESTAMPNS: int | None = getattr(
    socket, "SO_TIMESTAMPNS", 35 if sys.platform.startswith("linux") else None
)
_TIMESPEC = struct.Struct("@ll")
_MAX_DATAGRAM = 4096
# Datagrams read per wake-up at most, so a flood cannot keep the loop from everything else.
_MAX_READS = 64


class SipCallError(SimulationError):
    """The call could not be placed or went wrong: no answer in time, refused (``status``
    holds the final SIP status), an unreadable answer, credentials needed or refused."""


FrameSource = Callable[[float], bytes | None]
"""Called once per 20 ms RTP slot with the loop time; returns the caller's next mu-law frame
(at most 160 bytes; shorter is padded with silence), or None for silence. It runs inside the
pacer, so it must be quick and must not await."""


class ReceivedRtp(NamedTuple):
    """One RTP packet from the bridge, as it arrived. ``at`` is the event loop's time when
    the datagram was read; ``wire_at`` is when the kernel received it, on the same clock
    (the same as ``at`` where the kernel gives no receive timestamps), so it is free of this
    process's own scheduling delays; ``payload`` is as sent (the negotiated codec, or a
    telephone event)."""

    at: float
    wire_at: float
    sequence: int
    timestamp: int
    payload_type: int
    marker: bool
    payload: bytes


@dataclass(slots=True)
class PhoneStats:
    """What the phone saw and did, beyond the recorded packets."""

    provisional: list[int] = field(default_factory=list)  # 1xx statuses to the INVITE
    auth_rounds: int = 0  # challenges answered
    sip_retransmissions: int = 0
    rtp_sent: int = 0
    dtmf_packets_sent: int = 0
    rtp_foreign: int = 0  # RTP from anywhere but the answered address
    rtp_malformed: int = 0
    rtcp: int = 0
    # How late the pacer woke for each slot it had slept for, in seconds: the phone's own
    # scheduling error, to tell it apart from the bridge's when reading arrival times.
    send_lateness: list[float] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class SipTarget:
    """Where to call: the user and the SIP listener's address (``sip:USER@HOST:PORT``)."""

    user: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> SipTarget:
        """Read ``sip:USER@HOST[:PORT]`` (port 5060 by default). Raises :class:`SipCallError`."""
        try:
            uri = parse_uri(text)
        except SipParseError as exc:
            raise SipCallError(
                f"{text!r} is not a SIP URI like sip:agent@127.0.0.1:5060: {exc}"
            ) from None
        if uri.scheme != "sip":
            raise SipCallError(f"{text!r}: only sip: over UDP is supported, not {uri.scheme}:")
        return cls(uri.user or "", uri.host, uri.port or 5060)

    @property
    def uri(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        user = f"{self.user}@" if self.user else ""
        return f"sip:{user}{host}:{self.port}"


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _branch() -> str:
    return "z9hG4bK" + secrets.token_hex(8)


def _uri_of(name_address: str) -> str:
    """The URI inside a Contact or Record-Route value (``<sip:…>;params``)."""
    return parse_name_address(name_address).uri


def _local_address_for(host: str) -> str:
    """The address this machine uses to reach ``host``: what goes in Via, Contact and SDP."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        # connect() on UDP sends nothing; it only asks the kernel for a route.
        probe.connect((host, 9))
        address: str = probe.getsockname()[0]
    return address


# -- digest ---------------------------------------------------------------------------------


def _challenge_params(value: str) -> dict[str, str] | None:
    """The parameters of a ``Digest`` challenge, names lower-cased; None for another scheme."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        return None
    params: dict[str, str] = {}
    for item in split_list(rest):
        name, equals, raw = item.partition("=")
        if not equals:
            continue
        raw = raw.strip()
        if len(raw) >= 2 and raw[0] == raw[-1] == '"':
            raw = raw[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        params[name.strip().lower()] = raw
    return params


def digest_authorization(
    challenges: Sequence[str],
    *,
    method: str,
    uri: str,
    username: str,
    password: str,
    cnonce: str | None = None,
) -> tuple[str, bool] | None:
    """The ``Authorization`` value answering the best of ``challenges`` (the values of the
    ``WWW-Authenticate`` or ``Proxy-Authenticate`` headers), and whether that challenge said
    ``stale=true``. SHA-256 is preferred to MD5 (RFC 8760); None when no challenge is a
    Digest one this phone can answer (another algorithm, or a qop other than ``auth``)."""
    usable: list[dict[str, str]] = []
    for value in challenges:
        params = _challenge_params(value)
        if params is None or "realm" not in params or "nonce" not in params:
            continue
        algorithm = params.get("algorithm", "MD5").upper()
        qops = [q.strip().lower() for q in params.get("qop", "").split(",") if q.strip()]
        if algorithm in ("SHA-256", "MD5") and (not qops or "auth" in qops):
            usable.append(params)
    if not usable:
        return None
    usable.sort(key=lambda p: p.get("algorithm", "MD5").upper() != "SHA-256")
    chosen = usable[0]
    algorithm = chosen.get("algorithm", "MD5").upper()
    qop = "auth" if chosen.get("qop") else None
    credentials = digest.DigestCredentials(
        username=username,
        realm=chosen["realm"],
        nonce=chosen["nonce"],
        uri=uri,
        response="",
        algorithm=algorithm,
        qop=qop,
        nc="00000001" if qop else None,
        cnonce=(cnonce or secrets.token_hex(8)) if qop else None,
        opaque=chosen.get("opaque"),
    )
    # The server's own computation of what a client must send: one definition of digest.
    response = digest.expected_response(credentials, method, password)
    assert response is not None  # the algorithm and qop were checked above
    parts = [
        f'username="{_quote(username)}"',
        f'realm="{_quote(credentials.realm)}"',
        f'nonce="{_quote(credentials.nonce)}"',
        f'uri="{_quote(uri)}"',
        f'response="{response}"',
        f"algorithm={algorithm}",
    ]
    if qop is not None:
        parts += [f"qop={qop}", f"nc={credentials.nc}", f'cnonce="{credentials.cnonce}"']
    if credentials.opaque is not None:
        parts.append(f'opaque="{_quote(credentials.opaque)}"')
    stale = chosen.get("stale", "").lower() == "true"
    return "Digest " + ", ".join(parts), stale


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


# -- sockets --------------------------------------------------------------------------------


class _Socket(asyncio.DatagramProtocol):
    """A UDP socket handing every datagram to a callback."""

    def __init__(self, on_datagram: Callable[[bytes, tuple[Any, ...]], None]) -> None:
        self._on_datagram = on_datagram
        self.transport: asyncio.DatagramTransport | None = None
        self.error: OSError | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self._on_datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors (port unreachable) come here on some platforms; keep the first.
        if self.error is None and isinstance(exc, OSError):
            self.error = exc

    def send(self, data: bytes, to: tuple[str, int]) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(data, to)

    @property
    def port(self) -> int:
        assert self.transport is not None
        port: int = self.transport.get_extra_info("sockname")[1]
        return port

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class _RtpSocket:
    """The call's RTP socket, read with ``recvmsg`` so every datagram keeps the kernel's
    receive time (asyncio's datagram transports drop it), and written from the pacer.
    ``on_datagram(data, addr, read_at, wire_at)`` gets both times on the loop's clock."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        host: str,
        on_datagram: Callable[[bytes, tuple[Any, ...], float, float], None],
    ) -> None:
        self._loop = loop
        self._on_datagram = on_datagram
        self._sock = socket.socket(
            socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM
        )
        self._stamped = False
        try:
            self._sock.setblocking(False)
            if _SO_TIMESTAMPNS is not None:
                with contextlib.suppress(OSError):
                    self._sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
                    self._stamped = True
            self._sock.bind((host, 0))
        except OSError:
            self._sock.close()
            raise
        self._ancillary = socket.CMSG_SPACE(_TIMESPEC.size) if self._stamped else 0
        # Kernel stamps are wall-clock time; the loop runs on the monotonic clock. Over a
        # call the two drift apart by far less than a microsecond per 20 ms interval.
        self._wall_minus_loop = time.time() - loop.time()
        self.port: int = self._sock.getsockname()[1]
        self.send_errors = 0
        self._closed = False
        loop.add_reader(self._sock.fileno(), self._readable)

    def _readable(self) -> None:
        read_at = self._loop.time()
        for _ in range(_MAX_READS):
            try:
                data, ancillary, _, addr = self._sock.recvmsg(_MAX_DATAGRAM, self._ancillary)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue  # an ICMP error queued on the socket: nothing to read from it
            wire_at = read_at
            for level, kind, value in ancillary:
                if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS:
                    seconds, nanoseconds = _TIMESPEC.unpack_from(value)
                    wire_at = seconds + nanoseconds / 1e9 - self._wall_minus_loop
            self._on_datagram(data, addr, read_at, wire_at)

    def send(self, data: bytes, to: tuple[str, int]) -> None:
        if self._closed:
            return
        try:
            self._sock.sendto(data, to)
        except OSError:
            # A full socket buffer or an ICMP error: the packet is lost, as on a network.
            self.send_errors += 1

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()


@dataclass(slots=True)
class _DtmfEvent:
    code: int
    slot: int = 0
    timestamp: int = 0


# -- the phone ------------------------------------------------------------------------------


class SipPhone:
    """One SIP call to ``target`` (``sip:USER@HOST:PORT``); see the module doc.

    ``username``/``password`` answer a digest challenge; without them a ``401`` ends the
    attempt with :class:`SipCallError`. ``timeout_s`` bounds each SIP exchange (the INVITE
    until its final response, the BYE until its answer). ``frame_source``, when set (also
    settable later), supplies the caller's audio one 20 ms frame at a time, in step with the
    RTP clock; otherwise :meth:`send_audio` queues it.
    """

    def __init__(
        self,
        target: str | SipTarget,
        *,
        from_user: str = DEFAULT_FROM_USER,
        username: str | None = None,
        password: str | None = None,
        local_host: str | None = None,
        timeout_s: float = 10.0,
        frame_source: FrameSource | None = None,
    ) -> None:
        self.target = target if isinstance(target, SipTarget) else SipTarget.parse(target)
        self.from_user = from_user
        self.username = username
        self.password = password
        self.timeout_s = timeout_s
        self.frame_source = frame_source
        self._local_host = local_host
        self.call_id = secrets.token_hex(12) + "@bridge-sip-phone"
        self._from_tag = secrets.token_hex(6)
        self.received: list[ReceivedRtp] = []
        self.stats = PhoneStats()
        #: The negotiated media, once the call is answered.
        self.answer: sdp.Answer | None = None
        #: Loop times of the 200 OK and of the end of the call (either side's BYE).
        self.answered_at: float | None = None
        self.ended_at: float | None = None
        #: ``"caller"`` after :meth:`hang_up`, ``"bridge"`` when the bridge sent BYE.
        self.hung_up_by: str | None = None
        #: Set when the call is over, whoever ended it.
        self.ended = asyncio.Event()
        #: Set when the phone's RTP stops: hung up, or the pacer failed (then
        #: :meth:`hang_up` and :meth:`close` raise what went wrong).
        self.rtp_stopped = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._sip: _Socket | None = None
        self._rtp: _RtpSocket | None = None
        self._remote_sip: tuple[str, int] | None = None
        self._remote_rtp: tuple[str, int] | None = None
        self._host = ""
        self._cseq = 0
        self._remote_tag: str | None = None
        self._remote_target = ""
        self._routes: list[str] = []
        self._invite_branch: str | None = None
        self._ack: bytes | None = None
        self._waiting: dict[str, asyncio.Queue[SipResponse]] = {}
        self._sender: RtpSender | None = None
        self._pacer: asyncio.Task[None] | None = None
        self._alaw = False
        self._dtmf_queue: deque[_DtmfEvent] = deque()
        self._dtmf: _DtmfEvent | None = None
        self._dtmf_pause = 0
        self._dialed = False

    # -- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> SipPhone:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop the RTP and close both sockets. A call still up gets a BYE first (sent
        once, not waited for), so the bridge does not keep a dead call."""
        if self.answer is not None and not self.ended.is_set() and self._sip is not None:
            with contextlib.suppress(OSError):
                self._sip.send(self._bye()[1], self._sip_destination())
            self._end("caller")
        await self._stop_rtp()
        for sock in (self._sip, self._rtp):
            if sock is not None:
                sock.close()

    @property
    def sip_port(self) -> int:
        assert self._sip is not None
        return self._sip.port

    @property
    def rtp_port(self) -> int:
        assert self._rtp is not None
        return self._rtp.port

    # -- placing the call -----------------------------------------------------------------

    async def dial(self) -> sdp.Answer:
        """INVITE, answer a challenge if asked, ACK the 200 and start RTP. Returns the
        negotiated media. Raises :class:`SipCallError` when the bridge does not answer in
        ``timeout_s``, refuses the call, or answers with SDP the phone cannot use."""
        if self._dialed:
            raise LocalProtocolError("a SipPhone places one call")
        self._dialed = True
        await self._open()
        offer = sdp.build_offer(
            address=self._host,
            port=self.rtp_port,
            session_id=secrets.randbelow(2**31),
            version=1,
        ).encode()
        auth: list[tuple[str, str]] = []
        rounds = 0
        while True:
            self._cseq += 1
            branch = _branch()
            self._invite_branch = branch
            invite = self._request("INVITE", branch, extra=auth, body=offer)
            response = await self._invite_transaction(invite, branch)
            if response.status >= 300:
                # A final non-2xx is acknowledged inside its transaction (RFC 3261 §17.1.1.3).
                self._send_sip(self._ack_for_failure(response, branch))
            if response.status in (401, 407):
                auth = [self._answer_challenge(response, rounds)]
                rounds += 1
                self.stats.auth_rounds = rounds
                continue
            if response.status >= 300:
                raise SipCallError(
                    f"{self.target.uri} refused the call: {response.status} {response.reason}",
                    response.status,
                )
            break
        return self._established(response)

    async def _open(self) -> None:
        loop = self._loop
        try:
            infos = await loop.getaddrinfo(
                self.target.host, self.target.port, type=socket.SOCK_DGRAM
            )
        except OSError as exc:
            raise SipCallError(f"cannot resolve {self.target.host}: {exc}") from exc
        address = infos[0][4]
        self._remote_sip = (str(address[0]), int(address[1]))
        self._host = self._local_host or _local_address_for(self._remote_sip[0])
        _, self._sip = await loop.create_datagram_endpoint(
            lambda: _Socket(self._sip_datagram), local_addr=(self._host, 0)
        )
        self._rtp = _RtpSocket(loop, self._host, self._rtp_datagram)

    def _answer_challenge(self, response: SipResponse, rounds: int) -> tuple[str, str]:
        proxy = response.status == 407
        challenge_header = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
        challenges = [value for name, value in response.headers if name == challenge_header]
        if self.username is None or self.password is None:
            raise SipCallError(
                f"{self.target.uri} asks for digest authentication ({response.status}); "
                "give the phone a username and password",
                response.status,
            )
        answered = digest_authorization(
            challenges,
            method="INVITE",
            uri=self.target.uri,
            username=self.username,
            password=self.password,
        )
        if answered is None:
            raise SipCallError(
                f"{self.target.uri} sent no digest challenge this phone can answer: {challenges!r}",
                response.status,
            )
        value, stale = answered
        # A second challenge means the credentials were wrong, unless the nonce only aged.
        if rounds >= _MAX_AUTH_ROUNDS or (rounds > 0 and not stale):
            raise SipCallError(
                f"{self.target.uri} refused the credentials for {self.username!r} "
                f"({response.status} again)",
                response.status,
            )
        return ("Proxy-Authorization" if proxy else "Authorization", value)

    def _established(self, ok: SipResponse) -> sdp.Answer:
        self._remote_tag = ok.to.tag
        contacts = ok.get_all("Contact")
        try:
            self._remote_target = _uri_of(contacts[0]) if contacts else self.target.uri
            # RFC 3261 §12.1.2: the UAC's route set is the Record-Route list, reversed.
            self._routes = list(reversed(ok.get_all("Record-Route")))
        except SipParseError as exc:
            self._remote_target = self.target.uri
            self._send_sip(self._ack_request())
            self._abandon()
            raise SipCallError(f"the 200 OK has an unreadable Contact: {exc}") from exc
        self._ack = self._ack_request()
        self._send_sip(self._ack)
        try:
            answer = sdp.answer_received(ok.body)
        except sdp.SdpError as exc:
            self._abandon()
            raise SipCallError(f"the 200 OK's SDP answer is unusable: {exc}") from exc
        self.answer = answer
        self.answered_at = self._loop.time()
        self._remote_rtp = (answer.remote_address, answer.remote_port)
        self._alaw = answer.codec == "PCMA"
        self._sender = RtpSender(
            Codec.PCMA if self._alaw else Codec.PCMU,
            ssrc=secrets.randbits(32),
            sequence=secrets.randbits(16),
            timestamp=secrets.randbits(32),
            start=self._loop.time(),
            ptime_ms=PTIME_MS,
        )
        self._pacer = asyncio.create_task(self._pace(), name=f"rtp-pacer {self.call_id}")
        return answer

    def _abandon(self) -> None:
        """End an answered call the phone cannot use: BYE, sent once."""
        self._send_sip(self._bye()[1])
        self._end("caller")

    # -- in the call ----------------------------------------------------------------------

    def send_audio(self, ulaw: bytes) -> None:
        """Queue caller audio (8 kHz mu-law, any length): it goes out 20 ms per packet on
        the phone's clock, behind whatever is queued. DTMF digits take the place of the
        audio frames due while they sound."""
        if self._sender is None:
            raise LocalProtocolError("send_audio before the call was answered")
        self._sender.send_audio(ulaw_to_alaw(ulaw) if self._alaw else ulaw)

    @property
    def queued_audio_ms(self) -> int:
        return 0 if self._sender is None else self._sender.queued_ms

    def send_dtmf(self, digits: str) -> None:
        """Key ``digits`` (``0-9``, ``*``, ``#``, ``A-D``) as RFC 4733 telephone events,
        one after another: each a start packet (marker set), updates every 20 ms, and its
        end packet three times. Raises :class:`SipCallError` when the bridge's answer did
        not accept telephone-event."""
        if self.answer is None:
            raise LocalProtocolError("send_dtmf before the call was answered")
        if self.answer.telephone_event is None:
            raise SipCallError("the bridge did not accept telephone-event: no RFC 4733 DTMF")
        for digit in digits.upper():
            if digit not in _DTMF_EVENTS:
                raise LocalProtocolError(f"{digit!r} is not a DTMF digit")
            self._dtmf_queue.append(_DtmfEvent(_DTMF_EVENTS[digit]))

    @property
    def dtmf_pending(self) -> bool:
        return self._dtmf is not None or bool(self._dtmf_queue)

    async def hang_up(self) -> None:
        """Send BYE and wait for its answer (bounded by ``timeout_s``). Nothing to do when
        the call never connected or is already over. ``481`` counts as done: the bridge had
        already ended the call. Raises :class:`SipCallError` for no answer or a refusal."""
        await self._stop_rtp()
        if self.answer is None or self.ended.is_set():
            return
        branch, bye = self._bye()
        self._end("caller")
        response = await self._non_invite_transaction(bye, branch, "BYE")
        if not (200 <= response.status < 300 or response.status == 481):
            raise SipCallError(
                f"the bridge answered BYE with {response.status} {response.reason}",
                response.status,
            )

    def _end(self, by: str) -> None:
        if not self.ended.is_set():
            self.hung_up_by = by
            self.ended_at = self._loop.time()
            self.ended.set()

    async def _stop_rtp(self) -> None:
        pacer, self._pacer = self._pacer, None
        if pacer is not None and pacer is not asyncio.current_task():
            pacer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pacer

    # -- building requests ----------------------------------------------------------------

    def _sip_destination(self) -> tuple[str, int]:
        assert self._remote_sip is not None
        return self._remote_sip

    def _request(
        self,
        method: str,
        branch: str,
        *,
        uri: str | None = None,
        to_tag: str | None = None,
        extra: Sequence[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> bytes:
        here = _hostport(self._host, self.sip_port)
        to = f"<{self.target.uri}>" + (f";tag={to_tag}" if to_tag else "")
        headers = [
            ("Via", f"SIP/2.0/UDP {here};branch={branch};rport"),
            ("Max-Forwards", "70"),
            ("From", f"<sip:{self.from_user}@{here}>;tag={self._from_tag}"),
            ("To", to),
            ("Call-ID", self.call_id),
            ("CSeq", f"{self._cseq} {method}"),
        ]
        if method != "INVITE" or to_tag is not None:
            headers += [("Route", route) for route in self._routes]
        if method == "INVITE":
            headers += [
                ("Contact", f"<sip:{self.from_user}@{here}>"),
                ("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO"),
            ]
        headers.append(("User-Agent", USER_AGENT))
        headers += list(extra)
        if body:
            headers.append(("Content-Type", "application/sdp"))
        return serialize(SipRequest(method, uri or self.target.uri, headers_of(headers), body))

    def _ack_for_failure(self, response: SipResponse, branch: str) -> bytes:
        # Same branch and Request-URI as the INVITE, To with the response's tag (§17.1.1.3).
        return self._request("ACK", branch, to_tag=response.to.tag)

    def _ack_request(self) -> bytes:
        # The ACK for a 2xx is its own transaction, sent to the remote target (§13.2.2.4).
        return self._request("ACK", _branch(), uri=self._remote_target, to_tag=self._remote_tag)

    def _bye(self) -> tuple[str, bytes]:
        self._cseq += 1
        branch = _branch()
        bye = self._request("BYE", branch, uri=self._remote_target, to_tag=self._remote_tag)
        return branch, bye

    def _send_sip(self, data: bytes) -> None:
        assert self._sip is not None
        self._sip.send(data, self._sip_destination())

    # -- client transactions --------------------------------------------------------------

    def _check_socket(self) -> None:
        if self._sip is not None and self._sip.error is not None:
            raise SipCallError(f"{self.target.uri} cannot be reached: {self._sip.error}")

    async def _invite_transaction(self, invite: bytes, branch: str) -> SipResponse:
        """Send the INVITE, resending on Timer A until any response, and return its final
        response; provisional ones are noted in :attr:`PhoneStats.provisional`."""
        queue: asyncio.Queue[SipResponse] = asyncio.Queue()
        self._waiting[branch] = queue
        loop = self._loop
        deadline = loop.time() + self.timeout_s
        interval = T1_S
        resend_at: float | None = loop.time() + interval
        self._send_sip(invite)
        try:
            while True:
                self._check_socket()
                now = loop.time()
                if now >= deadline:
                    if resend_at is not None:
                        raise SipCallError(
                            f"no response to INVITE from {self.target.uri} in "
                            f"{self.timeout_s:g} s (is the bridge's SIP listener there?)"
                        )
                    # It rang but never answered: withdraw the INVITE (RFC 3261 §9.1).
                    self._send_sip(self._request("CANCEL", branch))
                    raise SipCallError(
                        f"{self.target.uri} did not answer the call in {self.timeout_s:g} s "
                        f"(provisional responses: {self.stats.provisional})"
                    )
                until = deadline if resend_at is None else min(deadline, resend_at)
                try:
                    response = await asyncio.wait_for(queue.get(), until - now)
                except TimeoutError:
                    if resend_at is not None and loop.time() >= resend_at:
                        self._send_sip(invite)
                        self.stats.sip_retransmissions += 1
                        interval *= 2
                        resend_at = loop.time() + interval
                    continue
                if response.cseq.method != "INVITE":
                    continue
                resend_at = None  # any response stops Timer A
                if response.status < 200:
                    self.stats.provisional.append(response.status)
                    continue
                return response
        finally:
            # Later copies of a 2xx are acknowledged again in _sip_response, by branch.
            self._waiting.pop(branch, None)

    async def _non_invite_transaction(
        self, request: bytes, branch: str, method: str
    ) -> SipResponse:
        """Send a request, resending on Timer E (T1 doubling to T2) until a final response."""
        queue: asyncio.Queue[SipResponse] = asyncio.Queue()
        self._waiting[branch] = queue
        loop = self._loop
        deadline = loop.time() + self.timeout_s
        interval = T1_S
        resend_at = loop.time() + interval
        self._send_sip(request)
        try:
            while True:
                self._check_socket()
                now = loop.time()
                if now >= deadline:
                    raise SipCallError(
                        f"no final response to {method} from {self.target.uri} "
                        f"in {self.timeout_s:g} s"
                    )
                try:
                    response = await asyncio.wait_for(queue.get(), min(deadline, resend_at) - now)
                except TimeoutError:
                    if loop.time() >= resend_at:
                        self._send_sip(request)
                        self.stats.sip_retransmissions += 1
                        interval = min(interval * 2, T2_S)
                        resend_at = loop.time() + interval
                    continue
                if response.cseq.method == method and response.status >= 200:
                    return response
        finally:
            self._waiting.pop(branch, None)

    # -- what arrives on the SIP socket ---------------------------------------------------

    def _sip_datagram(self, data: bytes, addr: tuple[Any, ...]) -> None:
        try:
            message = parse_message(data)
        except SipParseError:
            return  # not SIP, or not readable enough to answer
        source = (str(addr[0]), int(addr[1]))
        if isinstance(message, SipResponse):
            self._sip_response(message)
        else:
            self._sip_request(message, source)

    def _sip_response(self, response: SipResponse) -> None:
        branch = response.top_via.branch or ""
        if branch == self._invite_branch and self._ack is not None:
            # The 200 came again: our ACK was lost. Acknowledge it again (§13.2.2.4).
            if 200 <= response.status < 300:
                self._send_sip(self._ack)
            return
        queue = self._waiting.get(branch)
        if queue is not None:
            queue.put_nowait(response)

    def _sip_request(self, request: SipRequest, source: tuple[str, int]) -> None:
        if request.method == "ACK":
            return  # never answered
        ours = request.call_id == self.call_id and request.to.tag == self._from_tag
        if request.method == "BYE" and ours:
            self._reply(request, source, 200, "OK")
            self._end("bridge")
            # No RTP after the BYE; cancelled, not awaited: this runs in a socket callback.
            if self._pacer is not None:
                self._pacer.cancel()
                self._pacer = None
        elif request.method in ("OPTIONS", "INFO") and (ours or request.method == "OPTIONS"):
            self._reply(request, source, 200, "OK")
        elif not ours:
            self._reply(request, source, 481, "Call/Transaction Does Not Exist")
        elif request.method == "INVITE":
            # Re-INVITEs (hold, session refresh) are not something this phone takes part in.
            self._reply(request, source, 488, "Not Acceptable Here")
        else:
            self._reply(request, source, 405, "Method Not Allowed")

    def _reply(self, request: SipRequest, to: tuple[str, int], status: int, reason: str) -> None:
        assert self._sip is not None
        try:
            response = response_for(request, status, reason, [("User-Agent", USER_AGENT)])
        except SipParseError:
            return
        self._sip.send(serialize(response), to)

    # -- RTP ------------------------------------------------------------------------------

    def _rtp_datagram(
        self, data: bytes, addr: tuple[Any, ...], read_at: float, wire_at: float
    ) -> None:
        try:
            packet = parse_packet(data)
        except RtpError:
            self.stats.rtp_malformed += 1
            return
        if packet is None:
            self.stats.rtcp += 1
            return
        if (addr[0], addr[1]) != self._remote_rtp:
            self.stats.rtp_foreign += 1
            return
        self.received.append(
            ReceivedRtp(
                read_at,
                wire_at,
                packet.sequence,
                packet.timestamp,
                packet.payload_type,
                packet.marker,
                packet.payload,
            )
        )

    async def _pace(self) -> None:
        """One packet per 20 ms slot on the sender's fixed grid, from the RTP socket."""
        sender = self._sender
        rtp = self._rtp
        assert sender is not None and rtp is not None and self._remote_rtp is not None
        to = self._remote_rtp
        loop = self._loop
        lateness = self.stats.send_lateness
        try:
            while True:
                now = loop.time()
                at = sender.next_send_at(now)
                if at > now:
                    await asyncio.sleep(at - now)
                    now = loop.time()
                    lateness.append(now - at)
                for _ in range(sender.due(now)):
                    rtp.send(self._next_packet(sender, now), to)
                    self.stats.rtp_sent += 1
        finally:
            self.rtp_stopped.set()

    def _next_packet(self, sender: RtpSender, now: float) -> bytes:
        source = self.frame_source
        if source is not None:
            # The source is asked every slot, DTMF or not, so its clock keeps step with RTP.
            frame = source(now)
            if frame:
                sender.send_audio(ulaw_to_alaw(frame) if self._alaw else frame)
        if self._dtmf_pause > 0:
            self._dtmf_pause -= 1
            return sender.next_packet()
        if self._dtmf is None and self._dtmf_queue:
            self._dtmf = self._dtmf_queue.popleft()
        if self._dtmf is None:
            return sender.next_packet()
        # The audio packet due in this slot gives the sequence number and timestamp the
        # event packet takes over; its payload is what the tone replaces.
        audio = parse_packet(sender.next_packet())
        assert audio is not None and self.answer is not None
        assert self.answer.telephone_event is not None
        return self._dtmf_packet(audio.sequence, audio.timestamp, audio.ssrc)

    def _dtmf_packet(self, sequence: int, timestamp: int, ssrc: int) -> bytes:
        event = self._dtmf
        assert event is not None and self.answer is not None
        assert self.answer.telephone_event is not None
        slot = event.slot
        if slot == 0:
            event.timestamp = timestamp  # every packet of the event carries its start time
        event.slot += 1
        # Updates while the key is held; the last update is the first of three end packets.
        end = slot >= DTMF_HELD_FRAMES - 1
        units = min(slot + 1, DTMF_HELD_FRAMES) * FRAME_BYTES
        if slot >= DTMF_HELD_FRAMES - 1 + DTMF_END_REPEATS - 1:
            self._dtmf = None
            self._dtmf_pause = DTMF_PAUSE_FRAMES
        payload = bytes((event.code, (0x80 if end else 0) | DTMF_VOLUME, units >> 8, units & 0xFF))
        self.stats.dtmf_packets_sent += 1
        return build_packet(
            self.answer.telephone_event,
            sequence,
            event.timestamp,
            ssrc,
            payload,
            marker=slot == 0,
        )
