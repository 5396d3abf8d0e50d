"""infra/compose.yaml as the compose CLI renders it, and the Caddy configuration in front of
it: what each service runs, how the bridges are reached, stopped and checked, and that no
secret is written down."""

from __future__ import annotations

import ast
import ipaddress
import json
import re
from pathlib import Path
from typing import Any

from bridge.settings import Settings
from tests.infra.infra_files import (
    CADDYFILE,
    COMPOSE,
    DOCKERFILE,
    INFRA,
    KAMAILIO_DIR,
    ROOT,
    compose_env,
    compose_model,
    compose_raw,
    duration_seconds,
    env_example,
    run,
    setting_names,
    tool,
)

BRIDGES = ["bridge-1", "bridge-2"]
SECRET_NAME = re.compile(r"TOKEN|KEY|PASSWORD|SECRET|SID", re.I)
# Variables the bridges' environment may hold that are not bridge settings: uvicorn's, and
# the compose file's own (they come with the env file).
NOT_SETTINGS = {
    "FORWARDED_ALLOW_IPS",
    "PUBLIC_HOSTNAME",
    "PUBLIC_IP",
    "ACME_EMAIL",
    "POSTGRES_PASSWORD",
}


def _service(name: str) -> dict[str, Any]:
    service: dict[str, Any] = compose_model()["services"][name]
    return service


def _env(name: str) -> dict[str, str]:
    return {k: str(v) for k, v in _service(name)["environment"].items()}


def _address(name: str) -> str:
    return str(_service(name)["networks"]["default"]["ipv4_address"])


def _published(name: str, protocol: str) -> dict[int, int]:
    """Published port -> container port, for one protocol."""
    return {
        int(port["published"]): int(port["target"])
        for port in _service(name).get("ports", [])
        if port.get("protocol", "tcp") == protocol
    }


def _healthcheck_code(name: str) -> str:
    test = _service(name)["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"], test
    code = str(test[3])
    ast.parse(code)
    return code


def test_two_bridges_share_one_image_built_from_the_dockerfile() -> None:
    images = set()
    for name in BRIDGES:
        build = _service(name)["build"]
        assert Path(build["context"]) == ROOT
        assert ROOT / build["dockerfile"] == DOCKERFILE
        images.add(_service(name)["image"])
    assert len(images) == 1


def test_bridges_store_calls_in_the_compose_postgres() -> None:
    for name in BRIDGES:
        url = _env(name)["BRIDGE_DATABASE_URL"]
        assert re.fullmatch(r"postgresql://bridge:[^@]+@postgres:5432/bridge", url), url
        assert _service(name)["depends_on"]["postgres"]["condition"] == "service_healthy"
    postgres = _service("postgres")
    assert postgres["image"].startswith("postgres:")
    assert "pg_isready" in postgres["healthcheck"]["test"]
    assert not postgres.get("ports"), "PostgreSQL is for the bridges only"


def test_bridges_are_health_checked_on_readyz() -> None:
    for name in BRIDGES:
        code = _healthcheck_code(name)
        assert "http://127.0.0.1:8000/readyz" in code and "urllib.request" in code


def test_docker_waits_for_the_drain_before_killing() -> None:
    for name in BRIDGES:
        service = _service(name)
        drain = float(_env(name)["BRIDGE_DRAIN_S"])
        assert 0 < drain < 900, "shorter than the bridge's own default"
        grace = duration_seconds(service["stop_grace_period"])
        assert grace >= drain + 30, (grace, drain)
        assert service.get("stop_signal", "SIGTERM") == "SIGTERM"


def test_bridges_run_locked_down() -> None:
    for name in BRIDGES:
        service = _service(name)
        assert service["read_only"] is True
        assert "/tmp" in service["tmpfs"]
        assert service["cap_drop"] == ["ALL"]
        assert "no-new-privileges:true" in service["security_opt"]
        assert any(v["target"] == "/data" for v in service["volumes"])
        # HTTP only through the proxy.
        assert 8000 not in _published(name, "tcp").values()


