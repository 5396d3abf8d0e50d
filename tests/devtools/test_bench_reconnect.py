"""The reconnect benchmark runs its calls against a real bridge process and reports them.
No timing assertions: the waits are only printed, never judged here."""

from __future__ import annotations

import json
import math

import pytest

from bridge.devtools import bench
from bridge.devtools.bench_reconnect import (
    DROPS,
    ReconnectReport,
    format_reconnect,
    measure_reconnect,
    reconnect_json,
)


def _check_report(report: ReconnectReport) -> None:
    # Every call was answered, dropped or not, and by the session it should have been
    # (the benchmark checks the record and the fake's sessions for each call).
    assert report.failures == ()
    assert [w.mode for w in report.waits] == ["baseline", DROPS[0], "baseline", DROPS[1]]
    assert len({w.call_sid for w in report.waits}) == 4
    for wait in report.waits:
        assert wait.problem is None
        assert wait.wait_ms is not None and wait.wait_ms > 0
    for wait in report.waits:
        assert wait.arrival_ms is not None and 0 < wait.arrival_ms <= (wait.wait_ms or 0)
    for figures in (report.baseline, report.dropped, report.added, report.added_on_arrival):
        assert figures.calls == figures.answered == 2
        assert figures.p50_ms <= figures.p90_ms <= figures.max_ms
    for how in DROPS:
        assert (report.figures(how).calls, report.figures(how).answered) == (1, 1)
    base = report.baseline.p50_ms
    assert math.isclose(report.added.p50_ms, report.dropped.p50_ms - base, abs_tol=1e-9)
    assert math.isclose(report.added.max_ms, report.dropped.max_ms - base, abs_tol=1e-9)
    assert report.aim_met is (report.added.p90_ms < 1500)


def _check_table(text: str) -> None:
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("mode"))
    for column in ("calls", "answered", "p50 ms", "p90 ms", "max ms"):
        assert column in header
    rows = ("baseline", "dropped", "  TCP reset", "  close 1011", "added by the reconnect")
    for row in (*rows, "  the same, on arrival"):
        assert sum(line.startswith(row) for line in lines) == 1
    assert "aim: added gap under 1500 ms" in text and "failed:" not in text


def _check_json(document: dict[str, object], report: ReconnectReport) -> None:
    assert document["calls_per_mode"] == 2
    modes = document["modes"]
    assert isinstance(modes, dict)
    assert set(modes) == {"baseline", "dropped", "dropped_reset", "dropped_1011"}
    for figures in (*modes.values(), document["added"], document["added_on_arrival"]):
        assert set(figures) == {"calls", "answered", "p50_ms", "p90_ms", "max_ms"}
    assert modes["baseline"]["p50_ms"] == round(report.baseline.p50_ms, 1)
    assert document["aim_ms"] == 1500 and document["aim_met"] is report.aim_met
    calls = document["calls"]
    assert isinstance(calls, list)
    assert [c["mode"] for c in calls] == [w.mode for w in report.waits]
    assert document["failures"] == []


@pytest.mark.timeout(60)
async def test_two_calls_per_mode_are_answered_and_reported(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    report = await measure_reconnect(calls=2, timeout_s=50)
    _check_report(report)
    _check_table(format_reconnect(report))
    _check_json(json.loads(json.dumps(reconnect_json(report), allow_nan=False)), report)

    # The command prints the same report, as a table or as the JSON document alone.
    monkeypatch.setattr(bench, "run_reconnect", lambda calls, timeout: report)
    assert bench.main(["reconnect", "--calls", "2"]) == 0
    _check_table(capsys.readouterr().out)
    assert bench.main(["reconnect", "--calls", "2", "--json"]) == 0
    _check_json(json.loads(capsys.readouterr().out), report)


def test_the_command_refuses_no_calls(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.main(["reconnect", "--calls", "0"]) == 2
    assert "--calls" in capsys.readouterr().err
