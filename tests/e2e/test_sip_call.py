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

import httpx
import numpy as np

from bridge.codecs.clips import load_clip
from bridge.devtools.fake_script import FakeScript, Reply
from bridge.devtools.ports import free_port, free_port_block
from bridge.protocols.rtp import build_packet, parse_packet
from bridge.protocols.sip.message import SipRequest, SipResponse, parse_message
from bridge.protocols.sip.stream import SipStreamFramer

from .conftest import REVIEW_TOKEN, RunningBridge, fake_server
from .raw_sip import SILENCE, Inbox, RawPhone, finished_record, offer, request, sip_env

StartBridge = Callable[[dict[str, str]], RunningBridge]


async def test_a_sip_phone_talks_to_the_agent_and_the_call_is_logged(
    bridge_factory: StartBridge, tmp_path: Path
) -> None:
    script = FakeScript(
        replies=[Reply("Hello from the bridge over SIP.", duration_ms=1500)],
        caller_transcripts=["Hi, is this the bridge?"],
    )
    async with fake_server("openai", script=script) as fake:
        env, sip_port = sip_env(
            fake, BRIDGE_RECORDINGS="1", BRIDGE_RECORDINGS_DIR=str(tmp_path / "rec")
        )
        bridge = bridge_factory(env)
        phone = RawPhone(sip_port)
        await phone.open()
        try:
            await phone.dial()
            # The caller speaks in real time, then listens; the agent's RTP comes back.
            heard: list[bytes] = []
            await phone.talk(load_clip("caller_1") + SILENCE * 300, heard)
            await phone.hang_up()
        finally:
            phone.close()
        record = await finished_record(bridge)

    # The agent's audio came back as 20 ms PCMU frames: the greeting-free reply, not silence.
    assert len(heard) > 200 and all(len(p) == 160 for p in heard)
    assert sum(1 for p in heard if p != SILENCE) >= 50
    assert record is not None, bridge.log()[-3000:]
    assert record["channel"] == "sip" and record["call_sid"].startswith("SI")
    assert record["sip_call_id"] == phone.call_id
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


async def test_a_bridge_listening_on_every_address_serves_an_ipv4_phone(
    bridge_factory: StartBridge,
) -> None:
    # On "::" the SIP and RTP sockets take IPv4 peers as IPv4-mapped IPv6 addresses: the
    # allow-list must still see 127.0.0.1, and the bridge's first RTP packet (sent to the
    # offer's plain IPv4 address before the caller's RTP arrives) must not fail.
    script = FakeScript(
        replies=[Reply("Hello over every address.", duration_ms=1500)],
        caller_transcripts=["Can you hear me?"],
    )
    async with fake_server("openai", script=script) as fake:
        env, sip_port = sip_env(fake)
        bridge = bridge_factory(env | {"BRIDGE_SIP_LISTEN": f"udp:[::]:{sip_port}"})
        phone = RawPhone(sip_port)
        await phone.open()
        try:
            ok = await phone.dial()
            heard: list[bytes] = []
            await phone.talk(load_clip("caller_1") + SILENCE * 300, heard)
            await phone.hang_up()
        finally:
            phone.close()
        record = await finished_record(bridge)

    assert ok.vias[0].params.get("received") in (None, "127.0.0.1")
    assert sum(1 for p in heard if p != SILENCE) >= 50
    assert record is not None, bridge.log()[-3000:]
    assert (record["status"], record["end_reason"]) == ("completed", "caller_hangup")
    assert [t["text"] for t in record["turns"]] == ["Can you hear me?", "Hello over every address."]
    assert "Traceback" not in bridge.log() and '"level": "error"' not in bridge.log()


