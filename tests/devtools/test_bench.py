"""The benchmark command runs and reports what it promises. No timing assertions: the figures
themselves are only printed, never judged here."""

from __future__ import annotations

import math
import os

import pytest

from bridge.devtools.bench import main
from bridge.devtools.bench_load import measure_load, peak_rss_kib, process_cpu_seconds
from bridge.devtools.bench_micro import format_micro, run_micro


def test_micro_reports_every_path_with_consistent_figures() -> None:
    report = run_micro(seconds=5, repeat=1)
    assert [row.path for row in report.rows] == ["bridge pcmu", "bridge pcm24k"]
    assert report.baseline.path == "naive baseline"
    for row in (*report.rows, report.baseline):
        assert row.in_frames == 250  # 5 s of 20 ms frames
        assert row.out_chunks == 250  # one 5 s reply, in 20 ms chunks
        assert row.simulated_s == 5
        assert row.in_cpu_s >= 0 and row.out_cpu_s >= 0
        if row.in_cpu_s + row.out_cpu_s > 0:
            assert math.isclose(row.calls_per_core * row.cpu_ms_per_call_minute, 60_000)
            assert math.isclose(row.cpu_ms_per_call_minute, (row.in_cpu_s + row.out_cpu_s) * 12_000)
    if report.baseline.cpu_ms_per_call_minute > 0:
        assert report.ratio(report.baseline) == 1.0

    text = format_micro(report)
    header = next(line for line in text.splitlines() if line.startswith("path"))
    for column in ("CPU ms/call-min", "us/frame in", "us/20ms out", "x baseline", "calls/core"):
        assert column in header
    for name in ("bridge pcmu", "bridge pcm24k", "naive baseline"):
        assert any(line.startswith(name) for line in text.splitlines())