def test_no_secret_is_written_in_the_compose_file() -> None:
    raw = compose_raw()
    environments = [raw["x-bridge-env"]]
    environments += [s.get("environment", {}) for s in raw["services"].values()]
    for environment in environments:
        for key, value in environment.items():
            if SECRET_NAME.search(key) or "DATABASE_URL" in key:
                assert "${" in str(value), f"{key} is written in the compose file"
    text = COMPOSE.read_text()
    assert not re.search(r"sk-[A-Za-z0-9_-]{16,}|AC[0-9a-f]{32}|whsec_", text)
    # Credentials come from the env file, which never lands in git or in an image.
    for name in BRIDGES:
        (env_file,) = raw["services"][name]["env_file"]
        assert env_file == {"path": "${BRIDGE_ENV_FILE:-.env}", "required": True}


def test_env_example_holds_placeholders_only() -> None:
    for key, value in env_example().items():
        if SECRET_NAME.search(key):
            assert "REPLACE_ME" in value, f"{key} in env.example is not a placeholder"


def test_bridge_environment_is_valid_bridge_settings() -> None:
    known = setting_names()
    for name in BRIDGES:
        env = _env(name)
        unknown = {k for k in env if k not in known and k not in NOT_SETTINGS}
        assert not unknown, f"{name}: not bridge settings: {unknown}"
        settings = Settings(_env_file=None, **{k: v for k, v in env.items() if k in known})
        assert settings.public_url == "https://" + env_example()["PUBLIC_HOSTNAME"]
        assert settings.sip_listeners  # SIP is on, and parses


def test_bridges_believe_forwarded_headers_from_the_proxy_only() -> None:
    for name in BRIDGES:
        assert _env(name)["FORWARDED_ALLOW_IPS"] == _address("proxy")


def test_sip_reaches_each_bridge_through_kamailio() -> None:
    kamailio = _address("kamailio")
    public_ip = env_example()["PUBLIC_IP"]
    sip_ports = set()
    rtp_ports: set[int] = set()
    for name in BRIDGES:
        env = _env(name)
        settings = Settings(_env_file=None, **env)
        # New calls only from Kamailio.
        allowed = [ipaddress.ip_network(n.strip()) for n in env["BRIDGE_SIP_ALLOW"].split(",")]
        assert any(ipaddress.ip_address(kamailio) in net for net in allowed)
        # Contact and SDP carry the host's address; the SIP port and the whole RTP range are
        # published there one to one, so what the bridge writes is where packets arrive.
        assert env["BRIDGE_SIP_ADVERTISE"] == public_ip
        ((transport, _host, port),) = settings.sip_listeners
        assert transport == "udp"
        assert _published(name, "udp").get(port) == port
        sip_ports.add(port)
        rtp = set(settings.rtp_port_range)
        assert rtp <= {p for p, t in _published(name, "udp").items() if p == t}
        assert len(rtp) >= settings.sip_max_calls, "one RTP port per call"
        assert not rtp & rtp_ports, "RTP ranges overlap"
        rtp_ports |= rtp
    # The bridges' Contacts must differ from each other and from Kamailio's 5060.
    assert len(sip_ports) == len(BRIDGES) and 5060 not in sip_ports


def test_kamailio_takes_sip_on_5060_udp() -> None:
    kamailio = _service("kamailio")
    assert _published("kamailio", "udp") == {5060: 5060}
    mounts = {v["target"]: Path(v["source"]) for v in kamailio["volumes"]}
    assert mounts["/etc/kamailio/kamailio.cfg"] == KAMAILIO_DIR / "kamailio.cfg"
    inline = kamailio["build"]["dockerfile_inline"]
    assert inline.startswith("FROM debian:")
    assert re.search(r"apt-get install -y --no-install-recommends kamailio\b", inline)
    assert "/etc/kamailio/kamailio.cfg" in inline
    # Record-Route and Via carry the public address the trunk can reach.
    command = " ".join(kamailio["command"])
    assert f"udp:{_address('kamailio')}:5060/{env_example()['PUBLIC_IP']}:5060" in command


