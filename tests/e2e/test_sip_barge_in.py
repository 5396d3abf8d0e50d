"""Barge-in over SIP, end to end: the bridge owns the RTP clock, so when the model says the
caller started speaking, the agent's RTP stops before its next frame and the truncate tells
the model exactly how much of its answer went out, which is what the caller heard.

How soon the RTP stops in wall-clock time is a figure for the benchmark, not for a test;
here the facts are counted in frames, which a loaded machine does not change."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from bridge.codecs.clips import load_clip
from bridge.devtools.fake_script import FakeScript, Reply

from .conftest import RunningBridge, fake_server
from .raw_sip import SILENCE, RawPhone, sip_env

StartBridge = Callable[[dict[str, str]], RunningBridge]


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
    async with fake_server("openai", script=script) as fake:
        env, sip_port = sip_env(fake)
        bridge = bridge_factory(env)
        phone = RawPhone(sip_port)
        await phone.open()
        # Every agent frame as it arrived: (monotonic time, payload).
        arrivals: list[tuple[float, bytes]] = []
        try:
            await phone.dial()
            question, interruption = load_clip("caller_1"), load_clip("caller_2")
            outgoing = bytearray(question)
            barged = False
            start = time.monotonic()
            for n in range(1500):  # at most 30 s of call
                if len(outgoing) < 160:
                    outgoing += SILENCE
                frame, outgoing = bytes(outgoing[:160]), outgoing[160:]
                phone.send_rtp(frame)
                await asyncio.sleep(max(0.0, start + (n + 1) * 0.02 - time.monotonic()))
                arrivals += [(time.monotonic(), payload) for payload in phone.received()]
                voiced = sum(1 for _, payload in arrivals if payload != SILENCE)
                if not barged and voiced >= 50:  # a second of the answer heard: talk over it
                    barged = True
                    outgoing = bytearray(interruption)
                if barged and len(fake.sessions[0].truncates) == 1 and not outgoing:
                    break
            await phone.hang_up()
        finally:
            phone.close()

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
    # ... and the truncate says exactly how much of it went out: not a frame more, however
    # far between two frames the model's speech_started came.
    assert truncate.audio_end_ms == answer_frames * 20
    # After the cut the line carries silence, then only the short apology-free answer.
    after_cut = [p for at, p in arrivals if at > cut_at + 0.5]
    assert sum(1 for p in after_cut if p != SILENCE) <= 800 // 20 + 2
