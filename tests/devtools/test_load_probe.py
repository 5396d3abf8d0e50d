"""The load test's hop figures, from readings made up here: what counts as a sample, which
samples fall in the window while every call was up, and how each barge-in's truncate is
held against what its caller heard."""

from __future__ import annotations

import pytest

from bridge.devtools.load_model import ModelReadings, ModelSessionReadings
from bridge.devtools.load_probe import CutAccuracy, LoadRecorder
from bridge.devtools.simulator import BargeInRecord

# Two calls: the first is up from 0 s to 10 s, the second from 2 s to 12 s.
_SPANS = {0: (0.0, 10.0), 1: (2.0, 12.0)}


def _inbound_latency(sent: float) -> float:
    """Slow while the second call arrives and after the first hangs up, quick between."""
    if sent < 2.0:
        return 0.050
    if sent > 10.0:
        return 0.040
    return 0.001


def _recorder(spans: dict[int, tuple[float, float]]) -> LoadRecorder:
    rec = LoadRecorder()
    taps = [rec.call_tap() for _ in spans]
    model = ModelReadings()
    frames = sorted(
        (start + step * 0.5, call)
        for call, (start, end) in spans.items()
        for step in range(int((end - start) / 0.5) + 1)
    )
    for ident, (sent, call) in enumerate(frames):
        rec.frame_sent.append(sent)
        rec.frame_due.append(sent)
        rec.frame_call.append(call)
        rec.send_lateness.append(0.0)
        model.frame_arrived[ident] = sent + _inbound_latency(sent)
    for call, (start, _) in spans.items():
        first = next(i for i, (_, c) in enumerate(frames) if c == call)
        model.sessions.append(ModelSessionReadings(opened_at=start, first_frame=first))
    # Answers: one while the second call arrives (slow), one in the middle, and a later
    # delta of that answer.
    for sent, first, took in ((1.0, True, 0.030), (5.0, True, 0.002), (6.0, False, 0.003)):
        rec.delta_arrived[len(model.delta_sent)] = sent + took
        model.delta_sent.append(sent)
        model.delta_first.append(first)
    # A barge-in by each caller: the first's while the second arrives, the second's later.
    model.sessions[0].speech_started.append(1.05)
    taps[0].clear(1.08, 553.0)
    model.sessions[1].speech_started.append(6.1)
    taps[1].clear(6.102, 951.5)
    rec.model = model
    return rec


_BARGE_INS = [[BargeInRecord(1.0, 500.0)], [BargeInRecord(6.0, 900.0)]]


def test_the_window_runs_from_the_last_arrival_to_the_first_hang_up() -> None:
    rec = _recorder(_SPANS)
    assert rec.steady_window() == (2.0, 10.0)
    steady = rec.steady(_BARGE_INS)
    assert steady.seconds == pytest.approx(8.0)
    # Whole pass: the arrival and the hang-up are in it.
    inbound, frames = rec.inbound()
    assert inbound.max_ms == pytest.approx(50.0)
    assert frames.delivered == 42 and frames.late == 0
    # While both calls were up: only the quick frames, sent from 2.0 s until 10.0 s.
    assert steady.inbound.samples == 16 + 16
    assert steady.inbound.max_ms == pytest.approx(1.0)
    first, every, unseen = rec.outbound()
    assert (first.samples, every.samples, unseen) == (2, 3, 0)
    assert first.max_ms == pytest.approx(30.0)
    assert steady.first_byte.samples == 1 and steady.first_byte.max_ms == pytest.approx(2.0)
    assert steady.delta.samples == 2 and steady.delta.max_ms == pytest.approx(3.0)
    clear, missing = rec.clear_hop(_BARGE_INS)
    assert (clear.samples, missing) == (2, 0)
    assert steady.clear.samples == 1 and steady.clear.max_ms == pytest.approx(2.0)


def test_calls_that_never_overlap_have_no_steady_figures() -> None:
    rec = _recorder({0: (0.0, 1.5), 1: (2.0, 12.0)})
    assert rec.steady_window() is None
    steady = rec.steady(_BARGE_INS)
    assert steady.seconds == 0.0
    for hop in (steady.first_byte, steady.delta, steady.inbound, steady.clear):
        assert hop.samples == 0
    assert steady.cut.samples == 0
    assert rec.inbound()[0].samples > 0  # the whole pass still has its figures


