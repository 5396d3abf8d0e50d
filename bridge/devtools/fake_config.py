"""Session configuration of the fake realtime server: the config, its defaults, field checks.

The dialects share one :class:`SessionConfig`. The field parsers here check one value
each the way a real server does and raise :class:`InvalidRequest` naming the ``param``;
``fake_update`` assembles them into whole ``session.update`` validation and renders the
config back per dialect.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from bridge.devtools.fake_vad import PCM24K, PCMU, AudioFormat, VadParams

__all__ = [
    "BETA_TOP_LEVEL",
    "GA_TOP_LEVEL",
    "INWORLD_TOP_LEVEL",
    "XAI_TOP_LEVEL",
    "Dialect",
    "InvalidRequest",
    "SessionConfig",
    "TurnDetection",
    "boolean",
    "check_object",
    "choice",
    "default_config",
    "integer",
    "missing",
    "number",
    "parse_beta_format",
    "parse_ga_format",
    "parse_max_tokens",
    "parse_modalities",
    "parse_noise_reduction",
    "parse_tool_choice",
    "parse_tools",
    "parse_transcription",
    "parse_turn_detection",
    "parse_voice",
    "previous_item_id",
    "string",
]


class Dialect(StrEnum):
    OPENAI = "openai"
    OPENAI_BETA = "openai-beta"
    INWORLD = "inworld"
    XAI = "xai"


def previous_item_id(dialect: Dialect, previous: str | None) -> str | None:
    """The ``previous_item_id`` a dialect writes: xAI always sends null."""
    return None if dialect is Dialect.XAI else previous


class InvalidRequest(Exception):
    """A client event the fake server refuses; becomes an ``invalid_request_error`` event."""

    def __init__(self, code: str | None, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param


@dataclass(frozen=True, slots=True)
class TurnDetection:
    type: str
    create_response: bool = True
    interrupt_response: bool = True
    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500
    idle_timeout_ms: int | None = None
    eagerness: str = "auto"


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """The effective configuration of one fake session (what ``session.updated`` shows)."""

    model: str
    voice: str | dict[str, Any]
    input_format: AudioFormat = PCM24K
    output_format: AudioFormat = PCM24K
    turn_detection: TurnDetection | None = None
    instructions: str = ""
    transcription: dict[str, Any] | None = None
    noise_reduction: dict[str, Any] | None = None
    output_modalities: tuple[str, ...] = ("audio",)
    tools: list[Any] = field(default_factory=list)
    tool_choice: Any = "auto"
    max_output_tokens: int | str = "inf"
    temperature: float = 0.8
    speed: float = 1.0
    tts_model: str = "inworld-tts-2"
    provider_data: dict[str, Any] = field(default_factory=dict)


def _names(text: str) -> tuple[str, ...]:
    return tuple(text.split())


_GA_VOICES = _names("alloy ash ballad coral echo sage shimmer verse marin cedar")
_BETA_VOICES = _GA_VOICES[:8]
_OPENAI_STT = _names(
    """whisper-1 gpt-4o-mini-transcribe gpt-4o-mini-transcribe-2025-12-15 gpt-4o-transcribe
    gpt-4o-transcribe-diarize gpt-transcribe gpt-live-transcribe gpt-realtime-whisper"""
)
_INWORLD_STT = _names(
    """inworld/inworld-stt-1 assemblyai/u3-rt-pro assemblyai/universal-streaming-multilingual
    assemblyai/universal-streaming-english soniox/stt-rt-v4"""
)
_INWORLD_RATES = (8000, 16000, 24000, 32000, 44100, 48000)
_XAI_RATES = (8000, 16000, 21050, 24000, 32000, 44100, 48000)
GA_TOP_LEVEL = frozenset(
    _names(
        """type model instructions output_modalities audio tools tool_choice max_output_tokens
    tracing truncation prompt include reasoning parallel_tool_calls"""
    )
)
INWORLD_TOP_LEVEL = GA_TOP_LEVEL | {"temperature", "providerData"}
# xAI's hybrid session: voice and turn_detection at the top, no type, no model, and only
# the extras its guide lists (reasoning, resumption, replace are accepted, not acted on).
XAI_TOP_LEVEL = frozenset(
    _names("instructions voice turn_detection tools audio reasoning resumption replace")
)
BETA_TOP_LEVEL = frozenset(
    _names(
        """model modalities instructions voice input_audio_format output_audio_format
    input_audio_transcription input_audio_noise_reduction turn_detection tools tool_choice
    temperature max_response_output_tokens speed tracing include"""
    )
)


def default_config(dialect: Dialect, vad: VadParams, model: str | None = None) -> SessionConfig:
    """The configuration a new session starts with (what ``session.created`` shows)."""
    server_vad = TurnDetection(
        "server_vad",
        silence_duration_ms=vad.silence_ms,
        prefix_padding_ms=vad.prefix_padding_ms,
    )
    if dialect is Dialect.INWORLD:
        return SessionConfig(
            model=model or "openai/gpt-4.1-mini",
            voice="Clive",
            turn_detection=TurnDetection("semantic_vad", eagerness="medium"),
            transcription={"model": "inworld/inworld-stt-1"},  # the cascade always transcribes
            output_modalities=("audio", "text"),
        )
    if dialect is Dialect.XAI:
        return SessionConfig(
            model=model or "grok-voice-latest", voice="Eve", turn_detection=server_vad
        )
    if dialect is Dialect.OPENAI_BETA:
        return SessionConfig(
            model=model or "gpt-4o-realtime-preview",
            voice="alloy",
            turn_detection=server_vad,
            output_modalities=("audio", "text"),
        )
    return SessionConfig(model=model or "gpt-realtime", voice="marin", turn_detection=server_vad)


# ---------------------------------------------------------------- validation helpers


def missing(param: str) -> InvalidRequest:
    """The error a server gives when a required field is absent."""
    return InvalidRequest(
        "missing_required_parameter", f"Missing required parameter: '{param}'.", param
    )


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "an object",
    }.get(type(value), "a value")


def _invalid_type(param: str, expected: str, value: Any) -> InvalidRequest:
    return InvalidRequest(
        "invalid_type",
        f"Invalid type for '{param}': expected {expected}, but got {_type_name(value)} instead.",
        param,
    )


def check_object(value: Any, param: str, allowed: frozenset[str] | set[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _invalid_type(param, "an object", value)
    for key in value:
        if key not in allowed:
            raise InvalidRequest(
                "unknown_parameter", f"Unknown parameter: '{param}.{key}'.", f"{param}.{key}"
            )
    return value


def choice(value: Any, options: tuple[str, ...], param: str) -> str:
    if isinstance(value, str) and value in options:
        return value
    quoted = [f"'{o}'" for o in options]
    listed = quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + f", and {quoted[-1]}"
    raise InvalidRequest(
        "invalid_value", f"Invalid value: '{value}'. Supported values are: {listed}.", param
    )


def number(value: Any, param: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _invalid_type(param, "a number", value)
    if value < low:
        raise InvalidRequest(
            "decimal_below_min_value",
            f"Invalid '{param}': decimal below minimum value. Expected a value >= {low}, "
            f"but got {value} instead.",
            param,
        )
    if value > high:
        raise InvalidRequest(
            "decimal_above_max_value",
            f"Invalid '{param}': decimal above maximum value. Expected a value <= {high}, "
            f"but got {value} instead.",
            param,
        )
    return float(value)


def integer(value: Any, param: str, low: int = 0) -> int:
    """``value`` as an int of at least ``low``, or :class:`InvalidRequest` as a server says it."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid_type(param, "an integer", value)
    if value < low:
        raise InvalidRequest(
            "integer_below_min_value",
            f"Invalid '{param}': integer below minimum value. Expected a value >= {low}, "
            f"but got {value} instead.",
            param,
        )
    return value


