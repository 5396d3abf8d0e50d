"""What one full garbage collection costs a started bridge, before and after it settles its
heap (:mod:`bridge.heap`): the pause every live call's audio takes when one runs.

Each round starts a fresh ``bridge serve`` (a temporary SQLite call store; the model is never
dialled), waits until it is ready, stops it, and reads from its ``bridge.heap_settled`` log
line the full collection it ran on its heap as start-up left it and one run once settled.
Median of the rounds; the ratio is what carries over to another machine.

With ``--calls N`` it then runs the load test's Twilio pass twice, N calls each, against a
bridge carrying a probe (:mod:`bridge.devtools.heap_probe`) that forces three full
collections while the calls are up: once settled, once with the settling undone. It
prints what each collection walked and paused, and the inbound frames that ran late.

    python -m bridge.devtools.bench heap [--rounds 3] [--calls N] [--seconds 30]
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bridge.devtools.bench_load import _bridge_env, _start_bridge, _stop, _tail, _wait_ready
from bridge.devtools.loadtest import LoadtestOptions, run_loadtest
from bridge.devtools.ports import free_port
from bridge.devtools.uvloop_runner import run_on_uvloop

__all__ = [
    "HeapReport",
    "LoadedHeap",
    "format_heap",
    "format_heap_under_load",
    "run_heap",
    "run_heap_under_load",
]

_PROBE_DIR = Path(__file__).resolve().parent / "heap_probe"
_PROBE_ROUNDS = 3
_FIRST_CALL_S = 2.0  # from the bridge process's start to its first call, roughly

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


@dataclass(frozen=True, slots=True)
class LoadedHeap:
    """One load-test pass with full collections forced while its calls are up."""

    settled: bool
    calls: int
    completed: int
    walked: tuple[int, ...]  # objects each forced collection walked
    pauses_ms: tuple[float, ...]
    late_frames: int  # inbound frames that reached the model over 100 ms late
    inbound_p99_ms: float


def run_heap_under_load(calls: int, seconds: float = 30.0) -> tuple[LoadedHeap, LoadedHeap]:
    """The same load on a settled bridge and on one whose settling is undone by the probe."""
    return _loaded(calls, seconds, settled=True), _loaded(calls, seconds, settled=False)


def _loaded(calls: int, seconds: float, *, settled: bool) -> LoadedHeap:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "probe.json"
        env = {
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(_PROBE_DIR), os.environ.get("PYTHONPATH", "")) if p
            ),
            "HEAP_PROBE_OUT": str(out),
            # Once every call is up (their starts are spread over a quarter of their length)
            # and a third of the way through them: the forced collections meet live calls.
            "HEAP_PROBE_AT_S": f"{_FIRST_CALL_S + seconds / 4 + seconds / 3:g}",
            "HEAP_PROBE_ROUNDS": str(_PROBE_ROUNDS),
            "HEAP_PROBE_UNSETTLED": "0" if settled else "1",
        }
        opts = LoadtestOptions(
            calls=calls, seconds=seconds, floor=False, bridge_env=tuple(env.items())
        )
        report = run_on_uvloop(run_loadtest(opts)).bridge  # as `bridge loadtest` runs
        if not out.exists():
            raise RuntimeError("the heap probe wrote nothing: were the calls shorter than it?")
        probe = json.loads(out.read_text())
    return LoadedHeap(
        settled=settled,
        calls=calls,
        completed=report.completed,
        walked=tuple(int(c["walked"]) for c in probe["collections"]),
        pauses_ms=tuple(float(c["pause_ms"]) for c in probe["collections"]),
        late_frames=report.frames.late,
        inbound_p99_ms=report.inbound.p99_ms,
    )


def format_heap_under_load(settled: LoadedHeap, unsettled: LoadedHeap) -> str:
    rows = [
        f"under load: {settled.calls} calls, {len(settled.pauses_ms)} full collections forced "
        "while they were up (a probe in the bridge)",
        f"  {'':12}{'objects walked':>16}{'pauses ms':>26}{'late frames':>13}{'inbound p99':>13}",
    ]
    for name, run in (("settled", settled), ("as started", unsettled)):
        pauses = " / ".join(f"{p:.1f}" for p in run.pauses_ms)
        rows.append(
            f"  {name:12}{max(run.walked):>16,}{pauses:>26}{run.late_frames:>13,}"
            f"{run.inbound_p99_ms:>10.1f} ms"
        )
    longest = max(unsettled.pauses_ms)
    ratio = max(settled.pauses_ms) / longest if longest else 0.0
    rows.append(f"  longest pause, settled / as started: {ratio:.2f}x")
    return "\n".join(rows)


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
