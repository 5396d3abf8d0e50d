"""How late the event loop runs: the bridge's own sign that it is short of CPU.

Every call's audio runs on one event loop, 50 frames a second each way per call. When the
process has more work than its core can do, every callback starts late, and a caller hears
it as a stall before anything else shows it. So a task sleeps a fixed interval and measures
how much later than asked it woke: on an idle loop a fraction of a millisecond; tens of
milliseconds mean the bridge carries more calls than its core can serve on time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["LAG_INTERVAL_S", "watch_loop_lag"]

LAG_INTERVAL_S = 0.5


async def watch_loop_lag(
    observe: Callable[[float], None], interval_s: float = LAG_INTERVAL_S
) -> None:
    """Until cancelled: sleep ``interval_s``, then ``observe`` how many seconds late the
    loop woke (never negative)."""
    loop = asyncio.get_running_loop()
    while True:
        asked = loop.time() + interval_s
        await asyncio.sleep(interval_s)
        observe(max(0.0, loop.time() - asked))
