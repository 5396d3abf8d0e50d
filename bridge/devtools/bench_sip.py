"""Concurrent SIP calls against a real ``bridge serve`` process: how evenly its RTP goes out,
and what a SIP call costs it next to a Twilio one.

The fake realtime server and the SIP phones (:mod:`bridge.devtools.sip_simulator`, the same
caller script as the Twilio load) run in this process; the bridge runs as a child process
with its SIP listener on free 127.0.0.1 ports, so only the bridge's own CPU (from
``/proc/<pid>/stat``, as :mod:`bridge.devtools.bench_load` reads it) is counted.

Outbound jitter is read from the phones' arrival times of the bridge's RTP: for every two
consecutive packets of a call (sequence numbers one apart), ``|interval - 20 ms|``; p50, p99
and max over all calls. Two clocks are reported. The kernel's receive timestamp
(``ReceivedRtp.wire_at``) is, on loopback, the moment the bridge's ``sendto`` ran: the
bridge's own pacing, which the target is judged on. The time this process's event loop read
the datagram (``ReceivedRtp.at``) adds this process's scheduling delays, shown beside it with
the phones' own pacer lateness, so a busy load generator is not mistaken for a jittery
bridge. Linux only.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

# The Twilio load's own conversation, bridge settings and process handling, so that the two
# runs differ in the channel only and their figures compare.
from bridge.devtools.bench_load import (
    _MODEL_KEY,
    _SCRIPT,
    LoadReport,
    _bridge_env,
    _start_bridge,
    _stop,
    _utterances,
    _wait_ready,
    measure_load,
    peak_rss_kib,
    process_cpu_seconds,
)
from bridge.devtools.fake_realtime import FakeRealtimeServer
from bridge.devtools.ports import free_port
from bridge.devtools.sip_phone import ReceivedRtp
from bridge.devtools.sip_simulator import SipSimulationResult, simulate_sip_call

__all__ = [
    "JITTER_TARGET_MS",
    "STEADY_AFTER_S",
    "Jitter",
    "SipBenchReport",
    "SipLoadReport",
    "format_sip_bench",
    "jitter_of",
    "measure_sip_load",
    "run_sip_bench",
    "sip_bench_json",
]

JITTER_TARGET_MS = 5.0
"""The goal: outbound RTP inter-packet p99 jitter at or below this at 50 calls."""

STEADY_AFTER_S = 0.5
"""The steady-state jitter leaves out each call's start, when all calls are set up at once."""

_FRAME_S = 0.020
_REVIEW_TOKEN = "bench-review-token"
_SEQ_MOD = 1 << 16
_RECORD_WAIT_S = 10.0


@dataclass(frozen=True, slots=True)
class Jitter:
    """``|interval - 20 ms|`` between consecutive RTP packets, in ms, over all calls.
    ``gaps`` counts neighbours whose sequence numbers were not one apart (lost, reordered
    or skipped by the sender); their interval is left out."""

    intervals: int
    gaps: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    over_target: float  # share of intervals off by more than JITTER_TARGET_MS


def _percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (NaN when empty)."""
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def jitter_of(
    calls: list[list[ReceivedRtp]], *, wire: bool = True, skip_first_s: float = 0.0
) -> Jitter:
    """The inter-packet jitter of each call's received RTP (in arrival order), pooled: on
    the kernel's receive times (``wire``), or on the times the phones' loop read them.
    ``skip_first_s`` leaves out what arrived in each call's first seconds."""
    deviations: list[float] = []
    gaps = 0
    for packets in calls:
        if skip_first_s > 0 and packets:
            since = packets[0].wire_at + skip_first_s
            packets = [packet for packet in packets if packet.wire_at >= since]
        for before, after in itertools.pairwise(packets):
            if (after.sequence - before.sequence) % _SEQ_MOD != 1:
                gaps += 1
                continue
            interval = after.wire_at - before.wire_at if wire else after.at - before.at
            deviations.append(abs(interval - _FRAME_S) * 1000)
    deviations.sort()
    over = sum(1 for d in deviations if d > JITTER_TARGET_MS)
    return Jitter(
        intervals=len(deviations),
        gaps=gaps,
        p50_ms=_percentile(deviations, 50),
        p99_ms=_percentile(deviations, 99),
        max_ms=deviations[-1] if deviations else math.nan,
        over_target=over / len(deviations) if deviations else math.nan,
    )


