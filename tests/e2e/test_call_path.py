"""End to end over real sockets: simulator (as Twilio) -> bridge (uvicorn) -> fake model."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import numpy as np
import pytest

from bridge.codecs.clips import load_clip
from bridge.codecs.g711 import ulaw_to_pcm16
from bridge.codecs.pcm import best_alignment, snr_db
from bridge.devtools.fake_script import FakeScript, Reply
from bridge.devtools.simulator import simulate_call

from .conftest import (
    AUTH_TOKEN,
    MODEL_KEY,
    REVIEW_TOKEN,
    RunningBridge,
    fake_server,
    provider_env,
    sample,
    scrape,
)

StartBridge = Callable[[dict[str, str]], RunningBridge]

ONE_TURN = FakeScript(
    replies=[Reply("Our office opens at nine in the morning.", duration_ms=1500)],
    caller_transcripts=["What time do you open?"],
)


async def _call(bridge: RunningBridge, utterances: list[bytes], **kw: object):  # type: ignore[no-untyped-def]
    return await simulate_call(
        bridge.url,
        auth_token=AUTH_TOKEN,
        review_token=REVIEW_TOKEN,
        caller_utterances=utterances,
        max_duration_s=30,
        **kw,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("dialect", ["openai", "inworld", "openai-beta"])
async def test_one_full_turn_arrives_byte_identical(
    dialect: str, bridge_factory: StartBridge
) -> None:
    async with fake_server(dialect, script=ONE_TURN) as fake:
        bridge = bridge_factory(provider_env(fake, dialect))
        result = await _call(bridge, [load_clip("caller_1")])

    assert len(fake.sessions) == 1
    session = fake.sessions[0]
    sent_by_model = b"".join(session.audio_sent.values())
    assert len(sent_by_model) == 1500 * 8
    # pcmu pass-through: what the model said is what reached the phone, to the byte.
    assert result.received_audio == sent_by_model
    assert result.protocol_problems == []
    if dialect == "inworld":
        headers = {k.lower(): v for k, v in session.headers.items()}
        assert headers.get("authorization") == f"Basic {MODEL_KEY}"  # sent verbatim
        assert session.query.get("protocol") == "realtime" and session.query.get("key")
        # Inworld counts packets: audio goes up in batches of at least 60 ms.
        assert min(session.append_sizes[:-1]) >= 480
    else:
        assert min(session.append_sizes) == 160

    record = result.call_record
    assert record is not None
    assert record["status"] == "completed" and record["end_reason"] == "caller_hangup"
    assert [(t["role"], t["text"]) for t in record["turns"]] == [
        ("caller", "What time do you open?"),
        ("agent", "Our office opens at nine in the morning."),
    ]
    caller, agent = record["turns"]
    assert caller["start_ms"] < caller["end_ms"] <= agent["start_ms"] < agent["end_ms"]
    assert agent["end_ms"] - agent["start_ms"] == 1500

    # The same record through the API, and the list.
    headers = {"Authorization": f"Bearer {REVIEW_TOKEN}"}
    async with httpx.AsyncClient(base_url=bridge.url, headers=headers) as http:
        listed = (await http.get("/api/calls")).json()["calls"]
        assert [c["call_sid"] for c in listed] == [result.call_sid]
        assert "turns" not in listed[0]
        one = (await http.get(f"/api/calls/{result.call_sid}")).json()
        assert one["turns"] == record["turns"]
        assert (await http.get("/api/calls")).status_code == 200
        assert (await httpx.AsyncClient(base_url=bridge.url).get("/api/calls")).status_code == 401


@pytest.mark.timing
async def test_barge_in_clears_at_once_and_truncates_at_what_was_heard(
    bridge_factory: StartBridge,
) -> None:
    script = FakeScript(
        replies=[
            Reply(
                "This is a long answer that goes on for four whole seconds, if you let it.",
                duration_ms=4000,
            ),
            Reply("Sorry, go ahead.", duration_ms=800),
        ],
        caller_transcripts=["Tell me everything.", "Wait, stop."],
    )
    async with fake_server("openai", script=script) as fake:
        bridge = bridge_factory(provider_env(fake, "openai"))
        result = await _call(
            bridge, [load_clip("caller_1"), load_clip("caller_2")], barge_in_at=1.0
        )

    session = fake.sessions[0]
    assert len(result.barge_ins) == 1 and len(result.clears) >= 1
    clear = result.clears[0]
    # The fake's VAD fires some time after the caller starts; the first speech_started after
    # the barge-in is the one that must trigger the clear.
    started = [t for t in session.speech_started_at if t >= result.barge_ins[0].started_at]
    assert started, "the fake never heard the caller talk over the agent"
    clear_latency_ms = (clear.at - started[0]) * 1000
    print(f"clear arrived {clear_latency_ms:.1f} ms after speech_started")
    assert 0 <= clear_latency_ms < 50

    truncates = [t for t in session.truncates if t.accepted]
    assert len(truncates) == 1
    heard_ms = clear.segment_played_ms
    print(
        f"truncated at {truncates[0].audio_end_ms} ms; the simulator had played {heard_ms:.0f} ms"
    )
    assert abs(truncates[0].audio_end_ms - heard_ms) <= 40
    assert 900 <= heard_ms <= 2500  # one second in, plus the VAD's reaction time

    record = result.call_record
    assert record is not None
    agent = next(t for t in record["turns"] if t["role"] == "agent")
    assert agent["interrupted"] is True
    assert agent["full_text"].startswith(agent["text"]) and len(agent["text"]) < len(
        agent["full_text"]
    )
    assert abs((agent["end_ms"] - agent["start_ms"]) - truncates[0].audio_end_ms) <= 1
    assert [e["type"] for e in record["events"]].count("barge_in") == 1
    # Nothing of the cut answer was played after the clear.
    assert len(result.received_audio) < 4000 * 8 + 800 * 8

    # What an operator's dashboard shows for this call.
    metrics = await scrape(bridge)
    twilio = {"channel": "twilio"}
    assert sample(metrics, "bridge_calls_started_total", **twilio) == 1
    assert sample(metrics, "bridge_calls_active", **twilio) == 0
    ended = {"status": "completed", "end_reason": "caller_hangup"}
    assert sample(metrics, "bridge_calls_finished_total", **ended) == 1
    assert sample(metrics, "bridge_barge_ins_total") == 1
    # Both questions were answered (one of them talked over the first answer): two turns,
    # each at least the VAD's silence long; one clear, sooner than any turn.
    assert sample(metrics, "bridge_turn_latency_seconds_count", **twilio) == 2
    turn_s = sample(metrics, "bridge_turn_latency_seconds_sum", **twilio)
    assert 0.2 * 2 <= turn_s <= 5.0 * 2
    assert sample(metrics, "bridge_clear_latency_seconds_count", **twilio) == 1
    assert sample(metrics, "bridge_clear_latency_seconds_sum", **twilio) < turn_s / 2
    # The call, its turns, its barge-in and its end were each one store write.
    assert sample(metrics, "bridge_store_write_seconds_count") >= 1 + 4 + 1 + 1
    assert sample(metrics, "bridge_store_queue_depth") == 0
    assert sample(metrics, "bridge_draining") == 0


async def test_pcm24k_path_resamples_faithfully(bridge_factory: StartBridge) -> None:
    source = load_clip("demo_reply_1")
    script = FakeScript(
        replies=[Reply("Our office is open from nine to five.", audio=source)],
        caller_transcripts=["Hours?"],
    )
    async with fake_server("openai", script=script) as fake:
        bridge = bridge_factory(provider_env(fake, "openai", BRIDGE_AUDIO_FORMAT="pcm24k"))
        result = await _call(bridge, [load_clip("caller_1")])

    session = fake.sessions[0]
    assert session.append_sizes and min(session.append_sizes[:-1]) >= 160 * 2 * 3 - 2 * 3 * 60
    ref = np.frombuffer(ulaw_to_pcm16(source), dtype="<i2").astype(np.float64)
    got = np.frombuffer(ulaw_to_pcm16(result.received_audio), dtype="<i2").astype(np.float64)
    lag, corr = best_alignment(ref, got, max_lag=800)
    aligned = got[lag : lag + len(ref)] if lag >= 0 else got[: len(ref)]
    n = min(len(ref), len(aligned))
    snr = snr_db(ref[:n], aligned[:n])
    print(f"pcm24k round trip: lag {lag} samples, correlation {corr:.4f}, SNR {snr:.1f} dB")
    assert corr > 0.95
    assert snr > 15
    record = result.call_record
    assert record is not None and [t["role"] for t in record["turns"]] == ["caller", "agent"]


async def test_greeting_dtmf_and_the_local_demo(bridge_factory: StartBridge) -> None:
    # No key at all: the built-in local agent answers with its recorded demo conversation.
    bridge = bridge_factory({})
    result = await _call(bridge, [load_clip("caller_1")], digits=["7"])
    record = result.call_record
    assert record is not None and record["provider"] == "local"
    roles = [t["role"] for t in record["turns"]]
    assert roles[0] == "agent"  # the greeting comes first
    assert "bridge demo" in record["turns"][0]["text"]
    assert "caller" in roles
    assert {"type": "dtmf", "digit": "7"}.items() <= next(
        e for e in record["events"] if e["type"] == "dtmf"
    ).items()
    assert len(result.heard_audio) > 8000 * 3


async def test_noisy_server_and_late_transcripts_still_make_an_ordered_transcript(
    bridge_factory: StartBridge,
) -> None:
    from bridge.devtools.fake_records import FakeFaults

    faults = FakeFaults(noise=True, late_transcripts=True)
    async with fake_server("openai", script=ONE_TURN, faults=faults) as fake:
        bridge = bridge_factory(provider_env(fake, "openai"))
        result = await _call(bridge, [load_clip("caller_1")])
    assert result.received_audio == b"".join(fake.sessions[0].audio_sent.values())
    record = result.call_record
    assert record is not None
    assert [(t["seq"], t["role"]) for t in record["turns"]] == [(1, "caller"), (2, "agent")]
    assert record["turns"][0]["text"] == "What time do you open?"
