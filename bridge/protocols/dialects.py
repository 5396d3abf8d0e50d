"""The realtime APIs the bridge speaks, as one table of differences.

OpenAI GA, OpenAI beta, Azure, Inworld and xAI share one protocol with different names,
shapes and defaults. Everything that differs lives in a :class:`Dialect` in :data:`DIALECTS`; the
connection object (``bridge.protocols.realtime``), the session builder and the endpoint
builder below read the table and never branch on a provider's name.

To open a session: ``url, headers = realtime_endpoint(dialect, ...)``, connect, wait for
the dialect's ``configure_after`` event (``session.created``; ``conversation.created`` on
xAI), then send ``build_session_update(dialect, config)`` (the connection's
``send_session_update`` does that and adds an ``event_id``).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from bridge.errors import ConfigurationError

#: Bytes of input (and output) audio per millisecond for each session audio format.
BYTES_PER_MS: Mapping[str, int] = MappingProxyType({"pcmu": 8, "pcm24k": 48})

AZURE_PREVIEW_API_VERSION = "2025-04-01-preview"


class EndpointKind(StrEnum):
    """How a dialect's WebSocket URL and credentials are formed."""

    OPENAI = "openai"
    AZURE = "azure"
    AZURE_PREVIEW = "azure-preview"
    INWORLD = "inworld"
    XAI = "xai"


class SessionShape(StrEnum):
    """How ``session.update`` lays out its fields."""

    #: ``session.type``, audio settings nested under ``session.audio.{input,output}``.
    GA = "ga"
    #: Flat: ``input_audio_format``, ``voice``, ``turn_detection`` ... at the top level.
    BETA = "beta"
    #: xAI: ``voice`` and ``turn_detection`` at the top level, only the audio formats (and
    #: transcription) nested, no ``session.type``.
    HYBRID = "hybrid"