@dataclass(frozen=True, slots=True)
class SipLoadReport:
    calls: int
    completed: int
    failures: tuple[str, ...]
    call_seconds: float  # sum over calls of the timeline the phone lived, as for Twilio
    wall_seconds: float
    server_cpu_s: float
    server_peak_rss_kib: int
    generator_cpu_s: float  # this process: phones and fake model, not counted
    jitter: Jitter  # on the kernel's receive times: the bridge's own pacing
    jitter_steady: Jitter  # the same without each call's first STEADY_AFTER_S
    jitter_as_read: Jitter  # on the phones' loop read times: this process's delays added
    # The phones' own pacer: how late this process's loop woke for a 20 ms slot, in ms.
    generator_lateness_p99_ms: float
    generator_lateness_max_ms: float
    packets_received: int

    @property
    def cpu_ms_per_call_second(self) -> float:
        if self.call_seconds <= 0:
            return math.nan
        return self.server_cpu_s * 1000.0 / self.call_seconds


@dataclass(frozen=True, slots=True)
class SipBenchReport:
    """The SIP run, and the Twilio load run with the same calls and length (None if skipped)."""

    sip: SipLoadReport
    twilio: LoadReport | None

    @property
    def twilio_cpu_ms_per_call_second(self) -> float:
        if self.twilio is None:
            return math.nan
        return self.twilio.cpu_ms_per_call_minute / 60.0

    @property
    def target_met(self) -> bool:
        return self.sip.jitter.p99_ms <= JITTER_TARGET_MS


def _failure(result: SipSimulationResult, record: dict[str, Any] | None) -> str | None:
    if result.protocol_problems:
        return f"{result.call_id}: {result.protocol_problems[0]}"
    if result.timed_out:
        return f"{result.call_id}: timed out"
    if result.hung_up_by != "caller":
        return f"{result.call_id}: the bridge hung up"
    status = None if record is None else record.get("status")
    if status != "completed":
        return f"{result.call_id}: call record status {status!r}"
    return None


async def _records(url: str, call_ids: set[str]) -> dict[str, dict[str, Any]]:
    """The SIP calls' summaries by Call-ID, once none of them is in progress (bounded)."""
    headers = {"Authorization": f"Bearer {_REVIEW_TOKEN}"}
    found: dict[str, dict[str, Any]] = {}
    until = time.monotonic() + _RECORD_WAIT_S
    async with httpx.AsyncClient(trust_env=False, headers=headers) as http:
        while True:
            try:
                response = await http.get(f"{url}/api/calls", params={"limit": "200"}, timeout=5)
                calls = response.json().get("calls", []) if response.status_code == 200 else []
            except (httpx.HTTPError, ValueError):
                calls = []
            found = {
                call["sip_call_id"]: call
                for call in calls
                if isinstance(call, dict) and call.get("sip_call_id") in call_ids
            }
            settled = len(found) == len(call_ids) and all(
                call.get("status") != "in_progress" for call in found.values()
            )
            if settled or time.monotonic() >= until:
                return found
            await asyncio.sleep(0.2)


def _sip_env(env: dict[str, str], sip_port: int, calls: int) -> dict[str, str]:
    # One RTP port per call, drawn at random from the range: leave it plenty of room.
    low = free_port() & ~1
    high = min(65535, low + max(200, calls * 20))
    return {
        **env,
        "BRIDGE_SIP_LISTEN": f"udp:127.0.0.1:{sip_port}",
        "BRIDGE_RTP_PORTS": f"{low}-{high}",
        "BRIDGE_SIP_MAX_CALLS": str(max(200, calls)),
        "BRIDGE_REVIEW_TOKEN": _REVIEW_TOKEN,
    }


