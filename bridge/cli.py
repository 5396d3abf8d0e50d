"""The ``bridge`` command: serve, simulate, fake-realtime, calls list / show / export / purge."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from bridge.errors import ConfigurationError
from bridge.log import configure_logging
from bridge.settings import Settings, load_settings

if TYPE_CHECKING:
    from bridge.storage.base import CallStore


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from bridge.adapters.http_server import configure_server_limits
    from bridge.adapters.server_frames import LeanWebSocketProtocol

    if args.sip:
        settings = load_settings(sip_listen=args.sip)  # checked like the setting
    if settings.twilio_auth_token is None and not _is_loopback(args.host) and not args.insecure:
        print(
            f"bridge: refusing to serve on {args.host} without TWILIO_AUTH_TOKEN: anyone could "
            "place calls through the bridge at your expense. Set TWILIO_AUTH_TOKEN, serve on "
            "127.0.0.1, or pass --insecure if you really mean it.",
            file=sys.stderr,
        )
        return 2
    if (problem := _store_problem(settings)) is not None:
        print(f"bridge: cannot open the call store: {problem}", file=sys.stderr)
        return 1
    limits = configure_server_limits(settings.header_timeout_s, settings.max_connections)
    server_options: dict[str, object] = {
        "http": limits.protocol,
        "ws": LeanWebSocketProtocol,
        "backlog": limits.backlog,
        "log_config": None,
        "access_log": False,
        "ws_max_size": 256 * 1024,
        "ws_ping_interval": None,
        # Never compress a media socket, whatever the client offers: deflating 50 small base64
        # audio frames a second each way cost 15% more CPU per call in a 50-call load test, to
        # save a few kilobytes a second, and each socket would hold zlib state.
        "ws_per_message_deflate": False,
        "lifespan": "on",
    }
    if args.workers > 1:
        return _serve_workers(args, settings, server_options, limits.backlog)
    from bridge.app import create_app
    from bridge.serving import serve

    app = create_app(settings)
    config = uvicorn.Config(app, host=args.host, port=args.port, **server_options)  # type: ignore[arg-type]
    return serve(app, config, settings.drain_s)


def _serve_workers(
    args: argparse.Namespace, settings: Settings, options: dict[str, object], backlog: int
) -> int:
    import socket

    import structlog
    import uvicorn

    from bridge.workers import serve_workers, shared_token_key, worker_settings

    key = shared_token_key(settings)

    def run_worker(index: int, sock: socket.socket) -> None:
        # Imported here, in the worker, once the metrics directory is set (bridge.workers).
        from bridge.app import create_app
        from bridge.serving import serve

        structlog.contextvars.bind_contextvars(worker=index)
        app = create_app(worker_settings(settings, index, key))
        config = uvicorn.Config(app, **options)  # type: ignore[arg-type]
        if serve(app, config, settings.drain_s, sockets=[sock]) != 0:
            raise SystemExit(3)

    try:
        return serve_workers(args.workers, args.host, args.port, backlog, run_worker)
    except OSError as exc:
        print(f"bridge: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1


def _store_problem(settings: Settings) -> str | None:
    """Open (and migrate) the store once before serving, so an unreachable database is one
    clear line and exit status 1 rather than a server that starts and fails its start-up."""
    from bridge.storage.base import StoreUnavailableError
    from bridge.storage.factory import open_store

    async def check() -> None:
        store = open_store(settings.database_url)
        await store.open()
        await store.close()

    try:
        asyncio.run(check())
    except StoreUnavailableError as exc:
        return str(exc)
    return None


def _simulate(args: argparse.Namespace, settings: Settings) -> int:
    from bridge.codecs.clips import load_clip
    from bridge.codecs.wav import read_wav_as_ulaw8k, write_ulaw8k_wav
    from bridge.devtools.simulator import SimulationError, format_transcript, simulate_call

    if args.sip:
        return _simulate_sip(args, settings)
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
                digits=list(args.digits or args.dtmf) or None,
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


def _simulate_sip(args: argparse.Namespace, settings: Settings) -> int:
    """``bridge simulate --sip``: one call as a SIP phone, then the record over HTTP."""
    from bridge.codecs.clips import load_clip
    from bridge.codecs.wav import read_wav_as_ulaw8k, write_ulaw8k_wav
    from bridge.devtools.simulator import SimulationError, format_transcript
    from bridge.devtools.sip_simulator import describe, simulate_sip_call

    if args.audio:
        utterances = [read_wav_as_ulaw8k(args.audio)]
    else:
        utterances = [load_clip(f"caller_{n}") for n in (1, 2, 3)]
    review = args.review_token or (
        settings.review_token.get_secret_value() if settings.review_token else None
    )
    username = args.sip_username or settings.sip_username
    password = args.sip_password or (
        settings.sip_password.get_secret_value() if settings.sip_password else None
    )
    digits = args.dtmf or args.digits
    try:
        result = asyncio.run(
            simulate_sip_call(
                args.sip,
                caller_utterances=utterances,
                barge_in_at=args.barge_in_at,
                digits=list(digits) if digits else None,
                base_url=args.url.rstrip("/"),
                review_token=review,
                username=username,
                password=password,
                max_duration_s=args.max_duration,
            )
        )
    except (SimulationError, OSError) as exc:
        print(f"bridge simulate: {exc}", file=sys.stderr)
        return 1
    for problem in result.protocol_problems:
        print(f"bridge simulate: {problem}", file=sys.stderr)
    if args.out:
        write_ulaw8k_wav(args.out, result.heard_audio)
        print(f"agent audio as heard: {args.out} ({len(result.heard_audio) / 8000:.1f} s)")
    print(describe(result))
    if result.call_record is None:
        print(
            "no transcript found (is BRIDGE_REVIEW_TOKEN the same as the server's, and --url "
            "the bridge's HTTP address?)"
        )
        return 1
    print(format_transcript(result.call_record))
    return 0


def _calls(args: argparse.Namespace, settings: Settings) -> int:
    from bridge.storage.base import StoreUnavailableError
    from bridge.storage.factory import open_store

    async def run() -> int:
        store = open_store(settings.database_url)
        await store.open()
        try:
            return await _CALLS_COMMANDS[args.calls_command](args, settings, store)
        finally:
            await store.close()

    try:
        return asyncio.run(run())
    except StoreUnavailableError as exc:
        print(f"bridge calls: the call store is unavailable: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"bridge calls {args.calls_command}: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader stopped early (`bridge calls export | head`): not an error worth a
        # traceback. Point stdout at /dev/null so the interpreter's final flush stays quiet.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


async def _calls_list(args: argparse.Namespace, settings: Settings, store: CallStore) -> int:
    from bridge.review.text_view import format_call_list

    print(format_call_list(await store.list_calls(limit=args.limit)))
    return 0


async def _calls_show(args: argparse.Namespace, settings: Settings, store: CallStore) -> int:
    from bridge.review.text_view import format_call

    record = await store.get_call(args.call_sid)
    if record is None:
        print(f"bridge calls show: no call {args.call_sid}", file=sys.stderr)
        return 1
    print(json.dumps(record.to_json(), indent=2) if args.json else format_call(record))
    return 0


async def _calls_export(args: argparse.Namespace, settings: Settings, store: CallStore) -> int:
    from bridge.review import export

    since = None if args.since is None else export.parse_since(args.since, datetime.now(UTC))
    out = sys.stdout
    if args.format == "csv":
        out.write(export.csv_header())
    count = 0
    async for record in export.records_since(store, since):
        out.write(export.csv_rows(record) if args.format == "csv" else export.jsonl_line(record))
        count += 1
    out.flush()
    print(f"bridge calls export: {count} call(s)", file=sys.stderr)
    return 0


async def _calls_purge(args: argparse.Namespace, settings: Settings, store: CallStore) -> int:
    from bridge.review.export import parse_age
    from bridge.storage.recordings import RecordingFiles

    cutoff = datetime.now(UTC) - parse_age(args.older_than)
    purged = await store.purge_calls(cutoff)
    recordings = RecordingFiles(settings.resolved_recordings_dir)
    removed = sum(recordings.delete(sid) for sid in purged)
    print(
        f"bridge calls purge: removed {len(purged)} call(s) started before"
        f" {cutoff:%Y-%m-%d %H:%M} UTC and {removed} recording(s)"
    )
    return 0


_CALLS_COMMANDS: dict[str, Callable[[argparse.Namespace, Settings, CallStore], Awaitable[int]]] = {
    "list": _calls_list,
    "show": _calls_show,
    "export": _calls_export,
    "purge": _calls_purge,
}


def _fake_realtime(args: argparse.Namespace, settings: Settings) -> int:
    from bridge.devtools.fake_realtime import run_fake_realtime

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_fake_realtime(args))
    return 0


def _fuzz(args: argparse.Namespace, settings: Settings) -> int:
    from bridge.devtools.fuzz import run_command

    return run_command(args)


def _loadtest(args: argparse.Namespace, settings: Settings) -> int:
    from bridge.devtools.loadtest_command import run_command

    token, review = settings.twilio_auth_token, settings.review_token
    return run_command(
        args,
        auth_token=token.get_secret_value() if token is not None else None,
        review_token=review.get_secret_value() if review is not None else None,
    )


def _call(args: argparse.Namespace, settings: Settings) -> int:
    """``bridge call TO``: have Twilio dial TO; when the callee answers, Twilio requests this
    bridge's voice webhook (at BRIDGE_PUBLIC_URL) and the callee talks to the agent."""
    from urllib.parse import urlsplit

    from bridge.adapters.twilio_rest import TwilioRestError, create_call, is_e164, new_client
    from bridge.outbound import voice_webhook_url

    def fail(message: str) -> int:
        print(f"bridge call: {message}", file=sys.stderr)
        return 1

    from_ = args.from_ or settings.outbound_from or None
    if from_ is None:
        return fail("--from is required: BRIDGE_OUTBOUND_FROM, the default caller ID, is unset")
    for flag, number in (("TO", args.to), ("--from", from_)):
        if not is_e164(number):
            return fail(f"{flag} must be an E.164 number: + and 7 to 15 digits, e.g. +15557650000")
    account_sid = settings.twilio_account_sid or ""
    token = settings.twilio_auth_token
    auth_token = token.get_secret_value() if token is not None else ""
    if not account_sid or not auth_token:
        return fail("TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN must be set to place calls")
    if _is_loopback(urlsplit(settings.public_base).hostname or ""):
        print(
            f"bridge call: warning: BRIDGE_PUBLIC_URL is {settings.public_base}; Twilio cannot "
            "reach a loopback address, so the answered call will find no bridge",
            file=sys.stderr,
        )

    async def place() -> str:
        async with new_client(settings.twilio_api_base) as client:
            return await create_call(
                client,
                settings.twilio_api_base,
                account_sid,
                auth_token,
                to=args.to,
                from_=from_,
                url=voice_webhook_url(settings, args.agent),
                status_callback=settings.public_http_url("/twilio/status"),
                machine_detection=args.machine_detection,
            )

    try:
        sid = asyncio.run(place())
    except TwilioRestError as exc:
        return fail(str(exc))
    print(sid)
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
        "--workers",
        type=int,
        default=1,
        help="server processes on the one port, for more than one core (SIP on the first)",
    )
    serve.add_argument(
        "--sip",
        metavar="LISTEN",
        help="take SIP calls too, e.g. udp:0.0.0.0:5060 (BRIDGE_SIP_LISTEN; this wins)",
    )
    serve.add_argument(
        "--insecure",
        action="store_true",
        help="allow a non-loopback host without TWILIO_AUTH_TOKEN",
    )
    serve.set_defaults(func=_serve)

    sim = sub.add_parser(
        "simulate", help="act as Twilio (or a SIP phone) for one call against a running bridge"
    )
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
    sim.add_argument(
        "--sip",
        metavar="sip:USER@HOST:PORT",
        help="act as a SIP phone (UDP, RTP) calling the bridge's SIP listener instead of as "
        "Twilio; --url is then only where the call record is read",
    )
    sim.add_argument(
        "--dtmf",
        default="",
        metavar="DIGITS",
        help="keypresses after the first answer (with --sip: RFC 4733 telephone events; "
        "otherwise the same as --digits)",
    )
    sim.add_argument("--sip-username", default=None, help="default: BRIDGE_SIP_USERNAME")
    sim.add_argument("--sip-password", default=None, help="default: BRIDGE_SIP_PASSWORD")
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
    export = calls_sub.add_parser(
        "export", help="write calls to stdout as JSON lines (one call each) or CSV (one turn each)"
    )
    export.add_argument(
        "--since", help="only calls started since: a date (2026-11-01, UTC) or an age (7d, 12h)"
    )
    export.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    purge = calls_sub.add_parser(
        "purge", help="delete finished calls, their turns, events and recordings"
    )
    purge.add_argument(
        "--older-than", required=True, metavar="AGE", help="e.g. 30d, 12h, 2w (m = minutes)"
    )
    calls.set_defaults(func=_calls)

    from bridge.devtools.fuzz import add_fuzz_arguments

    fuzz = sub.add_parser(
        "fuzz", help="hostile Twilio traffic against a fresh bridge process, with a report"
    )
    add_fuzz_arguments(fuzz)
    fuzz.set_defaults(func=_fuzz)

    from bridge.devtools.loadtest_command import add_loadtest_arguments

    loadtest = sub.add_parser(
        "loadtest",
        help="concurrent simulated calls against the bridge and a naive pass-through: CPU, "
        "memory and latency per hop, with the ratio",
    )
    add_loadtest_arguments(loadtest)
    loadtest.set_defaults(func=_loadtest)

    call = sub.add_parser(
        "call", help="place an outbound call through Twilio; the callee talks to the agent"
    )
    call.add_argument("to", metavar="TO", help="the number to call, E.164 (+15557650000)")
    call.add_argument(
        "--from", dest="from_", metavar="FROM", help="caller ID (default: BRIDGE_OUTBOUND_FROM)"
    )
    call.add_argument("--agent", metavar="NAME", help="the agent the callee talks to")
    call.add_argument(
        "--machine-detection",
        choices=("Enable", "DetectMessageEnd"),
        default=None,
        metavar="MODE",
        help="Twilio answering-machine detection: Enable or DetectMessageEnd",
    )
    call.set_defaults(func=_call)
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
