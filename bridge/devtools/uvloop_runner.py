"""Run a benchmark's or a load test's coroutine on uvloop, the event loop the bridge serves on:
the figures then describe the loop in production, and a hundred simulated callers cost the
load generator less per frame, so it stays on time for longer."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["run_on_uvloop"]

T = TypeVar("T")


def run_on_uvloop(main: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - installed with uvicorn[standard]
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)