async def measure_sip_load(calls: int, seconds: float, timeout_s: float) -> SipLoadReport:
    """Run ``calls`` concurrent SIP calls of about ``seconds`` each against a fresh bridge
    process; report its CPU and memory and the jitter of its RTP. Everything started is
    stopped before returning; raises ``TimeoutError`` when the run exceeds ``timeout_s``."""
    if calls < 1 or seconds <= 0:
        raise ValueError("need calls >= 1 and seconds > 0")
    utterances = _utterances(seconds)
    call_limit_s = seconds * 3 + 30
    async with (
        asyncio.timeout(timeout_s),
        FakeRealtimeServer("openai", script=_SCRIPT, api_key=_MODEL_KEY) as fake,
    ):
        with tempfile.TemporaryDirectory(prefix="bridge-bench-sip-") as tmp:
            port, sip_port = free_port(), free_port()
            url = f"http://127.0.0.1:{port}"
            log = Path(tmp) / "bridge.log"
            env = _sip_env(_bridge_env(url, fake.url, Path(tmp) / "calls.db"), sip_port, calls)
            proc = _start_bridge(port, env, log)
            try:
                await _wait_ready(url, proc, log)
                cpu_before = process_cpu_seconds(proc.pid)
                gen_before = time.process_time()
                started = time.monotonic()
                results = await asyncio.gather(
                    *(
                        simulate_sip_call(
                            f"sip:agent@127.0.0.1:{sip_port}",
                            caller_utterances=utterances,
                            max_duration_s=call_limit_s,
                        )
                        for _ in range(calls)
                    ),
                    return_exceptions=True,
                )
                wall = time.monotonic() - started
                generator_cpu = time.process_time() - gen_before
                server_cpu = process_cpu_seconds(proc.pid) - cpu_before
                peak = peak_rss_kib(proc.pid)
                done = [r for r in results if isinstance(r, SipSimulationResult)]
                records = await _records(url, {r.call_id for r in done})
            finally:
                _stop(proc)  # blocking, but bounded, and immune to a cancelled run
    failures: list[str] = []
    call_seconds = 0.0
    lateness: list[float] = []
    for result in results:
        if isinstance(result, BaseException):
            failures.append(f"{type(result).__name__}: {result}")
            continue
        call_seconds += len(result.heard_audio) / 8000
        lateness += result.stats.send_lateness
        problem = _failure(result, records.get(result.call_id))
        if problem is not None:
            failures.append(problem)
    lateness.sort()
    return SipLoadReport(
        calls=calls,
        completed=calls - len(failures),
        failures=tuple(failures),
        call_seconds=call_seconds,
        wall_seconds=wall,
        server_cpu_s=server_cpu,
        server_peak_rss_kib=peak,
        generator_cpu_s=generator_cpu,
        jitter=jitter_of([r.received for r in done]),
        jitter_steady=jitter_of([r.received for r in done], skip_first_s=STEADY_AFTER_S),
        jitter_as_read=jitter_of([r.received for r in done], wire=False),
        generator_lateness_p99_ms=_percentile(lateness, 99) * 1000,
        generator_lateness_max_ms=(lateness[-1] if lateness else math.nan) * 1000,
        packets_received=sum(len(r.received) for r in done),
    )


async def run_sip_bench(
    calls: int, seconds: float, *, twilio: bool = True, timeout_s: float | None = None
) -> SipBenchReport:
    """The SIP run, then (unless ``twilio`` is false) the Twilio load with the same calls
    and length against another fresh bridge process, one after the other."""
    limit = timeout_s if timeout_s is not None else seconds * 3 + 90
    sip = await measure_sip_load(calls, seconds, limit)
    twilio_report = await measure_load(calls, seconds, limit) if twilio else None
    return SipBenchReport(sip, twilio_report)


def _ms(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2f}"