def _frozen(value: dict[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(value)


@dataclass(frozen=True, slots=True)
class Dialect:
    """Everything one realtime API does differently from the others.

    JSON-valued fields are read-only (mappings and tuples); :func:`build_session_update`
    copies them into plain dicts and lists, so a caller may change what it gets back.
    """

    name: str
    session_shape: SessionShape
    endpoint: EndpointKind
    #: The server event after which ``session.update`` may be sent. xAI announces the
    #: session before it can take a configuration; it is ready at ``conversation.created``.
    configure_after: str
    #: The longest a session may last, in seconds (``None``: no documented limit). A call
    #: longer than this must move to a new session before the server ends this one.
    session_limit_s: float | None
    #: Server event names for the assistant's audio and its transcript.
    audio_delta: str
    audio_done: str
    transcript_delta: str
    transcript_done: str
    #: Events that announce a conversation item (GA: added then done; beta: created).
    item_created: tuple[str, ...]
    #: Content-part type of assistant audio and text (re-seeding context, fake servers).
    assistant_audio_content: str
    assistant_text_content: str
    #: ``format`` values for the two session audio formats.
    pcmu_format: str | Mapping[str, Any] = field(hash=False)
    pcm24k_format: str | Mapping[str, Any] = field(hash=False)
    turn_detection: Mapping[str, Any] = field(hash=False)
    #: Inworld counts packets against an account budget, so audio is batched to this size.
    min_append_ms: int
    default_voice: str
    #: OpenAI and Azure pick the model in the URL; Inworld routes ``session.model``.
    default_model: str
    model_in_session: bool
    transcription_model: str
    transcription_language: str | None
    #: The transcription field that carries the language (xAI calls it ``language_hint``).
    transcription_language_key: str
    noise_reduction: str | None
    output_modalities: tuple[str, ...]
    #: TTS model for ``audio.output.model`` (Inworld only).
    output_model: str | None
    #: Fields added to the session as they are (tools, temperature, token limits, ...).
    session_extra: Mapping[str, Any] = field(hash=False)
    #: ``tool_choice`` sent along with the agent's tools; ``None`` where the provider does not
    #: document the field (xAI), since an unknown field makes it refuse the whole update.
    tool_choice: str | None
    #: The session is configured with ``interrupt_response: true``, so on caller speech the
    #: server cancels the response itself; the client sends ``response.cancel`` only for a
    #: barge-in it decided on its own.
    server_cancels_on_speech: bool
    #: ``conversation.item.truncate`` is known to work. Where it is only documented
    #: (Inworld), the call logic should send it only when configured to.
    supports_truncate: bool

    @property
    def ga(self) -> bool:
        """True when the server speaks GA event names (GA and hybrid shapes), not beta's."""
        return self.session_shape is not SessionShape.BETA

    def format_value(self, audio_format: str) -> str | dict[str, Any]:
        """The session ``format`` value for ``"pcmu"`` or ``"pcm24k"``, as a fresh copy."""
        value: str | dict[str, Any]
        if audio_format == "pcmu":
            value = _thaw(self.pcmu_format)
        elif audio_format == "pcm24k":
            value = _thaw(self.pcm24k_format)
        else:
            raise ConfigurationError(f"unknown audio format {audio_format!r}")
        return value


_GA_NAMES: dict[str, Any] = {
    "session_shape": SessionShape.GA,
    "audio_delta": "response.output_audio.delta",
    "audio_done": "response.output_audio.done",
    "transcript_delta": "response.output_audio_transcript.delta",
    "transcript_done": "response.output_audio_transcript.done",
    "item_created": ("conversation.item.added", "conversation.item.done"),
    "assistant_audio_content": "output_audio",
    "assistant_text_content": "output_text",
    "pcmu_format": _frozen({"type": "audio/pcmu"}),
    "pcm24k_format": _frozen({"type": "audio/pcm", "rate": 24000}),
}

_BETA_NAMES: dict[str, Any] = {
    "session_shape": SessionShape.BETA,
    "audio_delta": "response.audio.delta",
    "audio_done": "response.audio.done",
    "transcript_delta": "response.audio_transcript.delta",
    "transcript_done": "response.audio_transcript.done",
    "item_created": ("conversation.item.created",),
    "assistant_audio_content": "audio",
    "assistant_text_content": "text",
    "pcmu_format": "g711_ulaw",
    "pcm24k_format": "pcm16",
}

# GA event names in a hybrid session. xAI never sends conversation.item.done: an item is
# announced once, when it is added.
_XAI_NAMES: dict[str, Any] = {
    **_GA_NAMES,
    "session_shape": SessionShape.HYBRID,
    "item_created": ("conversation.item.added",),
}

_SERVER_VAD: dict[str, Any] = {
    "type": "server_vad",
    "threshold": 0.5,
    "prefix_padding_ms": 300,
    "silence_duration_ms": 500,
    "create_response": True,
    "interrupt_response": True,
}

# The rest of an OpenAI-style dialect; Inworld overrides most of it.
_OPENAI_COMMON: dict[str, Any] = {
    "configure_after": "session.created",
    # "Realtime sessions have a maximum duration of 60 minutes"; Azure is taken to match.
    "session_limit_s": 3600.0,
    "transcription_language_key": "language",
    "tool_choice": "auto",
    "min_append_ms": 20,
    "model_in_session": False,
    "transcription_language": "en",
    "noise_reduction": "near_field",
    "output_model": None,
    "server_cancels_on_speech": True,
    "supports_truncate": True,
}

_GA_OPENAI: dict[str, Any] = {
    **_GA_NAMES,
    **_OPENAI_COMMON,
    # GA has idle_timeout_ms; null keeps the "are you still there?" nudge off.
    "turn_detection": _frozen({**_SERVER_VAD, "idle_timeout_ms": None}),
    "default_voice": "marin",
    "default_model": "gpt-realtime",
    "transcription_model": "gpt-4o-mini-transcribe",
    "output_modalities": ("audio",),
    "session_extra": _frozen({"tools": (), "tool_choice": "auto", "max_output_tokens": "inf"}),
}

_BETA_OPENAI: dict[str, Any] = {
    **_BETA_NAMES,
    **_OPENAI_COMMON,
    "turn_detection": _frozen(dict(_SERVER_VAD)),
    "default_voice": "alloy",
    "default_model": "gpt-4o-realtime-preview",
    "transcription_model": "whisper-1",
    "output_modalities": ("text", "audio"),
    "session_extra": _frozen(
        {
            "temperature": 0.8,
            "max_response_output_tokens": "inf",
            "tool_choice": "auto",
            "tools": (),
        }
    ),
}

DIALECTS: Mapping[str, Dialect] = MappingProxyType(
    {
        "openai": Dialect(name="openai", endpoint=EndpointKind.OPENAI, **_GA_OPENAI),
        "openai-beta": Dialect(name="openai-beta", endpoint=EndpointKind.OPENAI, **_BETA_OPENAI),
        # Azure speaks the same protocols; only the URL and credentials differ. The model is
        # the deployment name.
        "azure": Dialect(name="azure", endpoint=EndpointKind.AZURE, **_GA_OPENAI),
        "azure-beta": Dialect(
            name="azure-beta", endpoint=EndpointKind.AZURE_PREVIEW, **_BETA_OPENAI
        ),
        "inworld": Dialect(
            name="inworld",
            endpoint=EndpointKind.INWORLD,
            **_GA_NAMES,
            configure_after="session.created",
            session_limit_s=None,  # none documented; expires_at is read when it is sent
            turn_detection=_frozen(
                {
                    "type": "semantic_vad",
                    "eagerness": "medium",
                    "create_response": True,
                    "interrupt_response": True,
                }
            ),
            # Inworld allows 1,000 packets/s per account: 20 ms appends would let 20 calls
            # exhaust it, so appends carry at least 60 ms.
            min_append_ms=60,
            default_voice="Clive",
            default_model="openai/gpt-4.1-mini",
            model_in_session=True,
            transcription_model="inworld/inworld-stt-1",
            transcription_language=None,
            transcription_language_key="language",
            noise_reduction=None,
            output_modalities=("audio", "text"),
            output_model="inworld-tts-2",
            session_extra=_frozen({"temperature": 0.8, "tools": (), "providerData": _frozen({})}),
            tool_choice="auto",
            server_cancels_on_speech=True,
            supports_truncate=False,
        ),
        "xai": Dialect(
            name="xai",
            endpoint=EndpointKind.XAI,
            **_XAI_NAMES,
            configure_after="conversation.created",
            session_limit_s=3600.0,  # "Sessions last at most 1 hour"
            # Only the fields xAI documents for its top-level turn_detection: it has no
            # semantic_vad and no create_response/interrupt_response flags.
            turn_detection=_frozen(
                {
                    "type": "server_vad",
                    "threshold": 0.5,
                    "silence_duration_ms": 500,
                    "prefix_padding_ms": 300,
                }
            ),
            min_append_ms=20,
            default_voice="Eve",
            default_model="grok-voice-latest",
            model_in_session=False,  # chosen at connect only
            # Not named by the reference; the one public client seen sending xAI a
            # transcription object names this model. An agent can set its own.
            transcription_model="grok-transcribe",
            transcription_language=None,  # xAI detects the language unless given a hint
            transcription_language_key="language_hint",
            noise_reduction=None,
            output_modalities=("audio",),
            output_model=None,
            session_extra=_frozen({}),
            tool_choice=None,
            # Without interrupt_response it is not documented that xAI's VAD cancels the
            # response, so the bridge cancels it itself; a cancel that comes too late earns
            # a benign "no active response" error.
            server_cancels_on_speech=False,
            supports_truncate=True,
        ),
    }
)


@dataclass(frozen=True)
class SessionConfig:
    """What the agent should be in one realtime session; the dialect fills in the rest.

    ``voice`` and ``model`` of ``None`` mean the dialect's default. ``audio_format`` is
    ``"pcmu"`` (µ-law passes through) or ``"pcm24k"`` (24 kHz PCM16).
    """

    instructions: str
    voice: str | None
    audio_format: str
    transcription: bool = True
    model: str | None = None
    #: Function tools offered to the model: ``{"type": "function", "name", "description",
    #: "parameters"}`` each, the same shape in every dialect.
    tools: tuple[dict[str, Any], ...] = ()
    #: The agent's own transcription model and language; ``None``: the dialect's.
    transcription_model: str | None = None
    transcription_language: str | None = None

    def __post_init__(self) -> None:
        if self.audio_format not in BYTES_PER_MS:
            raise ConfigurationError(
                f"audio format must be 'pcmu' or 'pcm24k', not {self.audio_format!r}"
            )


def build_session_update(dialect: Dialect, config: SessionConfig) -> dict[str, Any]:
    """The ``session.update`` client event (without ``event_id``) for ``config``.

    Send it after the dialect's ``configure_after`` event. The reply is ``session.updated``;
    an ``error`` whose ``event_id`` names this event means the whole update was refused.
    """
    shape = dialect.session_shape
    if shape is SessionShape.GA:
        session = _ga_session(dialect, config)
    elif shape is SessionShape.BETA:
        session = _beta_session(dialect, config)
    else:
        session = _hybrid_session(dialect, config)
    session.update(_thaw(dialect.session_extra))
    if config.tools:
        session["tools"] = [dict(tool) for tool in config.tools]
        if dialect.tool_choice is not None:
            session["tool_choice"] = dialect.tool_choice
    return {"type": "session.update", "session": session}


def _transcription(dialect: Dialect, config: SessionConfig) -> dict[str, Any] | None:
    if not config.transcription:
        return None
    transcription = {"model": config.transcription_model or dialect.transcription_model}
    language = config.transcription_language or dialect.transcription_language
    if language is not None:
        transcription[dialect.transcription_language_key] = language
    return transcription


def _noise(dialect: Dialect) -> dict[str, Any] | None:
    return {"type": dialect.noise_reduction} if dialect.noise_reduction is not None else None


def _ga_session(dialect: Dialect, config: SessionConfig) -> dict[str, Any]:
    fmt = dialect.format_value(config.audio_format)
    session: dict[str, Any] = {"type": "realtime"}
    if dialect.model_in_session:
        session["model"] = config.model or dialect.default_model
    session["instructions"] = config.instructions
    session["output_modalities"] = list(dialect.output_modalities)
    audio_in: dict[str, Any] = {"format": fmt}
    noise = _noise(dialect)
    if noise is not None:
        audio_in["noise_reduction"] = noise
    audio_in["transcription"] = _transcription(dialect, config)
    audio_in["turn_detection"] = _thaw(dialect.turn_detection)
    audio_out: dict[str, Any] = {"format": _thaw(fmt)}
    if dialect.output_model is not None:
        audio_out["model"] = dialect.output_model
    audio_out["voice"] = config.voice or dialect.default_voice
    audio_out["speed"] = 1.0
    session["audio"] = {"input": audio_in, "output": audio_out}
    return session


def _beta_session(dialect: Dialect, config: SessionConfig) -> dict[str, Any]:
    fmt = dialect.format_value(config.audio_format)
    session: dict[str, Any] = {
        "modalities": list(dialect.output_modalities),
        "instructions": config.instructions,
        "voice": config.voice or dialect.default_voice,
        "input_audio_format": fmt,
        "output_audio_format": _thaw(fmt),
        "input_audio_transcription": _transcription(dialect, config),
    }
    noise = _noise(dialect)
    if noise is not None:
        session["input_audio_noise_reduction"] = noise
    session["turn_detection"] = _thaw(dialect.turn_detection)
    return session


def _hybrid_session(dialect: Dialect, config: SessionConfig) -> dict[str, Any]:
    fmt = dialect.format_value(config.audio_format)
    audio_in: dict[str, Any] = {"format": fmt}
    transcription = _transcription(dialect, config)
    # Left out rather than null when off: the reference documents no way to turn xAI's
    # transcription off, and an undocumented value could make it refuse the update.
    if transcription is not None:
        audio_in["transcription"] = transcription
    return {
        "instructions": config.instructions,
        "voice": config.voice or dialect.default_voice,
        "turn_detection": _thaw(dialect.turn_detection),
        "audio": {"input": audio_in, "output": {"format": _thaw(fmt)}},
    }


def realtime_endpoint(
    dialect: Dialect,
    *,
    api_key: str | None,
    model: str | None,
    url_override: str | None,
    azure_endpoint: str | None = None,
    session_key: str | None = None,
) -> tuple[str, dict[str, str]]:
    """The WebSocket URL and headers that open a session in ``dialect``.

    ``model`` of ``None`` means the dialect's default (for Azure: the deployment name).
    ``url_override`` (a proxy, a test server) replaces the provider's URL but keeps the query
    parameters the dialect needs; parameters already in the override win. ``api_key`` of
    ``None`` sends no credentials (a local test server). ``session_key`` is Inworld's
    per-session id; a fresh one is made when it is ``None``. Raises ``ConfigurationError``
    for Azure without ``azure_endpoint`` or ``url_override``.
    """
    chosen_model = model or dialect.default_model
    headers: dict[str, str] = {}
    query: dict[str, str]
    kind = dialect.endpoint
    if kind is EndpointKind.OPENAI:
        base = "wss://api.openai.com/v1/realtime"
        query = {"model": chosen_model}
        if api_key is not None:
            headers["Authorization"] = f"Bearer {api_key}"
        if not dialect.ga:
            # The header is what selects beta; GA rejects it.
            headers["OpenAI-Beta"] = "realtime=v1"
    elif kind is EndpointKind.XAI:
        base = "wss://api.x.ai/v1/realtime"
        query = {"model": chosen_model}
        if api_key is not None:
            headers["Authorization"] = f"Bearer {api_key}"
    elif kind is EndpointKind.AZURE or kind is EndpointKind.AZURE_PREVIEW:
        if kind is EndpointKind.AZURE:
            path = "/openai/v1/realtime"
            query = {"model": chosen_model}
        else:
            path = "/openai/realtime"
            query = {"api-version": AZURE_PREVIEW_API_VERSION, "deployment": chosen_model}
        base = "" if url_override else f"wss://{_azure_host(azure_endpoint)}{path}"
        if api_key is not None:
            headers["api-key"] = api_key
    else:
        base = "wss://api.inworld.ai/api/v1/realtime/session"
        query = {"key": session_key or uuid.uuid4().hex, "protocol": "realtime"}
        if api_key is not None:
            # Inworld issues the key already Base64-encoded: sent verbatim, never re-encoded.
            headers["Authorization"] = f"Basic {api_key}"
    if url_override:
        return _merge_query(url_override, query), headers
    return f"{base}?{urlencode(query)}", headers


def _azure_host(endpoint: str | None) -> str:
    if not endpoint:
        raise ConfigurationError("the azure provider needs AZURE_OPENAI_ENDPOINT")
    parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
    if not parts.netloc:
        raise ConfigurationError(f"AZURE_OPENAI_ENDPOINT is not a URL: {endpoint!r}")
    return parts.netloc


def _merge_query(url: str, needed: dict[str, str]) -> str:
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    present = {key for key, _ in pairs}
    pairs.extend((key, value) for key, value in needed.items() if key not in present)
    return urlunsplit((scheme, parts.netloc, parts.path, urlencode(pairs), parts.fragment))


def _thaw(value: Any) -> Any:
    """A plain, JSON-serialisable deep copy of a table value."""
    if isinstance(value, Mapping):
        return {key: _thaw(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_thaw(item) for item in value]
    return value
