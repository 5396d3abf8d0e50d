"""structlog set-up: JSON lines when not on a terminal, readable console output on one.

Log with static event names (``call.started``, ``barge_in``) and bound context (``call_sid``).
Never log audio payloads or secrets; transcript text only at debug level.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog


def configure_logging(fmt: str = "json", level: str = "info") -> None:
    """Configure structlog and the stdlib root logger once, at start-up."""
    level_no = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    renderer: Any
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    else:
        renderer = structlog.processors.JSONRenderer()
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    processors: list[Any] = [*shared, structlog.processors.format_exc_info, renderer]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level_no),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )
    # Libraries (uvicorn, websockets) log through the standard library: render their lines
    # the same way, so an operator's log pipeline sees one format.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    handler.addFilter(_demote_peer_faults)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(level_no, logging.WARNING))


# Library log lines about a peer's misbehaviour that the library reports as our error, with a
# traceback: a client able to trigger them could fill the log. They become one warning line
# with a static event name; the connection has been closed with a fitting code already.
_PEER_FAULTS = {
    "Invalid UTF-8 sequence received from client.": "websocket.invalid_utf8",
}


def _demote_peer_faults(record: logging.LogRecord) -> bool:
    event = _PEER_FAULTS.get(record.msg) if isinstance(record.msg, str) else None
    if event is not None:
        record.msg, record.args = event, None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.exc_info, record.exc_text = None, None
    return True


def _stderr_logger(*_args: Any) -> structlog.PrintLogger:
    # Looked up at each use rather than bound at start-up, so a replaced sys.stderr (a
    # supervisor's redirect, a test's capture) never leaves loggers writing to a closed file.
    return structlog.PrintLogger(sys.stderr)


def get_logger(name: str | None = None) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(name)
    return logger