def test_kamailio_dispatches_to_both_bridges_at_their_contact_ports() -> None:
    (config,) = _service("kamailio")["configs"]
    assert config["target"] == "/etc/kamailio/dispatcher.list"
    content = compose_model()["configs"][config["source"]]["content"]
    destinations = set()
    for line in content.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            setid, uri, flags, _priority = line.split()[:4]
            assert setid == "1" and flags == "0", line
            host, _, port = uri.removeprefix("sip:").rpartition(":")
            destinations.add((host, int(port)))
    expected = set()
    for name in BRIDGES:
        settings = Settings(_env_file=None, **_env(name))
        ((_transport, _host, port),) = settings.sip_listeners
        expected.add((_address(name), port))
    assert destinations == expected


def test_fixed_addresses_lie_outside_the_dynamic_range() -> None:
    (pool,) = compose_model()["networks"]["default"]["ipam"]["config"]
    subnet = ipaddress.ip_network(pool["subnet"])
    dynamic = ipaddress.ip_network(pool["ip_range"])
    addresses = [_address(name) for name in [*BRIDGES, "proxy", "kamailio"]]
    assert len(set(addresses)) == len(addresses)
    for address in map(ipaddress.ip_address, addresses):
        assert address in subnet and address not in dynamic


def test_proxy_terminates_tls_with_the_caddyfile() -> None:
    proxy = _service("proxy")
    assert proxy["image"].startswith("caddy:")
    assert {80, 443} <= set(_published("proxy", "tcp"))
    mounts = {v["target"]: Path(v["source"]) for v in proxy["volumes"]}
    assert mounts["/etc/caddy/Caddyfile"] == CADDYFILE
    # Independent of the bridges: replacing one must not restart the proxy under live calls.
    assert not proxy.get("depends_on")


def _caddy_routes(tmp_path: Path) -> list[dict[str, Any]]:
    example = env_example()
    result = run(
        [tool("caddy"), "adapt", "--config", str(CADDYFILE), "--adapter", "caddyfile"],
        env=compose_env(
            PUBLIC_HOSTNAME=example["PUBLIC_HOSTNAME"],
            ACME_EMAIL=example["ACME_EMAIL"],
            HOME=str(tmp_path),
        ),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)
    (site,) = config["apps"]["http"]["servers"].values()
    (host_route,) = site["routes"]
    assert host_route["match"] == [{"host": [example["PUBLIC_HOSTNAME"]]}]
    (subroute,) = host_route["handle"]
    routes: list[dict[str, Any]] = subroute["routes"]
    return routes


def test_proxy_spreads_media_and_http_over_both_bridges(tmp_path: Path) -> None:
    routes = _caddy_routes(tmp_path)
    expected = {f"{name}:8000" for name in BRIDGES}
    proxies = [
        (route.get("match", []), handler)
        for route in routes
        for handler in route["handle"]
        if handler["handler"] == "reverse_proxy"
    ]
    media = [h for m, h in proxies if any("/twilio/media" in x.get("path", []) for x in m)]
    rest = [h for m, h in proxies if not m]
    assert len(media) == 1 and len(rest) == 1
    for handler in [*media, *rest]:
        assert {u["dial"] for u in handler["upstreams"]} == expected
        assert handler["health_checks"]["active"]["uri"] == "/readyz"
    assert media[0]["load_balancing"]["selection_policy"]["policy"] == "least_conn"
    # A configuration reload must not cut the calls' streams at once.
    assert media[0]["stream_close_delay"] >= 60 * 10**9


def test_proxy_keeps_metrics_private(tmp_path: Path) -> None:
    routes = _caddy_routes(tmp_path)
    first = routes[0]
    assert first["match"] == [{"path": ["/metrics"]}]
    assert first["handle"] == [{"handler": "static_response", "status_code": 404}]


def test_every_file_compose_mounts_from_this_tree_is_there_or_kamailios() -> None:
    for service in compose_model()["services"].values():
        for volume in service.get("volumes", []):
            if volume["type"] != "bind":
                continue
            source = Path(volume["source"])
            assert INFRA in source.parents, source
            # infra/kamailio/ is maintained (and tested) with Kamailio's own configuration.
            assert source.exists() or KAMAILIO_DIR in source.parents, source