def test_each_barge_in_is_held_against_the_first_truncate_after_the_model_noticed_it() -> None:
    rec = _recorder(_SPANS)
    # An earlier truncate (another answer's) is not this barge-in's; the one after it is.
    rec.model.sessions[0].truncates += [(0.5, 100, True), (1.06, 560, True), (1.07, 1, True)]
    rec.model.sessions[1].truncates.append((6.101, 940, True))
    cut = rec.cut_accuracy(_BARGE_INS)
    assert cut == CutAccuracy(
        samples=2,
        within=1,  # +7 ms; -11.5 ms is too far off
        median_ms=pytest.approx(-11.5),
        p99_abs_ms=pytest.approx(11.5),
        max_abs_ms=pytest.approx(11.5),
        untruncated=0,
        refused=0,
        on_time=2,
        on_time_within=1,
    )
    # While both calls were up (2 s to 10 s), only the second call's barge-in was noticed.
    steady = rec.steady(_BARGE_INS).cut
    assert (steady.samples, steady.within) == (1, 0)
    assert steady.max_abs_ms == pytest.approx(11.5)


def test_barge_ins_not_truncated_or_truncated_wrongly_are_counted_apart() -> None:
    rec = _recorder(_SPANS)
    # The first call's truncate came too late to answer its barge-in (over 2 s after it was
    # noticed); the second call's was refused by the model.
    rec.model.sessions[0].truncates.append((3.2, 550, True))
    rec.model.sessions[1].truncates.append((6.101, 99999, False))
    cut = rec.cut_accuracy(_BARGE_INS)
    assert (cut.samples, cut.within, cut.untruncated, cut.refused) == (0, 0, 1, 1)
    assert cut.p99_abs_ms != cut.p99_abs_ms  # NaN: no samples
    # A barge-in that was never cleared is the clear hop's to count, not the cut's.
    rec.calls[1].clears.clear()
    rec.calls[1].heard_ms.clear()
    assert rec.cut_accuracy(_BARGE_INS).refused == 0
    assert rec.clear_hop(_BARGE_INS)[1] == 1


def _late(rec: LoadRecorder, call: int, due: float, late_s: float) -> None:
    """The call's frame due at ``due`` went out ``late_s`` after its slot."""
    ident = next(
        i
        for i, (d, c) in enumerate(zip(rec.frame_due, rec.frame_call, strict=True))
        if c == call and d == due
    )
    rec.frame_sent[ident] = due + late_s


def test_cuts_are_counted_again_over_the_barge_ins_during_which_the_caller_kept_time() -> None:
    rec = _recorder(_SPANS)
    rec.model.sessions[0].truncates.append((1.06, 540, True))  # -13 ms: off
    rec.model.sessions[1].truncates.append((6.101, 955, True))  # +3.5 ms
    # The first caller's frame due at 1.0 s (between the last echo before its barge-in, at
    # most a marked run earlier, and its clear) went out 30 ms late: its cut says as much
    # about the load generator as about the server. Late frames well before that (0.5 s is
    # more than a marked run before the barge-in was noticed at 1.05 s) or after (1.5 s,
    # long after the clear at 1.08 s) do not count.
    _late(rec, 0, 0.5, 0.200)
    _late(rec, 0, 1.5, 0.200)
    cut = rec.cut_accuracy(_BARGE_INS)
    assert (cut.samples, cut.within, cut.on_time, cut.on_time_within) == (2, 1, 2, 1)
    _late(rec, 0, 1.0, 0.030)
    cut = rec.cut_accuracy(_BARGE_INS)
    assert (cut.samples, cut.within, cut.on_time, cut.on_time_within) == (2, 1, 1, 1)
    # 5 ms late is still on time.
    _late(rec, 0, 1.0, 0.005)
    assert rec.cut_accuracy(_BARGE_INS).on_time == 2
    _late(rec, 1, 6.0, 0.030)
    cut = rec.cut_accuracy(_BARGE_INS)
    assert (cut.on_time, cut.on_time_within) == (1, 0)
