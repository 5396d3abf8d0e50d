"""The SIP benchmark runs and reports what it promises, with two short calls. No speed
thresholds: the figures are only printed, never judged here."""

from __future__ import annotations

import json
import math

import pytest

from bridge.devtools.bench import main
from bridge.devtools.bench_sip import (
    JITTER_TARGET_MS,
    SipBenchReport,
    format_sip_bench,
    jitter_of,
    measure_sip_load,
    sip_bench_json,
)
from bridge.devtools.sip_phone import ReceivedRtp


def _packet(at: float, sequence: int) -> ReceivedRtp:
    return ReceivedRtp(at, at, sequence, sequence * 160, 0, False, b"\xff" * 160)


def test_jitter_is_the_distance_of_each_interval_from_20_ms() -> None:
    steady = [_packet(n * 0.020, n) for n in range(10)]
    late = [_packet(0.0, 7), _packet(0.023, 8), _packet(0.040, 9), _packet(0.1, 11)]
    jitter = jitter_of([steady, late])
    assert jitter.intervals == 9 + 2 and jitter.gaps == 1  # 9 -> 11 is left out
    assert jitter.p50_ms == pytest.approx(0.0, abs=1e-6)
    assert jitter.max_ms == pytest.approx(3.0)
    assert jitter.over_target == 0.0
    assert jitter_of([steady], skip_first_s=0.1).intervals == 4  # packets 5 to 9
    wrapped = jitter_of([[_packet(0.0, 65535), _packet(0.020, 0)]])
    assert (wrapped.intervals, wrapped.gaps) == (1, 0)
    assert math.isnan(jitter_of([]).p99_ms)


@pytest.mark.timeout(90)
async def test_sip_bench_runs_calls_against_a_bridge_process_and_reports_sane_fields() -> None:
    sip = await measure_sip_load(calls=2, seconds=5, timeout_s=75)
    assert sip.failures == () and sip.completed == 2
    assert sip.call_seconds > 2 * 3  # a greeting, an utterance and a reply each
    assert sip.server_cpu_s > 0 and sip.cpu_ms_per_call_second > 0
    assert sip.server_peak_rss_kib > 10 * 1024
    # About 50 packets a second for each call's whole length, every one 20 ms from the last.
    assert sip.packets_received > 2 * 5 * 40
    assert sip.jitter_steady.intervals < sip.jitter.intervals
    for jitter in (sip.jitter, sip.jitter_steady, sip.jitter_as_read):
        assert jitter.intervals > 2 * 4 * 40
        assert 0 <= jitter.p50_ms <= jitter.p99_ms <= jitter.max_ms
        assert 0 <= jitter.over_target <= 1
    assert sip.generator_lateness_p99_ms >= 0

    report = SipBenchReport(sip, twilio=None)
    text = format_sip_bench(report)
    for label in ("CPU ms per call-second", "outbound RTP |interval-20ms| ms", "p99", "2 of 2"):
        assert label in text
    data = json.loads(json.dumps(sip_bench_json(report)))
    assert data["sip"]["jitter"]["p99_ms"] == sip.jitter.p99_ms
    assert data["twilio"] is None and data["jitter_target_ms"] == JITTER_TARGET_MS
    assert data["target_met"] == (sip.jitter.p99_ms <= JITTER_TARGET_MS)


def test_sip_bench_refuses_sizes_it_cannot_measure(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sip", "--calls", "0"]) == 2
    assert "--calls" in capsys.readouterr().err
