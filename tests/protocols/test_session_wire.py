"""The exact ``session.update`` every dialect sends, written out in full.

Each expected value is the reference's example (realtime-protocols.md §3.1-§3.5) for the
same agent, field for field; where the bridge sends something else on purpose, a comment
says what and why. The connection adds an ``event_id`` to what is built here.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from bridge.protocols.dialects import (
    DIALECTS,
    SessionConfig,
    SessionShape,
    build_session_update,
    realtime_endpoint,
)

INSTRUCTIONS = "You are a concise phone agent."
TOOL = {
    "type": "function",
    "name": "end_call",
    "description": "Hang up after saying goodbye.",
    "parameters": {
        "type": "object",
        "properties": {"reason": {"type": "string"}},
        "required": ["reason"],
    },
}


def built(dialect: str, audio_format: str = "pcmu", **config: Any) -> dict[str, Any]:
    session = SessionConfig(
        instructions=INSTRUCTIONS, voice=None, audio_format=audio_format, **config
    )
    message = build_session_update(DIALECTS[dialect], session)
    # Exactly what goes on the wire: plain JSON, nothing the encoder would change.
    assert json.loads(json.dumps(message)) == message
    return message


# §3.1, field for field. tools, tool_choice and max_output_tokens are in the reference too.
GA_PCMU = {
    "type": "session.update",
    "session": {
        "type": "realtime",
        "instructions": "You are a concise phone agent.",
        "output_modalities": ["audio"],
        "audio": {
            "input": {
                "format": {"type": "audio/pcmu"},
                "noise_reduction": {"type": "near_field"},
                "transcription": {"model": "gpt-4o-mini-transcribe", "language": "en"},
                "turn_detection": {
                    "type": "server_vad",
                    "threshold": 0.5,
                    "prefix_padding_ms": 300,
                    "silence_duration_ms": 500,
                    "idle_timeout_ms": None,
                    "create_response": True,
                    "interrupt_response": True,
                },
            },
            "output": {
                "format": {"type": "audio/pcmu"},
                "voice": "marin",
                "speed": 1.0,
            },
        },
        "tools": [],
        "tool_choice": "auto",
        "max_output_tokens": "inf",
    },
}

# §3.2 with the formats of §3.2. The reference's example is shorter: the bridge sends the
# same full session as for PCMU (idle_timeout_ms null, speed 1.0, tools, tool_choice,
# max_output_tokens), so that both formats configure the same agent; only the formats differ.
GA_PCM24K = {
    "type": "session.update",
    "session": {
        "type": "realtime",
        "instructions": "You are a concise phone agent.",
        "output_modalities": ["audio"],
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": 24000},
                "noise_reduction": {"type": "near_field"},
                "transcription": {"model": "gpt-4o-mini-transcribe", "language": "en"},
                "turn_detection": {
                    "type": "server_vad",
                    "threshold": 0.5,
                    "prefix_padding_ms": 300,
                    "silence_duration_ms": 500,
                    "idle_timeout_ms": None,  # not in §3.2's example; null is the default
                    "create_response": True,
                    "interrupt_response": True,
                },
            },
            "output": {
                "format": {"type": "audio/pcm", "rate": 24000},
                "voice": "marin",
                "speed": 1.0,  # not in §3.2's example; 1.0 is the default
            },
        },
        "tools": [],  # these three are not in §3.2's example: the same agent as §3.1
        "tool_choice": "auto",
        "max_output_tokens": "inf",
    },
}

# §3.3, field for field (Azure preview speaks the same beta).
BETA_PCMU = {
    "type": "session.update",
    "session": {
        "modalities": ["text", "audio"],
        "instructions": "You are a concise phone agent.",
        "voice": "alloy",
        "input_audio_format": "g711_ulaw",
        "output_audio_format": "g711_ulaw",
        "input_audio_transcription": {"model": "whisper-1", "language": "en"},
        "input_audio_noise_reduction": {"type": "near_field"},
        "turn_detection": {
            "type": "server_vad",
            "threshold": 0.5,
            "prefix_padding_ms": 300,
            "silence_duration_ms": 500,
            "create_response": True,
            "interrupt_response": True,
        },
        "temperature": 0.8,
        "max_response_output_tokens": "inf",
        "tool_choice": "auto",
        "tools": [],
    },
}

# §3.4, field for field.
INWORLD_PCMU = {
    "type": "session.update",
    "session": {
        "type": "realtime",
        "model": "openai/gpt-4.1-mini",
        "instructions": "You are a concise phone agent.",
        "output_modalities": ["audio", "text"],
        "temperature": 0.8,
        "audio": {
            "input": {
                "format": {"type": "audio/pcmu"},
                "transcription": {"model": "inworld/inworld-stt-1"},
                "turn_detection": {
                    "type": "semantic_vad",
                    "eagerness": "medium",
                    "create_response": True,
                    "interrupt_response": True,
                },
            },
            "output": {
                "format": {"type": "audio/pcmu"},
                "model": "inworld-tts-2",
                "voice": "Clive",
                "speed": 1.0,
            },
        },
        "tools": [],
        "providerData": {},
    },
}

# §3.5 plus the caller's transcription: the reference's example configures none, but the
# call record needs what the caller said, so the bridge asks for it (§15 lists
# audio.input.transcription with model, language_hint and keyterms). No tools, no
# tool_choice: xAI takes tools at the top level but the agent has none here, and
# tool_choice is not in what xAI documents.
XAI_PCMU = {
    "type": "session.update",
    "session": {
        "instructions": "You are a concise phone agent.",
        "voice": "Eve",
        "turn_detection": {
            "type": "server_vad",
            "threshold": 0.5,
            "silence_duration_ms": 500,
            "prefix_padding_ms": 300,
        },
        "audio": {
            "input": {
                "format": {"type": "audio/pcmu"},
                "transcription": {"model": "grok-transcribe"},
            },
            "output": {"format": {"type": "audio/pcmu"}},
        },
    },
}

# §3.5 exactly: the same agent with the caller's transcription off.
XAI_PCMU_NO_TRANSCRIPTION = {
    "type": "session.update",
    "session": {
        "instructions": "You are a concise phone agent.",
        "voice": "Eve",
        "turn_detection": {
            "type": "server_vad",
            "threshold": 0.5,
            "silence_duration_ms": 500,
            "prefix_padding_ms": 300,
        },
        "audio": {
            "input": {"format": {"type": "audio/pcmu"}},
            "output": {"format": {"type": "audio/pcmu"}},
        },
    },
}


@pytest.mark.parametrize(
    ("dialect", "audio_format", "expected"),
    [
        ("openai", "pcmu", GA_PCMU),
        ("openai", "pcm24k", GA_PCM24K),
        ("azure", "pcmu", GA_PCMU),  # Azure GA is OpenAI GA on another host
        ("openai-beta", "pcmu", BETA_PCMU),
        ("azure-beta", "pcmu", BETA_PCMU),
        ("inworld", "pcmu", INWORLD_PCMU),
        ("xai", "pcmu", XAI_PCMU),
    ],
)
def test_session_update_is_exactly_the_reference(
    dialect: str, audio_format: str, expected: dict[str, Any]
) -> None:
    assert built(dialect, audio_format) == expected


def test_every_dialect_has_its_wire_test() -> None:
    assert set(DIALECTS) == {"openai", "openai-beta", "azure", "azure-beta", "inworld", "xai"}


def test_xai_without_transcription_is_section_3_5_to_the_field() -> None:
    assert built("xai", transcription=False) == XAI_PCMU_NO_TRANSCRIPTION


def test_xai_pcm24k_changes_only_the_formats() -> None:
    session = built("xai", "pcm24k")["session"]
    pcm = {"type": "audio/pcm", "rate": 24000}
    assert session["audio"] == {
        "input": {"format": pcm, "transcription": {"model": "grok-transcribe"}},
        "output": {"format": pcm},
    }
    assert {k: v for k, v in session.items() if k != "audio"} == {
        k: v for k, v in XAI_PCMU["session"].items() if k != "audio"
    }


def test_xai_tools_are_top_level_without_tool_choice() -> None:
    session = built("xai", tools=(TOOL,))["session"]
    assert session["tools"] == [TOOL]
    assert "tool_choice" not in session
    # The other dialects pair tools with tool_choice "auto".
    assert built("openai", tools=(TOOL,))["session"]["tool_choice"] == "auto"


def test_xai_language_goes_in_language_hint_and_the_agent_picks_the_model() -> None:
    config = SessionConfig(
        instructions=INSTRUCTIONS,
        voice="Rex",
        audio_format="pcmu",
        transcription_language="de",
        transcription_model="my-stt",
    )
    session = build_session_update(DIALECTS["xai"], config)["session"]
    assert session["audio"]["input"]["transcription"] == {
        "model": "my-stt",
        "language_hint": "de",
    }
    assert session["voice"] == "Rex"


def test_xai_session_never_carries_ga_nesting_or_type() -> None:
    session = built("xai", tools=(TOOL,))["session"]
    assert DIALECTS["xai"].session_shape is SessionShape.HYBRID
    assert "type" not in session and "model" not in session
    assert set(session["audio"]["output"]) == {"format"}
    assert set(session["audio"]["input"]) <= {"format", "transcription"}


# -- connecting to xAI ----------------------------------------------------------------


def test_xai_endpoint_is_the_documented_url_with_a_bearer_key() -> None:
    url, headers = realtime_endpoint(
        DIALECTS["xai"], api_key="xai-secret", model=None, url_override=None
    )
    assert url == "wss://api.x.ai/v1/realtime?model=grok-voice-latest"
    assert headers == {"Authorization": "Bearer xai-secret"}


def test_xai_endpoint_takes_a_model_and_an_override() -> None:
    url, headers = realtime_endpoint(
        DIALECTS["xai"], api_key="k", model="grok-voice-2", url_override=None
    )
    assert url == "wss://api.x.ai/v1/realtime?model=grok-voice-2"
    url, headers = realtime_endpoint(
        DIALECTS["xai"], api_key=None, model=None, url_override="http://127.0.0.1:9/v1/realtime"
    )
    assert url == "ws://127.0.0.1:9/v1/realtime?model=grok-voice-latest"
    assert headers == {}


def test_table_says_when_to_configure_and_how_long_a_session_lasts() -> None:
    after = {name: d.configure_after for name, d in DIALECTS.items()}
    assert after == {
        "openai": "session.created",
        "openai-beta": "session.created",
        "azure": "session.created",
        "azure-beta": "session.created",
        "inworld": "session.created",
        "xai": "conversation.created",
    }
    limits = {name: d.session_limit_s for name, d in DIALECTS.items()}
    assert limits == {
        "openai": 3600,
        "openai-beta": 3600,
        "azure": 3600,
        "azure-beta": 3600,
        "inworld": None,
        "xai": 3600,
    }
    xai = DIALECTS["xai"]
    assert xai.ga and xai.item_created == ("conversation.item.added",)
    assert (xai.default_voice, xai.default_model) == ("Eve", "grok-voice-latest")
