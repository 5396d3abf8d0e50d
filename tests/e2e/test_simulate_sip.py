"""``bridge simulate --sip`` as a user runs it: a child process acts as a SIP phone against a
bridge's SIP listener, keys DTMF, writes what it heard and prints the transcript it fetched
from the bridge's API. The phone answers a digest challenge when the bridge asks, and what it
sends is read back with the bridge's own SIP server and RTP receiver."""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import cast

import httpx
import pytest

from bridge.codecs.clips import load_clip
from bridge.codecs.wav import read_wav_as_ulaw8k, write_ulaw8k_wav
from bridge.devtools.fake_script import FakeScript, Reply
from bridge.devtools.ports import free_port
from bridge.devtools.sip_phone import SipCallError, SipPhone
from bridge.devtools.sip_simulator import fetch_sip_record
from bridge.protocols.rtp import DtmfDigit, RtpPacket, RtpReceiver, parse_packet
from bridge.protocols.sip.uas import CallOffered, SipServer, UasConfig

from .conftest import REVIEW_TOKEN, RunningBridge, fake_server, provider_env

StartBridge = Callable[[dict[str, str]], RunningBridge]

AGENT_LINE = "Hello from the bridge over SIP."
SILENT_FRAME = b"\xff" * 160


def _sip_env(sip_port: int, **extra: str) -> dict[str, str]:
    rtp_low = free_port() & ~1
    return {
        "BRIDGE_SIP_LISTEN": f"udp:127.0.0.1:{sip_port}",
        "BRIDGE_RTP_PORTS": f"{rtp_low}-{rtp_low + 40}",
        **extra,
    }


