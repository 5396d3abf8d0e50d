"""The ``bridge loadtest`` command line: options, the run, the table or JSON."""

from __future__ import annotations

import argparse
import json
import sys

from bridge.devtools.fake_response import DEFAULT_DELTA_MS
from bridge.devtools.load_model import parse_delta_ms
from bridge.devtools.loadtest import DEFAULT_FAKE_PORT, LoadtestOptions, run_loadtest
from bridge.devtools.loadtest_report import LoadtestReport, format_report, report_json
from bridge.devtools.uvloop_runner import run_on_uvloop

__all__ = ["add_loadtest_arguments", "run_command"]


def add_loadtest_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``bridge loadtest`` options; then call :func:`run_command`."""
    parser.add_argument("--calls", type=int, required=True, help="concurrent simulated calls")
    parser.add_argument("--seconds", type=float, default=30.0, help="about how long each call is")
    parser.add_argument(
        "--url",
        help="a running bridge (default: start a fresh `bridge serve`); it must use this "
        f"run's fake model: BRIDGE_REALTIME_URL=ws://127.0.0.1:{DEFAULT_FAKE_PORT}/v1/realtime",
    )
    parser.add_argument(
        "--pid",
        type=int,
        help="with --url: the bridge's process (default: the process listening on the URL's port)",
    )
    parser.add_argument(
        "--public-url",
        help="with --url: the bridge's BRIDGE_PUBLIC_URL "
        "(signatures are computed over it; default: --url)",
    )
    parser.add_argument("--auth-token", help="with --url: default TWILIO_AUTH_TOKEN")
    parser.add_argument("--review-token", help="with --url: default BRIDGE_REVIEW_TOKEN")
    parser.add_argument(
        "--fake-port",
        type=int,
        help=f"port of the fake model (default: {DEFAULT_FAKE_PORT} with --url, else free)",
    )
    parser.add_argument("--sip", action="store_true", help="SIP calls instead of Twilio")
    parser.add_argument(
        "--sip-target",
        metavar="sip:USER@HOST:PORT",
        help="with --url and --sip: the running bridge's SIP listener",
    )
    parser.add_argument("--no-floor", action="store_true", help="skip the naive pass-through")
    parser.add_argument("--ramp", type=float, help="spread call starts over this many seconds")
    parser.add_argument("--timeout", type=float, help="bound on the whole run (default: generous)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="start the bridge with `bridge serve --workers N` (not with --url or --sip: "
        "only the first worker serves SIP)",
    )
    parser.add_argument(
        "--database-url",
        metavar="URL",
        help="the call store of the bridge the load test starts (default: a new SQLite file); "
        "a PostgreSQL server's own CPU is not in the bridge's figures (not with --url)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run the bridge and the floor this many times each, taking turns at going first, "
        "and show the round with the median CPU ratio (one run's ratio moves with the machine)",
    )
    parser.add_argument(
        "--delta-ms",
        type=_delta_ms,
        default=DEFAULT_DELTA_MS,
        metavar="MS[,MS...]",
        help="the fake model's answer deltas take these lengths in turn (default: 100; real "
        "servers send roughly 20-100 ms each, e.g. 20,40,60,100)",
    )


def _delta_ms(text: str) -> tuple[int, ...]:
    try:
        return parse_delta_ms(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run_command(
    args: argparse.Namespace, *, auth_token: str | None, review_token: str | None
) -> int:
    """Run the load test the options describe; ``auth_token``/``review_token`` are the
    configured defaults for a bridge given with ``--url``."""
    if args.sip and args.url and not args.sip_target:
        print("bridge loadtest: --sip with --url needs --sip-target", file=sys.stderr)
        return 2
    if args.database_url and args.url:
        print(
            "bridge loadtest: --database-url is for a bridge it starts, not --url", file=sys.stderr
        )
        return 2
    if args.workers != 1 and (args.sip or args.url):
        # Only the first worker binds the SIP ports, and a running bridge has its own.
        print(
            "bridge loadtest: --workers is for Twilio calls to a bridge it starts "
            "(only the first worker serves SIP; not with --url)",
            file=sys.stderr,
        )
        return 2
    opts = LoadtestOptions(
        calls=args.calls,
        seconds=args.seconds,
        url=args.url,
        pid=args.pid,
        public_url=args.public_url,
        auth_token=args.auth_token or auth_token,
        review_token=args.review_token or review_token,
        fake_port=args.fake_port,
        floor=not args.no_floor,
        sip=args.sip,
        sip_target=args.sip_target,
        ramp_s=args.ramp,
        timeout_s=args.timeout,
        workers=args.workers,
        delta_ms=args.delta_ms,
        rounds=args.rounds,
        bridge_env=(("BRIDGE_DATABASE_URL", args.database_url),) if args.database_url else (),
    )
    try:
        report = _run(opts)
    except (ValueError, RuntimeError, OSError, TimeoutError) as exc:
        print(f"bridge loadtest: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report_json(report), indent=2))
    else:
        print(format_report(report))
    return 0 if report.bridge.completed == report.calls else 1


def _run(opts: LoadtestOptions) -> LoadtestReport:
    return run_on_uvloop(run_loadtest(opts))
