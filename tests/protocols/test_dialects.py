"""The dialect table: session.update shapes and connection details for every provider."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from bridge.errors import ConfigurationError
from bridge.protocols.dialects import (
    DIALECTS,
    SessionConfig,
    build_session_update,
    realtime_endpoint,
)

DATA = Path(__file__).parent / "data"
INSTRUCTIONS = "You are a concise phone agent."
PCM24K = {"type": "audio/pcm", "rate": 24000}


def reference(name: str) -> dict[str, Any]:
    message: dict[str, Any] = json.loads((DATA / f"session_update_{name}.json").read_text())
    message.pop("event_id", None)  # the connection numbers its own events
    return message


def with_formats(message: dict[str, Any], fmt: Any) -> dict[str, Any]:
    result = copy.deepcopy(message)
    session = result["session"]
    if "audio" in session:
        session["audio"]["input"]["format"] = copy.deepcopy(fmt)
        session["audio"]["output"]["format"] = copy.deepcopy(fmt)
    else:
        session["input_audio_format"] = fmt
        session["output_audio_format"] = fmt
    return result


def contains(big: Any, small: Any) -> bool:
    """Every key of ``small`` is in ``big`` with an equal (recursively contained) value."""
    if isinstance(small, dict):
        return isinstance(big, dict) and all(
            key in big and contains(big[key], value) for key, value in small.items()
        )
    return bool(big == small)


def update(dialect: str, audio_format: str, **config: Any) -> dict[str, Any]:
    session_config = SessionConfig(
        instructions=config.pop("instructions", INSTRUCTIONS),
        voice=config.pop("voice", None),
        audio_format=audio_format,
        **config,
    )
    return build_session_update(DIALECTS[dialect], session_config)


# -- session.update ---------------------------------------------------------------------


@pytest.mark.parametrize("dialect", ["openai", "azure"])
def test_ga_pcmu_session_update_is_the_reference_shape(dialect: str) -> None:
    assert update(dialect, "pcmu") == reference("ga_pcmu")


@pytest.mark.parametrize("dialect", ["openai", "azure"])
def test_ga_pcm24k_session_update_uses_pcm_objects(dialect: str) -> None:
    message = update(dialect, "pcm24k")
    assert message == with_formats(reference("ga_pcmu"), PCM24K)
    assert contains(message, reference("ga_pcm24k"))


def test_ga_session_update_contains_what_the_reference_turn_sends() -> None:
    sent = json.loads((DATA / "ga_turn_client.jsonl").read_text())
    sent.pop("event_id")
    assert contains(update("openai", "pcmu"), sent)


@pytest.mark.parametrize("dialect", ["openai-beta", "azure-beta"])
def test_beta_session_update_is_flat_with_string_formats(dialect: str) -> None:
    assert update(dialect, "pcmu") == reference("beta_pcmu")
    assert update(dialect, "pcm24k") == with_formats(reference("beta_pcmu"), "pcm16")
    sent = json.loads((DATA / "beta_turn_client.jsonl").read_text())
    assert contains(update(dialect, "pcmu"), sent)


def test_inworld_session_update_is_the_reference_shape() -> None:
    assert update("inworld", "pcmu") == reference("inworld_pcmu")
    assert update("inworld", "pcm24k") == with_formats(reference("inworld_pcmu"), PCM24K)


def test_voice_and_inworld_model_can_be_chosen() -> None:
    inworld = update("inworld", "pcmu", voice="Sarah", model="inworld/my-router")
    assert inworld["session"]["audio"]["output"]["voice"] == "Sarah"
    assert inworld["session"]["model"] == "inworld/my-router"
    ga = update("openai", "pcmu", voice="cedar", model="gpt-realtime-mini")
    assert ga["session"]["audio"]["output"]["voice"] == "cedar"
    # OpenAI fixes the model in the URL; session.update may not carry it.
    assert "model" not in ga["session"]
    assert update("openai-beta", "pcmu", voice="verse")["session"]["voice"] == "verse"


def test_transcription_can_be_turned_off() -> None:
    ga = update("openai", "pcmu", transcription=False)
    assert ga["session"]["audio"]["input"]["transcription"] is None
    beta = update("openai-beta", "pcmu", transcription=False)
    assert beta["session"]["input_audio_transcription"] is None


def test_session_update_is_a_fresh_plain_json_value_each_time() -> None:
    first = update("inworld", "pcmu")
    json.dumps(first)
    first["session"]["tools"].append({"type": "function"})
    first["session"]["audio"]["input"]["turn_detection"]["eagerness"] = "high"
    first["session"]["providerData"]["x"] = 1
    assert update("inworld", "pcmu") == reference("inworld_pcmu")


def test_unknown_audio_format_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        SessionConfig(instructions="x", voice=None, audio_format="opus")


# -- the table ---------------------------------------------------------------------------


def test_table_defaults() -> None:
    assert {"openai", "openai-beta", "azure", "inworld"} <= set(DIALECTS)
    ga, beta, azure, inworld = (DIALECTS[n] for n in ("openai", "openai-beta", "azure", "inworld"))
    assert (ga.ga, beta.ga, azure.ga, inworld.ga) == (True, False, True, True)
    assert (ga.min_append_ms, beta.min_append_ms, inworld.min_append_ms) == (20, 20, 60)
    assert (ga.default_voice, beta.default_voice, inworld.default_voice) == (
        "marin",
        "alloy",
        "Clive",
    )
    assert (ga.default_model, azure.default_model) == ("gpt-realtime", "gpt-realtime")
    assert beta.default_model == "gpt-4o-realtime-preview"
    assert inworld.default_model == "openai/gpt-4.1-mini"
    assert ga.audio_delta == "response.output_audio.delta"
    assert beta.audio_delta == "response.audio.delta"
    assert beta.transcript_done == "response.audio_transcript.done"
    assert ga.item_created == ("conversation.item.added", "conversation.item.done")
    assert beta.item_created == ("conversation.item.created",)
    assert ga.format_value("pcmu") == {"type": "audio/pcmu"}
    assert beta.format_value("pcmu") == "g711_ulaw"
    assert beta.format_value("pcm24k") == "pcm16"
    for dialect in DIALECTS.values():
        turn = dialect.turn_detection
        if dialect.name == "xai":
            # xAI's turn_detection has no such flags: the bridge cancels a response itself.
            assert "interrupt_response" not in turn and not dialect.server_cancels_on_speech
            continue
        assert turn["create_response"] is True and turn["interrupt_response"] is True
        assert dialect.server_cancels_on_speech is True
    assert inworld.turn_detection["type"] == "semantic_vad"
    assert inworld.turn_detection["eagerness"] == "medium"
    assert ga.turn_detection["type"] == "server_vad"


def test_dialects_are_read_only_and_hashable() -> None:
    dialect = DIALECTS["openai"]
    with pytest.raises(AttributeError):
        dialect.min_append_ms = 5  # type: ignore[misc]
    with pytest.raises(TypeError):
        dialect.turn_detection["type"] = "semantic_vad"  # type: ignore[index]
    assert {dialect: 1}[DIALECTS["openai"]] == 1


# -- realtime_endpoint -------------------------------------------------------------------


def test_openai_ga_endpoint_has_no_beta_header() -> None:
    url, headers = realtime_endpoint(
        DIALECTS["openai"], api_key="sk-test", model=None, url_override=None
    )
    assert url == "wss://api.openai.com/v1/realtime?model=gpt-realtime"
    assert headers == {"Authorization": "Bearer sk-test"}


def test_openai_model_goes_in_the_url() -> None:
    url, _ = realtime_endpoint(
        DIALECTS["openai"], api_key="k", model="gpt-realtime-mini", url_override=None
    )
    assert url == "wss://api.openai.com/v1/realtime?model=gpt-realtime-mini"


def test_openai_beta_endpoint_selects_beta_with_a_header() -> None:
    url, headers = realtime_endpoint(
        DIALECTS["openai-beta"], api_key="sk-test", model=None, url_override=None
    )
    assert url == "wss://api.openai.com/v1/realtime?model=gpt-4o-realtime-preview"
    assert headers == {"Authorization": "Bearer sk-test", "OpenAI-Beta": "realtime=v1"}


@pytest.mark.parametrize(
    "endpoint",
    ["https://myres.openai.azure.com/", "myres.openai.azure.com", "wss://myres.openai.azure.com"],
)
def test_azure_ga_endpoint(endpoint: str) -> None:
    url, headers = realtime_endpoint(
        DIALECTS["azure"],
        api_key="az-key",
        model="my-deploy",
        url_override=None,
        azure_endpoint=endpoint,
    )
    assert url == "wss://myres.openai.azure.com/openai/v1/realtime?model=my-deploy"
    assert headers == {"api-key": "az-key"}


def test_azure_preview_endpoint_uses_api_version() -> None:
    url, headers = realtime_endpoint(
        DIALECTS["azure-beta"],
        api_key="az-key",
        model="my-deploy",
        url_override=None,
        azure_endpoint="https://myres.openai.azure.com",
    )
    assert url == (
        "wss://myres.openai.azure.com/openai/realtime"
        "?api-version=2025-04-01-preview&deployment=my-deploy"
    )
    assert headers == {"api-key": "az-key"}


def test_azure_without_endpoint_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        realtime_endpoint(DIALECTS["azure"], api_key="k", model=None, url_override=None)


def test_inworld_endpoint_sends_the_key_verbatim() -> None:
    url, headers = realtime_endpoint(
        DIALECTS["inworld"],
        api_key="aWQ6c2VjcmV0==",
        model=None,
        url_override=None,
        session_key="call-123",
    )
    assert url == "wss://api.inworld.ai/api/v1/realtime/session?key=call-123&protocol=realtime"
    assert headers == {"Authorization": "Basic aWQ6c2VjcmV0=="}


def test_inworld_endpoint_makes_a_fresh_session_key_when_none_is_given() -> None:
    urls = [
        realtime_endpoint(DIALECTS["inworld"], api_key="k", model=None, url_override=None)[0]
        for _ in range(2)
    ]
    keys = [parse_qs(urlsplit(url).query)["key"][0] for url in urls]
    assert keys[0] != keys[1] and all(keys)
    assert all(parse_qs(urlsplit(url).query)["protocol"] == ["realtime"] for url in urls)


def test_no_api_key_sends_no_credentials() -> None:
    for name in ("openai", "azure", "inworld"):
        _, headers = realtime_endpoint(
            DIALECTS[name], api_key=None, model=None, url_override="ws://127.0.0.1:9/x"
        )
        assert headers == {}
    _, headers = realtime_endpoint(
        DIALECTS["openai-beta"], api_key=None, model=None, url_override="ws://127.0.0.1:9/x"
    )
    assert headers == {"OpenAI-Beta": "realtime=v1"}


def test_url_override_keeps_the_dialect_query() -> None:
    url, headers = realtime_endpoint(
        DIALECTS["openai"], api_key="sk", model=None, url_override="ws://127.0.0.1:8765/v1/realtime"
    )
    assert url == "ws://127.0.0.1:8765/v1/realtime?model=gpt-realtime"
    assert headers == {"Authorization": "Bearer sk"}


def test_url_override_merges_with_its_own_query() -> None:
    url, _ = realtime_endpoint(
        DIALECTS["openai"],
        api_key=None,
        model="m1",
        url_override="wss://proxy.example/rt?trace=1",
    )
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == ("wss", "proxy.example", "/rt")
    assert parse_qs(parts.query) == {"trace": ["1"], "model": ["m1"]}
    # What the override says explicitly wins.
    url, _ = realtime_endpoint(
        DIALECTS["openai"], api_key=None, model="m1", url_override="ws://h/rt?model=m2"
    )
    assert parse_qs(urlsplit(url).query) == {"model": ["m2"]}


def test_url_override_for_inworld_and_azure() -> None:
    url, _ = realtime_endpoint(
        DIALECTS["inworld"],
        api_key="k",
        model=None,
        url_override="ws://127.0.0.1:9000/session?x=y",
        session_key="s1",
    )
    assert parse_qs(urlsplit(url).query) == {"x": ["y"], "key": ["s1"], "protocol": ["realtime"]}
    url, headers = realtime_endpoint(
        DIALECTS["azure"], api_key="k", model="dep", url_override="http://127.0.0.1:9000/rt"
    )
    assert url == "ws://127.0.0.1:9000/rt?model=dep"
    assert headers == {"api-key": "k"}
