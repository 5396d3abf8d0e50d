"""SIP settings that cannot work are refused when the bridge starts, with a clear message."""

from __future__ import annotations

import pytest

from bridge.errors import ConfigurationError
from bridge.settings import load_settings


def test_a_udp_listener_with_the_default_ports_and_allow_list_is_accepted() -> None:
    settings = load_settings(sip_listen="udp:127.0.0.1:5060")
    assert settings.rtp_ports == "10000-20000" and settings.sip_max_calls == 200
    assert settings.rtp_port_range == range(10000, 20001)


def test_udp_and_tcp_listeners_are_read_in_order() -> None:
    settings = load_settings(sip_listen="UDP:0.0.0.0:5060, tcp:[::1]:5070")
    assert settings.sip_listeners == [("udp", "0.0.0.0", 5060), ("tcp", "::1", 5070)]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"sip_listen": "udp:127.0.0.1"}, "transport:host:port"),
        ({"sip_listen": "tls:127.0.0.1:5061"}, "transport:host:port"),
        ({"sip_listen": "udp:127.0.0.1:5060,udp:127.0.0.1:5060"}, "repeated"),
        ({"sip_listen": "tcp:127.0.0.1:70000"}, "out of range"),
        ({"sip_listen": " , "}, "no transport:host:port"),
        ({"sip_listen": "udp:127.0.0.1:5060", "rtp_ports": "20000-10000"}, "BRIDGE_RTP_PORTS"),
        ({"sip_listen": "udp:127.0.0.1:5060", "sip_allow": "10.0.0.0/33"}, "BRIDGE_SIP_ALLOW"),
    ],
)
def test_unworkable_sip_settings_are_refused(overrides: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        load_settings(**overrides)
