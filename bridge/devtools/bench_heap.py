"""What one full garbage collection costs a started bridge, before and after it settles its
heap (:mod:`bridge.heap`): the pause every live call's audio takes when one runs.

Each round starts a fresh ``bridge serve`` (a temporary SQLite call store; the model is never
dialled), waits until it is ready, stops it, and reads from its ``bridge.heap_settled`` log
line the full collection it ran on its heap as start-up left it and one run once settled.
Median of the rounds; the ratio is what carries over to another machine.

    python -m bridge.devtools.bench heap [--rounds 3]
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bridge.devtools.bench_load import _bridge_env, _start_bridge, _stop, _tail, _wait_ready
from bridge.devtools.ports import free_port

__all__ = ["HeapReport", "format_heap", "run_heap"]

_NOT_DIALLED = "ws://127.0.0.1:9/v1/realtime"  # start-up never opens a model session


@dataclass(frozen=True, slots=True)
class HeapReport:
    rounds: int
    frozen: int  # objects the settled collector no longer walks (median)
    full_ms: float  # median pause of a full collection on the heap as started
    settled_full_ms: float  # median pause of one once settled

    @property
    def ratio(self) -> float:
        return self.settled_full_ms / self.full_ms if self.full_ms else 0.0


def run_heap(rounds: int = 3) -> HeapReport:
    """Start ``bridge serve`` ``rounds`` times and read how it settled its heap."""
    readings = [asyncio.run(_one_start()) for _ in range(rounds)]
    return HeapReport(
        rounds=rounds,
        frozen=round(statistics.median(r["frozen_objects"] for r in readings)),
        full_ms=statistics.median(r["full_collection_ms"] for r in readings),
        settled_full_ms=statistics.median(r["settled_collection_ms"] for r in readings),
    )


async def _one_start() -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = _bridge_env(url, _NOT_DIALLED, Path(tmp) / "calls.db")
        env["BRIDGE_LOG_LEVEL"] = "info"
        log = Path(tmp) / "bridge.log"
        proc = _start_bridge(port, env, log)
        try:
            await _wait_ready(url, proc, log)
        finally:
            _stop(proc)
        for line in log.read_text(errors="replace").splitlines():
            if '"bridge.heap_settled"' in line:
                entry: dict[str, float] = json.loads(line)
                return entry
        raise RuntimeError(f"bridge serve logged no bridge.heap_settled:\n{_tail(log)}")


def format_heap(report: HeapReport) -> str:
    return "\n".join(
        [
            "heap: one full garbage collection in a started `bridge serve` with no calls "
            f"(median of {report.rounds} starts)",
            f"  as started                {report.full_ms:>9.2f} ms",
            f"  settled (what it runs on) {report.settled_full_ms:>9.2f} ms",
            f"  settled / as started      {report.ratio:>9.3f}x",
            f"  objects frozen: {report.frozen:,}; live calls add what they hold to both",
        ]
    )
