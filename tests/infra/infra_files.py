"""What the infra tests share: where the deployment files are, the linters' binaries, and small
readers for the files (Dockerfile instructions, the rendered compose model, Kubernetes
documents, the Grafana dashboard's queries).

The linters are dev dependencies (pyproject's `dev` extra) whose wheels carry the real
binaries; a missing one fails the test that needs it, never skips it."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import AliasChoices

from bridge.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
DOCKERFILE = INFRA / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE = INFRA / "compose.yaml"
ENV_EXAMPLE = INFRA / "env.example"
CADDYFILE = INFRA / "proxy" / "Caddyfile"
K8S = INFRA / "k8s"
DASHBOARD = INFRA / "grafana" / "bridge-dashboard.json"
YAMLLINT_CONFIG = INFRA / ".yamllint.yaml"
# Kamailio's files are tested with Kamailio itself elsewhere; here only that compose uses them.
KAMAILIO_DIR = INFRA / "kamailio"

# Manifests kept beside the others but deliberately left out of kustomization.yaml.
K8S_NOT_APPLIED = {"secret.example.yaml"}

# The bridge's Prometheus metrics the dashboard may query, by type. Counters are exposed with
# `_total`, histograms as `_bucket`, `_sum` and `_count`.
GAUGES = {"bridge_calls_active", "bridge_store_queue_depth", "bridge_draining"}
COUNTERS = {
    "bridge_calls_started_total",
    "bridge_calls_finished_total",
    "bridge_barge_ins_total",
    "bridge_requests_rejected_total",
    "bridge_media_bad_input_total",
    "bridge_provider_errors_total",
    "bridge_realtime_reconnects_total",
    "bridge_realtime_fallbacks_total",
    "bridge_tool_calls_total",
}
HISTOGRAMS = {
    "bridge_turn_latency_seconds",
    "bridge_clear_latency_seconds",
    "bridge_store_write_seconds",
    "bridge_tool_call_seconds",
    "bridge_event_loop_lag_seconds",
}
METRICS = GAUGES | COUNTERS | HISTOGRAMS

# The load test's figures (README, "Sizing") that the Kubernetes requests are derived from.
CPU_SECONDS_PER_CALL_SECOND = 0.004
MIB_PER_CALL = 0.1
PROCESS_MIB = 128
CALLS_PER_POD = 100


def tool(name: str) -> str:
    """The path of a linter installed by the dev extra, or a failed test saying how to get it."""
    for folder in (Path(sysconfig.get_path("scripts")), Path(sys.executable).parent):
        path = folder / name
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    pytest.fail(
        f"{name} is not installed in this environment; it comes with the dev extra: "
        "`make test`, or `.venv/bin/python -m pip install -e '.[dev]'`"
    )


def run(
    args: list[str],
    *,
    env: dict[str, str] | None = None,
    stdin: str | None = None,
    cwd: Path = ROOT,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args,
        cwd=cwd,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def setting_names() -> set[str]:
    """Every environment variable the bridge's settings read."""
    names = set()
    for field in Settings.model_fields.values():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(str(choice) for choice in alias.choices)
        elif isinstance(alias, str):
            names.add(alias)
    return names


def yaml_files() -> list[Path]:
    """Every YAML file of the deployment, Kamailio's folder aside."""
    files = [*INFRA.rglob("*.yaml"), *INFRA.rglob("*.yml")]
    return sorted(p for p in files if KAMAILIO_DIR not in p.parents)


# -- Dockerfile ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    line: int

    def exec_form(self) -> list[str]:
        """The JSON array of an exec-form CMD/ENTRYPOINT/RUN (fails on the shell form)."""
        value = json.loads(self.args)
        assert isinstance(value, list), f"line {self.line}: {self.keyword} is not exec form"
        return [str(v) for v in value]


def dockerfile_instructions(text: str) -> list[Instruction]:
    """The Dockerfile's instructions, continuation lines joined and comments dropped."""
    out: list[Instruction] = []
    pending = ""
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        whole = pending + line
        pending = ""
        keyword, _, args = whole.partition(" ")
        out.append(Instruction(keyword.upper(), args.strip(), start))
    assert not pending, "the Dockerfile ends with a line continuation"
    return out


def stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    """Instructions grouped by build stage, each list starting with its FROM."""
    groups: list[list[Instruction]] = []
    for ins in instructions:
        if ins.keyword == "FROM":
            groups.append([ins])
        elif groups:
            groups[-1].append(ins)
    return groups


