"""``bridge loadtest --sip``: the same calls as SIP phones (UDP, RTP PCMU) against the bridge's
SIP listener, with the same fake model and the same hops where SIP has them.

The phones are :mod:`bridge.devtools.sip_simulator`'s, the bridge settings and record lookup
:mod:`bridge.devtools.bench_sip`'s. Caller frames are tagged as they are sent; the bridge's
RTP is matched to the answer deltas after each call from the packets the phone kept (with
their arrival times), so reading it costs nothing during the call. SIP has no ``clear``: its
hop is ``speech_started`` -> the first silence packet after answer audio, when the bridge has
stopped the answer. There is no floor: the naive pass-through speaks Twilio Media Streams, and
a SIP floor would need a SIP and RTP stack of its own, which is no longer naive.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from bridge.devtools.bench_sip import STEADY_AFTER_S, _failure, _records, _sip_env, jitter_of
from bridge.devtools.load_model import ModelProcess
from bridge.devtools.load_probe import LoadRecorder
from bridge.devtools.loadtest import (
    BARGE_IN_AT_S,
    BARGE_IN_EVERY,
    REPLY_SILENCE_S,
    LoadtestOptions,
    caller_utterances,
    existing_bridge,
    measure_pass,
    pass_notes,
    store_notes,
    summarize,
)
from bridge.devtools.loadtest_report import LoadtestReport, PassReport
from bridge.devtools.loadtest_servers import Target, with_bridge
from bridge.devtools.playout import BYTES_PER_MS, FRAME_BYTES
from bridge.devtools.ports import free_port
from bridge.devtools.sip_phone import SipCallError
from bridge.devtools.sip_simulator import SipSimulationResult, fetch_sip_record, simulate_sip_call
from bridge.protocols.rtp import Codec

BUSY = 503  # Service Unavailable: the bridge took no more calls

__all__ = ["run_sip_passes"]

_SILENCE = bytes((Codec.PCMU.silence_byte,)) * FRAME_BYTES


def _replay_received(result: SipSimulationResult, recorder: LoadRecorder, call: int) -> None:
    """Feed what the phone received to the call's tap, as if read live: each packet's audio
    at its arrival time, and each end of answer audio as that call's "clear", with the
    answer audio received before it as what the caller heard (the phone plays it all)."""
    tap = recorder.calls[call]
    answer = result.answer
    run_bytes = 0  # answer audio since the last silence
    for packet in result.received:
        if answer is None or packet.payload_type != answer.payload_type:
            continue  # a telephone event, or before the answer
        silent = packet.payload == _SILENCE
        if run_bytes and silent:
            tap.clear(packet.at, run_bytes / BYTES_PER_MS)
        run_bytes = 0 if silent else run_bytes + len(packet.payload)
        tap.media(packet.payload, packet.at)


async def _sip_pass(
    target: Target, sip_target: str, opts: LoadtestOptions, model: ModelProcess
) -> tuple[PassReport, list[str]]:
    utterances = caller_utterances(opts.seconds)
    limit = opts.seconds * 2 + 30

    async def one(index: int, delay: float, rec: LoadRecorder) -> SipSimulationResult:
        await asyncio.sleep(delay)
        return await simulate_sip_call(
            sip_target,
            caller_utterances=utterances,
            barge_in_at=BARGE_IN_AT_S,
            barge_in_every=BARGE_IN_EVERY,
            reply_silence_s=REPLY_SILENCE_S,
            max_duration_s=limit,
            probe=rec.call_tap(),
        )

    ramp = opts.ramp_s if opts.ramp_s is not None else min(8.0, opts.seconds / 4)
    recorder = LoadRecorder()
    measured = await measure_pass(target, model, recorder, opts.calls, ramp, one)
    results = measured.results
    done = [r for r in results if isinstance(r, SipSimulationResult)]
    records = await _sip_records(target, opts, done)
    failures: list[str] = []
    refused = 0
    call_seconds = 0.0
    barge_ins: list[list[Any]] = []
    # The phones' pacer knows how late it woke for each slot; the tap only saw the slot.
    recorder.send_lateness = []
    for call, result in enumerate(results):
        if isinstance(result, SipCallError) and result.status == BUSY:
            refused += 1  # 503: turned away at the door (full or overloaded)
            barge_ins.append([])
            continue
        if isinstance(result, BaseException):
            failures.append(f"{type(result).__name__}: {result}")
            barge_ins.append([])
            continue
        _replay_received(result, recorder, call)
        recorder.send_lateness += result.stats.send_lateness
        call_seconds += len(result.heard_audio) / 8000
        barge_ins.append(result.barge_ins)
        problem = _failure(result, records.get(result.call_id))
        if problem is not None:
            failures.append(problem)
    report = summarize(
        target.name,
        recorder,
        calls=opts.calls,
        failures=failures,
        call_seconds=call_seconds,
        measured=measured,
        barge_ins=barge_ins,
        refused=refused,
    )
    jitter = jitter_of([r.received for r in done], skip_first_s=STEADY_AFTER_S)
    notes = [
        f"outbound RTP |interval - 20 ms| (kernel receive times, after each call's first "
        f"{STEADY_AFTER_S:g} s): p50 {jitter.p50_ms:.2f} ms, p99 {jitter.p99_ms:.2f} ms, "
        f"max {jitter.max_ms:.2f} ms",
    ]
    return report, notes


async def _sip_records(
    target: Target, opts: LoadtestOptions, done: list[SipSimulationResult]
) -> dict[str, dict[str, Any]]:
    if opts.url is None:
        return await _records(target.url, {r.call_id for r in done})
    found: dict[str, dict[str, Any]] = {}
    for result in done:  # a running bridge: its own review token, one call at a time
        record = await fetch_sip_record(target.url, result.call_id, target.review_token)
        if record is not None:
            found[result.call_id] = record
    return found


async def run_sip_passes(opts: LoadtestOptions, model: ModelProcess, tmp: Path) -> LoadtestReport:
    """The SIP pass against the bridge (started here unless ``opts.url``)."""
    sip_port = free_port()
    sip_target = opts.sip_target or f"sip:agent@127.0.0.1:{sip_port}"
    notes: list[str] = []

    async def run(target: Target) -> PassReport:
        report, extra = await _sip_pass(target, sip_target, opts, model)
        notes.extend(extra)
        return report

    bridge = await with_bridge(
        existing_bridge(opts),
        model.url,
        tmp,
        run,
        extra_env=lambda env: _sip_env({**env, **dict(opts.bridge_env)}, sip_port, opts.calls),
    )
    notes += pass_notes(bridge, opts.url is not None) + store_notes(opts)
    notes += [
        "SIP: 'every delta out' includes the bridge's real-time RTP pacing (answers arrive "
        "at 5x real time and leave at 1x), so it is queueing by design, not transport delay",
        "SIP: 'clear' is speech_started -> the first silence packet after answer audio",
        "SIP: no floor (the naive pass-through speaks Twilio Media Streams only)",
    ]
    return LoadtestReport(
        channel="SIP",
        calls=opts.calls,
        seconds=opts.seconds,
        target=opts.url or "started",
        bridge=bridge,
        floor=None,
        notes=tuple(notes),
        delta_ms=opts.delta_ms,
    )
