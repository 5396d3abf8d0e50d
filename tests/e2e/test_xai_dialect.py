"""One call end to end in the xai dialect: simulator (as Twilio) -> bridge -> fake xAI server.

The fake refuses a session.update that comes before conversation.created, so a bridge that
configured at session.created would fail this call.
"""

from __future__ import annotations

from collections.abc import Callable

from bridge.codecs.clips import load_clip
from bridge.devtools.fake_script import FakeScript, Reply
from bridge.devtools.simulator import simulate_call

from .conftest import AUTH_TOKEN, MODEL_KEY, REVIEW_TOKEN, RunningBridge, fake_server, provider_env

StartBridge = Callable[[dict[str, str]], RunningBridge]

SCRIPT = FakeScript(
    replies=[Reply("Our office opens at nine in the morning.", duration_ms=1500)],
    caller_transcripts=["What time do you open?"],
)


async def test_one_xai_turn_is_configured_after_conversation_created(
    bridge_factory: StartBridge,
) -> None:
    async with fake_server("xai", script=SCRIPT) as fake:
        bridge = bridge_factory(provider_env(fake, "xai"))
        result = await simulate_call(
            bridge.url,
            auth_token=AUTH_TOKEN,
            review_token=REVIEW_TOKEN,
            caller_utterances=[load_clip("caller_1")],
            max_duration_s=30,
        )

    assert len(fake.sessions) == 1
    session = fake.sessions[0]
    headers = {k.lower(): v for k, v in session.headers.items()}
    assert headers.get("authorization") == f"Bearer {MODEL_KEY}"
    assert session.query.get("model") == "grok-voice-latest"
    assert session.timeline[:4] == [
        "session.created",
        "conversation.created",
        "session.update",
        "session.updated",
    ]
    assert session.errors_sent == []
    (update,) = session.client_events_of("session.update")
    hybrid = update["session"]
    assert "type" not in hybrid and hybrid["voice"] == "Eve"
    assert hybrid["turn_detection"]["type"] == "server_vad"
    assert hybrid["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    assert hybrid["audio"]["output"] == {"format": {"type": "audio/pcmu"}}

    # pcmu pass-through: what the model said is what reached the phone, to the byte.
    assert result.received_audio == b"".join(session.audio_sent.values())
    assert result.protocol_problems == []
    record = result.call_record
    assert record is not None
    assert record["provider"] == "xai" and record["model"] == "grok-voice-latest"
    assert record["status"] == "completed" and record["end_reason"] == "caller_hangup"
    assert [(t["role"], t["text"]) for t in record["turns"]] == [
        ("caller", "What time do you open?"),
        ("agent", "Our office opens at nine in the morning."),
    ]
    caller, agent = record["turns"]
    assert caller["start_ms"] < caller["end_ms"] <= agent["start_ms"] < agent["end_ms"]