def dockerfile_env(instructions: list[Instruction]) -> dict[str, str]:
    env: dict[str, str] = {}
    for ins in instructions:
        if ins.keyword == "ENV":
            for item in shlex.split(ins.args):
                key, _, value = item.partition("=")
                env[key] = value
    return env


def healthcheck_command(args: str) -> list[str]:
    """The exec-form command of a HEALTHCHECK instruction's arguments."""
    _options, _, command = args.partition("CMD")
    assert command, f"HEALTHCHECK has no CMD: {args}"
    return [str(v) for v in json.loads(command.strip())]


# -- .dockerignore -------------------------------------------------------------------------


def _dockerignore_regex(pattern: str) -> re.Pattern[str]:
    """Docker's pattern syntax (Go's filepath.Match plus `**`) as a regular expression."""
    out = ""
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
            continue
        if pattern.startswith("**", i):
            out += ".*"
            i += 2
            continue
        if char == "*":
            out += "[^/]*"
        elif char == "?":
            out += "[^/]"
        elif char == "[":
            end = pattern.index("]", i)
            out += "[" + pattern[i + 1 : end].replace("!", "^", 1) + "]"
            i = end
        else:
            out += re.escape(char)
        i += 1
    return re.compile(out)


def dockerignore_rules(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        line = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        rules.append((negate, _dockerignore_regex(line)))
    return rules


def ignored(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether Docker leaves ``path`` (relative to the context) out: the last matching rule
    decides, and a rule matching a parent folder covers everything below it."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    result = False
    for negate, regex in rules:
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            result = not negate
    return result


# -- compose -------------------------------------------------------------------------------


def compose_env(**extra: str) -> dict[str, str]:
    """A small, predictable environment for the compose CLI: the developer's own variables
    must not change what the file renders to."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": tempfile.gettempdir()}
    env.update(extra)
    return env


def compose_command(env_file: Path = ENV_EXAMPLE) -> list[str]:
    return [
        tool("docker-compose"),
        "--project-directory",
        str(INFRA),
        "-f",
        str(COMPOSE),
        "--env-file",
        str(env_file),
        "config",
        "--format",
        "json",
    ]


@cache
def compose_model() -> dict[str, Any]:
    """The compose file as the compose CLI renders it with the example environment:
    anchors merged, variables filled in, paths made absolute, defaults filled in."""
    result = run(compose_command(), env=compose_env(BRIDGE_ENV_FILE=str(ENV_EXAMPLE)))
    assert result.returncode == 0, f"docker compose config failed:\n{result.stderr}"
    model: dict[str, Any] = json.loads(result.stdout)
    return model


def compose_raw() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def env_example() -> dict[str, str]:
    values = {}
    for raw in ENV_EXAMPLE.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s|us|ns)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}


def duration_seconds(text: str) -> float:
    """A compose duration (``660s``, ``11m0s``, ``1h30m``) in seconds."""
    parts = _DURATION.findall(text)
    assert parts and "".join(n + u for n, u in parts) == text, f"not a duration: {text!r}"
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)


# -- Kubernetes ----------------------------------------------------------------------------


def kustomization() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return data


def k8s_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def k8s_manifests() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


@cache
def k8s_objects() -> dict[tuple[str, str], dict[str, Any]]:
    """The applied objects (those kustomization.yaml lists), by (kind, name)."""
    objects = {}
    for name in kustomization()["resources"]:
        for doc in k8s_documents(K8S / name):
            objects[(doc["kind"], doc["metadata"]["name"])] = doc
    return objects


# -- Grafana -------------------------------------------------------------------------------


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def dashboard_panels() -> list[dict[str, Any]]:
    panels = []
    for panel in dashboard()["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))  # a collapsed row keeps its panels inside
    return panels


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL expression) for every query of the dashboard."""
    return [
        (panel.get("title", ""), target["expr"])
        for panel in dashboard_panels()
        for target in panel.get("targets", [])
        if "expr" in target
    ]


def as_promql(expr: str) -> str:
    """A dashboard expression with Grafana's variables replaced by values PromQL accepts."""
    for variable, value in (
        ("$__rate_interval", "5m"),
        ("$__interval", "1m"),
        ("$__range", "1h"),
    ):
        expr = expr.replace(variable, value)
    return re.sub(r"\$\{?\w+\}?", ".*", expr)
