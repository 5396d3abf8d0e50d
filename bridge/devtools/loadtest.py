"""``bridge loadtest``: concurrent simulated calls against the bridge, then against a naive
pass-through (the floor), with the same calls in the same run, and the ratio between them.

This process holds the simulated callers; the fake model (answers streamed at 5x real time)
runs in a child of its own (:mod:`bridge.devtools.load_model`), so that neither half of the
load generator falls behind for sharing a core with the other; the server under test is
another child in between. Every hop is timed on the system's monotonic clock
(:mod:`bridge.devtools.load_probe`) and the server's CPU and memory are its process tree's,
from /proc (:mod:`bridge.devtools.proc_tree`). Each call runs on its own 20 ms clock, the
starts spread over a ramp; the caller says an utterance, hears the answer and waits a
little, and talks over every third answer one second in.

Without ``url`` the bridge is a fresh ``bridge serve`` on a free port. With ``url`` it is a
bridge already running, which must use this run's fake model: start it with
``BRIDGE_PROVIDER=openai OPENAI_API_KEY=sk-loadtest
BRIDGE_REALTIME_URL=ws://127.0.0.1:8765/v1/realtime`` (8765 is ``fake_port``'s default),
as well as the ``TWILIO_AUTH_TOKEN`` passed here. The floor
(:mod:`bridge.devtools.naive_bridge`) is always started here. ``sip`` runs SIP calls instead
(:mod:`bridge.devtools.loadtest_sip`). Linux only.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bridge.codecs.clips import load_clip

# The load benchmark's model key, so the bridge it starts presents the key the fake expects.
from bridge.devtools.bench_load import _MODEL_KEY
from bridge.devtools.fake_response import DEFAULT_DELTA_MS
from bridge.devtools.load_model import ModelProcess
from bridge.devtools.load_probe import LoadRecorder
from bridge.devtools.loadtest_report import (
    LoadtestReport,
    PassReport,
    RoundFigures,
    median_round,
)
from bridge.devtools.loadtest_servers import Target, running_bridge, with_bridge, with_floor
from bridge.devtools.proc_tree import tree_cpu_seconds, tree_rss_kib
from bridge.devtools.simulator import (
    CallRefused,
    SimulationResult,
    fetch_call_record,
    simulate_call,
)

__all__ = [
    "DEFAULT_FAKE_PORT",
    "LoadtestOptions",
    "PassMeasure",
    "caller_utterances",
    "existing_bridge",
    "measure_pass",
    "run_loadtest",
]

DEFAULT_FAKE_PORT = 8765
REALTIME_FACTOR = 5.0
BARGE_IN_AT_S = 1.0
BARGE_IN_EVERY = 3  # answers 1, 4, 7, … are talked over; the others play out
REPLY_SILENCE_S = 3.0  # after an answer: with a ~2 s utterance, about 8 s a turn
_VAD_END_S = 0.55  # the fake's end-of-speech silence, plus a frame
_REPLY_S = 3.0  # the script's answers
_CLIPS = ("caller_1", "caller_2", "caller_3")
_RSS_EVERY_S = 1.0
_RECORD_FETCHES = 16  # concurrent call-record requests after a pass


@dataclass(frozen=True, slots=True)
class LoadtestOptions:
    calls: int
    seconds: float = 30.0
    url: str | None = None  # a running bridge; None: start one
    pid: int | None = None  # its process, when it cannot be found from the port
    public_url: str | None = None  # its BRIDGE_PUBLIC_URL, when not ``url``
    auth_token: str | None = None  # its TWILIO_AUTH_TOKEN (signatures), with ``url``
    review_token: str | None = None  # its BRIDGE_REVIEW_TOKEN (call records), with ``url``
    fake_port: int | None = None  # the fake model's port; None: DEFAULT_FAKE_PORT with url
    floor: bool = True
    sip: bool = False
    sip_target: str | None = None  # with ``url`` and ``sip``: sip:agent@HOST:PORT
    ramp_s: float | None = None  # call starts spread over this; None: a quarter of seconds
    timeout_s: float | None = None
    workers: int = 1  # `bridge serve --workers` for a bridge the load test starts
    # The fake model's answer deltas take these lengths in turn (ms); real servers send
    # roughly 20-100 ms each.
    delta_ms: tuple[int, ...] = DEFAULT_DELTA_MS
    # Added to the environment of a bridge the load test starts (a benchmark's probe).
    bridge_env: tuple[tuple[str, str], ...] = ()
    # The bridge and the floor this many times each, taking turns at going first; the report
    # is the round with the median CPU ratio, and lists every round's.
    rounds: int = 1


def caller_utterances(seconds: float) -> list[bytes]:
    """Enough utterances for a call of about ``seconds``, given the turn pattern."""
    clips = [load_clip(name) for name in _CLIPS]
    said: list[bytes] = []
    elapsed = 0.5  # the caller's initial silence
    while True:
        clip = clips[len(said) % len(clips)]
        barged = len(said) % BARGE_IN_EVERY == 0
        turn = len(clip) / 8000 + _VAD_END_S
        turn += BARGE_IN_AT_S if barged else _REPLY_S + REPLY_SILENCE_S
        if said and elapsed + turn > seconds:
            return said
        said.append(clip)
        elapsed += turn


async def _peak_rss(pid: int, peak: list[int]) -> None:
    while True:
        with contextlib.suppress(OSError):
            # Off the loop: reading the tree walks all of /proc (3-5 ms here), and every
            # simulated caller's 20 ms clock runs on this loop.
            peak[0] = max(peak[0], await asyncio.to_thread(tree_rss_kib, pid))
        await asyncio.sleep(_RSS_EVERY_S)


CallRunner = Callable[[int, float, LoadRecorder], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class PassMeasure:
    """What :func:`measure_pass` read around one pass's calls: their results (values or
    exceptions, in call order), its wall time, the CPU of the server's tree, of the simulated
    callers (this process) and of the fake model (its process), and the server's resident
    set before the first call and at its largest."""

    results: list[Any]
    wall_s: float
    server_cpu_s: float
    callers_cpu_s: float
    model_cpu_s: float
    rss_idle_kib: int
    rss_peak_kib: int


async def measure_pass(
    target: Target,
    model: ModelProcess,
    recorder: LoadRecorder,
    calls: int,
    ramp_s: float,
    run_call: CallRunner,
) -> PassMeasure:
    """Run ``calls`` of ``run_call(index, start_delay, recorder)`` concurrently, read the
    processes around them, and give ``recorder`` the model's readings of the pass."""
    idle = tree_rss_kib(target.pid)
    peak = [idle]
    await model.begin()
    sampler = asyncio.create_task(_peak_rss(target.pid, peak))
    cpu_before = tree_cpu_seconds(target.pid)
    callers_before = time.process_time()
    model_before = model.cpu_seconds()
    started = time.monotonic()
    try:
        results = await asyncio.gather(
            *(run_call(i, ramp_s * i / calls, recorder) for i in range(calls)),
            return_exceptions=True,
        )
        wall = time.monotonic() - started
        callers = time.process_time() - callers_before
        model_cpu = model.cpu_seconds() - model_before
        server = tree_cpu_seconds(target.pid) - cpu_before
        with contextlib.suppress(OSError):
            peak[0] = max(peak[0], tree_rss_kib(target.pid))
    finally:
        sampler.cancel()
        await asyncio.gather(sampler, return_exceptions=True)
    recorder.model = await model.end()
    return PassMeasure(list(results), wall, server, callers, model_cpu, idle, peak[0])