def boolean(value: Any, param: str) -> bool:
    if not isinstance(value, bool):
        raise _invalid_type(param, "a boolean", value)
    return value


def string(value: Any, param: str) -> str:
    if not isinstance(value, str):
        raise _invalid_type(param, "a string", value)
    return value


# ---------------------------------------------------------------- field parsers


def parse_ga_format(value: Any, param: str, dialect: Dialect) -> AudioFormat:
    if dialect is Dialect.INWORLD and value == "g711_ulaw":
        return PCMU  # Inworld's own Twilio examples send the beta string inside GA nesting
    obj = check_object(value, param, {"type", "rate"})
    if "type" not in obj:
        raise missing(f"{param}.type")
    kind = choice(obj["type"], ("audio/pcm", "audio/pcmu", "audio/pcma"), f"{param}.type")
    if kind == "audio/pcma":
        raise InvalidRequest(
            "invalid_value",
            "The fake realtime server does not support 'audio/pcma'.",
            f"{param}.type",
        )
    if kind == "audio/pcmu":
        return PCMU
    rate = integer(obj.get("rate", 24000), f"{param}.rate", 1)
    rates = {Dialect.INWORLD: _INWORLD_RATES, Dialect.XAI: _XAI_RATES}.get(dialect, (24000,))
    if rate not in rates:
        raise InvalidRequest(
            "invalid_value",
            f"Invalid value: {rate}. Supported values are: {', '.join(map(str, rates))}.",
            f"{param}.rate",
        )
    return AudioFormat("pcm", rate)


