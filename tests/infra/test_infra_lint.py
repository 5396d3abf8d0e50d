"""The deployment files pass real linters: yamllint, hadolint, the compose CLI's own schema
check, Caddy's validation and formatter, Kubernetes' OpenAPI schemas (strict) and a PromQL
parser. Each tool also gets one file it must reject, so a linter that silently checks
nothing cannot pass. No container engine runs here: images are never built."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import promql_parser
import pytest

from tests.infra.infra_files import (
    CADDYFILE,
    DOCKERFILE,
    INFRA,
    YAMLLINT_CONFIG,
    as_promql,
    compose_command,
    compose_env,
    compose_model,
    dashboard_queries,
    env_example,
    k8s_documents,
    k8s_manifests,
    run,
    tool,
    yaml_files,
)


def test_yaml_files_pass_yamllint() -> None:
    files = yaml_files()
    assert len(files) >= 10, files
    result = run(
        [
            tool("yamllint"),
            "--strict",
            "-f",
            "parsable",
            "-c",
            str(YAMLLINT_CONFIG),
            *map(str, files),
        ]
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_yamllint_rejects_a_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("key: yes\nkey: no\n")
    result = run([tool("yamllint"), "-c", str(YAMLLINT_CONFIG), str(bad)])
    assert result.returncode != 0
    assert "truthy" in result.stdout and "key-duplicates" in result.stdout


def test_dockerfile_passes_hadolint() -> None:
    result = run([tool("hadolint"), "--no-color", str(DOCKERFILE)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_kamailio_image_passes_hadolint() -> None:
    inline = compose_model()["services"]["kamailio"]["build"]["dockerfile_inline"]
    result = run([tool("hadolint"), "--no-color", "-"], stdin=inline)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_rejects_a_bad_dockerfile() -> None:
    bad = "FROM python\nRUN apt-get update\nRUN apt-get install -y curl\n"
    result = run([tool("hadolint"), "--no-color", "-"], stdin=bad)
    assert result.returncode != 0
    assert "DL3006" in result.stdout  # untagged base image


def test_compose_file_passes_the_compose_schema() -> None:
    # `docker compose config` checks the file against the Compose Specification's schema and
    # resolves anchors and variables; it needs no Docker daemon.
    model = compose_model()
    assert set(model["services"]) >= {"bridge-1", "bridge-2", "proxy", "postgres", "kamailio"}


def test_compose_cli_rejects_an_unknown_key(tmp_path: Path) -> None:
    bad = tmp_path / "compose.yaml"
    bad.write_text("services:\n  web:\n    image: nginx\n    restart_policy: always\n")
    result = run([tool("docker-compose"), "-f", str(bad), "config", "--quiet"], env=compose_env())
    assert result.returncode != 0
    assert "restart_policy" in result.stderr


@pytest.mark.parametrize("missing", ["PUBLIC_HOSTNAME", "PUBLIC_IP", "POSTGRES_PASSWORD"])
def test_compose_refuses_to_render_without_a_required_setting(tmp_path: Path, missing: str) -> None:
    env_file = tmp_path / "partial.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env_example().items() if k != missing))
    result = run(compose_command(env_file), env=compose_env(BRIDGE_ENV_FILE=str(env_file)))
    assert result.returncode != 0
    assert missing in result.stderr


def _caddy_env(tmp_path: Path) -> dict[str, str]:
    example = env_example()
    return compose_env(
        PUBLIC_HOSTNAME=example["PUBLIC_HOSTNAME"],
        ACME_EMAIL=example["ACME_EMAIL"],
        HOME=str(tmp_path),
        XDG_DATA_HOME=str(tmp_path / "data"),
        XDG_CONFIG_HOME=str(tmp_path / "config"),
    )


def test_caddyfile_is_valid(tmp_path: Path) -> None:
    # Loads and provisions every module (TLS automation, proxies, health checks) without
    # listening on anything.
    result = run(
        [tool("caddy"), "validate", "--config", str(CADDYFILE), "--adapter", "caddyfile"],
        env=_caddy_env(tmp_path),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "Valid configuration" in result.stdout + result.stderr


def test_caddyfile_is_formatted(tmp_path: Path) -> None:
    result = run([tool("caddy"), "fmt", "--diff", str(CADDYFILE)], env=_caddy_env(tmp_path))
    assert result.returncode == 0, result.stdout


def test_caddy_rejects_a_bad_caddyfile(tmp_path: Path) -> None:
    bad = tmp_path / "Caddyfile"
    bad.write_text("example.com {\n\treverse_proxy bridge:8000 {\n\t\tlb_policy fastest\n\t}\n}\n")
    result = run(
        [tool("caddy"), "validate", "--config", str(bad), "--adapter", "caddyfile"],
        env=_caddy_env(tmp_path),
        cwd=tmp_path,
    )
    assert result.returncode != 0


# The oldest Kubernetes the manifests are meant for, and the newest whose schemas are bundled.
K8S_VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_kubernetes_manifests_match_the_api_schemas(version: str) -> None:
    checked = 0
    for path in k8s_manifests():
        for doc in k8s_documents(path):
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{path.relative_to(INFRA)}: {exc.path}: {exc.message}")
            checked += 1
    assert checked >= 9


def test_kubernetes_schemas_reject_a_misspelt_field() -> None:
    deployment = k8s_documents(INFRA / "k8s" / "deployment.yaml")[0]
    spec = deployment["spec"]["template"]["spec"]
    spec["terminationGracePeriod"] = spec.pop("terminationGracePeriodSeconds")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[-1], strict=True)


def test_dashboard_queries_are_valid_promql() -> None:
    queries = dashboard_queries()
    assert queries
    for title, expr in queries:
        try:
            promql_parser.parse(as_promql(expr))
        except ValueError as exc:
            pytest.fail(f"panel {title!r}: {expr}: {exc}")


def test_promql_parser_rejects_a_bad_query() -> None:
    with pytest.raises(ValueError):
        promql_parser.parse("sum(rate(bridge_calls_started_total[5m])")
