from __future__ import annotations

import json
import logging

import pytest
import structlog

from bridge.log import configure_logging


@pytest.fixture(autouse=True)
def _restore_logging() -> object:
    """Logging is process-wide: put it back so later tests do not write to a closed capture."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield None
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines_carry_bound_context_and_library_lines_match(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("json", "info")
    structlog.get_logger("t").bind(call_sid="CA1").info("call.started", provider="local")
    structlog.get_logger("t").debug("turn.saved", text="secret words")  # below info: dropped
    logging.getLogger("some.library").warning("library says %s", "hi")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [(e["event"], e["level"]) for e in lines] == [
        ("call.started", "info"),
        ("library says hi", "warning"),
    ]
    assert lines[0]["call_sid"] == "CA1" and "timestamp" in lines[0]


def test_debug_level_shows_transcript_text(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("json", "debug")
    structlog.get_logger("t").debug("turn.saved", text="hello")
    assert json.loads(capsys.readouterr().err)["text"] == "hello"
