"""The bridge's exception tree, named by whose fault an error is.

``BridgeError``
    the root; catch it only at the outermost edge.
``RemoteProtocolError``
    a peer (Twilio, a realtime server, a caller of our API) sent something we cannot accept.
    Log it once, close that one connection with ``close_code``, keep serving everyone else.
``LocalProtocolError``
    we used a protocol object wrongly (sent media before ``start``, say). This is a bug in
    the bridge: let it propagate and fix the caller.
``AuthenticationError``
    a request from the network failed its signature or token check. Answer 403 / close 1008
    and do nothing else that costs money or reveals anything.
``ProviderError``
    the realtime provider could not be reached or refused the session. The call plays the
    apology clip and ends as ``failed`` / ``provider_error``.
``ConfigurationError``
    the settings are inconsistent; raised at start-up, never mid-call.

Third-party exceptions are translated into these at the adapter boundary.
"""

from __future__ import annotations


class BridgeError(Exception):
    """Root of every error the bridge raises on purpose."""


class RemoteProtocolError(BridgeError):
    """The peer broke the protocol. ``close_code`` is the WebSocket code to close with."""

    def __init__(self, message: str, close_code: int = 1002) -> None:
        super().__init__(message)
        self.close_code = close_code


class LocalProtocolError(BridgeError):
    """The bridge misused a protocol object: a bug on our side."""


class AuthenticationError(BridgeError):
    """A signature or per-call token did not check out."""


class ProviderError(BridgeError):
    """The realtime provider was unreachable or refused the session. ``status`` is the HTTP
    status of a refused handshake (429: a rate or concurrency limit), if there was one."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ConfigurationError(BridgeError):
    """The settings cannot work together."""


# WebSocket close codes the bridge uses (RFC 6455 section 7.4.1).
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_INVALID_PAYLOAD = 1007
CLOSE_POLICY_VIOLATION = 1008
CLOSE_MESSAGE_TOO_BIG = 1009
CLOSE_INTERNAL_ERROR = 1011
