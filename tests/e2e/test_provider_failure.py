"""When the model cannot be reached or refuses the session, the caller hears an apology and
the call ends, recorded as failed / provider_error."""

from __future__ import annotations

from collections.abc import Callable

from bridge.codecs.clips import load_clip
from bridge.devtools.fake_records import FakeFaults
from bridge.devtools.simulator import simulate_call

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


async def _call(bridge: RunningBridge):  # type: ignore[no-untyped-def]
    return await simulate_call(
        bridge.url,
        auth_token=AUTH_TOKEN,
        review_token=REVIEW_TOKEN,
        caller_utterances=[load_clip("caller_1")],
        max_duration_s=20,
    )


def _heard_the_apology(heard: bytes) -> bool:
    apology = load_clip("apology")
    return apology[1000:3000] in heard


async def test_refused_session_plays_the_apology(bridge_factory: StartBridge) -> None:
    async with fake_server("openai", faults=FakeFaults(refuse_session=True)) as fake:
        bridge = bridge_factory(provider_env(fake, "openai"))
        result = await _call(bridge)
    assert len(fake.sessions) == 1
    assert _heard_the_apology(result.heard_audio)
    record = result.call_record
    assert record is not None
    assert (record["status"], record["end_reason"]) == ("failed", "provider_error")


async def test_unreachable_provider_plays_the_apology(bridge_factory: StartBridge) -> None:
    dead = f"ws://127.0.0.1:{free_port()}/v1/realtime"
    bridge = bridge_factory(
        {"BRIDGE_PROVIDER": "openai", "OPENAI_API_KEY": MODEL_KEY, "BRIDGE_REALTIME_URL": dead}
    )
    result = await _call(bridge)
    assert _heard_the_apology(result.heard_audio)
    record = result.call_record
    assert record is not None
    assert (record["status"], record["end_reason"]) == ("failed", "provider_error")
    assert MODEL_KEY not in bridge.log()
