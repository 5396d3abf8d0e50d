"""``session.update`` validation and session rendering, per dialect, for the fake server.

:func:`apply_update` checks a whole update (GA nested with ``session.type``, beta flat with
string formats, Inworld GA plus extensions, xAI's hybrid with ``voice`` and
``turn_detection`` at the top and only the formats nested) and returns the new config, or raises
:class:`InvalidRequest` on the first bad field; the caller sends an ``error`` and keeps the
old config. :func:`render_session` gives the ``session`` object for ``session.created`` and
``session.updated``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from bridge.devtools.fake_config import (
    BETA_TOP_LEVEL,
    GA_TOP_LEVEL,
    INWORLD_TOP_LEVEL,
    XAI_TOP_LEVEL,
    Dialect,
    InvalidRequest,
    SessionConfig,
    TurnDetection,
    check_object,
    choice,
    missing,
    number,
    parse_beta_format,
    parse_ga_format,
    parse_max_tokens,
    parse_modalities,
    parse_noise_reduction,
    parse_tool_choice,
    parse_tools,
    parse_transcription,
    parse_turn_detection,
    parse_voice,
    string,
)
from bridge.devtools.fake_vad import AudioFormat, VadParams

__all__ = ["apply_update", "render_format", "render_session"]

_GA_MODALITIES = (frozenset({"audio"}), frozenset({"text"}))
_INWORLD_MODALITIES = (*_GA_MODALITIES, frozenset({"audio", "text"}))
_BETA_MODALITIES = (frozenset({"text"}), frozenset({"audio", "text"}))


def apply_update(
    dialect: Dialect,
    config: SessionConfig,
    session: Any,
    vad: VadParams,
    *,
    audio_produced: bool = False,
) -> SessionConfig:
    """Validate the ``session`` object of a ``session.update``; return the updated config.

    Only the fields present change (partial update). ``audio_produced`` tells whether the
    model has spoken yet: OpenAI refuses a voice change after that. Raises
    :class:`InvalidRequest`; nothing is applied then.
    """
    if dialect is Dialect.OPENAI_BETA:
        updated = _apply_beta(config, check_object(session, "session", BETA_TOP_LEVEL), vad)
    elif dialect is Dialect.XAI:
        updated = _apply_xai(config, check_object(session, "session", XAI_TOP_LEVEL), vad)
    else:
        allowed = INWORLD_TOP_LEVEL if dialect is Dialect.INWORLD else GA_TOP_LEVEL
        updated = _apply_ga(dialect, config, check_object(session, "session", allowed), vad)
    # Only OpenAI documents that a voice is fixed once the model has spoken.
    voice_fixed = dialect is Dialect.OPENAI or dialect is Dialect.OPENAI_BETA
    if audio_produced and voice_fixed and updated.voice != config.voice:
        raise InvalidRequest(
            "cannot_update_voice",
            "Cannot update a conversation's voice if assistant audio is present.",
            "session.voice" if dialect is Dialect.OPENAI_BETA else "session.audio.output.voice",
        )
    return updated


def _apply_common(
    dialect: Dialect, config: SessionConfig, obj: dict[str, Any], prefix: str
) -> SessionConfig:
    if "instructions" in obj:
        config = replace(config, instructions=string(obj["instructions"], f"{prefix}.instructions"))
    if "tools" in obj:
        config = replace(config, tools=parse_tools(obj["tools"], f"{prefix}.tools", dialect))
    if "tool_choice" in obj:
        tool_choice = parse_tool_choice(obj["tool_choice"], f"{prefix}.tool_choice")
        config = replace(config, tool_choice=tool_choice)
    return config


def _apply_ga(
    dialect: Dialect, config: SessionConfig, obj: dict[str, Any], vad: VadParams
) -> SessionConfig:
    if "type" not in obj:
        raise missing("session.type")
    if choice(obj["type"], ("realtime", "transcription"), "session.type") != "realtime":
        raise InvalidRequest(
            "invalid_value",
            "The fake realtime server only serves 'realtime' sessions.",
            "session.type",
        )
    config = _apply_common(dialect, config, obj, "session")
    if "output_modalities" in obj:
        allowed = _INWORLD_MODALITIES if dialect is Dialect.INWORLD else _GA_MODALITIES
        modalities = parse_modalities(
            obj["output_modalities"], "session.output_modalities", allowed
        )
        config = replace(config, output_modalities=modalities)
    if "max_output_tokens" in obj:
        tokens = parse_max_tokens(obj["max_output_tokens"], "session.max_output_tokens")
        config = replace(config, max_output_tokens=tokens)
    if dialect is Dialect.INWORLD:
        if "model" in obj:
            config = replace(config, model=string(obj["model"], "session.model"))
        if "temperature" in obj:
            temperature = number(obj["temperature"], "session.temperature", 0.0, 2.0)
            config = replace(config, temperature=temperature)
        if "providerData" in obj:
            data = check_object(
                obj["providerData"], "session.providerData", set(obj["providerData"])
            )
            config = replace(config, provider_data=dict(data))
    if "audio" not in obj:
        return config
    audio = check_object(obj["audio"], "session.audio", {"input", "output"})
    if "input" in audio:
        config = _apply_ga_input(dialect, config, audio["input"], vad)
    if "output" in audio:
        output_keys = {"format", "voice", "speed"}
        if dialect is Dialect.INWORLD:
            output_keys.add("model")
        out = check_object(audio["output"], "session.audio.output", output_keys)
        if "format" in out:
            fmt = parse_ga_format(out["format"], "session.audio.output.format", dialect)
            config = replace(config, output_format=fmt)
        if "voice" in out:
            config = replace(
                config, voice=parse_voice(out["voice"], "session.audio.output.voice", dialect)
            )
        if "speed" in out:
            config = replace(
                config, speed=number(out["speed"], "session.audio.output.speed", 0.25, 1.5)
            )
        if "model" in out:
            config = replace(config, tts_model=string(out["model"], "session.audio.output.model"))
    return config


def _apply_ga_input(
    dialect: Dialect, config: SessionConfig, value: Any, vad: VadParams
) -> SessionConfig:
    prefix = "session.audio.input"
    inp = check_object(
        value, prefix, {"format", "transcription", "noise_reduction", "turn_detection"}
    )
    if "format" in inp:
        config = replace(
            config, input_format=parse_ga_format(inp["format"], f"{prefix}.format", dialect)
        )
    if "transcription" in inp:
        transcription = parse_transcription(
            inp["transcription"], f"{prefix}.transcription", dialect
        )
        config = replace(config, transcription=transcription)
    if "noise_reduction" in inp:
        nr = parse_noise_reduction(inp["noise_reduction"], f"{prefix}.noise_reduction")
        config = replace(config, noise_reduction=nr)
    if "turn_detection" in inp:
        td = parse_turn_detection(inp["turn_detection"], f"{prefix}.turn_detection", dialect, vad)
        config = replace(config, turn_detection=td)
    return config


def _apply_beta(config: SessionConfig, obj: dict[str, Any], vad: VadParams) -> SessionConfig:
    config = _apply_common(Dialect.OPENAI_BETA, config, obj, "session")
    if "modalities" in obj:
        modalities = parse_modalities(obj["modalities"], "session.modalities", _BETA_MODALITIES)
        config = replace(config, output_modalities=modalities)
    if "voice" in obj:
        config = replace(
            config, voice=parse_voice(obj["voice"], "session.voice", Dialect.OPENAI_BETA)
        )
    if "input_audio_format" in obj:
        fmt = parse_beta_format(obj["input_audio_format"], "session.input_audio_format")
        config = replace(config, input_format=fmt)
    if "output_audio_format" in obj:
        fmt = parse_beta_format(obj["output_audio_format"], "session.output_audio_format")
        config = replace(config, output_format=fmt)
    if "input_audio_transcription" in obj:
        transcription = parse_transcription(
            obj["input_audio_transcription"],
            "session.input_audio_transcription",
            Dialect.OPENAI_BETA,
        )
        config = replace(config, transcription=transcription)
    if "input_audio_noise_reduction" in obj:
        nr = parse_noise_reduction(
            obj["input_audio_noise_reduction"], "session.input_audio_noise_reduction"
        )
        config = replace(config, noise_reduction=nr)
    if "turn_detection" in obj:
        td = parse_turn_detection(
            obj["turn_detection"], "session.turn_detection", Dialect.OPENAI_BETA, vad
        )
        config = replace(config, turn_detection=td)
    if "temperature" in obj:
        config = replace(
            config, temperature=number(obj["temperature"], "session.temperature", 0.6, 1.2)
        )
    if "max_response_output_tokens" in obj:
        tokens = parse_max_tokens(
            obj["max_response_output_tokens"], "session.max_response_output_tokens"
        )
        config = replace(config, max_output_tokens=tokens)
    if "speed" in obj:
        config = replace(config, speed=number(obj["speed"], "session.speed", 0.25, 1.5))
    return config


def _apply_xai(config: SessionConfig, obj: dict[str, Any], vad: VadParams) -> SessionConfig:
    config = _apply_common(Dialect.XAI, config, obj, "session")
    if "voice" in obj:
        config = replace(config, voice=parse_voice(obj["voice"], "session.voice", Dialect.XAI))
    if "turn_detection" in obj:
        td = parse_turn_detection(obj["turn_detection"], "session.turn_detection", Dialect.XAI, vad)
        config = replace(config, turn_detection=td)
    if "audio" not in obj:
        return config
    # Only the formats (and transcription, speed, transport) are nested: a GA-style
    # audio.output.voice or audio.input.turn_detection is an unknown parameter here.
    audio = check_object(obj["audio"], "session.audio", {"input", "output"})
    if "input" in audio:
        prefix = "session.audio.input"
        inp = check_object(audio["input"], prefix, {"format", "transcription", "transport"})
        if "format" in inp:
            fmt = parse_ga_format(inp["format"], f"{prefix}.format", Dialect.XAI)
            config = replace(config, input_format=fmt)
        if "transcription" in inp:
            transcription = parse_transcription(
                inp["transcription"], f"{prefix}.transcription", Dialect.XAI
            )
            config = replace(config, transcription=transcription)
        if "transport" in inp:
            choice(inp["transport"], ("json", "binary"), f"{prefix}.transport")
    if "output" in audio:
        prefix = "session.audio.output"
        out = check_object(audio["output"], prefix, {"format", "speed", "transport"})
        if "format" in out:
            fmt = parse_ga_format(out["format"], f"{prefix}.format", Dialect.XAI)
            config = replace(config, output_format=fmt)
        if "speed" in out:
            config = replace(config, speed=number(out["speed"], f"{prefix}.speed", 0.7, 1.5))
        if "transport" in out:
            choice(out["transport"], ("json", "binary"), f"{prefix}.transport")
    return config


# ---------------------------------------------------------------- rendering


def render_format(dialect: Dialect, fmt: AudioFormat) -> Any:
    """An audio format as the dialect writes it (GA object, beta string)."""
    if dialect is Dialect.OPENAI_BETA:
        return "g711_ulaw" if fmt.kind == "pcmu" else "pcm16"
    if fmt.kind == "pcmu":
        return {"type": "audio/pcmu"}
    return {"type": "audio/pcm", "rate": fmt.rate}


def _render_turn_detection(dialect: Dialect, td: TurnDetection | None) -> dict[str, Any] | None:
    if td is None:
        return None
    if dialect is Dialect.XAI:
        return {
            "type": "server_vad",
            "threshold": td.threshold,
            "silence_duration_ms": td.silence_duration_ms,
            "prefix_padding_ms": td.prefix_padding_ms,
            "idle_timeout_ms": td.idle_timeout_ms,
        }
    if td.type == "semantic_vad":
        return {
            "type": "semantic_vad",
            "eagerness": td.eagerness,
            "create_response": td.create_response,
            "interrupt_response": td.interrupt_response,
        }
    rendered: dict[str, Any] = {
        "type": "server_vad",
        "threshold": td.threshold,
        "prefix_padding_ms": td.prefix_padding_ms,
        "silence_duration_ms": td.silence_duration_ms,
    }
    if dialect is not Dialect.OPENAI_BETA:
        rendered["idle_timeout_ms"] = td.idle_timeout_ms
    rendered["create_response"] = td.create_response
    rendered["interrupt_response"] = td.interrupt_response
    return rendered


def _render_transcription(dialect: Dialect, tr: dict[str, Any] | None) -> dict[str, Any] | None:
    if tr is None:
        return None
    if dialect is Dialect.XAI:
        return dict(tr)
    default_prompt = None if dialect is Dialect.OPENAI_BETA else ""
    return {
        "model": tr["model"],
        "language": tr.get("language"),
        "prompt": tr.get("prompt", default_prompt),
    }


def render_session(
    dialect: Dialect, config: SessionConfig, session_id: str, expires_at: int
) -> dict[str, Any]:
    """The full effective ``session`` object for ``session.created`` / ``session.updated``."""
    turn_detection = _render_turn_detection(dialect, config.turn_detection)
    transcription = _render_transcription(dialect, config.transcription)
    if dialect is Dialect.XAI:
        return {
            "id": session_id,
            "object": "realtime.session",
            "model": config.model,
            "expires_at": expires_at,
            "instructions": config.instructions,
            "voice": config.voice,
            "turn_detection": turn_detection,
            "tools": config.tools,
            "audio": {
                "input": {
                    "format": render_format(dialect, config.input_format),
                    "transcription": transcription,
                },
                "output": {
                    "format": render_format(dialect, config.output_format),
                    "speed": config.speed,
                },
            },
        }
    if dialect is Dialect.OPENAI_BETA:
        return {
            "id": session_id,
            "object": "realtime.session",
            "model": config.model,
            "expires_at": expires_at,
            "modalities": list(config.output_modalities),
            "instructions": config.instructions,
            "voice": config.voice,
            "input_audio_format": render_format(dialect, config.input_format),
            "output_audio_format": render_format(dialect, config.output_format),
            "input_audio_transcription": transcription,
            "input_audio_noise_reduction": config.noise_reduction,
            "turn_detection": turn_detection,
            "tools": config.tools,
            "tool_choice": config.tool_choice,
            "temperature": config.temperature,
            "max_response_output_tokens": config.max_output_tokens,
            "speed": config.speed,
            "tracing": None,
        }
    output: dict[str, Any] = {
        "format": render_format(dialect, config.output_format),
        "voice": config.voice,
        "speed": config.speed,
    }
    session: dict[str, Any] = {
        "type": "realtime",
        "object": "realtime.session",
        "id": session_id,
        "model": config.model,
        "output_modalities": list(config.output_modalities),
        "instructions": config.instructions,
        "tools": config.tools,
        "tool_choice": config.tool_choice,
        "max_output_tokens": config.max_output_tokens,
        "tracing": None,
        "truncation": "auto",
        "prompt": None,
        "include": None,
        "expires_at": expires_at,
        "audio": {
            "input": {
                "format": render_format(dialect, config.input_format),
                "transcription": transcription,
                "noise_reduction": config.noise_reduction,
                "turn_detection": turn_detection,
            },
            "output": output,
        },
    }
    if dialect is Dialect.INWORLD:
        output["model"] = config.tts_model
        session["temperature"] = config.temperature
        session["providerData"] = config.provider_data
    return session
