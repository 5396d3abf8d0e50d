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
    # An in-process uvicorn elsewhere in the suite may have given its loggers handlers of
    # their own; `bridge serve` does not (log_config=None), so they reach the root here too.
    saved = {}
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        saved[name] = logger.handlers[:], logger.propagate, logger.level
        logger.handlers[:], logger.propagate, logger.level = [], True, logging.NOTSET
    yield None
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, (handlers_, propagate, level_) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers[:], logger.propagate, logger.level = handlers_, propagate, level_


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


def test_a_peer_sending_invalid_utf8_costs_one_warning_line_not_a_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # uvicorn reports a client's invalid UTF-8 text frame with logger.exception: before, every
    # such frame put an ERROR with a traceback in the log.
    configure_logging("json", "info")
    try:
        b"\xff".decode()
    except UnicodeDecodeError:
        logging.getLogger("uvicorn.error").exception("Invalid UTF-8 sequence received from client.")
    [line] = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert (line["event"], line["level"]) == ("websocket.invalid_utf8", "warning")
    assert "exception" not in line and "Traceback" not in json.dumps(line)


def test_other_library_errors_keep_their_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("json", "info")
    try:
        raise RuntimeError("a real bug")
    except RuntimeError:
        logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
    [line] = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert line["level"] == "error" and "Traceback" in line["exception"]