async def test_callers_who_cancel_before_the_answer_get_487_and_leave_nothing_behind(
    bridge_factory: StartBridge,
) -> None:
    # Four RTP ports: a cancelled call that kept its port would leave the later callers none.
    rtp_low = free_port_block(8, even=True)
    async with fake_server("openai", script=FakeScript(replies=[])) as fake:
        env, sip_port = sip_env(fake, BRIDGE_RTP_PORTS=f"{rtp_low}-{rtp_low + 7}")
        bridge = bridge_factory(env)
        gave_up: list[str] = []
        answered_first = 0
        for _ in range(6):
            phone = RawPhone(sip_port)
            await phone.open()
            try:
                if await _invite_and_cancel_at_once(phone):
                    gave_up.append(phone.call_id)
                else:
                    answered_first += 1
            finally:
                phone.close()
        # Then a caller who stays is answered as usual.
        stays = RawPhone(sip_port)
        await stays.open()
        try:
            await stays.dial()
            await stays.talk(SILENCE * 10)
            await stays.hang_up()
        finally:
            stays.close()
        record = await finished_record(bridge)

    # The bridge answers as soon as it has an RTP port; the CANCEL, sent right behind the
    # INVITE, nearly always gets there first. A machine busy enough to let the answer win
    # now and then must not fail the test, but it must not win often.
    assert len(gave_up) >= 4, f"only {len(gave_up)} of 6 CANCELs came before the answer"
    assert record is not None, bridge.log()[-3000:]
    assert record["sip_call_id"] == stays.call_id
    assert (record["status"], record["end_reason"]) == ("completed", "caller_hangup")
    headers = {"Authorization": f"Bearer {REVIEW_TOKEN}"}
    async with httpx.AsyncClient(headers=headers) as http:
        calls = (await http.get(f"{bridge.url}/api/calls", params={"limit": 50})).json()
    logged = {call["sip_call_id"] for call in calls["calls"]}
    assert not logged & set(gave_up), "a cancelled call left a record"
    assert len(logged) == 1 + answered_first
    errors = [line for line in bridge.log().splitlines() if '"level": "error"' in line]
    assert not errors and "Traceback" not in bridge.log(), bridge.log()[-5000:]


async def _invite_and_cancel_at_once(phone: RawPhone) -> bool:
    """INVITE and its CANCEL back to back, before the 100 Trying, so that the CANCEL is read
    before the bridge can answer. True if the call was cancelled (200 for the CANCEL with
    the answer's To tag, then 487, which is acknowledged); False if the answer won the race
    (then the call is acknowledged and hung up as a caller would)."""
    branch = "z9hG4bK" + secrets.token_hex(6)
    phone.send("INVITE", body=offer(phone.my_rtp), branch=branch)
    phone.send("CANCEL", branch=branch)
    final: SipResponse | None = None
    cancel_ok: SipResponse | None = None
    while final is None or cancel_ok is None:
        message = parse_message(await asyncio.wait_for(phone.sip.queue.get(), 10))
        assert isinstance(message, SipResponse), message
        if message.cseq.method == "CANCEL":
            assert message.status == 200, message
            cancel_ok = message
        elif message.status >= 200:
            final = message
    if final.status == 200:
        phone.tag = final.to.tag or ""
        phone.send("ACK")
        await phone.hang_up()
        return False
    assert final.status == 487, final
    # RFC 3261 9.2: the 200 for the CANCEL carries the To tag the INVITE's response has.
    assert cancel_ok.to.tag == final.to.tag
    phone.tag = final.to.tag or ""
    phone.send("ACK", branch=branch)
    return True


async def test_a_call_on_hold_outlasts_the_idle_timeout_and_resumes(
    bridge_factory: StartBridge,
) -> None:
    """On hold a PBX sends no RTP (or music we must not answer): the bridge answers
    recvonly, stops its own RTP, and does not take the silence for a dead call."""
    async with fake_server("openai", script=FakeScript(replies=[])) as fake:
        env, sip_port = sip_env(fake, BRIDGE_IDLE_TIMEOUT_S="1.5")
        bridge = bridge_factory(env)
        phone = RawPhone(sip_port)
        await phone.open()
        try:
            await phone.dial()
            await phone.talk(SILENCE * 25)
            assert phone.rtp.drain() > 10  # the bridge's RTP flows while the call is up

            held = await phone.reinvite("sendonly")
            assert b"a=recvonly" in held.body
            await asyncio.sleep(0.2)
            phone.rtp.drain()
            await asyncio.sleep(3.0)  # twice the idle timeout, in silence both ways
            assert phone.rtp.drain() == 0
            assert phone.sip.drain() == 0, "2xx resent after its ACK"

            resumed = await phone.reinvite("sendrecv")
            assert b"a=sendrecv" in resumed.body
            await phone.talk(SILENCE * 25)
            assert phone.rtp.drain() > 10
            await phone.hang_up()  # a dead call would have answered 481
        finally:
            phone.close()
        record = await finished_record(bridge)
    assert record is not None, bridge.log()[-3000:]
    assert (record["channel"], record["end_reason"]) == ("sip", "caller_hangup")
    assert "phone.idle" not in bridge.log()


async def test_a_caller_whose_rtp_stops_is_hung_up_as_timeout(
    bridge_factory: StartBridge,
) -> None:
    async with fake_server("openai", script=FakeScript(replies=[])) as fake:
        env, sip_port = sip_env(fake, BRIDGE_IDLE_TIMEOUT_S="1.0")
        bridge = bridge_factory(env)
        phone = RawPhone(sip_port)
        await phone.open()
        try:
            await phone.dial()
            await phone.talk(SILENCE * 10)  # then nothing: the phone's network went away
            bye = parse_message(await asyncio.wait_for(phone.sip.queue.get(), 10))
            assert isinstance(bye, SipRequest) and bye.method == "BYE"
        finally:
            phone.close()
        record = await finished_record(bridge)
    assert record is not None, bridge.log()[-3000:]
    assert (record["channel"], record["end_reason"]) == ("sip", "timeout")
    assert len(fake.sessions) == 1 and "Traceback" not in bridge.log()


