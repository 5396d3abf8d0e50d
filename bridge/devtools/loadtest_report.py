"""The figures of ``bridge loadtest``: one pass per server, the ratio between them, as a
table a person reads and as JSON a script keeps."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from bridge.devtools.fake_response import DEFAULT_DELTA_MS
from bridge.devtools.load_probe import (
    CALLER_ON_TIME_MS,
    CUT_WITHIN_MS,
    INBOUND_LATE_S,
    SEND_LATE_S,
    CutAccuracy,
    FrameCounts,
    Hop,
    SteadyState,
)

__all__ = ["HOPS", "LoadtestReport", "PassReport", "format_report", "report_json"]

HOPS = ("first_byte", "delta", "inbound", "clear")
_HOP_LABELS = {
    "first_byte": "first byte out (answer -> caller)",
    "delta": "every delta out",
    "inbound": "inbound frame (caller -> model)",
    "clear": "clear (speech_started -> caller)",
}


@dataclass(frozen=True, slots=True)
class PassReport:
    """One server under the calls. CPU and memory are the server's process tree, read from
    /proc; ``generator_cpu_s`` is the load test's own process (the simulated callers and their
    taps), ``model_cpu_s`` the fake model's process."""

    name: str
    calls: int
    completed: int
    failures: tuple[str, ...]
    refused: int  # turned away by the server at the door (busy): neither completed nor failed
    call_seconds: float  # sum over calls of the stream's length, as the caller lived it
    wall_seconds: float
    server_cpu_s: float
    generator_cpu_s: float
    model_cpu_s: float
    rss_idle_kib: int  # the tree before the first call
    rss_peak_kib: int  # the tree's largest resident set, sampled during the calls
    sessions: int  # model sessions the fake accepted
    first_byte: Hop
    delta: Hop
    inbound: Hop
    clear: Hop
    frames: FrameCounts
    deltas_sent: int
    deltas_unseen: int  # never reached a caller: normal for audio cut by a barge-in
    barge_ins: int
    clears_missing: int
    steady: SteadyState  # the hops again, while every call was up
    cut: CutAccuracy  # each barge-in's truncate against what the caller had heard

    @property
    def cpu_ms_per_call_second(self) -> float:
        if self.call_seconds <= 0:
            return math.nan
        return self.server_cpu_s * 1000.0 / self.call_seconds

    @property
    def rss_per_call_mib(self) -> float:
        if self.calls <= 0:
            return math.nan
        return (self.rss_peak_kib - self.rss_idle_kib) / 1024 / self.calls

    @property
    def generator_cpu_share(self) -> float:
        """The simulated callers' CPU as a share of one core over the pass."""
        return self.generator_cpu_s / self.wall_seconds if self.wall_seconds > 0 else math.nan

    @property
    def model_cpu_share(self) -> float:
        """The fake model's CPU as a share of one core over the pass."""
        return self.model_cpu_s / self.wall_seconds if self.wall_seconds > 0 else math.nan

    def hop(self, name: str) -> Hop:
        hop: Hop = getattr(self, name)
        return hop

    def steady_hop(self, name: str) -> Hop:
        hop: Hop = getattr(self.steady, name)
        return hop


@dataclass(frozen=True, slots=True)
class RoundFigures:
    """One round of a load test run in rounds: the bridge's CPU and the floor's."""

    bridge_cpu_ms: float  # per call-second
    floor_cpu_ms: float
    bridge_first: bool

    @property
    def ratio(self) -> float:
        return _ratio(self.bridge_cpu_ms, self.floor_cpu_ms)