def parse_beta_format(value: Any, param: str) -> AudioFormat:
    kind = choice(value, ("pcm16", "g711_ulaw", "g711_alaw"), param)
    if kind == "g711_alaw":
        raise InvalidRequest(
            "invalid_value", "The fake realtime server does not support 'g711_alaw'.", param
        )
    return PCMU if kind == "g711_ulaw" else PCM24K


def parse_turn_detection(
    value: Any, param: str, dialect: Dialect, vad: VadParams
) -> TurnDetection | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _invalid_type(param, "an object", value)
    if "type" not in value:
        raise missing(f"{param}.type")
    if dialect is Dialect.XAI:
        return _xai_turn_detection(value, param, vad)
    kind = choice(value["type"], ("server_vad", "semantic_vad"), f"{param}.type")
    allowed = {"type", "create_response", "interrupt_response"}
    if kind == "server_vad":
        allowed |= {"threshold", "prefix_padding_ms", "silence_duration_ms"}
        if dialect is not Dialect.OPENAI_BETA:
            allowed.add("idle_timeout_ms")
    else:
        allowed.add("eagerness")
    obj = check_object(value, param, allowed)
    td = TurnDetection(
        kind, silence_duration_ms=vad.silence_ms, prefix_padding_ms=vad.prefix_padding_ms
    )
    if "create_response" in obj:
        td = replace(
            td, create_response=boolean(obj["create_response"], f"{param}.create_response")
        )
    if "interrupt_response" in obj:
        interrupt = boolean(obj["interrupt_response"], f"{param}.interrupt_response")
        td = replace(td, interrupt_response=interrupt)
    if "threshold" in obj:
        td = replace(td, threshold=number(obj["threshold"], f"{param}.threshold", 0.0, 1.0))
    if "prefix_padding_ms" in obj:
        pad = integer(obj["prefix_padding_ms"], f"{param}.prefix_padding_ms")
        td = replace(td, prefix_padding_ms=pad)
    if "silence_duration_ms" in obj:
        silence = integer(obj["silence_duration_ms"], f"{param}.silence_duration_ms")
        td = replace(td, silence_duration_ms=silence)
    if obj.get("idle_timeout_ms") is not None:
        idle = integer(obj["idle_timeout_ms"], f"{param}.idle_timeout_ms", 1)
        td = replace(td, idle_timeout_ms=idle)
    if "eagerness" in obj:
        eagerness = ("low", "medium", "high", "auto")
        td = replace(td, eagerness=choice(obj["eagerness"], eagerness, f"{param}.eagerness"))
    return td