def _child_env() -> dict[str, str]:
    """The simulator's environment: nothing of the bridge's own settings leaks into it."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("BRIDGE_", "TWILIO_", "OPENAI_", "INWORLD_", "AZURE_"))
    }


async def _run(args: list[str], cwd: Path, limit_s: float) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_child_env(),
        cwd=cwd,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), limit_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.timeout(90)
async def test_simulate_sip_calls_keys_digits_and_prints_the_transcript(
    bridge_factory: StartBridge, tmp_path: Path
) -> None:
    script = FakeScript(
        replies=[Reply(AGENT_LINE, duration_ms=1500)],
        caller_transcripts=["Hi, is this the bridge?"],
    )
    sip_port = free_port()
    caller_wav = tmp_path / "caller.wav"
    write_ulaw8k_wav(caller_wav, load_clip("caller_1"))
    reply_wav = tmp_path / "reply.wav"
    async with fake_server("openai", script=script) as fake:
        bridge = bridge_factory(provider_env(fake, "openai", **_sip_env(sip_port)))
        code, out, err = await _run(
            [
                "simulate",
                "--sip",
                f"sip:agent@127.0.0.1:{sip_port}",
                "--url",
                bridge.url,
                "--review-token",
                REVIEW_TOKEN,
                "--audio",
                str(caller_wav),
                "--out",
                str(reply_wav),
                "--dtmf",
                "42",
                "--max-duration",
                "45",
            ],
            tmp_path,
            limit_s=75,
        )
        assert code == 0, f"stdout:\n{out}\nstderr:\n{err}\nbridge:\n{bridge.log()[-3000:]}"
        header = re.search(r"call (SI\w+) \(SIP Call-ID (\S+)\): (\d+) barge-in", out)
        assert header is not None, out
        call_sid, call_id = header[1], header[2]
        async with httpx.AsyncClient() as http:
            record = (
                await http.get(
                    f"{bridge.url}/api/calls/{call_sid}",
                    headers={"Authorization": f"Bearer {REVIEW_TOKEN}"},
                )
            ).json()

    # The printed transcript is format_transcript's: the caller's turn, the agent's line.
    assert re.search(r"\]\s+caller: Hi, is this the bridge\?", out), out
    assert re.search(rf"\]\s+agent: {re.escape(AGENT_LINE)}", out), out
    assert "* dtmf (digit=4)" in out and "* dtmf (digit=2)" in out, out
    # What the phone heard: the agent's voice, not just the silence RTP carries between turns.
    heard = read_wav_as_ulaw8k(reply_wav)
    frames = [heard[n : n + 160] for n in range(0, len(heard) - 159, 160)]
    assert sum(1 for frame in frames if frame != SILENT_FRAME) >= 50  # 1.5 s of reply
    assert record["channel"] == "sip" and record["sip_call_id"] == call_id
    assert (record["status"], record["end_reason"]) == ("completed", "caller_hangup")
    assert [e["digit"] for e in record["events"] if e["type"] == "dtmf"] == ["4", "2"]
    assert "Traceback" not in err and "Traceback" not in bridge.log()


@pytest.mark.timeout(60)
async def test_the_phone_answers_a_digest_challenge_and_is_refused_without_credentials(
    bridge_factory: StartBridge,
) -> None:
    sip_port = free_port()
    script = FakeScript(replies=[Reply(AGENT_LINE, duration_ms=500)])
    async with fake_server("openai", script=script) as fake:
        # 127.0.0.1 is outside the allow-list, so every INVITE from the phone is challenged.
        env = _sip_env(
            sip_port,
            BRIDGE_SIP_ALLOW="192.0.2.0/24",
            BRIDGE_SIP_USERNAME="phone",
            BRIDGE_SIP_PASSWORD="s3cret",
        )
        bridge = bridge_factory(provider_env(fake, "openai", **env))
        target = f"sip:agent@127.0.0.1:{sip_port}"

        async with SipPhone(target, timeout_s=5) as anonymous:
            with pytest.raises(SipCallError, match="digest") as refused:
                await anonymous.dial()
        assert refused.value.status == 401

        async with SipPhone(target, username="phone", password="wrong", timeout_s=5) as liar:
            with pytest.raises(SipCallError, match="refused the credentials"):
                await liar.dial()

        async with SipPhone(target, username="phone", password="s3cret", timeout_s=5) as phone:
            answer = await phone.dial()
            assert phone.stats.auth_rounds == 1
            assert answer.codec == "PCMU" and answer.telephone_event == 101
            await asyncio.sleep(1.0)
            await phone.hang_up()
        assert phone.hung_up_by == "caller"
        assert len(phone.received) >= 30  # a second of the bridge's RTP, 20 ms apart
        record = await fetch_sip_record(bridge.url, phone.call_id, REVIEW_TOKEN)
    assert record is not None, bridge.log()[-3000:]
    assert record["status"] == "completed" and record["from"] == "+15551230000"


class _Uas(asyncio.DatagramProtocol):
    """The bridge's own sans-I/O SIP server on a socket, answering every call with RTP to
    ``rtp_port``: a peer for the phone without a bridge process."""

    def __init__(self) -> None:
        self.server: SipServer | None = None
        self.transport: asyncio.DatagramTransport | None = None
        self.rtp_port = 0
        self.events: list[object] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.server is not None
        self.server.receive_datagram(data, (addr[0], addr[1]), asyncio.get_running_loop().time())
        self.pump()

    def pump(self) -> None:
        assert self.server is not None and self.transport is not None
        now = asyncio.get_running_loop().time()
        for _ in range(10):
            for data, to in self.server.datagrams_to_send():
                self.transport.sendto(data, to)
            events = self.server.events_received()
            if not events:
                return
            for event in events:
                self.events.append(event)
                if isinstance(event, CallOffered):
                    self.server.answer(event.call_id, self.rtp_port, now)


class _Sink(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.packets: list[tuple[bytes, tuple[str, int], float]] = []

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.packets.append((data, (addr[0], addr[1]), asyncio.get_running_loop().time()))


@pytest.mark.timeout(30)
async def test_the_phone_sends_paced_symmetric_rtp_and_rfc4733_digits_and_takes_a_bye() -> None:
    loop = asyncio.get_running_loop()
    sip_t, uas = await loop.create_datagram_endpoint(_Uas, local_addr=("127.0.0.1", 0))
    rtp_t, sink = await loop.create_datagram_endpoint(_Sink, local_addr=("127.0.0.1", 0))
    port = sip_t.get_extra_info("sockname")[1]
    uas.server = SipServer(UasConfig(advertise_host="127.0.0.1", port=port))
    uas.rtp_port = rtp_t.get_extra_info("sockname")[1]
    try:
        async with SipPhone(f"sip:agent@127.0.0.1:{port}", timeout_s=5) as phone:
            answer = await phone.dial()
            assert (answer.remote_port, answer.telephone_event) == (uas.rtp_port, 101)
            phone.send_audio(load_clip("caller_1")[:8000])  # one second
            phone.send_dtmf("42")
            await asyncio.sleep(1.2)
            await phone.hang_up()
        assert phone.hung_up_by == "caller"
        assert [type(e).__name__ for e in uas.events] == [
            "CallOffered",
            "CallEstablished",
            "CallEnded",
        ]

        # The bridge hangs up: the phone answers its BYE and knows who ended the call.
        async with SipPhone(f"sip:agent@127.0.0.1:{port}", timeout_s=5) as other:
            await other.dial()
            offered = [e for e in uas.events if isinstance(e, CallOffered)][-1]
            uas.server.hang_up(offered.call_id, loop.time())
            uas.pump()
            await asyncio.wait_for(other.ended.wait(), 5)
            assert other.hung_up_by == "bridge"
            await other.hang_up()  # nothing left to do, and no error
    finally:
        sip_t.close()
        rtp_t.close()

    ours = [(data, at) for data, addr, at in sink.packets if addr[1] == phone.rtp_port]
    # Symmetric RTP: everything came from the port the phone offered in its SDP.
    first_call = [p for p in (parse_packet(d) for d, _ in ours) if p is not None]
    assert len(first_call) >= 55  # 1.2 s of 20 ms packets, give or take the start
    assert all((b.sequence - a.sequence) % 65536 == 1 for a, b in itertools.pairwise(first_call))
    events = [p for p in first_call if p.payload_type == 101]
    by_timestamp: dict[int, list[RtpPacket]] = {}
    for packet in events:
        by_timestamp.setdefault(packet.timestamp, []).append(packet)
    assert len(by_timestamp) == 2
    for packets, code in zip(by_timestamp.values(), (4, 2), strict=True):
        assert [p.payload[0] for p in packets] == [code] * len(packets)
        assert [p.marker for p in packets] == [True] + [False] * (len(packets) - 1)
        ends = [p for p in packets if p.payload[1] & 0x80]
        assert len(ends) == 3 and packets[-3:] == ends  # the end packet, three times
        durations = [int.from_bytes(p.payload[2:4], "big") for p in packets]
        assert durations == sorted(durations) and len({*durations[-3:]}) == 1
    # The bridge's own receiver reads exactly one press of each key.
    receiver = RtpReceiver(0, 101)
    for data, at in ours:
        receiver.receive_datagram(data, ("127.0.0.1", phone.rtp_port), at)
    digits = [e.digit for e in receiver.events_received() if isinstance(e, DtmfDigit)]
    assert digits == ["4", "2"]
    # Paced on a 20 ms grid: over the call, packets arrive at 50 a second.
    span = ours[-1][1] - ours[0][1]
    assert abs(span - (len(ours) - 1) * 0.020) < 0.1