async def _twilio_pass(target: Target, opts: LoadtestOptions, model: ModelProcess) -> PassReport:
    utterances = caller_utterances(opts.seconds)
    limit = opts.seconds * 2 + 30

    async def one(index: int, delay: float, rec: LoadRecorder) -> SimulationResult:
        await asyncio.sleep(delay)
        return await simulate_call(
            target.url,
            auth_token=target.auth_token,
            caller_utterances=utterances,
            barge_in_at=BARGE_IN_AT_S,
            barge_in_every=BARGE_IN_EVERY,
            reply_silence_s=REPLY_SILENCE_S,
            max_duration_s=limit,
            signature_url_base=target.public_url,
            send_status_callback=target.records,
            fetch_record=False,
            probe=rec.call_tap(),
        )

    ramp = opts.ramp_s if opts.ramp_s is not None else min(8.0, opts.seconds / 4)
    recorder = LoadRecorder()
    measured = await measure_pass(target, model, recorder, opts.calls, ramp, one)
    results = measured.results
    # Read after the CPU: fetching records is the load test's work, not the server's.
    records = await _records(target, results) if target.records else {}
    failures: list[str] = []
    refused = 0
    call_seconds = 0.0
    barge_ins: list[list[Any]] = []
    for result in results:
        if isinstance(result, CallRefused):
            # Turned away at the door (the bridge is overloaded): not a failure of a call
            # it took, and what it does instead of letting every call fall behind.
            refused += 1
            barge_ins.append([])
            continue
        if isinstance(result, BaseException):
            failures.append(f"{type(result).__name__}: {result}")
            barge_ins.append([])
            continue
        call_seconds += len(result.heard_audio) / 8000
        barge_ins.append(result.barge_ins)
        problem = _twilio_failure(result, records.get(result.call_sid), target.records)
        if problem is not None:
            failures.append(problem)
    return summarize(
        target.name,
        recorder,
        calls=opts.calls,
        failures=failures,
        call_seconds=call_seconds,
        measured=measured,
        barge_ins=barge_ins,
        refused=refused,
    )


