"""How much CPU the bridge spends per call, as printed figures.

    python -m bridge.devtools.bench micro [--seconds 60] [--repeat 5]
    python -m bridge.devtools.bench load [--calls 20] [--seconds 20]
    python -m bridge.devtools.bench store [--calls 500] [--postgres URL]
    python -m bridge.devtools.bench sip [--calls 50] [--seconds 20] [--json]
    python -m bridge.devtools.bench reconnect [--calls 20] [--json]
    python -m bridge.devtools.bench frames [--frames 20000] [--rounds 5]
    python -m bridge.devtools.bench inbound [--frames 20000] [--rounds 5]
    python -m bridge.devtools.bench tls [--connections 20] [--rounds 3]
    python -m bridge.devtools.bench heap [--rounds 3] [--calls N] [--seconds 30]
    python -m bridge.devtools.bench sip-flood [--datagrams 60000] [--blocks 6] [--rate 2000]
    python -m bridge.devtools.bench            # micro with defaults, then load with 10 calls

``micro`` times the pure call path against a naive pass-through measured in the same run
(:mod:`bridge.devtools.bench_micro`); ``load`` runs concurrent simulated calls against a real
``bridge serve`` process and reads its CPU and peak memory from ``/proc``
(:mod:`bridge.devtools.bench_load`); ``store`` times committed turn writes against the bare
database driver and the review queries on a seeded log (:mod:`bridge.devtools.bench_store`);
``sip`` runs concurrent SIP calls against a ``bridge serve`` with its SIP listener, reports the
jitter of its outbound RTP and its CPU per call-second, then runs ``load`` with the same calls
for the Twilio figure beside it (:mod:`bridge.devtools.bench_sip`); ``reconnect`` places
calls one at a time against a ``bridge serve``, half of them losing their model session
between the caller's question and the answer, and reports the caller's wait for the answer
in both kinds and what the reconnect adds to it (:mod:`bridge.devtools.bench_reconnect`);
``frames`` times one caller-audio frame written to the model's socket against websockets' own
framing (:mod:`bridge.devtools.bench_frames`); ``inbound`` times one caller-audio frame read
from a media socket by ``bridge serve``'s WebSocket protocol against uvicorn's own
(:mod:`bridge.devtools.bench_inbound`); ``tls`` times opening one ``wss://`` connection to a
realtime server with the bridge's one TLS context against a context built for each
(:mod:`bridge.devtools.bench_tls`); ``heap`` times one full garbage collection in
a started `bridge serve` before and after its heap is settled, and with ``--calls`` what
collections forced during a load test cost either way
(:mod:`bridge.devtools.bench_heap`); ``sip-flood`` feeds the SIP server a long flood of
requests from outside the allow-list and from an allowed peer and prints the CPU per datagram
as it goes on, beside parsing alone (:mod:`bridge.devtools.bench_sip_flood`).
Figures depend on the machine: compare ratios, and
compare runs on the same machine only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
from collections.abc import Sequence

from bridge.devtools.bench_frames import format_frames, run_frames
from bridge.devtools.bench_heap import (
    format_heap,
    format_heap_under_load,
    run_heap,
    run_heap_under_load,
)
from bridge.devtools.bench_inbound import format_inbound, run_inbound
from bridge.devtools.bench_load import format_load, run_load
from bridge.devtools.bench_micro import format_micro, run_micro
from bridge.devtools.bench_reconnect import format_reconnect, reconnect_json, run_reconnect
from bridge.devtools.bench_sip import format_sip_bench, run_sip_bench, sip_bench_json
from bridge.devtools.bench_sip_flood import format_sip_flood, run_sip_flood
from bridge.devtools.bench_store import format_store, run_store_bench
from bridge.devtools.bench_tls import format_tls, run_tls

__all__ = ["build_parser", "main"]

_DEFAULT_LOAD_CALLS = 10  # when no subcommand is given: quick enough to run on a laptop


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bridge.devtools.bench",
        description="CPU per call of the bridge, with a baseline measured in the same run.",
    )
    sub = parser.add_subparsers(dest="command")
    micro = sub.add_parser("micro", help="the pure call path against a naive pass-through")
    micro.add_argument("--seconds", type=float, default=60.0, help="simulated call length")
    micro.add_argument("--repeat", type=int, default=5, help="runs per path; the best counts")
    load = sub.add_parser("load", help="concurrent simulated calls against `bridge serve`")
    load.add_argument("--calls", type=int, default=20, help="concurrent calls")
    load.add_argument("--seconds", type=float, default=20.0, help="about how long each call is")
    load.add_argument(
        "--timeout", type=float, default=None, help="bound on the whole run (default: generous)"
    )
    store = sub.add_parser("store", help="turn writes and review queries on a seeded call log")
    store.add_argument("--calls", type=int, default=500, help="calls to seed")
    store.add_argument("--turns", type=int, default=10, help="turns per call")
    store.add_argument("--postgres", metavar="URL", help="also run on this PostgreSQL database")
    sip = sub.add_parser(
        "sip", help="concurrent SIP calls: outbound RTP jitter, CPU beside the Twilio figure"
    )
    sip.add_argument("--calls", type=int, default=50, help="concurrent calls")
    sip.add_argument("--seconds", type=float, default=20.0, help="about how long each call is")
    sip.add_argument("--json", action="store_true", help="print the report as JSON")
    sip.add_argument("--no-twilio", action="store_true", help="skip the Twilio run for comparison")
    sip.add_argument(
        "--timeout", type=float, default=None, help="bound on each run (default: generous)"
    )
    reconnect = sub.add_parser(
        "reconnect", help="the caller's wait for an answer when the model session drops"
    )
    reconnect.add_argument("--calls", type=int, default=20, help="calls per mode")
    reconnect.add_argument("--json", action="store_true", help="print the report as JSON")
    reconnect.add_argument(
        "--timeout", type=float, default=None, help="bound on the whole run (default: generous)"
    )
    frames = sub.add_parser("frames", help="one audio frame written to the model's socket")
    frames.add_argument("--frames", type=int, default=20_000, help="frames per round")
    frames.add_argument("--rounds", type=int, default=5, help="rounds per way; the best counts")
    inbound = sub.add_parser("inbound", help="one audio frame read from a media socket")
    inbound.add_argument("--frames", type=int, default=20_000, help="frames per round")
    inbound.add_argument("--rounds", type=int, default=5, help="rounds per way; the best counts")
    tls = sub.add_parser("tls", help="one wss:// connection opened to a realtime server")
    tls.add_argument("--connections", type=int, default=20, help="connections per round")
    tls.add_argument("--rounds", type=int, default=3, help="rounds per way; the best counts")
    heap = sub.add_parser("heap", help="one full garbage collection, as started and settled")
    heap.add_argument("--rounds", type=int, default=3, help="bridge starts; the median counts")
    heap.add_argument("--calls", type=int, default=0, help="also load this many calls")
    heap.add_argument("--seconds", type=float, default=30.0, help="about how long each call is")
    flood = sub.add_parser("sip-flood", help="CPU per datagram as a flood of SIP requests goes on")
    flood.add_argument("--datagrams", type=int, default=60_000, help="requests from each source")
    flood.add_argument("--blocks", type=int, default=6, help="blocks to report them in")
    flood.add_argument("--rate", type=float, default=2000.0, help="requests a simulated second")
    return parser


def _reconnect(args: argparse.Namespace) -> int:
    if args.calls < 1:
        print("bench: reconnect needs --calls >= 1", file=sys.stderr)
        return 2
    report = run_reconnect(args.calls, args.timeout)
    if args.json:
        print(json.dumps(reconnect_json(report), indent=2))
    else:
        print(format_reconnect(report))
    # Unanswered calls fail the run; a missed aim is a figure to read, not a failure.
    return 1 if report.failures else 0


def _sip(args: argparse.Namespace) -> int:
    if args.calls < 1 or args.seconds <= 0:
        print("bench: sip needs --calls >= 1 and --seconds > 0", file=sys.stderr)
        return 2
    report = asyncio.run(
        run_sip_bench(args.calls, args.seconds, twilio=not args.no_twilio, timeout_s=args.timeout)
    )
    if args.json:
        print(json.dumps(sip_bench_json(report), indent=2))
    else:
        print(format_sip_bench(report))
    twilio_ok = report.twilio is None or report.twilio.completed == report.twilio.calls
    return 0 if report.sip.completed == report.sip.calls and twilio_ok else 1


def _machine() -> str:
    return (
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, {platform.machine()} {platform.system()}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "sip" and args.json:
        return _sip(args)  # stdout is the JSON document alone
    if args.command == "reconnect" and args.json:
        return _reconnect(args)
    print(_machine())
    print()
    if args.command == "sip":
        return _sip(args)
    if args.command == "reconnect":
        return _reconnect(args)
    if args.command in ("frames", "inbound"):
        if args.frames < 100 or args.rounds < 1:
            print(f"bench: {args.command} needs --frames >= 100 and --rounds >= 1", file=sys.stderr)
            return 2
        if args.command == "frames":
            print(format_frames(run_frames(args.frames, args.rounds)))
        else:
            print(format_inbound(run_inbound(args.frames, args.rounds)))
        return 0
    if args.command == "tls":
        if args.connections < 1 or args.rounds < 1:
            print("bench: tls needs --connections >= 1 and --rounds >= 1", file=sys.stderr)
            return 2
        print(format_tls(run_tls(args.connections, args.rounds)))
        return 0
    if args.command == "heap":
        if args.rounds < 1 or args.calls < 0 or (args.calls and args.seconds < 8):
            print("bench: heap needs --rounds >= 1, --calls >= 0, --seconds >= 8", file=sys.stderr)
            return 2
        print(format_heap(run_heap(args.rounds)), flush=True)
        if args.calls:
            settled, unsettled = run_heap_under_load(args.calls, args.seconds)
            print()
            print(format_heap_under_load(settled, unsettled))
            if min(settled.completed, unsettled.completed) < args.calls:
                return 1
        return 0
    if args.command == "sip-flood":
        if args.blocks < 1 or args.datagrams < args.blocks * 10 or args.rate <= 0:
            print(
                "bench: sip-flood needs --blocks >= 1, --datagrams >= 10 per block, --rate > 0",
                file=sys.stderr,
            )
            return 2
        print(format_sip_flood(run_sip_flood(args.datagrams, args.blocks, args.rate)))
        return 0
    if args.command == "store":
        if args.calls < 1 or args.turns < 1:
            print("bench: store needs --calls >= 1 and --turns >= 1", file=sys.stderr)
            return 2
        print(format_store(asyncio.run(run_store_bench(args.calls, args.turns, args.postgres))))
        return 0
    if args.command in (None, "micro"):
        seconds = args.seconds if args.command else 60.0
        repeat = args.repeat if args.command else 5
        if seconds < 5 or repeat < 1:
            print("bench: micro needs --seconds >= 5 and --repeat >= 1", file=sys.stderr)
            return 2
        print(format_micro(run_micro(seconds, repeat)), flush=True)
    if args.command is None:
        print()
    if args.command in (None, "load"):
        calls = args.calls if args.command else _DEFAULT_LOAD_CALLS
        seconds = args.seconds if args.command else 20.0
        timeout = args.timeout if args.command else None
        if calls < 1 or seconds <= 0:
            print("bench: load needs --calls >= 1 and --seconds > 0", file=sys.stderr)
            return 2
        report = run_load(calls, seconds, timeout)
        print(format_load(report))
        if report.completed < report.calls:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
