"""A helper process of a benchmark: ``python -m MODULE FLAG`` with pipes to both ends, told to
finish by closing its input, and killed if it has not within a bound."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator

__all__ = ["piped_child"]

EXIT_WAIT_S = 10.0


@contextlib.asynccontextmanager
async def piped_child(module: str, flag: str) -> AsyncIterator[asyncio.subprocess.Process]:
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        flag,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        yield child
    finally:
        if child.returncode is None:
            assert child.stdin is not None
            child.stdin.close()
            try:
                await asyncio.wait_for(child.wait(), timeout=EXIT_WAIT_S)
            except TimeoutError:
                child.kill()
                await child.wait()
