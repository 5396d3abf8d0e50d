"""A SIP phone made by hand for the end-to-end SIP tests: real UDP sockets on 127.0.0.1,
requests written line by line (so a test can send exactly what it means, broken or not),
parsed with the project's own parser, and the call record fetched when it is over."""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import httpx

from bridge.devtools.fake_realtime import FakeRealtimeServer
from bridge.devtools.ports import free_port
from bridge.protocols.rtp import build_packet, parse_packet
from bridge.protocols.sip.message import SipResponse, parse_message

from .conftest import REVIEW_TOKEN, RunningBridge, provider_env

SILENCE = b"\xff" * 160


def sip_env(fake: FakeRealtimeServer, **extra: str) -> tuple[dict[str, str], int]:
    """Settings for a bridge that takes SIP on a free UDP port; that port."""
    sip_port = free_port()
    rtp_low = free_port() & ~1
    env = provider_env(
        fake,
        "openai",
        BRIDGE_SIP_LISTEN=f"udp:127.0.0.1:{sip_port}",
        BRIDGE_RTP_PORTS=f"{rtp_low}-{rtp_low + 40}",
    )
    return env | extra, sip_port


class Inbox(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.queue.put_nowait(data)

    def drain(self) -> int:
        """Forget what has arrived; how much that was."""
        count = self.queue.qsize()
        while not self.queue.empty():
            self.queue.get_nowait()
        return count


def request(method: str, sip_port: int, my_port: int, call_id: str, cseq: int, **kw: str) -> bytes:
    body = kw.get("body", "")
    to_tag = f";tag={kw['to_tag']}" if "to_tag" in kw else ""
    # A CANCEL, and the ACK of a failure, repeat the INVITE's branch (RFC 3261 9.1, 17.1.1.3).
    branch = kw.get("branch") or "z9hG4bK" + secrets.token_hex(6)
    lines = [
        f"{method} sip:agent@127.0.0.1:{sip_port} SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:{my_port};branch={branch};rport",
        f"From: <sip:+15551230000@127.0.0.1:{my_port}>;tag=phone1",
        f"To: <sip:+15557650000@127.0.0.1:{sip_port}>{to_tag}",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {method}",
        f"Contact: <sip:phone@127.0.0.1:{my_port}>",
        "Max-Forwards: 70",
    ]
    if body:
        lines.append("Content-Type: application/sdp")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


def offer(rtp_port: int, direction: str = "sendrecv", version: int = 1) -> str:
    return (
        f"v=0\r\no=phone 1 {version} IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {rtp_port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
        f"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\n"
        f"a={direction}\r\n"
    )


async def response(inbox: Inbox, status: int, cseq: int | None = None) -> SipResponse:
    """The next response with ``status`` (and CSeq number ``cseq``), skipping others."""
    while True:
        message = parse_message(await asyncio.wait_for(inbox.queue.get(), 10))
        if not isinstance(message, SipResponse) or message.status != status:
            continue
        if cseq is None or message.cseq.number == cseq:
            return message


@dataclass
class RawPhone:
    """One call's SIP and RTP sockets and dialog; :meth:`dial` to place it."""

    sip_port: int
    call_id: str = field(default_factory=lambda: secrets.token_hex(8) + "@phone")
    sip: Inbox = field(default_factory=Inbox)
    rtp: Inbox = field(default_factory=Inbox)
    tag: str = ""
    bridge_rtp: tuple[str, int] = ("127.0.0.1", 0)
    cseq: int = 1
    sent: int = 0  # RTP packets sent, for sequence and timestamp

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self.sip, local_addr=("127.0.0.1", 0))
        await loop.create_datagram_endpoint(lambda: self.rtp, local_addr=("127.0.0.1", 0))

    @property
    def my_sip(self) -> int:
        assert self.sip.transport is not None
        return int(self.sip.transport.get_extra_info("sockname")[1])

    @property
    def my_rtp(self) -> int:
        assert self.rtp.transport is not None
        return int(self.rtp.transport.get_extra_info("sockname")[1])

    def send(self, method: str, **kw: str) -> None:
        assert self.sip.transport is not None
        if self.tag:  # in the dialog
            kw.setdefault("to_tag", self.tag)
        data = request(method, self.sip_port, self.my_sip, self.call_id, self.cseq, **kw)
        self.sip.transport.sendto(data, ("127.0.0.1", self.sip_port))

    async def dial(self) -> SipResponse:
        """INVITE, the 200 (its RTP port noted), ACK."""
        self.send("INVITE", body=offer(self.my_rtp))
        ok = await response(self.sip, 200)
        port = re.search(rb"m=audio (\d+) ", ok.body)
        assert port is not None, ok.body
        self.bridge_rtp = ("127.0.0.1", int(port[1]))
        self.tag = ok.to.tag or ""
        self.send("ACK")
        return ok

    async def reinvite(self, direction: str) -> SipResponse:
        self.cseq += 1
        self.send("INVITE", body=offer(self.my_rtp, direction, self.cseq))
        ok = await response(self.sip, 200, self.cseq)
        self.send("ACK")
        return ok

    async def hang_up(self) -> SipResponse:
        self.cseq += 1
        self.send("BYE")
        return await response(self.sip, 200, self.cseq)

    def send_rtp(self, payload: bytes = SILENCE) -> None:
        assert self.rtp.transport is not None
        n = self.sent
        self.rtp.transport.sendto(build_packet(0, n, n * 160, 0xCAFE, payload), self.bridge_rtp)
        self.sent += 1

    async def talk(
        self,
        audio: bytes,
        heard: list[bytes] | None = None,
        each_frame: Callable[[int], None] | None = None,
    ) -> None:
        """Send ``audio`` in real time, 20 ms a packet; what comes back goes to ``heard``;
        ``each_frame(n)`` runs after packet ``n`` is sent."""
        start = time.monotonic()
        for n in range(len(audio) // 160):
            self.send_rtp(audio[n * 160 : (n + 1) * 160])
            if each_frame is not None:
                each_frame(n)
            await asyncio.sleep(max(0.0, start + (n + 1) * 0.02 - time.monotonic()))
            if heard is not None:
                heard += self.received()

    def received(self) -> list[bytes]:
        payloads = []
        while not self.rtp.queue.empty():
            packet = parse_packet(self.rtp.queue.get_nowait())
            if packet is not None:
                payloads.append(bytes(packet.payload))
        return payloads

    def close(self) -> None:
        for inbox in (self.sip, self.rtp):
            if inbox.transport is not None:
                inbox.transport.close()


async def finished_record(bridge: RunningBridge) -> dict[str, Any] | None:
    """The newest call's full record once it is no longer in progress (or None)."""
    headers = {"Authorization": f"Bearer {REVIEW_TOKEN}"}
    async with httpx.AsyncClient(headers=headers) as http:
        for _ in range(100):
            calls = (await http.get(f"{bridge.url}/api/calls")).json()["calls"]
            if calls and calls[0]["status"] != "in_progress":
                url = f"{bridge.url}/api/calls/{calls[0]['call_sid']}"
                record: dict[str, Any] = (await http.get(url)).json()
                return record
            await asyncio.sleep(0.1)
    return None
