"""Twilio request signatures (``X-Twilio-Signature``), checked with the twilio package.

URLs are always rebuilt from ``BRIDGE_PUBLIC_URL``, never from the request: TLS terminators,
proxies and tunnels change the scheme, host and port the server sees.
"""

from __future__ import annotations

from collections.abc import Mapping

from twilio.request_validator import RequestValidator

from bridge.settings import Settings


class TwilioAuth:
    """Validates webhook and WebSocket-upgrade signatures. Without an auth token configured
    every check passes (local development on loopback only; ``bridge serve`` enforces that)."""

    def __init__(self, settings: Settings) -> None:
        token = settings.twilio_auth_token
        self._validator = RequestValidator(token.get_secret_value()) if token else None
        self._settings = settings

    @property
    def enforced(self) -> bool:
        return self._validator is not None

    def webhook_ok(
        self, path: str, query: str, params: Mapping[str, str], signature: str | None
    ) -> bool:
        """A form POST from Twilio to ``path`` (with its raw ``query``, if any)."""
        if self._validator is None:
            return True
        if not signature:
            return False
        url = self._settings.public_http_url(path) + (f"?{query}" if query else "")
        return bool(self._validator.validate(url, dict(params), signature))

    def upgrade_ok(self, signature: str | None) -> bool:
        """The media-stream upgrade: signed over the ``<Stream url>`` exactly, with no params."""
        if self._validator is None:
            return True
        if not signature:
            return False
        return bool(self._validator.validate(self._settings.media_stream_url, {}, signature))