async def test_a_call_over_tcp_with_keepalives_beside_a_junk_connection(
    bridge_factory: StartBridge,
) -> None:
    """SIP over TCP: requests and responses framed by Content-Length on one connection,
    RFC 5626 pings answered, a connection sending junk closed without touching the call."""
    script = FakeScript(
        replies=[Reply("Hello over TCP.", duration_ms=1000)],
        caller_transcripts=["Hello?"],
    )
    tcp_port = free_port()
    async with fake_server("openai", script=script) as fake:
        env, _ = sip_env(fake)
        env["BRIDGE_SIP_LISTEN"] += f",tcp:127.0.0.1:{tcp_port}"
        bridge = bridge_factory(env)
        loop = asyncio.get_running_loop()
        rtp_t, rtp = await loop.create_datagram_endpoint(Inbox, local_addr=("127.0.0.1", 0))
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
            data = request(method, tcp_port, my_port, call_id, cseq, **kw)
            return data.replace(b"SIP/2.0/UDP", b"SIP/2.0/TCP")

        call_id = secrets.token_hex(8) + "@tcp-phone"
        try:
            invite = tcp("INVITE", 1, body=offer(my_rtp))
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

        record = await finished_record(bridge)
    assert sum(1 for p in heard if p is not None and p.payload != b"\xff" * 160) >= 25
    assert record is not None, bridge.log()[-3000:]
    assert (record["channel"], record["sip_call_id"]) == ("sip", call_id)
    assert (record["status"], record["end_reason"]) == ("completed", "caller_hangup")
    assert [t["text"] for t in record["turns"]] == ["Hello?", "Hello over TCP."]
    assert "sip.tcp_unframeable" in bridge.log()
    assert "Traceback" not in bridge.log()


async def test_a_bye_in_the_same_segment_as_the_ack_ends_the_call_and_its_model_session(
    bridge_factory: StartBridge,
) -> None:
    """A caller who hangs up the moment the call is answered. Over TCP the ACK and the BYE
    can arrive in one read, so the bridge learns of both before the call's session has
    started: the call must still end as the caller's hang-up, at once, with the model
    session it opened closed, not live on until the idle timeout."""
    tcp_port = free_port()
    async with fake_server("openai", script=FakeScript(replies=[])) as fake:
        env, _ = sip_env(fake, BRIDGE_IDLE_TIMEOUT_S="60")
        env["BRIDGE_SIP_LISTEN"] = f"tcp:127.0.0.1:{tcp_port}"
        bridge = bridge_factory(env)
        reader, writer = await asyncio.open_connection("127.0.0.1", tcp_port)
        my_port = writer.get_extra_info("sockname")[1]
        call_id = secrets.token_hex(8) + "@tcp-phone"
        framer = SipStreamFramer()

        def tcp(method: str, cseq: int, **kw: str) -> bytes:
            data = request(method, tcp_port, my_port, call_id, cseq, **kw)
            return data.replace(b"SIP/2.0/UDP", b"SIP/2.0/TCP")

        async def final_response(cseq: int) -> SipResponse:
            while True:
                for data in framer.feed(await asyncio.wait_for(reader.read(65536), 10)).messages:
                    message = parse_message(data)
                    final = isinstance(message, SipResponse) and message.status >= 200
                    if final and message.cseq.number == cseq:
                        assert isinstance(message, SipResponse)
                        return message

        try:
            writer.write(tcp("INVITE", 1, body=offer(free_port())))
            ok = await final_response(1)
            assert ok.status == 200
            tag = ok.to.tag or ""
            writer.write(tcp("ACK", 1, to_tag=tag) + tcp("BYE", 2, to_tag=tag))
            assert (await final_response(2)).status == 200
        finally:
            writer.close()
        record = await finished_record(bridge)
        assert record is not None, "the call outlived its caller:\n" + bridge.log()[-3000:]
        for _ in range(50):
            if all(session.closed for session in fake.sessions):
                break
            await asyncio.sleep(0.1)
        assert all(session.closed for session in fake.sessions), "a model session was left open"
    assert (record["status"], record["end_reason"]) == ("completed", "caller_hangup")
    assert record["sip_call_id"] == call_id
    assert "Traceback" not in bridge.log() and '"level": "error"' not in bridge.log()