def test_micro_command_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["micro", "--seconds", "5", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    assert "CPU ms/call-min" in out and "bridge pcm24k" in out and "naive baseline" in out


def test_micro_refuses_sizes_it_cannot_measure(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["micro", "--seconds", "1"]) == 2
    assert "--seconds" in capsys.readouterr().err
    with pytest.raises(ValueError):
        run_micro(seconds=1, repeat=1)


def test_proc_readings_match_what_the_kernel_reports_to_the_process() -> None:
    sum(i * i for i in range(200_000))  # spend a little CPU
    times = os.times()
    read = process_cpu_seconds(os.getpid())
    assert abs(read - (times.user + times.system)) < 0.05
    assert peak_rss_kib(os.getpid()) > 1024


@pytest.mark.timeout(90)
async def test_load_runs_calls_against_a_bridge_process_and_stops_it() -> None:
    report = await measure_load(calls=2, seconds=5, timeout_s=75)
    assert report.failures == ()
    assert report.completed == 2
    assert report.call_seconds > 2 * 3  # a greeting, an utterance and a reply each
    assert report.server_cpu_s > 0
    assert report.server_peak_rss_kib > 10 * 1024


def test_store_bench_runs_on_both_backends_and_leaves_no_schema_behind(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import asyncio

    import asyncpg

    from tests.conftest import PG_URL

    async def schemas() -> set[str]:
        conn = await asyncpg.connect(PG_URL)
        try:
            rows = await conn.fetch("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'bench_%'")
        finally:
            await conn.close()
        return {row[0] for row in rows}

    before = asyncio.run(schemas())
    assert main(["store", "--calls", "3", "--turns", "2", "--postgres", PG_URL]) == 0
    out = capsys.readouterr().out
    for backend in ("sqlite: 3 calls, 6 turns", "postgresql: 3 calls, 6 turns"):
        assert backend in out
    assert out.count("bare driver") == 2 and out.count("search by transcript text") == 2
    assert asyncio.run(schemas()) == before
    assert main(["store", "--calls", "0"]) == 2


def test_frames_times_both_writers_and_refuses_sizes_it_cannot_measure(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from bridge.devtools.bench_frames import run_frames

    report = run_frames(frames=500, rounds=1)
    assert report.frames == 500 and report.rounds == 1
    assert report.pooled_us > 0 and report.websockets_us > 0
    assert math.isclose(report.ratio, report.pooled_us / report.websockets_us)
    assert main(["frames", "--frames", "300", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert "websockets' framing" in out and "write_now (pooled mask keys)" in out
    assert main(["frames", "--frames", "10"]) == 2


def test_inbound_times_both_readers_and_refuses_sizes_it_cannot_measure(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from bridge.devtools.bench_inbound import run_inbound

    report = run_inbound(frames=300, rounds=1)
    assert report.frames == 300 and report.rounds == 1
    assert report.lean_us > 0 and report.uvicorn_us > 0
    assert math.isclose(report.ratio, report.lean_us / report.uvicorn_us)
    assert main(["inbound", "--frames", "200", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert "uvicorn's WebSocket protocol" in out and "LeanWebSocketProtocol" in out
    assert main(["inbound", "--frames", "10"]) == 2


def test_tls_opens_verified_connections_both_ways_and_puts_the_trust_store_back(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from bridge.adapters.realtime_socket import tls_context
    from bridge.devtools.bench_tls import run_tls

    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    report = run_tls(connections=2, rounds=1)
    assert report.connections == 2 and report.rounds == 1
    assert report.shared_ms > 0 and report.per_connection_ms > 0
    assert math.isclose(report.ratio, report.shared_ms / report.per_connection_ms)
    # The bench's CA is trusted only while it runs: the bridge's context is built afresh.
    assert "SSL_CERT_FILE" not in os.environ
    assert tls_context.cache_info().currsize == 0
    assert main(["tls", "--connections", "1", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert "a TLS context built for each connection" in out and "the bridge's one context" in out
    assert main(["tls", "--connections", "0"]) == 2


def test_heap_reads_how_a_started_bridge_settled_its_heap(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from bridge.devtools.bench_heap import run_heap

    # A real `bridge serve` each round: its start-up log says it froze the tens of thousands
    # of objects start-up built (the pauses are figures to read, not to assert on).
    report = run_heap(rounds=1)
    assert report.rounds == 1
    assert report.frozen > 20_000
    assert report.full_ms > 0 and report.settled_full_ms >= 0
    assert main(["heap", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert "as started" in out and "settled (what it runs on)" in out
    assert main(["heap", "--rounds", "0"]) == 2


def test_heap_under_load_forces_collections_in_a_settled_and_an_unsettled_bridge() -> None:
    from bridge.devtools.bench_heap import format_heap_under_load, run_heap_under_load

    settled, unsettled = run_heap_under_load(calls=3, seconds=12)
    assert (settled.settled, unsettled.settled) == (True, False)
    assert settled.completed == unsettled.completed == 3
    assert settled.pauses_ms and unsettled.pauses_ms  # the probe ran during the calls
    # Settled, a full collection walks what the calls hold; unsettled, everything start-up
    # built as well.
    assert max(unsettled.walked) > max(settled.walked) + 20_000
    table = format_heap_under_load(settled, unsettled)
    assert "settled" in table and "as started" in table and "late frames" in table
    assert main(["heap", "--calls", "2", "--seconds", "5"]) == 2


def test_sip_flood_holds_nothing_for_outsiders_and_at_most_the_limit_for_peers(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from bridge.devtools.bench_sip_flood import run_sip_flood
    from bridge.protocols.sip import uas

    monkeypatch.setattr(uas, "MAX_KEPT_REPLIES", 250)
    report = run_sip_flood(datagrams=600, blocks=2, rate=2000.0)
    outsider, peer, floor = report.runs
    assert outsider.held == [0, 0]
    assert peer.held == [250, 250]  # 300 after the first block, past the limit
    assert floor.held == [0, 0]
    assert all(c > 0 for run in report.runs for c in run.us_per_datagram)
    # At 10 a simulated second the first 80 or so replies expire (Timer J, 32 s) by the end.
    monkeypatch.setattr(uas, "MAX_KEPT_REPLIES", 10_000)
    slow = run_sip_flood(datagrams=400, blocks=2, rate=10.0)
    assert slow.runs[1].held[0] == 200 and 310 < slow.runs[1].held[1] < 330
    assert main(["sip-flood", "--datagrams", "300", "--blocks", "3"]) == 0
    out = capsys.readouterr().out
    assert "from outside BRIDGE_SIP_ALLOW" in out and "parsing alone (floor)" in out
    assert "held 0" in out and "last block / floor" in out
    assert main(["sip-flood", "--datagrams", "5", "--blocks", "1"]) == 2
