"""The event loop's lateness, the bridge's sign that it is short of CPU."""

from __future__ import annotations

import asyncio
import time

from bridge.adapters.loop_lag import watch_loop_lag


def _hog(seconds: float) -> None:
    time.sleep(seconds)  # a callback that holds the loop, as too many calls would


def test_a_loop_held_up_is_seen_late_and_an_idle_one_on_time() -> None:
    async def run() -> list[float]:
        seen: list[float] = []
        wanted = [2]
        enough = asyncio.Event()

        def observe(lag: float) -> None:
            seen.append(lag)
            if len(seen) >= wanted[0]:
                enough.set()

        watcher = asyncio.create_task(watch_loop_lag(observe, interval_s=0.05))
        try:
            async with asyncio.timeout(10):
                await enough.wait()
                enough.clear()
                wanted[0] = len(seen) + 2
                asyncio.get_running_loop().call_soon(_hog, 0.3)
                await enough.wait()
        finally:
            watcher.cancel()
        return seen

    seen = asyncio.run(run())
    assert all(lag >= 0 for lag in seen)
    assert max(seen) >= 0.2  # the sleep that ended during the hold woke about 0.25 s late
    assert min(seen) < 0.2  # and the others did not
