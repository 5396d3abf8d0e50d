"""Which realtime server a call talks to, and how: provider settings -> dialect, URL, headers."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from bridge.errors import ConfigurationError
from bridge.protocols.dialects import DIALECTS, Dialect, realtime_endpoint
from bridge.settings import Provider, Settings

_DIALECT_OF = {
    Provider.OPENAI: "openai",
    Provider.OPENAI_BETA: "openai-beta",
    Provider.AZURE: "azure",
    Provider.INWORLD: "inworld",
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

    def endpoint(self) -> tuple[str, dict[str, str]]:
        """URL and headers for a new connection (Inworld wants a fresh session key each time)."""
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
