"""Barge-in over SIP, end to end: the bridge owns the RTP clock, so when the model says the
caller started speaking, the agent's RTP stops before its next frame and the truncate tells
the model exactly how much of its answer went out, which is what the caller heard.

How soon the RTP stops in wall-clock time is a figure for the benchmark, not for a test;
here the facts are counted in frames, which a loaded machine does not change."""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections.abc import Callable

from bridge.codecs.clips import load_clip
from bridge.devtools.fake_script import FakeScript, Reply
from bridge.devtools.ports import free_port
from bridge.protocols.rtp import build_packet, parse_packet

from .conftest import RunningBridge, fake_server, provider_env
from .test_sip_call import _Inbox, _offer, _request, _response

StartBridge = Callable[[dict[str, str]], RunningBridge]
SILENCE = b"\xff" * 160


async def test_the_caller_talks_over_the_agent_and_the_truncate_matches_what_was_sent(
    bridge_factory: StartBridge,
) -> None:
    script = FakeScript(
        replies=[
            Reply("A very long answer about everything.", duration_ms=6000),
            Reply("Sorry, go ahead.", duration_ms=800),
        ],
        caller_transcripts=["Tell me everything.", "Wait, stop."],
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
            )
        )
        loop = asyncio.get_running_loop()
        sip_t, sip = await loop.create_datagram_endpoint(_Inbox, local_addr=("127.0.0.1", 0))
        rtp_t, rtp = await loop.create_datagram_endpoint(_Inbox, local_addr=("127.0.0.1", 0))
        my_sip = sip_t.get_extra_info("sockname")[1]
        my_rtp = rtp_t.get_extra_info("sockname")[1]
        target = ("127.0.0.1", sip_port)
        call_id = secrets.token_hex(8) + "@phone"
        # Every agent frame as it arrived: (monotonic time, payload).
        arrivals: list[tuple[float, bytes]] = []
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

            question, interruption = load_clip("caller_1"), load_clip("caller_2")
            outgoing = bytearray(question)
            barged = False
            start = time.monotonic()
            for n in range(1500):  # at most 30 s of call
                if len(outgoing) < 160:
                    outgoing += SILENCE
                frame, outgoing = bytes(outgoing[:160]), outgoing[160:]
                rtp_t.sendto(build_packet(0, n, n * 160, 0xCAFE, frame), bridge_rtp)
                await asyncio.sleep(max(0.0, start + (n + 1) * 0.02 - time.monotonic()))
                while not rtp.queue.empty():
                    packet = parse_packet(rtp.queue.get_nowait())
                    if packet is not None:
                        arrivals.append((time.monotonic(), bytes(packet.payload)))
                voiced = sum(1 for _, payload in arrivals if payload != SILENCE)
                if not barged and voiced >= 50:  # a second of the answer heard: talk over it
                    barged = True
                    outgoing = bytearray(interruption)
                if barged and len(fake.sessions[0].truncates) == 1 and not outgoing:
                    break
            sip_t.sendto(_request("BYE", sip_port, my_sip, call_id, 2, to_tag=tag), target)
            await _response(sip, 200)
        finally:
            sip_t.close()
            rtp_t.close()

    session = fake.sessions[0]
    assert len(session.speech_started_at) == 2, bridge.log()[-3000:]
    [truncate] = session.truncates
    assert truncate.accepted
    cut_at = session.speech_started_at[1]
    # What went out of the long answer: voiced frames up to the first silent one after it.
    first_voiced = next(i for i, (_, p) in enumerate(arrivals) if p != SILENCE)
    answer_frames = 0
    for _, payload in arrivals[first_voiced:]:
        if payload == SILENCE:
            break
        answer_frames += 1
    # The answer was cut, not played out (6 s would be 300 frames) ...
    assert 50 <= answer_frames < 250
    # ... and the truncate says exactly how much of it went out, within one frame.
    assert abs(truncate.audio_end_ms - answer_frames * 20) <= 20
    # After the cut the line carries silence, then only the short apology-free answer.
    after_cut = [p for at, p in arrivals if at > cut_at + 0.5]
    assert sum(1 for p in after_cut if p != SILENCE) <= 800 // 20 + 2
