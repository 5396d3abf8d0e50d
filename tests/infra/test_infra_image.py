"""The container image, checked without building it (no container engine runs here): the
stages, the user, what the commands run (against the real CLI parser and console scripts),
and what the build context sends."""

from __future__ import annotations

import ast
import tomllib

from bridge.cli import build_parser
from tests.infra.infra_files import (
    DOCKERFILE,
    DOCKERIGNORE,
    ROOT,
    Instruction,
    dockerfile_env,
    dockerfile_instructions,
    dockerignore_rules,
    healthcheck_command,
    ignored,
    stages,
)


def _instructions() -> list[Instruction]:
    return dockerfile_instructions(DOCKERFILE.read_text())


def _final(keyword: str) -> list[Instruction]:
    return [ins for ins in stages(_instructions())[-1] if ins.keyword == keyword]


def _one(keyword: str) -> Instruction:
    found = _final(keyword)
    assert len(found) == 1, f"expected one {keyword} in the runtime stage, found {found}"
    return found[0]


def _pyproject() -> dict[str, object]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _base_images() -> list[str]:
    instructions = _instructions()
    args = {}
    for ins in instructions:
        if ins.keyword == "ARG" and "=" in ins.args:
            key, _, value = ins.args.partition("=")
            args[key] = value
    images = []
    for stage in stages(instructions):
        image = stage[0].args.split()[0]
        for key, value in args.items():
            image = image.replace("${" + key + "}", value).replace("$" + key, value)
        images.append(image)
    return images


def test_builds_in_two_stages_onto_a_slim_runtime() -> None:
    groups = stages(_instructions())
    assert len(groups) >= 2
    assert _base_images()[-1] == "python:3.11-slim"
    builder_name = groups[0][0].args.split()[-1]
    builder = " ".join(ins.args for ins in groups[0] if ins.keyword == "RUN")
    assert "venv" in builder and "pip install" in builder
    copies = [ins.args for ins in groups[-1] if ins.keyword == "COPY"]
    assert any(f"--from={builder_name}" in args for args in copies), copies
    # The runtime gets the built environment only: no sources, no compilers.
    assert all(args.startswith("--from=") for args in copies), copies


def test_python_version_is_one_the_project_supports() -> None:
    requires = _pyproject()["project"]["requires-python"]  # type: ignore[index]
    minimum = str(requires).removeprefix(">=")
    tag = _base_images()[-1].split(":")[1]
    assert tuple(map(int, tag.split("-")[0].split("."))) >= tuple(map(int, minimum.split(".")))


def test_runs_as_a_fixed_non_root_user() -> None:
    user = _one("USER").args
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) > 0, user
    assert not gid or (gid.isdigit() and int(gid) > 0), user


def test_entrypoint_is_the_bridge_console_script() -> None:
    entrypoint = _one("ENTRYPOINT").exec_form()
    scripts = _pyproject()["project"]["scripts"]  # type: ignore[index]
    assert entrypoint == ["bridge"]
    assert scripts["bridge"] == "bridge.cli:main"  # type: ignore[index]


def test_command_is_a_valid_bridge_serve_on_all_interfaces() -> None:
    command = _one("CMD").exec_form()
    args = build_parser().parse_args(command)
    assert args.command == "serve"
    assert args.host == "0.0.0.0" and args.port == 8000
    # Deliberately without --insecure: the bridge then refuses to start without
    # TWILIO_AUTH_TOKEN on a public interface.
    assert not args.insecure


def test_exposes_http_and_sip() -> None:
    exposed = {port for ins in _final("EXPOSE") for port in ins.args.split()}
    assert {"8000", "5060/udp"} <= exposed
    # Never the whole RTP range: `docker run -P` would publish ten thousand ports.
    assert not any("-" in port for port in exposed)


def test_healthcheck_asks_healthz_with_python_only() -> None:
    healthcheck = _one("HEALTHCHECK")
    command = healthcheck_command(healthcheck.args)
    assert command[:2] == ["python", "-c"], command
    code = command[2]
    ast.parse(code)  # valid Python
    assert "urllib.request" in code and "curl" not in code
    assert "http://127.0.0.1:8000/healthz" in code
    assert "--timeout=" in healthcheck.args


def test_stops_on_sigterm() -> None:
    assert _one("STOPSIGNAL").args == "SIGTERM"


def test_keeps_state_in_a_writable_data_volume() -> None:
    env = dockerfile_env(_final("ENV"))
    url = env["BRIDGE_DATABASE_URL"]
    assert url.startswith("sqlite:////data/"), url
    volumes = _one("VOLUME").args
    assert "/data" in volumes
    assert _one("WORKDIR").args == "/data"
    run = " ".join(ins.args for ins in _final("RUN"))
    assert "chown" in run and "/data" in run
    assert env.get("PYTHONDONTWRITEBYTECODE") == "1"  # the root filesystem may be read-only


def test_copies_what_pip_install_needs() -> None:
    builder = stages(_instructions())[0]
    copied = set()
    for ins in builder:
        if ins.keyword == "COPY" and not ins.args.startswith("--from"):
            copied.update(ins.args.split()[:-1])
    assert {"pyproject.toml", "README.md", "bridge"} <= copied
    # pyproject's readme must be among them, or the metadata build fails.
    assert _pyproject()["project"]["readme"] in copied  # type: ignore[index]
    for source in copied:
        assert (ROOT / source).exists(), source


def _package_files() -> list[str]:
    files = []
    for path in sorted((ROOT / "bridge").rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            files.append(path.relative_to(ROOT).as_posix())
    return files


def test_dockerignore_keeps_the_package_and_its_data() -> None:
    rules = dockerignore_rules(DOCKERIGNORE.read_text())
    for kept in ["pyproject.toml", "README.md", *_package_files()]:
        assert not ignored(kept, rules), f".dockerignore leaves out {kept}"


def test_dockerignore_keeps_local_state_and_secrets_out() -> None:
    rules = dockerignore_rules(DOCKERIGNORE.read_text())
    for left_out in [
        ".git/config",
        ".venv/bin/python",
        "tests/conftest.py",
        "bridge.db",
        "bridge.db-wal",
        "data/calls.db",
        "recordings/CA1/call.wav",
        ".env",
        "infra/.env",
        "bridge/__pycache__/app.cpython-311.pyc",
        "bridge.egg-info/PKG-INFO",
        ".pytest_cache/v/cache",
    ]:
        assert ignored(left_out, rules), f".dockerignore lets {left_out} into the build context"


def test_dockerignore_matcher_follows_docker_rules() -> None:
    rules = dockerignore_rules("*.db\n**/*.log\ndocs\n!docs/keep.md\n")
    assert ignored("a.db", rules) and not ignored("sub/a.db", rules)  # no `**`: the root only
    assert ignored("x/y/z.log", rules) and ignored("z.log", rules)
    assert ignored("docs/other.md", rules) and not ignored("docs/keep.md", rules)
