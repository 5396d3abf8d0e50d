"""Imports flow one way: codecs <- protocols <- call <- adapters/storage <- session <- app.

Walks every module's imports (statically, with ast) and fails when a layer reaches upward,
or when a pure layer imports I/O.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "bridge"

# Rank of each part of the package: a module may import only parts of equal or lower rank.
RANK = {
    "errors": 0,
    "settings": 0,
    "log": 0,
    "heap": 0,
    "codecs": 1,
    "agents": 1,
    "protocols": 2,
    "call": 3,
    "adapters": 4,
    "storage": 4,
    "metrics": 4,
    "review": 5,
    "drain": 5,
    "overload": 5,
    "session": 6,
    "agent_hub": 6,
    "twilio_session": 6,
    "sip_session": 6,
    "openai_sip": 6,
    "devtools": 6,
    "webhooks": 7,
    "outbound": 7,
    "openai_webhook": 7,
    "app": 8,
    "serving": 8,
    "workers": 8,
    "cli": 9,
    "__main__": 10,
    "__init__": 0,
}
PURE = {"codecs", "protocols", "call"}
IO_MODULES = {"asyncio", "socket", "starlette", "websockets", "time", "uvicorn", "httpx"}


def _part(path: Path) -> str:
    rel = path.relative_to(ROOT)
    return rel.parts[0].removesuffix(".py")


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


MODULES = sorted(p for p in ROOT.rglob("*.py"))


def test_every_part_has_a_rank() -> None:
    assert {_part(p) for p in MODULES} <= set(RANK)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_flow_one_way(path: Path) -> None:
    part = _part(path)
    for name in _imports(path):
        top = name.split(".")[0]
        if top == "bridge" and "." in name:
            target = name.split(".")[1]
            assert RANK[target] <= RANK[part], f"{part} must not import bridge.{target}"
        if part in PURE:
            assert top not in IO_MODULES, f"pure layer {part} imports {top}"


def test_the_checker_catches_an_upward_import(tmp_path: Path) -> None:
    bad = tmp_path / "x.py"
    bad.write_text("from bridge.session import CallSession\nimport asyncio\n")
    assert _imports(bad) == ["bridge.session", "asyncio"]