def median_round(rounds: Sequence[RoundFigures]) -> int:
    """The index of the round whose CPU ratio is the median (the lower one of an even count)."""
    order = sorted(range(len(rounds)), key=lambda i: (math.isnan(rounds[i].ratio), rounds[i].ratio))
    return order[(len(order) - 1) // 2]


@dataclass(frozen=True, slots=True)
class LoadtestReport:
    channel: str  # "twilio" or "sip"
    calls: int
    seconds: float
    target: str  # "started" (a fresh `bridge serve`) or the URL of a running bridge
    bridge: PassReport
    floor: PassReport | None
    notes: tuple[str, ...] = ()
    delta_ms: tuple[int, ...] = DEFAULT_DELTA_MS  # the fake model's answer deltas, in turn
    # With more than one round: each round's CPU, and which of them (from 1) the report shows.
    rounds: tuple[RoundFigures, ...] = ()
    shown_round: int = 1

    def ratios(self) -> dict[str, float]:
        """bridge / floor for CPU, memory and each hop's p50 and p99 (empty without a floor)."""
        floor = self.floor
        if floor is None:
            return {}
        ratios = {
            "cpu_ms_per_call_second": _ratio(
                self.bridge.cpu_ms_per_call_second, floor.cpu_ms_per_call_second
            ),
            "rss_per_call_mib": _ratio(self.bridge.rss_per_call_mib, floor.rss_per_call_mib),
        }
        for name in HOPS:
            mine, theirs = self.bridge.hop(name), floor.hop(name)
            ratios[f"{name}_p50"] = _ratio(mine.p50_ms, theirs.p50_ms)
            ratios[f"{name}_p99"] = _ratio(mine.p99_ms, theirs.p99_ms)
        for name in HOPS:
            mine, theirs = self.bridge.steady_hop(name), floor.steady_hop(name)
            ratios[f"steady_{name}_p50"] = _ratio(mine.p50_ms, theirs.p50_ms)
            ratios[f"steady_{name}_p99"] = _ratio(mine.p99_ms, theirs.p99_ms)
        return ratios


def _ratio(mine: float, theirs: float) -> float:
    if math.isnan(mine) or math.isnan(theirs) or theirs <= 0:
        return math.nan
    return mine / theirs


def _num(value: float, digits: int = 2) -> str:
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"


def _times(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2f}x"


def _pair(hop: Hop) -> str:
    return f"{_num(hop.p50_ms)} / {_num(hop.p99_ms)}"


def format_report(report: LoadtestReport) -> str:
    """The report as a table, the bridge beside the floor, ready to print."""
    passes = [report.bridge] + ([report.floor] if report.floor is not None else [])
    ratios = report.ratios()
    width = 40

    def row(label: str, cells: list[str], ratio: str = "") -> str:
        line = f"{label:<{width}}" + "".join(f"{cell:<28}" for cell in cells)
        return (line + ratio).rstrip()

    where = "a fresh `bridge serve`" if report.target == "started" else report.target
    floor_name = "floor (naive pass-through)" if report.floor is not None else ""
    lines = [
        f"loadtest: {report.calls} concurrent simulated {report.channel} calls of about "
        f"{report.seconds:g} s against {where}; fake model, answers at 5x real time in "
        f"{'/'.join(str(ms) for ms in report.delta_ms)} ms deltas",
        "",
        row("", ["bridge", floor_name][: len(passes)], "bridge/floor" if ratios else ""),
        row("calls completed", [f"{p.completed} of {p.calls}" for p in passes]),
        row("calls turned away (busy)", [str(p.refused) for p in passes]),
        row(
            "call-seconds (wall s)",
            [f"{p.call_seconds:.0f} ({p.wall_seconds:.1f})" for p in passes],
        ),
        row(
            "CPU ms per call-second",
            [_num(p.cpu_ms_per_call_second) for p in passes],
            _times(ratios.get("cpu_ms_per_call_second", math.nan)) if ratios else "",
        ),
        *_rounds_lines(report),
        row(
            "RSS per call MiB (peak - idle)",
            [_num(p.rss_per_call_mib, 3) for p in passes],
            _times(ratios.get("rss_per_call_mib", math.nan)) if ratios else "",
        ),
        row(
            "RSS idle / peak MiB",
            [f"{p.rss_idle_kib / 1024:.1f} / {p.rss_peak_kib / 1024:.1f}" for p in passes],
        ),
        row("latency ms p50 / p99", []),
    ]
    for name in HOPS:
        ratio = ""
        if ratios:
            ratio = f"{_times(ratios[f'{name}_p50'])} / {_times(ratios[f'{name}_p99'])}"
        lines.append(row(f"  {_HOP_LABELS[name]}", [_pair(p.hop(name)) for p in passes], ratio))
    lines += [
        row("  samples (first/delta/in/clear)", [_samples(p) for p in passes]),
        row(
            "with every call up: seconds",
            [f"{p.steady.seconds:.1f}" for p in passes],
        ),
    ]
    for name in HOPS:
        ratio = ""
        if ratios:
            ratio = (
                f"{_times(ratios[f'steady_{name}_p50'])} / {_times(ratios[f'steady_{name}_p99'])}"
            )
        label = f"  {_HOP_LABELS[name]}"
        lines.append(row(label, [_pair(p.steady_hop(name)) for p in passes], ratio))
    lines.append(
        row(
            f"  barge-in cut within {CUT_WITHIN_MS:g} ms (max)",
            [_cut_within(p.steady.cut, worst=True) for p in passes],
        )
    )
    lines.append(row(_ON_TIME_LABEL, [_on_time(p.steady.cut) for p in passes]))
    lines += [
        row(
            f"late inbound frames (> {INBOUND_LATE_S * 1000:g} ms)",
            [f"{p.frames.late} of {p.frames.delivered}" for p in passes],
        ),
        row(
            "inbound frames undelivered / startup",
            [f"{p.frames.undelivered} / {p.frames.startup}" for p in passes],
        ),
        row(
            "barge-ins / without clear",
            [f"{p.barge_ins} / {p.clears_missing}" for p in passes],
        ),
        row(
            f"barge-in cut within {CUT_WITHIN_MS:g} ms of heard",
            [_cut_within(p.cut) for p in passes],
        ),
        row("  cut - heard, ms: median / p99 / max", [_cut_errors(p.cut) for p in passes]),
        row(_ON_TIME_LABEL, [_on_time(p.cut) for p in passes]),
        row(
            "answer deltas sent / never heard",
            [f"{p.deltas_sent} / {p.deltas_unseen}" for p in passes],
        ),
        row(
            f"generator: frames > {SEND_LATE_S * 1000:g} ms late",
            [
                f"{p.frames.late_sends} (p99 {_num(p.frames.send_lateness_p99_ms, 1)} ms)"
                for p in passes
            ],
        ),
        row(
            "generator CPU s: callers / model",
            [
                f"{p.generator_cpu_s:.1f} ({p.generator_cpu_share:.0%}) / "
                f"{p.model_cpu_s:.1f} ({p.model_cpu_share:.0%})"
                for p in passes
            ],
        ),
    ]
    for p in passes:
        lines += [f"{p.name} failed: {failure}" for failure in p.failures[:5]]
        if len(p.failures) > 5:
            lines.append(f"{p.name}: {len(p.failures) - 5} more failures")
    lines += [f"note: {note}" for note in report.notes]
    return "\n".join(lines)


def _rounds_lines(report: LoadtestReport) -> list[str]:
    if not report.rounds:
        return []
    each = ", ".join(
        f"{_times(r.ratio)} ({'bridge' if r.bridge_first else 'floor'} first)"
        for r in report.rounds
    )
    return [
        f"  CPU ratio in each round: {each}",
        f"  (the median is round {report.shown_round}: all figures here are that round's)",
    ]


def _cut_within(cut: CutAccuracy, *, worst: bool = False) -> str:
    text = f"{cut.within} of {cut.samples}"
    if worst and cut.samples:
        text += f" ({cut.max_abs_ms:.1f} ms)"
    if cut.untruncated:
        text += f" ({cut.untruncated} never truncated)"
    if cut.refused:
        text += f" ({cut.refused} refused)"
    return text


# The cuts again, over the barge-ins during which the simulated caller kept its 20 ms clock
# (load_probe.CALLER_ON_TIME_MS): a starved load generator moves the others by its lateness.
_ON_TIME_LABEL = f"  the caller on time (<= {CALLER_ON_TIME_MS:g} ms late)"


def _on_time(cut: CutAccuracy) -> str:
    return f"{cut.on_time_within} of {cut.on_time}"


def _cut_errors(cut: CutAccuracy) -> str:
    if not cut.samples:
        return "n/a"
    return f"{cut.median_ms:+.1f} / {cut.p99_abs_ms:.1f} / {cut.max_abs_ms:.1f}"


def _samples(p: PassReport) -> str:
    return "/".join(str(p.hop(name).samples) for name in HOPS)


def report_json(report: LoadtestReport) -> dict[str, Any]:
    """The report as plain data (NaN becomes None), with the derived figures added."""

    def one(p: PassReport) -> dict[str, Any]:
        data = asdict(p)
        data["cpu_ms_per_call_second"] = p.cpu_ms_per_call_second
        data["rss_per_call_mib"] = p.rss_per_call_mib
        data["generator_cpu_share"] = p.generator_cpu_share
        data["model_cpu_share"] = p.model_cpu_share
        return data

    result: dict[str, Any] = _clean(
        {
            "channel": report.channel,
            "calls": report.calls,
            "seconds": report.seconds,
            "delta_ms": list(report.delta_ms),
            "target": report.target,
            "bridge": one(report.bridge),
            "floor": None if report.floor is None else one(report.floor),
            "ratios": report.ratios(),
            "rounds": [
                {
                    "bridge_cpu_ms_per_call_second": r.bridge_cpu_ms,
                    "floor_cpu_ms_per_call_second": r.floor_cpu_ms,
                    "cpu_ratio": r.ratio,
                    "first": "bridge" if r.bridge_first else "floor",
                }
                for r in report.rounds
            ],
            "shown_round": report.shown_round,
            "notes": list(report.notes),
            "definitions": {
                "late_inbound_ms": INBOUND_LATE_S * 1000,
                "late_send_ms": SEND_LATE_S * 1000,
                "cut_within_ms": CUT_WITHIN_MS,
                "caller_on_time_ms": CALLER_ON_TIME_MS,
            },
        }
    )
    return result


def _clean(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value