def summarize(
    name: str,
    recorder: LoadRecorder,
    *,
    calls: int,
    failures: list[str],
    call_seconds: float,
    measured: PassMeasure,
    barge_ins: list[list[Any]],
    refused: int = 0,
) -> PassReport:
    """One pass's report from its recorder and what :func:`measure_pass` read; ``refused``
    calls were turned away by the server (busy), ``failures`` went wrong."""
    first, every, unseen = recorder.outbound()
    inbound, frames = recorder.inbound()
    clear, missing = recorder.clear_hop(barge_ins)
    return PassReport(
        name=name,
        calls=calls,
        completed=calls - len(failures) - refused,
        failures=tuple(failures),
        refused=refused,
        call_seconds=call_seconds,
        wall_seconds=measured.wall_s,
        server_cpu_s=measured.server_cpu_s,
        generator_cpu_s=measured.callers_cpu_s,
        model_cpu_s=measured.model_cpu_s,
        rss_idle_kib=measured.rss_idle_kib,
        rss_peak_kib=measured.rss_peak_kib,
        sessions=recorder.sessions_opened,
        first_byte=first,
        delta=every,
        inbound=inbound,
        clear=clear,
        frames=frames,
        deltas_sent=len(recorder.model.delta_sent),
        deltas_unseen=unseen,
        barge_ins=sum(len(records) for records in barge_ins),
        clears_missing=missing,
        steady=recorder.steady(barge_ins),
        cut=recorder.cut_accuracy(barge_ins),
    )


def _twilio_failure(
    result: SimulationResult, record: dict[str, Any] | None, records: bool
) -> str | None:
    if result.protocol_problems:
        return f"{result.call_sid}: {result.protocol_problems[0]}"
    if result.timed_out:
        # What the caller had got by then, to tell a stalled bridge from a stalled model.
        said = len(result.utterances_ended_at)
        answered = sum(1 for heard in result.replies_heard_at if heard is not None)
        turns = None if record is None else len(record.get("turns") or ())
        return (
            f"{result.call_sid}: timed out ({said} utterances said, {answered} answered, "
            f"{result.marks_echoed} marks echoed, {len(result.clears)} clears; "
            f"call record: {'none' if record is None else f'{turns} turns'})"
        )
    if result.closed_by_bridge:
        return f"{result.call_sid}: the server closed the stream (code {result.close_code})"
    if records and (record is None or record.get("status") != "completed"):
        status = None if record is None else record.get("status")
        return f"{result.call_sid}: call record status {status!r}"
    return None


async def _records(target: Target, results: list[Any]) -> dict[str, dict[str, Any]]:
    gate = asyncio.Semaphore(_RECORD_FETCHES)
    found: dict[str, dict[str, Any]] = {}
    async with httpx.AsyncClient(trust_env=False) as http:

        async def fetch(call_sid: str) -> None:
            async with gate:
                record = await fetch_call_record(http, target.url, call_sid, target.review_token)
            if record is not None:
                found[call_sid] = record

        sids = [r.call_sid for r in results if isinstance(r, SimulationResult)]
        await asyncio.gather(*(fetch(sid) for sid in sids))
    return found


def existing_bridge(opts: LoadtestOptions) -> Target | None:
    """The running bridge ``opts`` names (None: start one)."""
    if opts.url is None:
        return None
    return running_bridge(
        opts.url,
        pid=opts.pid,
        auth_token=opts.auth_token,
        public_url=opts.public_url,
        review_token=opts.review_token,
    )


def store_notes(opts: LoadtestOptions) -> list[str]:
    """What the report says of the started bridge's store (never its URL, which may hold a
    password)."""
    if dict(opts.bridge_env).get("BRIDGE_DATABASE_URL", "").startswith("postgres"):
        return [
            "the bridge's store is PostgreSQL: the database server's own CPU is not in the "
            "bridge's figures"
        ]
    return []


