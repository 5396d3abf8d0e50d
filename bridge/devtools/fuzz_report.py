"""The report of ``bridge fuzz``: what each kind saw, what the bridge's log and memory show,
which checks passed, as a table or JSON."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "FuzzReport",
    "GoodCalls",
    "KindStats",
    "LogFindings",
    "ModelSessions",
    "format_report",
    "report_json",
    "scan_log",
]

_EXAMPLES = 5


@dataclass(slots=True)
class KindStats:
    """Per kind: sessions run, sessions whose client code failed (often the bridge
    dropping it in a way the kind did not expect), results by label, and surprises."""

    phase: str
    sessions: int = 0
    client_errors: int = 0
    results: Counter[str] = field(default_factory=Counter)
    notes: Counter[str] = field(default_factory=Counter)


@dataclass(slots=True)
class LogFindings:
    tracebacks: int = 0
    errors: int = 0
    lines: int = 0
    top: Counter[str] = field(default_factory=Counter)  # what the bad lines were about


@dataclass(slots=True)
class ModelSessions:
    """Model sessions opened during one phase, and who they belong to. Good calls' sessions
    are told apart by the caller's speech, which no hostile session sends."""

    opened: int = 0
    good_calls: int = 0
    allowed: int = 0  # sessions the phase's hostile kinds may legitimately have opened
    unexpected: int = 0  # opened beyond good calls and what was allowed


@dataclass(slots=True)
class GoodCalls:
    run: int = 0
    complete: int = 0
    failures: list[str] = field(default_factory=list)


@dataclass(slots=True)
class FuzzReport:
    sessions: int
    concurrency: int
    seed: int
    wall_s: float = 0.0
    kinds: dict[str, KindStats] = field(default_factory=dict)
    alive: bool = False
    healthz: int | None = None
    rss_kib: dict[str, int] = field(default_factory=dict)  # start, peak, end
    rss_rounds_kib: list[int] = field(default_factory=list)  # after each round
    log: LogFindings = field(default_factory=LogFindings)
    refused_phase: ModelSessions = field(default_factory=ModelSessions)
    served_phase: ModelSessions = field(default_factory=ModelSessions)
    twiml_checked: int = 0
    twiml_not_xml: list[str] = field(default_factory=list)
    good: GoodCalls = field(default_factory=GoodCalls)

    def checks(self) -> dict[str, bool]:
        """Each gate of the exit status, by name."""
        return {
            "bridge alive": self.alive,
            "no tracebacks": self.log.tracebacks == 0,
            "no model session for refused connections": self.refused_phase.unexpected == 0,
            "no model session beyond the served kinds' own": self.served_phase.unexpected == 0,
            "every good call recorded completely": (
                self.good.run > 0 and self.good.complete == self.good.run
            ),
            "every TwiML reply is XML": not self.twiml_not_xml,
        }

    @property
    def ok(self) -> bool:
        return all(self.checks().values())


def scan_log(path: Path) -> LogFindings:
    """Count tracebacks (a line holding ``Traceback``, or a JSON record with ``exception`` or
    a true ``exc_info``) and ERROR-level lines in the bridge's JSON log."""
    found = LogFindings()
    try:
        handle = path.open(encoding="utf-8", errors="replace")
    except OSError:
        return found
    with handle:
        for line in handle:
            found.lines += 1
            _scan_line(line, found)
    return found


def _scan_line(line: str, found: LogFindings) -> None:
    record: dict[str, Any] | None = None
    if line.startswith("{"):
        try:
            parsed = json.loads(line)
        except ValueError:
            parsed = None
        record = parsed if isinstance(parsed, dict) else None
    if record is None:
        if "Traceback" in line:
            found.tracebacks += 1
            found.top["traceback (plain text)"] += 1
        elif "ERROR" in line:
            found.errors += 1
            found.top[f"error (plain text): {line.strip()[:100]}"] += 1
        return
    exception = record.get("exception")
    traced = bool(exception) or bool(record.get("exc_info")) or "Traceback" in line
    level = str(record.get("level", "")).lower()
    errored = level in ("error", "critical")
    if traced:
        found.tracebacks += 1
    if errored:
        found.errors += 1
    if traced or errored:
        last = str(exception).strip().splitlines()[-1] if exception else ""
        event = " ".join(str(record.get("event")).split())  # uvicorn's end in a newline
        found.top[f"{level} {event}: {last}"[:160]] += 1


def report_json(report: FuzzReport) -> str:
    """The report as JSON, with the checks and the overall verdict (``ok``)."""
    data = _plain(report)
    data["checks"] = report.checks()
    data["ok"] = report.ok
    return json.dumps(data, indent=2)


def _plain(value: Any) -> Any:
    # dataclasses.asdict would rebuild each Counter from (key, count) pairs, counting pairs.
    if isinstance(value, Counter):
        return dict(value.most_common())
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def format_report(report: FuzzReport) -> str:
    """The report as text: one row per kind, then the bridge's health and the checks."""
    width = max((len(name) for name in report.kinds), default=4)
    lines = [
        f"fuzz: {report.sessions} hostile sessions, concurrency {report.concurrency}, "
        f"seed {report.seed}, {report.wall_s:.1f} s",
        "",
        f"{'kind':<{width}}  phase    runs  errs  results",
    ]
    for name, stats in report.kinds.items():
        results = ", ".join(f"{label} x{n}" for label, n in stats.results.most_common(3))
        lines.append(
            f"{name:<{width}}  {stats.phase:<7} {stats.sessions:>5} {stats.client_errors:>5}"
            f"  {results}"
        )
        lines += [f"{'':<{width}}    ! {note} x{n}" for note, n in stats.notes.most_common(3)]
    rss = report.rss_kib
    refused, served = report.refused_phase, report.served_phase
    lines += [
        "",
        f"bridge alive             {report.alive} (healthz {report.healthz})",
        f"bridge RSS MiB           start {rss.get('start', 0) / 1024:.1f}, "
        f"peak {rss.get('peak', 0) / 1024:.1f}, end {rss.get('end', 0) / 1024:.1f}",
        "bridge RSS MiB by round  "
        + ", ".join(f"{kib / 1024:.1f}" for kib in report.rss_rounds_kib),
        f"log                      {report.log.tracebacks} traceback(s), "
        f"{report.log.errors} ERROR line(s) in {report.log.lines} lines",
        *(f"    {what} x{n}" for what, n in report.log.top.most_common(_EXAMPLES * 2)),
        f"model sessions, refused  {refused.opened} opened: {refused.good_calls} good calls, "
        f"{refused.allowed} originals for replays, {refused.unexpected} for refused connections",
        f"model sessions, served   {served.opened} opened: {served.good_calls} good calls, "
        f"up to {served.allowed} allowed, {served.unexpected} beyond that",
        f"TwiML replies            {report.twiml_checked} checked, "
        f"{len(report.twiml_not_xml)} not XML",
        *(f"    {bad}" for bad in report.twiml_not_xml[:_EXAMPLES]),
        f"good calls               {report.good.complete} of {report.good.run} recorded completely",
        *(f"    {failure}" for failure in report.good.failures[:_EXAMPLES]),
        "",
    ]
    for name, passed in report.checks().items():
        lines.append(f"{'PASS' if passed else 'FAIL'}  {name}")
    return "\n".join(lines)
