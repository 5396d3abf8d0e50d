"""``bridge fuzz``: hostile Twilio traffic against a real ``bridge serve`` process.

The fake realtime server runs in this process; the bridge runs as a child on a free
127.0.0.1 port with its own temporary directory, SQLite file and JSON log, and is stopped by
its PID at the end. While one good call is always in flight, N hostile sessions of many
kinds (see :mod:`bridge.devtools.fuzz_kinds`) run with bounded concurrency, in two phases:
first the kinds that must be refused before any model session, so that every model session
opened meanwhile can be accounted for, then the kinds that are served and misbehave
afterwards. The report says whether the bridge survived, what its log and memory show, and
whether any refused connection cost a model session. Linux only (memory is read from
``/proc``). Exit status 0 only when every check passes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from bridge.devtools.fake_realtime import FakeRealtimeServer
from bridge.devtools.fake_records import FakeSessionRecord
from bridge.devtools.fake_script import FakeScript, Reply
from bridge.devtools.fuzz_bridge import GOOD_CALL_LIMIT_S, GREETING, BridgeProcess, good_calls
from bridge.devtools.fuzz_kinds import KINDS, Kind
from bridge.devtools.fuzz_report import (
    FuzzReport,
    KindStats,
    ModelSessions,
    format_report,
    report_json,
    scan_log,
)
from bridge.devtools.fuzz_wire import FuzzContext, Outcome

__all__ = ["FuzzOptions", "add_fuzz_arguments", "main", "run_command", "run_fuzz"]

_SETTLE_S = 1.0  # a model session opened for a refused connection shows up within this
_RSS_EVERY_S = 0.5
_SESSION_SLACK_S = 30.0  # a hostile session may take its hold time plus this
_SCRIPT = FakeScript(
    greeting=Reply(GREETING, duration_ms=1200),
    replies=[Reply("We are open from nine to five.", duration_ms=1500)],
    caller_transcripts=["Hi, what are your opening hours?", "Thank you."],
)


@dataclass(frozen=True, slots=True)
class FuzzOptions:
    sessions: int = 1000
    concurrency: int = 32
    seed: int = 0
    kinds: tuple[str, ...] = ()  # empty: every kind
    hold_s: float = 3.0
    rounds: int = 1
    timeout_s: float = 1800.0
    bridge_log: Path | None = None


def select_kinds(names: Sequence[str]) -> list[Kind]:
    """The kinds named (all when none); raises ``ValueError`` naming any unknown one."""
    if not names:
        return list(KINDS)
    by_name = {kind.name: kind for kind in KINDS}
    unknown = [name for name in names if name not in by_name]
    if unknown:
        raise ValueError(f"unknown kind(s) {', '.join(unknown)}; see --help for the list")
    return [by_name[name] for name in dict.fromkeys(names)]


def check_options(options: FuzzOptions) -> None:
    """Raise ``ValueError`` saying what is wrong with ``options``, if anything."""
    if options.sessions < 0 or options.concurrency < 1 or options.hold_s <= 0:
        raise ValueError("need --sessions >= 0, --concurrency >= 1 and --hold > 0")
    if options.rounds < 1 or options.sessions % options.rounds:
        raise ValueError("need --rounds >= 1 dividing --sessions")
    select_kinds(options.kinds)


def plan(kinds: list[Kind], sessions: int, rng: random.Random) -> list[tuple[Kind, int]]:
    """``sessions`` jobs spread evenly over ``kinds``, each with its own seed, shuffled so
    kinds interleave within their phase."""
    jobs = [(kinds[i % len(kinds)], rng.getrandbits(64)) for i in range(sessions)]
    rng.shuffle(jobs)
    return jobs


# ------------------------------------------------------------------ the run


async def run_fuzz(options: FuzzOptions) -> FuzzReport:
    """Run the whole fuzz campaign against a fresh bridge and return the report.
    Everything started is stopped before returning."""
    check_options(options)
    rng = random.Random(options.seed)
    kinds = select_kinds(options.kinds)
    report = FuzzReport(options.sessions, options.concurrency, options.seed)
    for kind in kinds:
        report.kinds[kind.name] = KindStats("served" if kind.may_open_model else "refused")
    jobs = plan(kinds, options.sessions // options.rounds, rng)
    model_key = "sk-fuzz-" + secrets.token_hex(8)
    started = time.monotonic()
    async with (
        asyncio.timeout(options.timeout_s),
        FakeRealtimeServer("openai", script=_SCRIPT, api_key=model_key) as fake,
    ):
        with tempfile.TemporaryDirectory(prefix="bridge-fuzz-") as tmp:
            bridge = BridgeProcess(Path(tmp), fake.url, model_key)
            try:
                await _campaign(bridge, fake.sessions, jobs, options, report)
            finally:
                bridge.stop()  # blocking, but bounded, and immune to a cancelled run
                report.log = scan_log(bridge.log_path)
                if options.bridge_log is not None:
                    shutil.copyfile(bridge.log_path, options.bridge_log)
    report.wall_s = time.monotonic() - started
    return report


async def _campaign(
    bridge: BridgeProcess,
    sessions: list[FakeSessionRecord],
    jobs: list[tuple[Kind, int]],
    options: FuzzOptions,
    report: FuzzReport,
) -> None:
    limits = httpx.Limits(max_connections=options.concurrency * 2 + 8)
    async with httpx.AsyncClient(trust_env=False, timeout=10.0, limits=limits) as http:
        await bridge.wait_ready(http)
        report.rss_kib = dict.fromkeys(("start", "peak", "end"), bridge.rss_kib())
        sampler = asyncio.create_task(_sample_rss(bridge, report.rss_kib))
        stop_good = asyncio.Event()
        good = asyncio.create_task(good_calls(bridge.target, http, stop_good, report.good))
        ctx = FuzzContext(bridge.target, http, options.hold_s)
        windows: list[tuple[ModelSessions, int, int, int]] = []
        try:
            # Each round replays the same sessions against the same process: memory that
            # grows round after round is kept per session; memory that stops is a plateau.
            for _ in range(options.rounds):
                for served, counts in ((False, report.refused_phase), (True, report.served_phase)):
                    phase_jobs = [job for job in jobs if job[0].may_open_model is served]
                    before = len(sessions)
                    allowed = await _run_phase(ctx, phase_jobs, options.concurrency, report)
                    await asyncio.sleep(_SETTLE_S)
                    windows.append((counts, allowed, before, len(sessions)))
                report.rss_rounds_kib.append(bridge.rss_kib())
        finally:
            stop_good.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(good, GOOD_CALL_LIMIT_S + 30)
            sampler.cancel()
        report.rss_kib["end"] = bridge.rss_kib()
        report.rss_kib["peak"] = max(report.rss_kib["peak"], report.rss_kib["end"])
        report.alive, report.healthz = await _health(bridge, http)
    for counts, allowed, lo, hi in windows:
        _account(counts, allowed, sessions[lo:hi])


def _account(counts: ModelSessions, allowed: int, opened: list[FakeSessionRecord]) -> None:
    """Add one phase window's model sessions to ``counts``. Only good calls speak: a session
    that heard speech belongs to one of them."""
    good_calls = sum(1 for record in opened if record.speech_started_at)
    counts.opened += len(opened)
    counts.good_calls += good_calls
    counts.allowed += allowed
    counts.unexpected += max(0, len(opened) - good_calls - allowed)


async def _run_phase(
    ctx: FuzzContext, jobs: list[tuple[Kind, int]], concurrency: int, report: FuzzReport
) -> int:
    """Run ``jobs`` at most ``concurrency`` at a time; returns how many model sessions they
    may legitimately have opened."""
    gate = asyncio.Semaphore(concurrency)
    allowed = 0

    async def one(kind: Kind, seed: int) -> None:
        nonlocal allowed
        out = Outcome()
        async with gate:
            error = await _run_one(ctx, kind, seed, out)
        allowed += out.legit_streams
        _tally(report, kind, out, error)

    await asyncio.gather(*(one(kind, seed) for kind, seed in jobs))
    return allowed


async def _run_one(ctx: FuzzContext, kind: Kind, seed: int, out: Outcome) -> str | None:
    """One hostile session, bounded in time; a short description of what broke it, if
    anything did."""
    try:
        async with asyncio.timeout(ctx.hold_s + _SESSION_SLACK_S):
            await kind.run(ctx, random.Random(seed), out)
    except TimeoutError:
        return "timed out"
    except Exception as exc:  # the bridge may drop us in any way; report, never stop
        return f"{type(exc).__name__}: {exc}"[:120]
    return None


def _tally(report: FuzzReport, kind: Kind, out: Outcome, error: str | None) -> None:
    stats = report.kinds[kind.name]
    stats.sessions += 1
    stats.results[out.label or ("client error" if error else "done")] += 1
    stats.notes.update(out.notes)
    if error is not None:
        stats.client_errors += 1
        stats.notes[error] += 1
    report.twiml_checked += out.twiml_checked
    report.twiml_not_xml += out.twiml_not_xml


async def _sample_rss(bridge: BridgeProcess, rss: dict[str, int]) -> None:
    while True:
        rss["peak"] = max(rss["peak"], bridge.rss_kib())
        await asyncio.sleep(_RSS_EVERY_S)


async def _health(bridge: BridgeProcess, http: httpx.AsyncClient) -> tuple[bool, int | None]:
    try:
        status: int | None = (await http.get(f"{bridge.url}/healthz", timeout=5.0)).status_code
    except httpx.HTTPError:
        status = None
    return bridge.running and status == 200, status


# ------------------------------------------------------------------ command line


def add_fuzz_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``bridge fuzz`` options; then call :func:`run_command`."""
    parser.add_argument(
        "--sessions",
        type=int,
        default=1000,
        metavar="N",
        help="hostile sessions to run, spread evenly over the kinds (1000)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=32,
        metavar="C",
        help="hostile sessions in flight at once (32)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="random seed, to replay a run (default: a fresh one, printed)",
    )
    parser.add_argument(
        "--kinds",
        default="",
        metavar="A,B,...",
        help="run only these kinds (default: all; listed below)",
    )
    parser.add_argument(
        "--hold",
        type=float,
        default=3.0,
        metavar="S",
        help="how long slow and idle clients hold a connection (3)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        metavar="R",
        help="split the sessions into R identical rounds, RSS read after each (1)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=1800.0,
        metavar="S",
        help="give up on the whole run after this long (1800)",
    )
    parser.add_argument(
        "--bridge-log",
        type=Path,
        default=None,
        metavar="FILE",
        help="keep a copy of the bridge's log here",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    width = max(len(kind.name) for kind in KINDS)
    parser.epilog = "kinds (refused: must cost no model session; served: may):\n" + "\n".join(
        f"  {k.name:<{width}}  {'served ' if k.may_open_model else 'refused'}  {k.about}"
        for k in KINDS
    )


def run_command(args: argparse.Namespace) -> int:
    """Run from parsed arguments, print the report; 0 when every check passed, 1 when one
    failed, 2 on bad arguments."""
    options = FuzzOptions(
        sessions=args.sessions,
        concurrency=args.concurrency,
        seed=args.seed if args.seed is not None else secrets.randbits(32),
        kinds=tuple(name.strip() for name in args.kinds.split(",") if name.strip()),
        hold_s=args.hold,
        rounds=args.rounds,
        timeout_s=args.timeout,
        bridge_log=args.bridge_log,
    )
    try:
        check_options(options)
    except ValueError as exc:
        print(f"bridge fuzz: {exc}", file=sys.stderr)
        return 2
    try:
        report = asyncio.run(run_fuzz(options))
    except (RuntimeError, TimeoutError) as exc:
        print(f"bridge fuzz: the run failed: {exc!r}", file=sys.stderr)
        return 1
    print(report_json(report) if args.json else format_report(report))
    if not report.ok:
        failed = [name for name, passed in report.checks().items() if not passed]
        print(f"bridge fuzz: FAILED: {'; '.join(failed)}", file=sys.stderr)
    return 0 if report.ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bridge.devtools.fuzz",
        description="Hostile Twilio traffic against a fresh `bridge serve` process, with a "
        "good call always in flight; reports survival, tracebacks, memory and model sessions.",
    )
    add_fuzz_arguments(parser)
    return run_command(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
