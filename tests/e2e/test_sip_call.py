"""A SIP phone calls the bridge directly: INVITE over UDP, RTP both ways, BYE, and the call
in the call log like any other, with ``channel: "sip"``. The phone is made here from the
project's own message and RTP builders, over real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import re
import secrets
import time
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import httpx
import numpy as np

from bridge.codecs.clips import load_clip
from bridge.devtools.fake_script import FakeScript, Reply
from bridge.devtools.ports import free_port
from bridge.protocols.rtp import build_packet, parse_packet
from bridge.protocols.sip.message import SipResponse, parse_message
from bridge.protocols.sip.stream import SipStreamFramer

from .conftest import REVIEW_TOKEN, RunningBridge, fake_server, provider_env

StartBridge = Callable[[dict[str, str]], RunningBridge]


class _Inbox(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.queue.put_nowait(data)


def _request(method: str, sip_port: int, my_port: int, call_id: str, cseq: int, **kw: str) -> bytes:
    body = kw.get("body", "")
    to_tag = f";tag={kw['to_tag']}" if "to_tag" in kw else ""
    branch = "z9hG4bK" + secrets.token_hex(6)
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


async def _response(inbox: _Inbox, status: int, cseq: int | None = None) -> SipResponse:
    while True:
        message = parse_message(await asyncio.wait_for(inbox.queue.get(), 10))
        if not isinstance(message, SipResponse) or message.status != status:
            continue
        if cseq is None or message.cseq.number == cseq:
            return message


async def test_a_sip_phone_talks_to_the_agent_and_the_call_is_logged(
    bridge_factory: StartBridge, tmp_path: Path
) -> None:
    script = FakeScript(
        replies=[Reply("Hello from the bridge over SIP.", duration_ms=1500)],
        caller_transcripts=["Hi, is this the bridge?"],
    )
    sip_port = free_port()
    rtp_low = free_port() & ~1
    async with fake_server("openai", script=script) as fake:
        bridge = bridge_factory(
            provider_env(
                fake,
                "openai",
                BRIDGE_SIP_LISTEN=f"udp:127.0.0.1:{sip_port}",
                BRIDGE_RTP_PORTS=f"{rtp_low}-{rtp_low + 40}",
                BRIDGE_RECORDINGS="1",
                BRIDGE_RECORDINGS_DIR=str(tmp_path / "rec"),
            )
        )
        loop = asyncio.get_running_loop()
        sip_t, sip = await loop.create_datagram_endpoint(_Inbox, local_addr=("127.0.0.1", 0))
        rtp_t, rtp = await loop.create_datagram_endpoint(_Inbox, local_addr=("127.0.0.1", 0))
        my_sip = sip_t.get_extra_info("sockname")[1]
        my_rtp = rtp_t.get_extra_info("sockname")[1]
        try:
            offer = (
                "v=0\r\no=phone 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                f"m=audio {my_rtp} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
                "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\n"
            )
            call_id = secrets.token_hex(8) + "@phone"
            target = ("127.0.0.1", sip_port)
            sip_t.sendto(_request("INVITE", sip_port, my_sip, call_id, 1, body=offer), target)
            ok = await _response(sip, 200)
            port = re.search(rb"m=audio (\d+) ", ok.body)
            assert port is not None and int(port[1]) in range(rtp_low, rtp_low + 41)
            tag = ok.to.tag or ""
            sip_t.sendto(_request("ACK", sip_port, my_sip, call_id, 1, to_tag=tag), target)

            # The caller speaks in real time, then listens; the agent's RTP comes back.
            speech = load_clip("caller_1") + b"\xff" * 8000 * 6
            bridge_rtp = ("127.0.0.1", int(port[1]))
            heard: list[bytes] = []
            start = time.monotonic()
            for n in range(len(speech) // 160):
                frame = speech[n * 160 : (n + 1) * 160]
                rtp_t.sendto(build_packet(0, n, n * 160, 0xCAFE, frame), bridge_rtp)
                await asyncio.sleep(max(0.0, start + (n + 1) * 0.02 - time.monotonic()))
                while not rtp.queue.empty():
                    packet = parse_packet(rtp.queue.get_nowait())
                    if packet is not None:
                        heard.append(bytes(packet.payload))
            sip_t.sendto(_request("BYE", sip_port, my_sip, call_id, 2, to_tag=tag), target)
            await _response(sip, 200)
        finally:
            sip_t.close()
            rtp_t.close()

        headers = {"Authorization": f"Bearer {REVIEW_TOKEN}"}
        record: dict[str, Any] | None = None
        async with httpx.AsyncClient(headers=headers) as http:
            for _ in range(100):
                calls = (await http.get(f"{bridge.url}/api/calls")).json()["calls"]
                sip_calls = [c for c in calls if c["channel"] == "sip"]
                if sip_calls and sip_calls[0]["status"] != "in_progress":
                    record = (
                        await http.get(f"{bridge.url}/api/calls/{sip_calls[0]['call_sid']}")
                    ).json()
                    break
                await asyncio.sleep(0.1)

    # The agent's audio came back as 20 ms PCMU frames: the greeting-free reply, not silence.
    assert len(heard) > 200 and all(len(p) == 160 for p in heard)
    assert sum(1 for p in heard if p != b"\xff" * 160) >= 50
    assert record is not None, bridge.log()[-3000:]
    assert record["channel"] == "sip" and record["call_sid"].startswith("SI")
    assert record["sip_call_id"] == call_id
    assert (record["from"], record["to"]) == ("+15551230000", "+15557650000")
    assert (record["status"], record["end_reason"]) == ("completed", "caller_hangup")
    assert [(t["role"], t["text"]) for t in record["turns"]] == [
        ("caller", "Hi, is this the bridge?"),
        ("agent", "Hello from the bridge over SIP."),
    ]
    assert "Traceback" not in bridge.log()
    assert '"level": "error"' not in bridge.log()

    # Recorded like a Twilio call: the caller on the left, the agent on the right.
    recordings = list((tmp_path / "rec").rglob(f"{record['call_sid']}*.wav"))
    assert len(recordings) == 1
    with wave.open(str(recordings[0]), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (2, 2, 8000)
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").reshape(-1, 2)
    frames = len(samples) // 160
    loudness = np.abs(samples[: frames * 160].astype(np.int32)).reshape(frames, 160, 2).mean(1)
    assert (loudness[:, 0] > 100).sum() >= 50, "the caller is not in the recording"
    assert (loudness[:, 1] > 100).sum() >= 50, "the agent is not in the recording"


def _offer(rtp_port: int, direction: str = "sendrecv", version: int = 1) -> str:
    return (
        f"v=0\r\no=phone 1 {version} IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {rtp_port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
        f"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na={direction}\r\n"
    )


def _drain(inbox: _Inbox) -> int:
    count = 0
    while not inbox.queue.empty():
        inbox.queue.get_nowait()
        count += 1
    return count


async def test_a_call_on_hold_outlasts_the_idle_timeout_and_resumes(
    bridge_factory: StartBridge,
) -> None:
    """On hold a PBX sends no RTP (or music we must not answer): the bridge answers
    recvonly, stops its own RTP, and does not take the silence for a dead call."""
    sip_port = free_port()
    rtp_low = free_port() & ~1
    async with fake_server("openai", script=FakeScript(replies=[])) as fake:
        bridge = bridge_factory(
            provider_env(
                fake,
                "openai",
                BRIDGE_SIP_LISTEN=f"udp:127.0.0.1:{sip_port}",
                BRIDGE_RTP_PORTS=f"{rtp_low}-{rtp_low + 40}",
                BRIDGE_IDLE_TIMEOUT_S="1.5",
            )
        )
        loop = asyncio.get_running_loop()
        sip_t, sip = await loop.create_datagram_endpoint(_Inbox, local_addr=("127.0.0.1", 0))
        rtp_t, rtp = await loop.create_datagram_endpoint(_Inbox, local_addr=("127.0.0.1", 0))
        my_sip = sip_t.get_extra_info("sockname")[1]
        my_rtp = rtp_t.get_extra_info("sockname")[1]
        target = ("127.0.0.1", sip_port)
        call_id = secrets.token_hex(8) + "@phone"

        async def talk(seconds: float, first: int) -> None:
            for n in range(first, first + int(seconds / 0.02)):
                rtp_t.sendto(build_packet(0, n, n * 160, 0xCAFE, b"\xff" * 160), bridge_rtp)
                await asyncio.sleep(0.02)

        try:
            sip_t.sendto(
                _request("INVITE", sip_port, my_sip, call_id, 1, body=_offer(my_rtp)), target
            )
            ok = await _response(sip, 200)
            port = re.search(rb"m=audio (\d+) ", ok.body)
            assert port is not None
            bridge_rtp = ("127.0.0.1", int(port[1]))
            tag = ok.to.tag or ""
            sip_t.sendto(_request("ACK", sip_port, my_sip, call_id, 1, to_tag=tag), target)
            await talk(0.5, 0)
            assert _drain(rtp) > 10  # the bridge's RTP flows while the call is up

            hold = _offer(my_rtp, "sendonly", 2)
            sip_t.sendto(
                _request("INVITE", sip_port, my_sip, call_id, 2, to_tag=tag, body=hold), target
            )
            held = await _response(sip, 200, 2)
            assert b"a=recvonly" in held.body
            sip_t.sendto(_request("ACK", sip_port, my_sip, call_id, 2, to_tag=tag), target)
            await asyncio.sleep(0.2)
            _drain(rtp)
            await asyncio.sleep(3.0)  # twice the idle timeout, in silence both ways
            assert _drain(rtp) == 0
            assert _drain(sip) == 0, "2xx resent after its ACK"

            resume = _offer(my_rtp, "sendrecv", 3)
            sip_t.sendto(
                _request("INVITE", sip_port, my_sip, call_id, 3, to_tag=tag, body=resume),
                target,
            )
            resumed = await _response(sip, 200, 3)
            assert _drain(sip) == 0, "2xx resent after its ACK"
            assert b"a=sendrecv" in resumed.body
            sip_t.sendto(_request("ACK", sip_port, my_sip, call_id, 3, to_tag=tag), target)
            await talk(0.5, 100)
            assert _drain(rtp) > 10
            sip_t.sendto(_request("BYE", sip_port, my_sip, call_id, 4, to_tag=tag), target)
            await _response(sip, 200)  # a dead call would have answered 481
        finally:
            sip_t.close()
            rtp_t.close()

        headers = {"Authorization": f"Bearer {REVIEW_TOKEN}"}
        record: dict[str, Any] | None = None
        async with httpx.AsyncClient(headers=headers) as http:
            for _ in range(100):
                calls = (await http.get(f"{bridge.url}/api/calls")).json()["calls"]
                if calls and calls[0]["status"] != "in_progress":
                    record = calls[0]
                    break
                await asyncio.sleep(0.1)
    assert record is not None, bridge.log()[-3000:]
    assert (record["channel"], record["end_reason"]) == ("sip", "caller_hangup")
    assert "phone.idle" not in bridge.log()


async def test_a_call_over_tcp_with_keepalives_beside_a_junk_connection(
    bridge_factory: StartBridge,
) -> None:
    """SIP over TCP: requests and responses framed by Content-Length on one connection,
    RFC 5626 pings answered, a connection sending junk closed without touching the call."""
    script = FakeScript(
        replies=[Reply("Hello over TCP.", duration_ms=1000)],
        caller_transcripts=["Hello?"],
    )
    sip_port, tcp_port = free_port(), free_port()
    rtp_low = free_port() & ~1
    async with fake_server("openai", script=script) as fake:
        bridge = bridge_factory(
            provider_env(
                fake,
                "openai",
                BRIDGE_SIP_LISTEN=f"udp:127.0.0.1:{sip_port},tcp:127.0.0.1:{tcp_port}",
                BRIDGE_RTP_PORTS=f"{rtp_low}-{rtp_low + 40}",
            )
        )
        loop = asyncio.get_running_loop()
        rtp_t, rtp = await loop.create_datagram_endpoint(_Inbox, local_addr=("127.0.0.1", 0))
        my_rtp = rtp_t.get_extra_info("sockname")[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", tcp_port)
        junk_reader, junk_writer = await asyncio.open_connection("127.0.0.1", tcp_port)
        my_port = writer.get_extra_info("sockname")[1]
        framer = SipStreamFramer()
        inbox: list[SipResponse] = []

        async def tcp_response(status: int) -> SipResponse:
            while True:
                for index, message in enumerate(inbox):
                    if message.status == status:
                        return inbox.pop(index)
                chunk = framer.feed(await asyncio.wait_for(reader.read(65536), 10))
                for data in chunk.messages:
                    parsed = parse_message(data)
                    assert isinstance(parsed, SipResponse)
                    inbox.append(parsed)

        def tcp(method: str, cseq: int, **kw: str) -> bytes:
            data = _request(method, tcp_port, my_port, call_id, cseq, **kw)
            return data.replace(b"SIP/2.0/UDP", b"SIP/2.0/TCP")

        call_id = secrets.token_hex(8) + "@tcp-phone"
        try:
            invite = tcp("INVITE", 1, body=_offer(my_rtp))
            writer.write(invite[:100])  # a stream may cut a message anywhere
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.write(invite[100:])
            ok = await tcp_response(200)
            assert b";transport=tcp" in (ok.get("Contact") or "").encode()
            port = re.search(rb"m=audio (\d+) ", ok.body)
            assert port is not None
            tag = ok.to.tag or ""
            writer.write(tcp("ACK", 1, to_tag=tag) + b"\r\n\r\n")  # ACK, then a ping
            assert await asyncio.wait_for(reader.readexactly(2), 5) == b"\r\n"

            junk_writer.write(b"INVITE sip:x SIP/2.0\r\nVia: nonsense\r\n\r\n")  # no length
            assert await asyncio.wait_for(junk_reader.read(100), 5) == b""  # closed

            speech = load_clip("caller_1") + b"\xff" * 8000 * 3
            bridge_rtp = ("127.0.0.1", int(port[1]))
            start = time.monotonic()
            for n in range(len(speech) // 160):
                frame = speech[n * 160 : (n + 1) * 160]
                rtp_t.sendto(build_packet(0, n, n * 160, 0xCAFE, frame), bridge_rtp)
                await asyncio.sleep(max(0.0, start + (n + 1) * 0.02 - time.monotonic()))
            heard = [parse_packet(rtp.queue.get_nowait()) for _ in range(rtp.queue.qsize())]
            writer.write(tcp("BYE", 2, to_tag=tag))
            await tcp_response(200)
        finally:
            rtp_t.close()
            for w in (writer, junk_writer):
                w.close()

        headers = {"Authorization": f"Bearer {REVIEW_TOKEN}"}
        record: dict[str, Any] | None = None
        async with httpx.AsyncClient(headers=headers) as http:
            for _ in range(100):
                calls = (await http.get(f"{bridge.url}/api/calls")).json()["calls"]
                if calls and calls[0]["status"] != "in_progress":
                    record = (
                        await http.get(f"{bridge.url}/api/calls/{calls[0]['call_sid']}")
                    ).json()
                    break
                await asyncio.sleep(0.1)
    assert sum(1 for p in heard if p is not None and p.payload != b"\xff" * 160) >= 25
    assert record is not None, bridge.log()[-3000:]
    assert (record["channel"], record["sip_call_id"]) == ("sip", call_id)
    assert (record["status"], record["end_reason"]) == ("completed", "caller_hangup")
    assert [t["text"] for t in record["turns"]] == ["Hello?", "Hello over TCP."]
    assert "sip.tcp_unframeable" in bridge.log()
    assert "Traceback" not in bridge.log()
