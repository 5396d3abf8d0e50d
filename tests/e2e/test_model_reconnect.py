"""A model session that fails mid-call is replaced and the caller carries on: a dropped socket
(close 1011, a TCP reset), a session at its provider's limit (rolled over between turns),
and a provider that cannot serve the call at all (the fallback provider takes it)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from bridge.codecs.clips import load_clip
from bridge.devtools.fake_realtime import FakeRealtimeServer
from bridge.devtools.fake_records import FakeFaults, FakeSessionRecord
from bridge.devtools.fake_script import FakeScript, Reply
from bridge.devtools.simulator import SimulationResult, simulate_call

from .conftest import (
    AUTH_TOKEN,
    MODEL_KEY,
    REVIEW_TOKEN,
    RunningBridge,
    fake_server,
    free_port,
    provider_env,
)

StartBridge = Callable[[dict[str, str]], RunningBridge]

QUESTIONS = ["What time do you open?", "And when do you close?", "Are you open on Sunday?"]
ANSWERS = ["We open at nine.", "We close at five.", "Sundays we are closed."]
SCRIPT = FakeScript(
    replies=[Reply(text, duration_ms=1200) for text in ANSWERS],
    caller_transcripts=QUESTIONS,
)


async def _call(bridge: RunningBridge, turns: int, **kw: Any) -> SimulationResult:
    clips = [load_clip(f"caller_{n}") for n in (1, 2, 3)]
    return await simulate_call(
        bridge.url,
        auth_token=AUTH_TOKEN,
        review_token=REVIEW_TOKEN,
        caller_utterances=[clips[n % 3] for n in range(turns)],
        max_duration_s=kw.pop("max_duration_s", 40),
        **kw,
    )


async def _wait_for(check: Callable[[], bool], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("the condition never came true")
        await asyncio.sleep(0.01)


def _seeded(session: FakeSessionRecord) -> list[tuple[str, str]]:
    """The text items a session was given by the client: the call so far."""
    out = []
    for event in session.client_events_of("conversation.item.create"):
        item = event["item"]
        if item.get("type") == "message":
            out.append((item["role"], item["content"][0]["text"]))
    return out


def _said(record: dict[str, Any]) -> list[tuple[str, str]]:
    return [(t["role"], t["text"]) for t in record["turns"]]


def _reconnects(record: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for e in record["events"] if e["type"] == "reconnect"]


@pytest.mark.timing
@pytest.mark.parametrize("how", ["1011", "reset"])
async def test_a_dropped_session_is_replaced_within_a_second_and_the_call_goes_on(
    how: str, bridge_factory: StartBridge
) -> None:
    async with fake_server("openai", script=SCRIPT, continue_script=True) as fake:
        bridge = bridge_factory(provider_env(fake, "openai"))
        dropped_at: list[float] = []

        async def drop_after_the_first_answer() -> None:
            await _wait_for(lambda: bool(fake.sessions and fake.sessions[0].responses))
            dropped_at.append(time.monotonic())
            assert fake.drop_sessions(how) == 1

        dropper = asyncio.create_task(drop_after_the_first_answer())
        result = await _call(bridge, turns=2)
        await asyncio.wait_for(dropper, 5)

    assert len(fake.sessions) == 2
    first, second = fake.sessions
    assert second.opened_at - dropped_at[0] < 1.0
    # The new session knows the call so far, as text, and was configured the same way.
    assert _seeded(second) == [("user", QUESTIONS[0]), ("assistant", ANSWERS[0])]
    assert (
        second.client_events_of("session.update")[0]["session"]["instructions"]
        == (first.client_events_of("session.update")[0]["session"]["instructions"])
    )
    # The caller's next question was answered by the new session.
    assert len(second.responses) == 1
    record = result.call_record
    assert record is not None
    assert (record["status"], record["end_reason"]) == ("completed", "caller_hangup")
    assert _said(record) == [
        ("caller", QUESTIONS[0]),
        ("agent", ANSWERS[0]),
        ("caller", QUESTIONS[1]),
        ("agent", ANSWERS[1]),
    ]
    assert [(e["reason"], e["provider"]) for e in _reconnects(record)] == [("dropped", "openai")]
    assert record["providers"] == ["openai"]
    assert result.protocol_problems == []


async def test_an_answer_cut_by_a_drop_is_not_replayed(bridge_factory: StartBridge) -> None:
    script = FakeScript(
        replies=[Reply(ANSWERS[0], duration_ms=4000), Reply(ANSWERS[1], duration_ms=1200)],
        caller_transcripts=QUESTIONS,
    )
    async with fake_server("openai", script=script, realtime_factor=1.0) as fake:
        fake.continue_script = True
        bridge = bridge_factory(provider_env(fake, "openai"))

        async def drop_mid_answer() -> None:
            # A second of the four-second answer has been streamed (at real time).
            await _wait_for(lambda: bool(fake.sessions and fake.sessions[0].audio_chunks))
            await asyncio.sleep(1.0)
            fake.drop_sessions("1011")

        dropper = asyncio.create_task(drop_mid_answer())
        result = await _call(bridge, turns=2)
        await asyncio.wait_for(dropper, 5)

    assert len(fake.sessions) == 2
    second = fake.sessions[1]
    # No response was asked for: the caller heard part of the answer and took it from there.
    assert second.client_events_of("response.create") == []
    assert len(second.responses) == 1  # the answer to the caller's next question
    record = result.call_record
    assert record is not None
    roles = [t["role"] for t in record["turns"]]
    assert roles == ["caller", "agent", "caller", "agent"]
    cut = record["turns"][1]
    # What arrived before the drop played out, and no more: about a second of four.
    assert 600 <= cut["end_ms"] - cut["start_ms"] <= 2000
    assert record["turns"][3]["text"] == ANSWERS[1]


async def test_a_session_at_its_limit_is_rolled_over_between_turns(
    bridge_factory: StartBridge,
) -> None:
    # Sessions of 15 s stand in for OpenAI's 60 minutes: a call of five turns (about 45 s)
    # outlives two of them and more, as a 65-minute call would outlive its first session.
    script = FakeScript(
        replies=[Reply(f"Answer number {n}.", duration_ms=1500) for n in range(1, 6)],
        caller_transcripts=[f"Question number {n}?" for n in range(1, 6)],
    )
    async with fake_server(
        "openai", script=script, session_limit_s=15.0, continue_script=True
    ) as fake:
        bridge = bridge_factory(provider_env(fake, "openai"))
        result = await _call(bridge, turns=5, reply_silence_s=4.0, max_duration_s=70)

    record = result.call_record
    assert record is not None
    reasons = [e["reason"] for e in _reconnects(record)]
    assert reasons.count("rollover") >= 2
    assert "expired" not in reasons and "dropped" not in reasons  # never hit the limit
    expected = []
    for n in range(1, 6):
        expected += [("caller", f"Question number {n}?"), ("agent", f"Answer number {n}.")]
    assert _said(record) == expected  # no turn lost
    assert all(not t.get("interrupted") for t in record["turns"])
    assert len(fake.sessions) == 1 + reasons.count("rollover")
    # Every fresh session was told the call so far.
    for session in fake.sessions[1:]:
        assert _seeded(session)[:2] == [
            ("user", "Question number 1?"),
            ("assistant", "Answer number 1."),
        ]


async def test_a_session_that_expires_anyway_is_replaced(bridge_factory: StartBridge) -> None:
    # Never quiet long enough to roll over: the provider's own session_expired and its 1001
    # close are handled like a drop.
    script = FakeScript(
        replies=[Reply(f"Answer number {n}.", duration_ms=1000) for n in range(1, 4)],
        caller_transcripts=[f"Question number {n}?" for n in range(1, 4)],
    )
    async with fake_server(
        "openai", script=script, session_limit_s=8.0, continue_script=True
    ) as fake:
        bridge = bridge_factory(provider_env(fake, "openai"))
        result = await _call(bridge, turns=3, reply_silence_s=0.5)

    record = result.call_record
    assert record is not None
    assert record["status"] == "completed"
    reasons = {e["reason"] for e in _reconnects(record)}
    assert reasons & {"expired", "rollover"}
    assert [t["text"] for t in record["turns"] if t["role"] == "agent"] == [
        f"Answer number {n}." for n in range(1, 4)
    ]


def _fallback_env(primary_url: str, fallback: FakeRealtimeServer) -> dict[str, str]:
    return {
        "BRIDGE_PROVIDER": "openai",
        "OPENAI_API_KEY": MODEL_KEY,
        "BRIDGE_REALTIME_URL": primary_url,
        "BRIDGE_FALLBACK_PROVIDER": "inworld",
        "INWORLD_API_KEY": MODEL_KEY,
        "BRIDGE_FALLBACK_REALTIME_URL": fallback.url,
    }


async def test_a_primary_that_refuses_connections_leaves_the_call_to_the_fallback(
    bridge_factory: StartBridge,
) -> None:
    dead = f"ws://127.0.0.1:{free_port()}/v1/realtime"
    async with fake_server("inworld", script=SCRIPT) as fallback:
        bridge = bridge_factory(_fallback_env(dead, fallback))
        result = await _call(bridge, turns=1)

    assert len(fallback.sessions) == 1
    # The fallback speaks its own dialect, with its own voice (the primary's is not its).
    update = fallback.sessions[0].client_events_of("session.update")[0]["session"]
    assert update["audio"]["output"]["voice"] == "Clive"
    record = result.call_record
    assert record is not None
    assert (record["status"], record["end_reason"]) == ("completed", "caller_hangup")
    assert _said(record) == [("caller", QUESTIONS[0]), ("agent", ANSWERS[0])]
    assert record["provider"] == "openai"
    assert record["providers"] == ["inworld"]
    moves = [e for e in record["events"] if e["type"] == "provider_fallback"]
    assert [(m["from"], m["to"]) for m in moves] == [("openai", "inworld")]


async def test_a_primary_that_dies_mid_call_is_replaced_by_the_fallback(
    bridge_factory: StartBridge,
) -> None:
    async with (
        fake_server("openai", script=SCRIPT) as primary,
        fake_server("inworld", script=SCRIPT) as fallback,
    ):
        # The fallback carries on the conversation where the primary left it.
        fallback.continue_script = True
        bridge = bridge_factory(_fallback_env(primary.url, fallback))

        async def die_after_the_first_answer() -> None:
            await _wait_for(lambda: bool(primary.sessions and primary.sessions[0].responses))
            primary.refusing = True  # the retries find it down
            primary.drop_sessions("reset")

        killer = asyncio.create_task(die_after_the_first_answer())
        result = await _call(bridge, turns=2)
        await asyncio.wait_for(killer, 5)

    assert len(primary.sessions) == 1
    assert len(fallback.sessions) == 1
    assert _seeded(fallback.sessions[0]) == [("user", QUESTIONS[0]), ("assistant", ANSWERS[0])]
    record = result.call_record
    assert record is not None
    assert record["status"] == "completed"
    assert [t["role"] for t in record["turns"]] == ["caller", "agent", "caller", "agent"]
    assert record["providers"] == ["openai", "inworld"]
    assert [e["reason"] for e in _reconnects(record)] == ["dropped"]


async def test_a_rate_limited_provider_without_a_fallback_apologises(
    bridge_factory: StartBridge,
) -> None:
    async with fake_server("openai", script=SCRIPT) as fake:
        fake.refusing, fake.refusal_status = True, 429
        bridge = bridge_factory(provider_env(fake, "openai"))
        result = await _call(bridge, turns=1, max_duration_s=20)
    apology = load_clip("apology")
    assert apology[1000:3000] in result.heard_audio  # never dead air
    record = result.call_record
    assert record is not None
    assert (record["status"], record["end_reason"]) == ("failed", "provider_error")
    log = bridge.log()
    assert "realtime.provider_limit" in log
    assert MODEL_KEY not in log


async def test_a_primary_that_refuses_the_session_leaves_the_call_to_the_fallback(
    bridge_factory: StartBridge,
) -> None:
    async with (
        fake_server("openai", script=SCRIPT, faults=FakeFaults(refuse_session=True)) as primary,
        fake_server("inworld", script=SCRIPT) as fallback,
    ):
        bridge = bridge_factory(_fallback_env(primary.url, fallback))
        result = await _call(bridge, turns=1)

    # A refusal is not retried: it would only be refused again.
    assert len(primary.sessions) == 1
    assert len(fallback.sessions) == 1
    record = result.call_record
    assert record is not None
    assert (record["status"], record["end_reason"]) == ("completed", "caller_hangup")
    assert _said(record) == [("caller", QUESTIONS[0]), ("agent", ANSWERS[0])]
    assert record["providers"] == ["inworld"]  # the primary never said a word
    # The fake refuses as OpenAI does an account out of quota: a limit.
    assert [e["reason"] for e in _reconnects(record)] == ["limit"]