def _xai_turn_detection(value: dict[str, Any], param: str, vad: VadParams) -> TurnDetection:
    """xAI's server VAD: no semantic_vad, no create/interrupt flags, threshold 0.1-0.9."""
    choice(value["type"], ("server_vad",), f"{param}.type")
    keys = {"type", "threshold", "silence_duration_ms", "prefix_padding_ms", "idle_timeout_ms"}
    obj = check_object(value, param, keys)
    td = TurnDetection(
        "server_vad", silence_duration_ms=vad.silence_ms, prefix_padding_ms=vad.prefix_padding_ms
    )
    if "threshold" in obj:
        td = replace(td, threshold=number(obj["threshold"], f"{param}.threshold", 0.1, 0.9))
    if "silence_duration_ms" in obj:
        silence = integer(obj["silence_duration_ms"], f"{param}.silence_duration_ms")
        td = replace(td, silence_duration_ms=silence)
    if "prefix_padding_ms" in obj:
        pad = integer(obj["prefix_padding_ms"], f"{param}.prefix_padding_ms")
        td = replace(td, prefix_padding_ms=pad)
    if obj.get("idle_timeout_ms") is not None:
        idle = integer(obj["idle_timeout_ms"], f"{param}.idle_timeout_ms", 1)
        td = replace(td, idle_timeout_ms=idle)
    return td


def parse_transcription(value: Any, param: str, dialect: Dialect) -> dict[str, Any] | None:
    if value is None:
        return None
    if dialect is Dialect.XAI:
        return _xai_transcription(value, param)
    obj = check_object(value, param, {"model", "language", "prompt"})
    models = _INWORLD_STT if dialect is Dialect.INWORLD else _OPENAI_STT
    result = {"model": choice(obj.get("model"), models, f"{param}.model")}
    for key in ("language", "prompt"):
        if obj.get(key) is not None:
            result[key] = string(obj[key], f"{param}.{key}")
    return result


def _xai_transcription(value: Any, param: str) -> dict[str, Any]:
    # xAI names its language field language_hint; its model names are not documented, so
    # any non-empty name is taken.
    obj = check_object(value, param, {"model", "language_hint", "keyterms"})
    model = string(obj.get("model"), f"{param}.model")
    if not model:
        raise InvalidRequest("invalid_value", f"Invalid '{param}.model': empty.", f"{param}.model")
    result: dict[str, Any] = {"model": model}
    if obj.get("language_hint") is not None:
        result["language_hint"] = string(obj["language_hint"], f"{param}.language_hint")
    if obj.get("keyterms") is not None:
        terms = obj["keyterms"]
        if not isinstance(terms, list) or not all(isinstance(t, str) for t in terms):
            raise _invalid_type(f"{param}.keyterms", "an array of strings", terms)
        result["keyterms"] = list(terms)
    return result


def parse_noise_reduction(value: Any, param: str) -> dict[str, Any] | None:
    if value is None:
        return None
    obj = check_object(value, param, {"type"})
    return {"type": choice(obj.get("type"), ("near_field", "far_field"), f"{param}.type")}


def parse_voice(value: Any, param: str, dialect: Dialect) -> str | dict[str, Any]:
    if dialect is Dialect.INWORLD:
        return string(value, param)
    if dialect is Dialect.XAI:
        # A preset (Eve, Ara, Rex, Sal, Leo) or a custom voice's id: any non-empty name.
        voice = string(value, param)
        if not voice:
            raise InvalidRequest("invalid_value", f"Invalid '{param}': empty.", param)
        return voice
    if dialect is Dialect.OPENAI and isinstance(value, dict):
        return {"id": string(check_object(value, param, {"id"}).get("id"), f"{param}.id")}
    return choice(value, _GA_VOICES if dialect is Dialect.OPENAI else _BETA_VOICES, param)


def parse_max_tokens(value: Any, param: str) -> int | str:
    if value == "inf":
        return "inf"
    tokens = integer(value, param, 1)
    if tokens > 4096:
        raise InvalidRequest(
            "integer_above_max_value",
            f"Invalid '{param}': integer above maximum value. Expected a value <= 4096, "
            f"but got {tokens} instead.",
            param,
        )
    return tokens


def parse_modalities(
    value: Any, param: str, allowed: tuple[frozenset[str], ...]
) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _invalid_type(param, "an array of strings", value)
    if frozenset(value) not in allowed or len(set(value)) != len(value):
        raise InvalidRequest("invalid_value", f"Invalid value for '{param}': {value}.", param)
    return tuple(value)


_TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]+")
_TOOL_NAME_MAX = 64
_TOOL_KEYS = frozenset({"type", "name", "description", "parameters"})
_TOOL_KINDS = {
    Dialect.OPENAI_BETA: ("function",),
    Dialect.XAI: ("function", "web_search", "x_search", "file_search"),
}


def parse_tools(value: Any, param: str, dialect: Dialect) -> list[dict[str, Any]]:
    """``session.tools``: function tools, checked the way OpenAI checks them.

    GA servers also take ``mcp`` tools, xAI its built-in searches; the fake has neither, so
    it refuses them by name rather than pretend. Codes and messages follow OpenAI's
    (``empty_string``, ``string_above_max_length``, ``invalid_function_parameters``, ...).
    """
    if not isinstance(value, list):
        raise _invalid_type(param, "an array", value)
    kinds = _TOOL_KINDS.get(dialect, ("function", "mcp"))
    tools: list[dict[str, Any]] = []
    for index, tool in enumerate(value):
        where = f"{param}[{index}]"
        if not isinstance(tool, dict):
            raise _invalid_type(where, "an object", tool)
        if "type" not in tool:
            raise missing(f"{where}.type")
        kind = choice(tool["type"], kinds, f"{where}.type")
        if kind != "function":
            raise InvalidRequest(
                "invalid_value",
                f"The fake realtime server does not support '{kind}' tools.",
                f"{where}.type",
            )
        obj = check_object(tool, where, _TOOL_KEYS)
        if "name" not in obj:
            raise missing(f"{where}.name")
        name = _tool_name(obj["name"], f"{where}.name")
        if obj.get("description") is not None:
            string(obj["description"], f"{where}.description")
        if "parameters" in obj:
            _check_parameters(name, obj["parameters"], f"{where}.parameters")
        tools.append(dict(obj))
    return tools


def parse_tool_choice(value: Any, param: str) -> str | dict[str, Any]:
    """``tool_choice``: ``auto``, ``none``, ``required`` or one named function."""
    if not isinstance(value, dict):
        return choice(value, ("auto", "none", "required"), param)
    obj = check_object(value, param, {"type", "name"})
    if "type" not in obj:
        raise missing(f"{param}.type")
    choice(obj["type"], ("function",), f"{param}.type")
    if "name" not in obj:
        raise missing(f"{param}.name")
    return {"type": "function", "name": _tool_name(obj["name"], f"{param}.name")}


def _tool_name(value: Any, param: str) -> str:
    name = string(value, param)
    if not name:
        raise InvalidRequest(
            "empty_string",
            f"Invalid '{param}': empty string. Expected a string with minimum length 1, but "
            "got an empty string instead.",
            param,
        )
    if len(name) > _TOOL_NAME_MAX:
        raise InvalidRequest(
            "string_above_max_length",
            f"Invalid '{param}': string too long. Expected a string with maximum length "
            f"{_TOOL_NAME_MAX}, but got a string with length {len(name)} instead.",
            param,
        )
    if not _TOOL_NAME.fullmatch(name):
        raise InvalidRequest(
            "invalid_value",
            f"Invalid '{param}': string does not match pattern. Expected a string that "
            "matches the pattern '^[a-zA-Z0-9_-]+$'.",
            param,
        )
    return name


def _check_parameters(name: str, schema: Any, param: str) -> None:
    """A function's ``parameters`` must be a JSON Schema of an object (``{}``: no arguments)."""

    def refuse(reason: str) -> InvalidRequest:
        return InvalidRequest(
            "invalid_function_parameters", f"Invalid schema for function '{name}': {reason}", param
        )

    if not isinstance(schema, dict):
        shown = json.dumps(schema)
        raise refuse(f"{shown} is not of type 'object', 'boolean'.")
    if not schema:
        return
    kind = schema.get("type")
    if kind != "object":
        raise refuse(f"schema must be a JSON Schema of 'type: \"object\"', got 'type: \"{kind}\"'.")
    properties = schema.get("properties", {})
    if not isinstance(properties, dict):
        raise refuse(f"{json.dumps(properties)} is not of type 'object'.")
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        raise refuse(f"{json.dumps(required)} is not of type 'array' of strings.")
