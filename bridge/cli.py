"""The ``bridge`` command: serve, simulate, fake-realtime, calls list / show."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import os
import sys
from collections.abc import Sequence

from bridge.errors import ConfigurationError
from bridge.log import configure_logging
from bridge.settings import Settings, load_settings


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from bridge.app import create_app

    if settings.twilio_auth_token is None and not _is_loopback(args.host) and not args.insecure:
        print(
            f"bridge: refusing to serve on {args.host} without TWILIO_AUTH_TOKEN: anyone could "
            "place calls through the bridge at your expense. Set TWILIO_AUTH_TOKEN, serve on "
            "127.0.0.1, or pass --insecure if you really mean it.",
            file=sys.stderr,
        )
        return 2
    uvicorn.run(
        create_app(settings),
        host=args.host,
        port=args.port,
        log_config=None,
        access_log=False,
        ws_max_size=256 * 1024,
        ws_ping_interval=None,
        lifespan="on",
    )
    return 0


def _simulate(args: argparse.Namespace, settings: Settings) -> int:
    from bridge.codecs.clips import load_clip
    from bridge.codecs.wav import read_wav_as_ulaw8k, write_ulaw8k_wav
    from bridge.devtools.simulator import SimulationError, format_transcript, simulate_call

    if args.audio:
        utterances = [read_wav_as_ulaw8k(args.audio)]
    else:
        utterances = [load_clip(f"caller_{n}") for n in (1, 2, 3)]
    auth = args.auth_token or (
        settings.twilio_auth_token.get_secret_value() if settings.twilio_auth_token else None
    )
    review = args.review_token or (
        settings.review_token.get_secret_value() if settings.review_token else None
    )
    try:
        result = asyncio.run(
            simulate_call(
                args.url.rstrip("/"),
                auth_token=auth,
                caller_utterances=utterances,
                barge_in_at=args.barge_in_at,
                review_token=review,
                digits=list(args.digits) if args.digits else None,
                max_duration_s=args.max_duration,
            )
        )
    except (SimulationError, OSError) as exc:
        print(f"bridge simulate: {exc}", file=sys.stderr)
        return 1
    if args.out:
        write_ulaw8k_wav(args.out, result.heard_audio)
        print(f"agent audio as heard: {args.out} ({len(result.heard_audio) / 8000:.1f} s)")
    print(
        f"call {result.call_sid}: {len(result.clears)} barge-in(s), socket closed "
        f"with {result.close_code}"
    )
    if result.call_record is None:
        print("no transcript found (is BRIDGE_REVIEW_TOKEN the same as the server's?)")
        return 1
    print(format_transcript(result.call_record))
    return 0


def _calls(args: argparse.Namespace, settings: Settings) -> int:
    from bridge.review.text_view import format_call, format_call_list
    from bridge.storage.factory import open_store

    async def run() -> int:
        store = open_store(settings.database_url)
        await store.open()
        try:
            if args.calls_command == "list":
                print(format_call_list(await store.list_calls(limit=args.limit)))
                return 0
            record = await store.get_call(args.call_sid)
            if record is None:
                print(f"bridge calls show: no call {args.call_sid}", file=sys.stderr)
                return 1
            print(json.dumps(record.to_json(), indent=2) if args.json else format_call(record))
            return 0
        finally:
            await store.close()

    return asyncio.run(run())


def _fake_realtime(args: argparse.Namespace, settings: Settings) -> int:
    from bridge.devtools.fake_realtime import run_fake_realtime

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_fake_realtime(args))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from bridge.devtools.fake_realtime import add_fake_realtime_arguments

    parser = argparse.ArgumentParser(
        prog="bridge", description="A telephony bridge between phone calls and realtime models."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the bridge server")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    serve.add_argument(
        "--insecure",
        action="store_true",
        help="allow a non-loopback host without TWILIO_AUTH_TOKEN",
    )
    serve.set_defaults(func=_serve)

    sim = sub.add_parser("simulate", help="act as Twilio for one call against a running bridge")
    sim.add_argument("--url", default="http://127.0.0.1:8000")
    sim.add_argument("--audio", help="a WAV file the caller says (default: a demo conversation)")
    sim.add_argument("--out", help="write what the caller heard to this WAV file")
    sim.add_argument(
        "--barge-in-at",
        type=float,
        default=None,
        metavar="SECONDS",
        help="talk over the agent's first answer this many seconds into it",
    )
    sim.add_argument("--digits", default="", help="keypresses to send after the first answer")
    sim.add_argument("--auth-token", default=None, help="default: TWILIO_AUTH_TOKEN")
    sim.add_argument("--review-token", default=None, help="default: BRIDGE_REVIEW_TOKEN")
    sim.add_argument("--max-duration", type=float, default=90.0)
    sim.set_defaults(func=_simulate)

    fake = sub.add_parser("fake-realtime", help="a local realtime-API server for development")
    add_fake_realtime_arguments(fake)
    fake.set_defaults(func=_fake_realtime)

    calls = sub.add_parser("calls", help="read the call log")
    calls_sub = calls.add_subparsers(dest="calls_command", required=True)
    lst = calls_sub.add_parser("list", help="the most recent calls")
    lst.add_argument("--limit", type=int, default=20)
    show = calls_sub.add_parser("show", help="one call's transcript")
    show.add_argument("call_sid")
    show.add_argument("--json", action="store_true", help="the JSON call record")
    calls.set_defaults(func=_calls)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
    except ConfigurationError as exc:
        print(f"bridge: bad configuration: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.resolved_log_format, settings.log_level)
    try:
        code: int = args.func(args, settings)
    except ConfigurationError as exc:
        print(f"bridge: bad configuration: {exc}", file=sys.stderr)
        return 2
    return code