def format_sip_bench(report: SipBenchReport) -> str:
    """The report as a table, SIP and Twilio side by side, ready to print."""
    sip, tw = report.sip, report.twilio
    jitter, steady, as_read = sip.jitter, sip.jitter_steady, sip.jitter_as_read

    def row(name: str, left: str, right: str = "n/a") -> str:
        return f"{name:<38}{left:<34}{right}"

    lines = [
        f"sip: {sip.calls} concurrent calls against `bridge serve` (fake OpenAI GA model, pcmu), "
        "CPU of the bridge process only",
        "",
        row("", "SIP (UDP, RTP PCMU)", "Twilio (Media Streams)" if tw else "Twilio (skipped)"),
        row(
            "calls completed",
            f"{sip.completed} of {sip.calls}",
            f"{tw.completed} of {tw.calls}" if tw else "n/a",
        ),
        row(
            "call-seconds (wall s)",
            f"{sip.call_seconds:.1f} ({sip.wall_seconds:.1f})",
            f"{tw.call_seconds:.1f} ({tw.wall_seconds:.1f})" if tw else "n/a",
        ),
        row(
            "bridge CPU seconds",
            f"{sip.server_cpu_s:.2f}",
            f"{tw.server_cpu_s:.2f}" if tw else "n/a",
        ),
        row(
            "CPU ms per call-second",
            f"{sip.cpu_ms_per_call_second:.1f}",
            f"{report.twilio_cpu_ms_per_call_second:.1f}" if tw else "n/a",
        ),
        row(
            "bridge peak RSS",
            f"{sip.server_peak_rss_kib / 1024:.1f} MiB",
            f"{tw.server_peak_rss_kib / 1024:.1f} MiB" if tw else "n/a",
        ),
        row(
            "outbound RTP |interval-20ms| ms",
            f"p50 {_ms(jitter.p50_ms)} p99 {_ms(jitter.p99_ms)}",
        ),
        row("  max ms / over 5 ms", f"{_ms(jitter.max_ms)} / {jitter.over_target:.2%}"),
        row("  intervals / sequence gaps", f"{jitter.intervals} / {jitter.gaps}"),
        row(
            f"  after each call's first {STEADY_AFTER_S:g} s",
            f"p50 {_ms(steady.p50_ms)} p99 {_ms(steady.p99_ms)} max {_ms(steady.max_ms)}",
        ),
        row(
            "  as read by the phones' loop",
            f"p50 {_ms(as_read.p50_ms)} p99 {_ms(as_read.p99_ms)} max {_ms(as_read.max_ms)}",
        ),
        row(
            "load generator CPU s (not counted)",
            f"{sip.generator_cpu_s:.2f}",
            f"{tw.generator_cpu_s:.2f}" if tw else "n/a",
        ),
        row(
            "phones' own timer lateness ms",
            f"p99 {_ms(sip.generator_lateness_p99_ms)} max {_ms(sip.generator_lateness_max_ms)}",
        ),
        "",
        f"target: outbound RTP p99 jitter <= {JITTER_TARGET_MS:g} ms at 50 calls: "
        + ("met" if report.target_met else "NOT met")
        + ("" if sip.calls == 50 else f" (this run: {sip.calls} calls)"),
    ]
    lines += [f"SIP failed: {failure}" for failure in sip.failures[:5]]
    if tw is not None:
        lines += [f"Twilio failed: {failure}" for failure in tw.failures[:5]]
    return "\n".join(lines)


def sip_bench_json(report: SipBenchReport) -> dict[str, Any]:
    """The report as plain data (NaN becomes None), for ``--json``."""

    def clean(value: Any) -> Any:
        if isinstance(value, float) and math.isnan(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [clean(v) for v in value]
        return value

    sip = asdict(report.sip)
    sip["cpu_ms_per_call_second"] = report.sip.cpu_ms_per_call_second
    twilio: dict[str, Any] | None = None
    if report.twilio is not None:
        twilio = asdict(report.twilio)
        twilio["cpu_ms_per_call_second"] = report.twilio_cpu_ms_per_call_second
    result: dict[str, Any] = clean(
        {
            "sip": sip,
            "twilio": twilio,
            "jitter_target_ms": JITTER_TARGET_MS,
            "target_met": report.target_met,
        }
    )
    return result
