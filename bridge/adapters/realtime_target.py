"""Which realtime server a call talks to, and how: provider settings -> dialect, URL, headers."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from bridge.errors import ConfigurationError
from bridge.protocols.dialects import DIALECTS, Dialect, realtime_endpoint
from bridge.protocols.openai_sip import sideband_url
from bridge.settings import Provider, Settings

_DIALECT_OF = {
    Provider.OPENAI: "openai",
    Provider.OPENAI_BETA: "openai-beta",
    Provider.AZURE: "azure",
    Provider.INWORLD: "inworld",
    Provider.XAI: "xai",
    Provider.LOCAL: "openai",
}


@dataclass(frozen=True)
class RealtimeTarget:
    """Everything needed to open a model session for one call. ``url_override`` is set for
    the built-in ``local`` agent, whose server only exists once the app has started."""

    provider: Provider
    dialect: Dialect
    api_key: str | None
    model: str | None
    url_override: str | None
    azure_endpoint: str | None
    #: OpenAI's SIP sideband: the call whose session to join (``?call_id=``, no model: the
    #: accept chose it); ``url_override`` is then OPENAI_API_BASE.
    call_id: str | None = None

    def endpoint(self) -> tuple[str, dict[str, str]]:
        """URL and headers for a new connection (Inworld wants a fresh session key each time)."""
        if self.call_id is not None:
            headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
            base = self.url_override or "https://api.openai.com"
            return sideband_url(base, self.call_id), headers
        session_key = uuid.uuid4().hex if self.dialect.name == "inworld" else None
        return realtime_endpoint(
            self.dialect,
            api_key=self.api_key,
            model=self.model,
            url_override=self.url_override,
            azure_endpoint=self.azure_endpoint,
            session_key=session_key,
        )

    @property
    def model_name(self) -> str:
        return self.model or self.dialect.default_model or "unknown"


def resolve_target(settings: Settings, local_url: str | None = None) -> RealtimeTarget:
    """The target for ``settings``; ``local_url`` is the in-process server for ``local``."""
    provider = settings.effective_provider
    dialect = DIALECTS[_DIALECT_OF[provider]]
    key = {
        Provider.OPENAI: settings.openai_api_key,
        Provider.OPENAI_BETA: settings.openai_api_key,
        Provider.AZURE: settings.azure_openai_api_key,
        Provider.INWORLD: settings.inworld_api_key,
        Provider.XAI: settings.xai_api_key,
        Provider.LOCAL: None,
    }[provider]
    if provider is not Provider.LOCAL and key is None and settings.realtime_url is None:
        raise ConfigurationError(f"BRIDGE_PROVIDER={provider.value} needs its API key set")
    if provider is Provider.AZURE and not (settings.azure_openai_endpoint or settings.realtime_url):
        raise ConfigurationError("BRIDGE_PROVIDER=azure needs AZURE_OPENAI_ENDPOINT")
    override = local_url if provider is Provider.LOCAL else settings.realtime_url
    return RealtimeTarget(
        provider=provider,
        dialect=dialect,
        api_key=key.get_secret_value() if key is not None else None,
        model=settings.realtime_model,
        url_override=override,
        azure_endpoint=settings.azure_openai_endpoint,
    )


def resolve_fallback(settings: Settings) -> RealtimeTarget | None:
    """The ``BRIDGE_FALLBACK_PROVIDER`` target (with its own URL and model overrides), or
    ``None`` when no fallback is set. Its key must be set as for a first provider."""
    provider = settings.fallback_provider
    if provider is None:
        return None
    if provider is Provider.LOCAL:
        raise ConfigurationError("BRIDGE_FALLBACK_PROVIDER cannot be local")
    other = settings.model_copy(
        update={
            "provider": provider,
            "realtime_url": settings.fallback_realtime_url,
            "realtime_model": settings.fallback_realtime_model,
        }
    )
    try:
        return resolve_target(other)
    except ConfigurationError as exc:
        raise ConfigurationError(f"fallback provider: {exc}") from exc
