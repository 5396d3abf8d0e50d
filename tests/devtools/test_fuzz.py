"""The fuzz command against a real bridge process: every hostile kind, a good call beside
them, and the report's gates. A short hold keeps the slow clients brief."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from bridge.devtools.fuzz import FuzzOptions, main, plan, run_fuzz
from bridge.devtools.fuzz_kinds import KINDS
from bridge.devtools.fuzz_report import format_report, report_json, scan_log


async def test_hostile_sessions_leave_the_bridge_healthy_and_cost_no_model_session() -> None:
    report = await run_fuzz(FuzzOptions(sessions=150, concurrency=16, seed=7, hold_s=1.0, rounds=2))
    text = format_report(report)

    assert sum(stats.sessions for stats in report.kinds.values()) == 150
    assert all(stats.sessions >= 4 for stats in report.kinds.values()), text
    assert report.alive, text
    assert report.log.tracebacks == 0, text
    assert report.refused_phase.unexpected == 0, text
    assert report.served_phase.unexpected == 0, text
    assert report.good.run >= 1 and report.good.complete == report.good.run, text
    assert report.twiml_checked > 0 and report.twiml_not_xml == [], text
    assert report.rss_kib["start"] > 0 and report.rss_kib["peak"] >= report.rss_kib["end"]
    assert len(report.rss_rounds_kib) == 2
    assert report.ok, text
    assert json.loads(report_json(report))["ok"] is True


def test_the_log_scan_counts_tracebacks_and_errors(tmp_path: Path) -> None:
    log = tmp_path / "bridge.log"
    lines = [
        {"event": "call.started", "level": "info"},
        {"event": "Exception in ASGI application\n", "level": "error", "exception": "Tb\nE: x"},
        {"event": "store.write_failed", "level": "error"},
        {"event": "odd", "level": "warning", "exc_info": True},
    ]
    log.write_text("\n".join([*map(json.dumps, lines), "Traceback (most recent call last):"]))
    found = scan_log(log)
    assert (found.tracebacks, found.errors, found.lines) == (3, 2, 5)
    assert found.top["error Exception in ASGI application: E: x"] == 1


def test_sessions_are_spread_evenly_over_the_kinds() -> None:
    jobs = plan(list(KINDS), len(KINDS) * 3 + 1, random.Random(1))
    counts = {kind.name: 0 for kind in KINDS}
    for kind, _ in jobs:
        counts[kind.name] += 1
    assert sorted(set(counts.values())) == [3, 4]


def test_unknown_kinds_are_refused_before_anything_starts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--kinds", "token-replayed,no-such-kind"]) == 2
    assert "no-such-kind" in capsys.readouterr().err
    assert main(["--sessions", "10", "--rounds", "3"]) == 2
    assert "--rounds" in capsys.readouterr().err