def pass_notes(report: PassReport, via_url: bool) -> list[str]:
    notes: list[str] = []
    if report.sessions == 0 and report.calls > 0:
        hint = (
            f" (start it with BRIDGE_REALTIME_URL pointing at this run's fake model, "
            f"ws://127.0.0.1:{DEFAULT_FAKE_PORT}/v1/realtime by default)"
            if via_url
            else ""
        )
        notes.append(
            f"the {report.name} opened no session with this run's fake model{hint}: "
            "its hops were not measured"
        )
    return notes


async def run_loadtest(opts: LoadtestOptions) -> LoadtestReport:
    """Both passes (the bridge, then the floor) with the same calls against one fake model,
    ``opts.rounds`` times, taking turns at going first. Everything started is stopped before
    returning; raises ``TimeoutError`` when the whole run exceeds its bound."""
    if opts.calls < 1 or opts.seconds <= 0:
        raise ValueError("need --calls >= 1 and --seconds > 0")
    if opts.rounds < 1:
        raise ValueError("need --rounds >= 1")
    if opts.rounds > 1 and (opts.sip or not opts.floor):
        raise ValueError("--rounds takes turns between the bridge and the floor: it needs one")
    limit = opts.timeout_s if opts.timeout_s is not None else (opts.seconds * 5 + 180) * opts.rounds
    fake_port = opts.fake_port
    if fake_port is None:
        fake_port = DEFAULT_FAKE_PORT if opts.url is not None else 0
    async with asyncio.timeout(limit):
        with tempfile.TemporaryDirectory(prefix="bridge-loadtest-") as tmp_dir:
            tmp = Path(tmp_dir)
            # With a running bridge, the key it presents is its own business: accept any.
            model = await ModelProcess.start(
                port=fake_port,
                api_key=None if opts.url is not None else _MODEL_KEY,
                realtime_factor=REALTIME_FACTOR,
                delta_ms=opts.delta_ms,
                log=tmp / "model.log",
            )
            try:
                if opts.sip:
                    from bridge.devtools.loadtest_sip import run_sip_passes

                    return await run_sip_passes(opts, model, tmp)

                async def twilio(target: Target) -> PassReport:
                    return await _twilio_pass(target, opts, model)

                async def bridge_pass(where: Path) -> PassReport:
                    return await with_bridge(
                        existing_bridge(opts),
                        model.url,
                        where,
                        twilio,
                        extra_env=lambda env: {**env, **dict(opts.bridge_env)},
                        workers=opts.workers,
                    )

                played: list[tuple[PassReport, PassReport | None, bool]] = []
                for index in range(opts.rounds):
                    # Turns, so that neither always meets the machine as the other left it.
                    bridge_first = index % 2 == 0
                    # Each round's servers start afresh: a call log, logs of their own.
                    where = tmp if opts.rounds == 1 else tmp / f"round-{index + 1}"
                    where.mkdir(exist_ok=True)
                    floor = None
                    if opts.floor and not bridge_first:
                        floor = await with_floor(model.url, where, twilio)
                    bridge = await bridge_pass(where)
                    if opts.floor and bridge_first:
                        floor = await with_floor(model.url, where, twilio)
                    played.append((bridge, floor, bridge_first))
            finally:
                await model.stop()
    rounds = tuple(
        RoundFigures(b.cpu_ms_per_call_second, f.cpu_ms_per_call_second, first)
        for b, f, first in played
        if f is not None
    )
    median = median_round(rounds) if rounds else 0
    bridge, floor, _ = played[median]
    notes = pass_notes(bridge, opts.url is not None)
    if floor is not None:
        notes += pass_notes(floor, False)
    notes += store_notes(opts)
    # The hop a reader would otherwise take for a slow bridge: say what it holds.
    notes.append(
        "'every delta out' includes the bridge's deliberate hold: it keeps a bounded lead over "
        "the caller's playback, where the floor forwards each delta at once; transport "
        "latency is 'first byte out'"
    )
    return LoadtestReport(
        channel="Twilio",
        calls=opts.calls,
        seconds=opts.seconds,
        target=opts.url or "started",
        bridge=bridge,
        floor=floor,
        notes=tuple(notes),
        delta_ms=opts.delta_ms,
        rounds=rounds if len(rounds) > 1 else (),
        shown_round=median + 1,
    )
