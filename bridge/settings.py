"""The bridge's settings: one frozen model, read once from the environment (and ``.env``).

Every name here is public (see CONTRACT.md); build it with ``load_settings()`` and pass it
down. Nothing else in the bridge reads the environment.
"""

from __future__ import annotations

import ipaddress
import sys
from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bridge.errors import ConfigurationError


class Provider(StrEnum):
    OPENAI = "openai"
    OPENAI_BETA = "openai-beta"
    AZURE = "azure"
    INWORLD = "inworld"
    XAI = "xai"
    LOCAL = "local"


class AudioFormat(StrEnum):
    PCMU = "pcmu"
    PCM24K = "pcm24k"


DEFAULT_INSTRUCTIONS = (
    "You are a friendly, concise assistant answering a phone call. Speak in short sentences, "
    "one or two at a time, and let the caller talk. If you do not understand, ask again."
)


def _env(*names: str) -> AliasChoices:
    return AliasChoices(*names)


class Settings(BaseSettings):
    """What the bridge is configured to do. Frozen: build a new one to change anything."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
        populate_by_name=True,
    )

    public_url: str = Field("http://127.0.0.1:8000", validation_alias=_env("BRIDGE_PUBLIC_URL"))
    twilio_account_sid: str | None = Field(None, validation_alias=_env("TWILIO_ACCOUNT_SID"))
    twilio_auth_token: SecretStr | None = Field(None, validation_alias=_env("TWILIO_AUTH_TOKEN"))
    provider: Provider | None = Field(None, validation_alias=_env("BRIDGE_PROVIDER"))
    realtime_url: str | None = Field(None, validation_alias=_env("BRIDGE_REALTIME_URL"))
    realtime_model: str | None = Field(None, validation_alias=_env("BRIDGE_REALTIME_MODEL"))
    # A second provider (its key set like the first's) for calls the first cannot serve.
    fallback_provider: Provider | None = Field(
        None, validation_alias=_env("BRIDGE_FALLBACK_PROVIDER")
    )
    fallback_realtime_url: str | None = Field(
        None, validation_alias=_env("BRIDGE_FALLBACK_REALTIME_URL")
    )
    fallback_realtime_model: str | None = Field(
        None, validation_alias=_env("BRIDGE_FALLBACK_REALTIME_MODEL")
    )
    openai_api_key: SecretStr | None = Field(None, validation_alias=_env("OPENAI_API_KEY"))
    inworld_api_key: SecretStr | None = Field(None, validation_alias=_env("INWORLD_API_KEY"))
    # Used only when BRIDGE_PROVIDER=xai: the automatic choice never picks xAI.
    xai_api_key: SecretStr | None = Field(None, validation_alias=_env("XAI_API_KEY"))
    azure_openai_api_key: SecretStr | None = Field(
        None, validation_alias=_env("AZURE_OPENAI_API_KEY")
    )
    azure_openai_endpoint: str | None = Field(None, validation_alias=_env("AZURE_OPENAI_ENDPOINT"))
    audio_format: AudioFormat = Field(
        AudioFormat.PCMU, validation_alias=_env("BRIDGE_AUDIO_FORMAT")
    )
    instructions: str = Field(DEFAULT_INSTRUCTIONS, validation_alias=_env("BRIDGE_INSTRUCTIONS"))
    voice: str | None = Field(None, validation_alias=_env("BRIDGE_VOICE"))
    greeting: str | None = Field(None, validation_alias=_env("BRIDGE_GREETING"))
    database_url: str = Field("sqlite:///./bridge.db", validation_alias=_env("BRIDGE_DATABASE_URL"))
    review_token: SecretStr | None = Field(None, validation_alias=_env("BRIDGE_REVIEW_TOKEN"))
    log_format: Literal["console", "json"] | None = Field(
        None, validation_alias=_env("BRIDGE_LOG_FORMAT")
    )
    # Not in the public contract: a shared secret for the per-call stream token. When unset it
    # is derived from TWILIO_AUTH_TOKEN (shared by every instance) or made up per process.
    stream_secret: SecretStr | None = Field(None, validation_alias=_env("BRIDGE_STREAM_SECRET"))
    log_level: str = Field("info", validation_alias=_env("BRIDGE_LOG_LEVEL"))
    # Twilio sends media every 20 ms: this long without a frame means the phone leg is dead.
    idle_timeout_s: float = Field(15.0, gt=0, validation_alias=_env("BRIDGE_IDLE_TIMEOUT_S"))
    # Recordings are off unless asked for: a stereo WAV per call, caller left, agent right.
    recordings: bool = Field(False, validation_alias=_env("BRIDGE_RECORDINGS"))
    recordings_dir: Path | None = Field(None, validation_alias=_env("BRIDGE_RECORDINGS_DIR"))
    # An instance renews its lease this often times three; a call whose instance has not
    # renewed for this long is ended as `unknown` by whichever instance notices first.
    lease_s: float = Field(30.0, ge=1, validation_alias=_env("BRIDGE_LEASE_S"))
    # A connection must finish its request headers this long after it opens (or after its
    # previous response), or it is closed: slow clients must not hold sockets for minutes.
    header_timeout_s: float = Field(10.0, gt=0, validation_alias=_env("BRIDGE_HEADER_TIMEOUT_S"))
    # Open connections (HTTP and WebSocket) kept at most; unset, derived from the process's
    # file-descriptor limit so a flood of connections can never exhaust it.
    max_connections: int | None = Field(None, ge=1, validation_alias=_env("BRIDGE_MAX_CONNECTIONS"))
    # Native SIP (CONTRACT.md): where to take calls, what to advertise, RTP ports, who may call.
    sip_listen: str | None = Field(None, validation_alias=_env("BRIDGE_SIP_LISTEN"))
    sip_advertise: str | None = Field(None, validation_alias=_env("BRIDGE_SIP_ADVERTISE"))
    rtp_ports: str = Field("10000-20000", validation_alias=_env("BRIDGE_RTP_PORTS"))
    sip_allow: str = Field("127.0.0.0/8,::1/128", validation_alias=_env("BRIDGE_SIP_ALLOW"))
    sip_username: str | None = Field(None, validation_alias=_env("BRIDGE_SIP_USERNAME"))
    sip_password: SecretStr | None = Field(None, validation_alias=_env("BRIDGE_SIP_PASSWORD"))
    sip_max_calls: int = Field(200, ge=1, validation_alias=_env("BRIDGE_SIP_MAX_CALLS"))
    # Agents and tools (CONTRACT.md): a TOML file; unset, one agent built from the settings above.
    agents_path: Path | None = Field(None, validation_alias=_env("BRIDGE_AGENTS"))
    # HMAC key for X-Bridge-Signature on HTTP tool calls whose tool has no secret of its own.
    tool_secret: SecretStr | None = Field(None, validation_alias=_env("BRIDGE_TOOL_SECRET"))
    # Outbound calls (CONTRACT.md): POST /api/calls is off while BRIDGE_API_TOKEN is unset.
    # Placing a call costs money, so this token is never the review token.
    api_token: SecretStr | None = Field(None, validation_alias=_env("BRIDGE_API_TOKEN"))
    twilio_api_base: str = Field(
        "https://api.twilio.com", pattern=r"^https?://", validation_alias=_env("TWILIO_API_BASE")
    )
    # The caller ID when a request names none: a Twilio number, E.164 (blank counts as unset).
    outbound_from: str | None = Field(
        None, pattern=r"^(\+[1-9][0-9]{6,14})?$", validation_alias=_env("BRIDGE_OUTBOUND_FROM")
    )
    # OpenAI's SIP connector (CONTRACT.md): POST /openai/webhook is off while the secret is
    # unset; call control and the sideband go to OPENAI_API_BASE with OPENAI_API_KEY.
    openai_webhook_secret: SecretStr | None = Field(
        None, validation_alias=_env("OPENAI_WEBHOOK_SECRET")
    )
    openai_api_base: str = Field(
        "https://api.openai.com", pattern=r"^https?://", validation_alias=_env("OPENAI_API_BASE")
    )
    # Concurrent OpenAI SIP calls; the next is rejected (SIP 503). Each costs a model session.
    openai_sip_max_calls: int = Field(
        200, ge=1, validation_alias=_env("BRIDGE_OPENAI_SIP_MAX_CALLS")
    )

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if not self.public_url.startswith(("http://", "https://")):
            raise ConfigurationError("BRIDGE_PUBLIC_URL must start with http:// or https://")
        if self.sip_listen:
            self._check_sip()
        return self

    def _check_sip(self) -> None:
        """Refuse SIP settings that cannot work at start-up, not when the first call comes."""
        if not self.sip_listeners:
            raise ConfigurationError("BRIDGE_SIP_LISTEN has no transport:host:port entry")
        seen = set()
        for transport, host, port in self.sip_listeners:
            if (transport, host, port) in seen or not 0 < port <= 65535:
                raise ConfigurationError(
                    f"BRIDGE_SIP_LISTEN entry {transport}:{host}:{port} is repeated or out of range"
                )
            seen.add((transport, host, port))
        _ = self.rtp_port_range
        for net in self.sip_allow.split(","):
            try:
                ipaddress.ip_network(net.strip(), strict=False)
            except ValueError:
                raise ConfigurationError(
                    f"BRIDGE_SIP_ALLOW entry {net!r} is not a network"
                ) from None

    @property
    def sip_listeners(self) -> list[tuple[str, str, int]]:
        """``udp:127.0.0.1:5060,tcp:[::]:5060`` as (transport, host, port), in order."""
        out = []
        for entry in (e.strip() for e in (self.sip_listen or "").split(",")):
            if not entry:
                continue
            transport, _, rest = entry.partition(":")
            host, _, port = rest.rpartition(":")
            if transport.lower() not in ("udp", "tcp") or not host or not port.isdigit():
                raise ConfigurationError(
                    f"BRIDGE_SIP_LISTEN entry {entry!r} is not transport:host:port"
                )
            out.append((transport.lower(), host.strip("[]"), int(port)))
        return out

    @property
    def rtp_port_range(self) -> range:
        low, _, high = self.rtp_ports.partition("-")
        if not (low.isdigit() and high.isdigit() and 1024 <= int(low) < int(high) <= 65535):
            raise ConfigurationError("BRIDGE_RTP_PORTS must look like 10000-20000")
        return range(int(low), int(high) + 1)

    @property
    def effective_provider(self) -> Provider:
        """The provider in force: the explicit one, else the first with a key, else local."""
        if self.provider is not None:
            return self.provider
        if self.openai_api_key is not None:
            return Provider.OPENAI
        if self.inworld_api_key is not None:
            return Provider.INWORLD
        return Provider.LOCAL

    @property
    def public_base(self) -> str:
        return self.public_url.rstrip("/")

    @property
    def media_stream_url(self) -> str:
        """The ``<Stream url>`` written in TwiML and signed by Twilio on the upgrade."""
        base = self.public_base
        scheme, rest = base.split("://", 1)
        return ("wss" if scheme == "https" else "ws") + "://" + rest + "/twilio/media"

    def public_http_url(self, path: str) -> str:
        return self.public_base + path

    @property
    def resolved_recordings_dir(self) -> Path:
        """Where recordings go: the setting, else a ``recordings`` folder beside the SQLite
        file, else ``./recordings``."""
        if self.recordings_dir is not None:
            return self.recordings_dir
        url = self.database_url.strip()
        if url.startswith("sqlite:///") and not url.endswith(":memory:"):
            return Path(url.removeprefix("sqlite:///")).parent / "recordings"
        return Path("recordings")

    @property
    def resolved_log_format(self) -> str:
        if self.log_format is not None:
            return self.log_format
        return "console" if sys.stderr.isatty() else "json"


def load_settings(**overrides: object) -> Settings:
    """Read the environment (and ``.env``); ``overrides`` win, for tests and the CLI."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ConfigurationError:
        raise
    except ValueError as exc:  # pydantic's ValidationError
        raise ConfigurationError(str(exc)) from exc
