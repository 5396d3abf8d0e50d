"""The bridge's settings: one frozen model, read once from the environment (and ``.env``).

The names in CONTRACT.md are public; the rest are the bridge's own tuning, and
docs/configuration.md (generated from the descriptions here) says which is which. Build it
with ``load_settings()`` and pass it down. Nothing else in the bridge reads the environment.
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

    public_url: str = Field(
        "http://127.0.0.1:8000",
        validation_alias=_env("BRIDGE_PUBLIC_URL"),
        description="The base URL Twilio reaches the bridge at, exactly as Twilio sees it. "
        "TwiML stream URLs and signature checks are built from it, never from the request "
        "(proxies and tunnels change what the server sees); `https` maps to `wss`, `http` to "
        "`ws`.",
    )
    twilio_account_sid: str | None = Field(
        None,
        validation_alias=_env("TWILIO_ACCOUNT_SID"),
        description="The Twilio account (`AC…`) whose REST API places outbound calls.",
    )
    twilio_auth_token: SecretStr | None = Field(
        None,
        validation_alias=_env("TWILIO_AUTH_TOKEN"),
        description="Twilio's auth token: the signature of every webhook and of the media "
        "WebSocket upgrade is checked with it, and REST calls authenticate with it. Unset: no "
        "checks, a loud warning, and `bridge serve` refuses a non-loopback host unless "
        "`--insecure`.",
    )
    provider: Provider | None = Field(
        None,
        validation_alias=_env("BRIDGE_PROVIDER"),
        description="The realtime API that serves calls: `openai` (GA), `openai-beta`, "
        "`azure`, `inworld`, `xai`, or `local` (the built-in demo agent, no account needed). "
        "Unset: `openai` if `OPENAI_API_KEY` is set, else `inworld` if `INWORLD_API_KEY` is "
        "set, else `local`.",
    )
    realtime_url: str | None = Field(
        None,
        validation_alias=_env("BRIDGE_REALTIME_URL"),
        description="The realtime WebSocket URL, to reach the provider through a proxy or to "
        "use a test server. Unset: the provider's own.",
    )
    realtime_model: str | None = Field(
        None,
        validation_alias=_env("BRIDGE_REALTIME_MODEL"),
        description="The model name. Unset: the provider's default (`gpt-realtime` for OpenAI).",
    )
    fallback_provider: Provider | None = Field(
        None,
        validation_alias=_env("BRIDGE_FALLBACK_PROVIDER"),
        description="A second provider, its key set like the first's, for calls the first "
        "cannot serve: unreachable, refusing the session, over its rate or quota, or failing "
        "mid-call after the retries. Never `local`. Unset: no fallback.",
    )
    fallback_realtime_url: str | None = Field(
        None,
        validation_alias=_env("BRIDGE_FALLBACK_REALTIME_URL"),
        description="As `BRIDGE_REALTIME_URL`, for the fallback provider.",
    )
    fallback_realtime_model: str | None = Field(
        None,
        validation_alias=_env("BRIDGE_FALLBACK_REALTIME_MODEL"),
        description="As `BRIDGE_REALTIME_MODEL`, for the fallback provider.",
    )
    openai_api_key: SecretStr | None = Field(
        None,
        validation_alias=_env("OPENAI_API_KEY"),
        description="OpenAI API key: the model for `openai` and `openai-beta`, and call "
        "control and the sideband for OpenAI's SIP connector.",
    )
    inworld_api_key: SecretStr | None = Field(
        None,
        validation_alias=_env("INWORLD_API_KEY"),
        description="Inworld API key, for the `inworld` provider.",
    )
    xai_api_key: SecretStr | None = Field(
        None,
        validation_alias=_env("XAI_API_KEY"),
        description="xAI API key, used only where xAI is named (`BRIDGE_PROVIDER`, "
        "`BRIDGE_FALLBACK_PROVIDER` or an agent's `provider`): the automatic choice never "
        "picks it.",
    )
    azure_openai_api_key: SecretStr | None = Field(
        None,
        validation_alias=_env("AZURE_OPENAI_API_KEY"),
        description="Azure OpenAI API key, for the `azure` provider.",
    )
    azure_openai_endpoint: str | None = Field(
        None,
        validation_alias=_env("AZURE_OPENAI_ENDPOINT"),
        description="The Azure OpenAI resource's endpoint, needed by the `azure` provider "
        "unless `BRIDGE_REALTIME_URL` is set.",
    )
    audio_format: AudioFormat = Field(
        AudioFormat.PCMU,
        validation_alias=_env("BRIDGE_AUDIO_FORMAT"),
        description="`pcmu`: the caller's G.711 mu-law goes to the model untouched and the "
        "model's comes back untouched; `pcm24k`: decoded and resampled to 24 kHz PCM16 and "
        "back, for models that sound better that way.",
    )
    instructions: str = Field(
        DEFAULT_INSTRUCTIONS,
        validation_alias=_env("BRIDGE_INSTRUCTIONS"),
        description="The agent's system prompt (the `default` agent's, when `BRIDGE_AGENTS` "
        "does not give one).",
    )
    voice: str | None = Field(
        None,
        validation_alias=_env("BRIDGE_VOICE"),
        description="The agent's voice. Unset: the provider's default.",
    )
    greeting: str | None = Field(
        None,
        validation_alias=_env("BRIDGE_GREETING"),
        description="A first sentence the agent says when the call connects. Unset: the "
        "agent waits for the caller (the `local` demo agent greets anyway).",
    )
    database_url: str = Field(
        "sqlite:///./bridge.db",
        validation_alias=_env("BRIDGE_DATABASE_URL"),
        description="The call store: `sqlite:///PATH` for one machine, or "
        "`postgresql://USER:PASSWORD@HOST:PORT/DB` for several instances sharing one call "
        "log. The schema is migrated at start-up.",
    )
    review_token: SecretStr | None = Field(
        None,
        validation_alias=_env("BRIDGE_REVIEW_TOKEN"),
        description="Bearer token for the call-log API (`/api/calls`) and the sign-in token "
        "of the `/calls` pages. Unset: they answer only on loopback.",
    )
    log_format: Literal["console", "json"] | None = Field(
        None,
        validation_alias=_env("BRIDGE_LOG_FORMAT"),
        description="Log renderer: `console` (for people) or `json` (one object a line). "
        "Unset: `console` on a terminal, else `json`.",
    )
    # Not in the public contract. Without a shared key each process makes one up, and a
    # stream would then have to reach the very process that answered its webhook.
    stream_secret: SecretStr | None = Field(
        None,
        validation_alias=_env("BRIDGE_STREAM_SECRET"),
        description="Key for the per-call stream token, which proves a media stream belongs "
        "to a call this bridge answered. Unset: derived from `TWILIO_AUTH_TOKEN` (the same on "
        "every instance), else made up per process.",
    )
    log_level: str = Field(
        "info",
        validation_alias=_env("BRIDGE_LOG_LEVEL"),
        description="`debug`, `info`, `warning` or `error`. Transcript text is logged only "
        "at `debug`.",
    )
    # Twilio sends media every 20 ms: this long without a frame means the phone leg is dead.
    idle_timeout_s: float = Field(
        15.0,
        gt=0,
        validation_alias=_env("BRIDGE_IDLE_TIMEOUT_S"),
        description="Seconds without a media frame from the phone after which the call ends "
        "with end reason `timeout` (a SIP call on hold does not count).",
    )
    recordings: bool = Field(
        False,
        validation_alias=_env("BRIDGE_RECORDINGS"),
        description="`true` (or `1`): keep a stereo WAV of every call, caller left, agent "
        "right. Off unless asked for.",
    )
    recordings_dir: Path | None = Field(
        None,
        validation_alias=_env("BRIDGE_RECORDINGS_DIR"),
        description="Where recordings are written, one file per call. Unset: a `recordings` "
        "folder beside the SQLite file, else `./recordings`.",
    )
    lease_s: float = Field(
        30.0,
        ge=1,
        validation_alias=_env("BRIDGE_LEASE_S"),
        description="Each instance renews a lease every third of this many seconds; a call "
        "whose instance has not renewed for this long is ended as `unknown` by whichever "
        "instance notices first.",
    )
    # Slow clients must not hold sockets for minutes.
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        validation_alias=_env("BRIDGE_HEADER_TIMEOUT_S"),
        description="Seconds a connection has to send its request headers after it opens (or "
        "after its previous response) before it is closed.",
    )
    # Derived from the descriptor limit so that a flood of connections can never exhaust it.
    max_connections: int | None = Field(
        None,
        ge=1,
        validation_alias=_env("BRIDGE_MAX_CONNECTIONS"),
        description="Open connections (HTTP and WebSocket) at most; at the cap the connection "
        "that has waited longest for its headers is dropped first. Unset: derived from the "
        "process's file-descriptor limit, at most 4096.",
    )
    sip_listen: str | None = Field(
        None,
        validation_alias=_env("BRIDGE_SIP_LISTEN"),
        description="Where to take SIP calls, `transport:host:port`, several comma-separated "
        "(`udp:0.0.0.0:5060,tcp:0.0.0.0:5060`). Unset: no SIP.",
    )
    sip_advertise: str | None = Field(
        None,
        validation_alias=_env("BRIDGE_SIP_ADVERTISE"),
        description="The IP address written in Contact and SDP, needed when listening on "
        "0.0.0.0 or behind NAT. Unset: the listen address.",
    )
    rtp_ports: str = Field(
        "10000-20000",
        validation_alias=_env("BRIDGE_RTP_PORTS"),
        description="UDP port range for RTP, `LOW-HIGH` (1024 and up), one port per call.",
    )
    sip_allow: str = Field(
        "127.0.0.0/8,::1/128",
        validation_alias=_env("BRIDGE_SIP_ALLOW"),
        description="Source networks (CIDR, comma-separated) whose INVITEs are served "
        "without authentication.",
    )
    sip_username: str | None = Field(
        None,
        validation_alias=_env("BRIDGE_SIP_USERNAME"),
        description="When set, INVITEs from outside `BRIDGE_SIP_ALLOW` are challenged with "
        "digest authentication (SHA-256 and MD5) for this user and `BRIDGE_SIP_PASSWORD`; "
        "unset, they get 403.",
    )
    sip_password: SecretStr | None = Field(
        None,
        validation_alias=_env("BRIDGE_SIP_PASSWORD"),
        description="The digest password that goes with `BRIDGE_SIP_USERNAME`.",
    )
    sip_max_calls: int = Field(
        200,
        ge=1,
        validation_alias=_env("BRIDGE_SIP_MAX_CALLS"),
        description="Concurrent SIP calls over all transports; the next INVITE gets 503 with "
        "Retry-After.",
    )
    agents_path: Path | None = Field(
        None,
        validation_alias=_env("BRIDGE_AGENTS"),
        description="A TOML file of agents (by dialed number) and their tools; read again "
        "when it changes or on SIGHUP. Unset: one agent from `BRIDGE_INSTRUCTIONS`, "
        "`BRIDGE_VOICE` and `BRIDGE_GREETING`.",
    )
    tool_secret: SecretStr | None = Field(
        None,
        validation_alias=_env("BRIDGE_TOOL_SECRET"),
        description="HMAC key for `X-Bridge-Signature` on HTTP tool calls whose tool has no "
        "`secret` of its own.",
    )
    # Placing a call costs money, so this token is never the review token.
    api_token: SecretStr | None = Field(
        None,
        validation_alias=_env("BRIDGE_API_TOKEN"),
        description="Bearer token for `POST /api/calls`, which places outbound calls. Unset: "
        "the route is off (404).",
    )
    twilio_api_base: str = Field(
        "https://api.twilio.com",
        pattern=r"^https?://",
        validation_alias=_env("TWILIO_API_BASE"),
        description="Twilio REST base URL (a regional edge, or a test server).",
    )
    outbound_from: str | None = Field(
        None,
        pattern=r"^(\+[1-9][0-9]{6,14})?$",
        validation_alias=_env("BRIDGE_OUTBOUND_FROM"),
        description="Caller ID for outbound calls when the request names none: a Twilio "
        "number in E.164 (blank counts as unset).",
    )
    openai_webhook_secret: SecretStr | None = Field(
        None,
        validation_alias=_env("OPENAI_WEBHOOK_SECRET"),
        description="The signing secret (`whsec_…`) of OpenAI's webhooks (Standard Webhooks) "
        "at `POST /openai/webhook`, for OpenAI's SIP connector. Unset: the route is off (404).",
    )
    openai_api_base: str = Field(
        "https://api.openai.com",
        pattern=r"^https?://",
        validation_alias=_env("OPENAI_API_BASE"),
        description="OpenAI REST and WebSocket base for the SIP connector's call control and "
        "sideband (a test server).",
    )
    # Each call through the connector costs a model session.
    openai_sip_max_calls: int = Field(
        200,
        ge=1,
        validation_alias=_env("BRIDGE_OPENAI_SIP_MAX_CALLS"),
        description="Concurrent calls through OpenAI's SIP connector; the next is rejected "
        "(SIP 503) and never accepted.",
    )
    drain_s: float = Field(
        900.0,
        ge=0,
        validation_alias=_env("BRIDGE_DRAIN_S"),
        description="On SIGTERM the bridge stops taking calls at once and lets live calls go "
        "on for up to this many seconds, then ends what is left with a short goodbye (end "
        "reason `bridge_shutdown`). A second SIGTERM or SIGINT ends at once.",
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
