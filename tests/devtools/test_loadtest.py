"""``bridge loadtest`` runs what it promises and reports it in a well-formed shape. Never a
timing assertion: the figures are printed, not judged (the machine is shared and noisy)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
from pathlib import Path

import asyncpg
import pytest

from bridge.cli import main
from bridge.devtools import loadtest
from bridge.devtools.bench_load import _AUTH_TOKEN, _bridge_env, _start_bridge, _stop, _wait_ready
from bridge.devtools.load_tags import TAG_BYTES, TagScanner, stamp
from bridge.devtools.loadtest import (
    LoadtestOptions,
    _twilio_failure,
    caller_utterances,
    run_loadtest,
)
from bridge.devtools.loadtest_report import (
    HOPS,
    RoundFigures,
    format_report,
    median_round,
    report_json,
)
from bridge.devtools.playout import SILENCE_FRAME
from bridge.devtools.ports import free_port
from bridge.devtools.proc_tree import listening_pid, tree_cpu_seconds, tree_pids, tree_rss_kib
from bridge.devtools.simulator import SimulationResult


def test_tags_are_found_again_however_the_audio_is_cut() -> None:
    frames = [stamp(SILENCE_FRAME, ident) for ident in (0, 1, 0xDEADBEEF, 7)]
    stream = b"".join(frames)
    for size in (1, 5, 11, 160, 333, len(stream)):
        scanner = TagScanner()
        found = [
            i for at in range(0, len(stream), size) for i in scanner.feed(stream[at : at + size])
        ]
        assert found == [0, 1, 0xDEADBEEF, 7]
    assert TagScanner().feed(SILENCE_FRAME) == []
    assert stamp(b"\xff" * (TAG_BYTES - 1), 3) == b"\xff" * (TAG_BYTES - 1)
    with pytest.raises(ValueError):
        stamp(SILENCE_FRAME, -1)


def test_process_tree_readings_and_port_lookup() -> None:
    me = os.getpid()
    assert tree_pids(me)[0] == me
    assert tree_cpu_seconds(me) > 0
    assert tree_rss_kib(me) > 1024
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        assert listening_pid(listener.getsockname()[1]) == me


async def test_the_memory_readings_stay_off_the_callers_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Each reading walks all of /proc, milliseconds that would make every simulated caller
    # on the loop late with its next frame.
    readers: list[threading.Thread] = []

    def reading(pid: int) -> int:
        readers.append(threading.current_thread())
        return 1000 + len(readers)

    monkeypatch.setattr(loadtest, "tree_rss_kib", reading)
    monkeypatch.setattr(loadtest, "_RSS_EVERY_S", 0.01)
    peak = [0]
    sampler = asyncio.create_task(loadtest._peak_rss(os.getpid(), peak))
    for _ in range(500):
        if len(readers) >= 3:
            break
        await asyncio.sleep(0.01)
    sampler.cancel()
    await asyncio.gather(sampler, return_exceptions=True)
    assert len(readers) >= 3
    assert threading.main_thread() not in readers
    assert peak[0] >= 1003  # the largest reading is kept


def test_calls_last_about_as_long_as_asked() -> None:
    assert len(caller_utterances(10)) >= 1
    assert len(caller_utterances(60)) > len(caller_utterances(20))


@pytest.fixture(scope="module")
def twilio_report() -> dict[str, object]:
    # Answer deltas of mixed lengths, as real servers send (the default is 100 ms each).
    opts = LoadtestOptions(calls=3, seconds=10, timeout_s=100, delta_ms=(20, 40, 60, 100))
    report = asyncio.run(run_loadtest(opts))
    text = format_report(report)
    data = report_json(report)
    json.dumps(data, allow_nan=False)  # plain JSON: NaN must have become null
    return {"text": text, "data": data}


@pytest.mark.timeout(120)
def test_every_call_completes_on_the_bridge_and_on_the_floor(
    twilio_report: dict[str, object],
) -> None:
    data = twilio_report["data"]
    assert isinstance(data, dict)
    assert data["channel"] == "Twilio" and data["calls"] == 3 and data["target"] == "started"
    assert data["delta_ms"] == [20, 40, 60, 100]
    for name in ("bridge", "floor"):
        one = data[name]
        assert one["name"] == name
        assert one["completed"] == 3, one["failures"]
        assert one["failures"] == []
        assert one["sessions"] == 3
        assert one["call_seconds"] > 3 * 5
        assert one["server_cpu_s"] > 0 and one["cpu_ms_per_call_second"] > 0
        assert one["rss_peak_kib"] >= one["rss_idle_kib"] > 0
        for hop in HOPS:
            assert one[hop]["samples"] > 0, hop
            assert one[hop]["p50_ms"] <= one[hop]["p99_ms"] <= one[hop]["max_ms"]
        frames = one["frames"]
        assert frames["sent"] >= frames["delivered"] > 0
        assert frames["sent"] == frames["delivered"] + frames["startup"] + frames["undelivered"]
        assert one["barge_ins"] >= 3  # every call talks over its first answer
        # Each cleared barge-in is held against the truncate that followed it: the bridge
        # sends one, which the model accepts; the pass-through tells the model nothing.
        cut = one["cut"]
        cleared = one["barge_ins"] - one["clears_missing"]
        if name == "bridge":
            assert (cut["samples"], cut["untruncated"], cut["refused"]) == (cleared, 0, 0)
            assert cut["within"] <= cut["samples"]
            assert cut["p99_abs_ms"] <= cut["max_abs_ms"]
            # Three calls leave the load generator time to keep its clock.
            assert 0 < cut["on_time_within"] <= cut["on_time"] <= cut["samples"]
        else:
            assert (cut["samples"], cut["untruncated"]) == (0, cleared)
            assert cut["on_time"] == 0
        assert one["steady"]["cut"]["samples"] <= cut["samples"]
        assert one["deltas_sent"] > one["deltas_unseen"]
        # Calls of about 10 s, all started within 2.5 s: most of each was with all three up.
        steady = one["steady"]
        assert 3 < steady["seconds"] < one["wall_seconds"]
        assert 0 < steady["inbound"]["samples"] < one["inbound"]["samples"]
        for hop in HOPS:
            assert steady[hop]["samples"] <= one[hop]["samples"], hop


@pytest.mark.timeout(120)
def test_the_floor_ratio_is_printed(twilio_report: dict[str, object]) -> None:
    data = twilio_report["data"]
    assert isinstance(data, dict)
    ratios = data["ratios"]
    assert set(ratios) == {"cpu_ms_per_call_second", "rss_per_call_mib"} | {
        f"{steady}{hop}_{q}" for steady in ("", "steady_") for hop in HOPS for q in ("p50", "p99")
    }
    assert ratios["cpu_ms_per_call_second"] > 0
    text = twilio_report["text"]
    assert isinstance(text, str)
    header = next(line for line in text.splitlines() if "bridge/floor" in line)
    assert "floor (naive pass-through)" in header
    cpu = next(line for line in text.splitlines() if line.startswith("CPU ms per call-second"))
    assert cpu.rstrip().endswith("x")
    for label in (
        "first byte out",
        "every delta out",
        "inbound frame",
        "clear",
        "late inbound",
        "barge-in cut within 10 ms of heard",
        "the caller on time (<= 5 ms late)",
    ):
        assert label in text
    lines = text.splitlines()
    window = next(i for i, line in enumerate(lines) if line.startswith("with every call up"))
    assert "inbound frame" in lines[window + 3] and lines[window + 3].rstrip().endswith("x")
    assert "in 20/40/60/100 ms deltas" in text.splitlines()[0]


@pytest.mark.timeout(90)
def test_sip_calls_run_without_a_floor(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["loadtest", "--calls", "2", "--seconds", "6", "--sip", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["channel"] == "SIP" and data["floor"] is None and data["ratios"] == {}
    bridge = data["bridge"]
    assert bridge["completed"] == 2, bridge["failures"]
    assert bridge["inbound"]["samples"] > 0 and bridge["first_byte"]["samples"] > 0
    assert any("no floor" in note for note in data["notes"])


def test_the_command_refuses_what_it_cannot_run(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["loadtest", "--calls", "0"]) == 1
    assert "--calls" in capsys.readouterr().err
    assert main(["loadtest", "--calls", "1", "--sip", "--url", "http://127.0.0.1:1"]) == 2
    assert "--sip-target" in capsys.readouterr().err
    for bad in ("5", "20,x", ""):
        with pytest.raises(SystemExit) as refused:
            main(["loadtest", "--calls", "1", "--delta-ms", bad])
        assert refused.value.code == 2
        assert "--delta-ms" in capsys.readouterr().err


def test_a_timed_out_call_says_how_far_it_got() -> None:
    result = SimulationResult(call_sid="CA1", stream_sid="MZ1", twiml_parameters={})
    result.timed_out = True
    result.utterances_ended_at = [1.0, 9.0]
    result.replies_heard_at = [1.5, None]
    result.marks_echoed = 30
    problem = _twilio_failure(result, {"status": "in_progress", "turns": [{}, {}, {}]}, True)
    assert problem == (
        "CA1: timed out (2 utterances said, 1 answered, 30 marks echoed, 0 clears; "
        "call record: 3 turns)"
    )
    assert _twilio_failure(result, None, True) is not None
    assert "call record: none" in str(_twilio_failure(result, None, True))


@pytest.mark.timeout(120)
def test_a_running_bridge_is_loaded_through_the_fake_model_it_was_pointed_at(
    tmp_path: Path,
) -> None:
    # The bridge was started by someone else, with its own model key: the load test's fake
    # model (in its own process) listens where the bridge was told and accepts that key.
    fake_port, port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    env = _bridge_env(url, f"ws://127.0.0.1:{fake_port}/v1/realtime", tmp_path / "calls.db")
    env["OPENAI_API_KEY"] = "sk-someone-elses-key"
    env["BRIDGE_REVIEW_TOKEN"] = "review-token-0123456789"
    log = tmp_path / "bridge.log"
    proc = _start_bridge(port, env, log)
    try:
        asyncio.run(_wait_ready(url, proc, log))
        opts = LoadtestOptions(
            calls=2,
            seconds=6,
            url=url,
            pid=proc.pid,
            auth_token=_AUTH_TOKEN,
            review_token="review-token-0123456789",
            fake_port=fake_port,
            floor=False,
            timeout_s=90,
        )
        report = asyncio.run(run_loadtest(opts))
    finally:
        _stop(proc)
    assert report.floor is None and report.target == url
    assert report.bridge.completed == 2, report.bridge.failures
    assert report.bridge.sessions == 2
    assert report.bridge.inbound.samples > 0 and report.bridge.first_byte.samples > 0
    assert report.bridge.server_cpu_s > 0


def test_the_round_shown_is_the_one_with_the_median_cpu_ratio() -> None:
    def rounds(*ratios: float) -> list[RoundFigures]:
        return [RoundFigures(ratio, 1.0, index % 2 == 0) for index, ratio in enumerate(ratios)]

    assert median_round(rounds(1.2, 0.9, 1.0)) == 2
    assert median_round(rounds(1.0, 2.0)) == 0  # of an even count, the lower
    assert median_round(rounds(0.0, 1.1, 1.3, 1.2, 5.0)) == 3
    # A round without a ratio sorts last: the median of 1.0, 1.1 and none is 1.1.
    assert median_round([RoundFigures(1.0, 0.0, True), *rounds(1.1, 1.0)]) == 1


@pytest.mark.timeout(150)
def test_rounds_take_turns_and_report_every_rounds_ratio() -> None:
    opts = LoadtestOptions(calls=2, seconds=5, timeout_s=140, rounds=2)
    report = asyncio.run(run_loadtest(opts))
    data = report_json(report)
    rounds = data["rounds"]
    assert [r["first"] for r in rounds] == ["bridge", "floor"]
    for r in rounds:
        expected = r["bridge_cpu_ms_per_call_second"] / r["floor_cpu_ms_per_call_second"]
        assert r["cpu_ratio"] == pytest.approx(expected)
    shown = rounds[data["shown_round"] - 1]
    assert shown["cpu_ratio"] == min(r["cpu_ratio"] for r in rounds)
    assert data["bridge"]["cpu_ms_per_call_second"] == shown["bridge_cpu_ms_per_call_second"]
    assert data["floor"]["cpu_ms_per_call_second"] == shown["floor_cpu_ms_per_call_second"]
    for name in ("bridge", "floor"):
        assert data[name]["completed"] == 2, data[name]["failures"]
    text = format_report(report)
    assert "CPU ratio in each round: " in text
    assert "(bridge first)" in text and "(floor first)" in text
    assert f"the median is round {data['shown_round']}" in text


def test_workers_are_refused_where_they_would_be_ignored(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # SIP is served by the first worker alone, and a running bridge has the workers it has:
    # a report that claims N workers there would size a fleet on a wrong figure.
    for extra in (["--sip"], ["--url", "http://127.0.0.1:1"]):
        assert main(["loadtest", "--calls", "1", "--workers", "2", *extra]) == 2
        assert "--workers" in capsys.readouterr().err


def test_rounds_need_the_floor(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["loadtest", "--calls", "1", "--rounds", "2", "--no-floor"]) == 1
    assert "--rounds" in capsys.readouterr().err
    assert main(["loadtest", "--calls", "1", "--rounds", "0"]) == 1
    assert "--rounds" in capsys.readouterr().err


@pytest.mark.timeout(180)
def test_a_started_bridge_can_keep_its_calls_in_postgresql(
    pg_database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["loadtest", "--calls", "2", "--seconds", "6", "--no-floor", "--json"]
    assert main([*args, "--database-url", pg_database]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["bridge"]["completed"] == 2, data["bridge"]["failures"]
    assert any("store is PostgreSQL" in note for note in data["notes"])
    assert not any("127.0.0.1" in note for note in data["notes"])  # the URL is not repeated

    async def calls_kept() -> int:
        conn = await asyncpg.connect(pg_database.replace("+asyncpg", ""))
        try:
            return int(await conn.fetchval("SELECT count(*) FROM calls"))
        finally:
            await conn.close()

    assert asyncio.run(calls_kept()) == 2
    # SIP calls too.
    assert main([*args, "--sip", "--database-url", pg_database]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["bridge"]["completed"] == 2, data["bridge"]["failures"]
    assert any("store is PostgreSQL" in note for note in data["notes"])
    assert asyncio.run(calls_kept()) == 4
    assert main([*args, "--database-url", pg_database, "--url", "http://127.0.0.1:1"]) == 2
    assert "--database-url" in capsys.readouterr().err
