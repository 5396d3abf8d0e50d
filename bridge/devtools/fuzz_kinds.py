"""The hostile sessions of ``bridge fuzz``: one small async function per kind, and the table.

A kind's ``may_open_model`` says whether the bridge may legitimately open a model session
for the hostile connection itself. Kinds that must be refused before any model session run
in a phase of their own, so that every model session opened in that phase can be accounted
for; some of them first serve a valid stream on purpose (a replay needs an original) and
count it in ``Outcome.legit_streams``. The kinds aimed at the upgrade signature and the
stream token live in :mod:`bridge.devtools.fuzz_tokens`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from websockets.exceptions import ConnectionClosed

from bridge.devtools.fuzz_tokens import (
    forged_upgrade,
    idle_no_start,
    missing_signature,
    start_callsid_surrogate,
    token_arabic_digits,
    token_expired,
    token_foreign_call,
    token_fullwidth_digits,
    token_garbage,
    token_missing,
    token_non_ascii_mac,
    token_replayed,
    token_zero_prefixed,
    webhook_replayed_call,
)
from bridge.devtools.fuzz_wire import (
    FuzzContext,
    Outcome,
    RawSocket,
    answer_call,
    await_close,
    connected_frame,
    expect_refused,
    media_frame,
    new_call_sid,
    open_media,
    post_voice,
    start_frame,
    stop_frame,
    upgrade_request,
    voice_form,
    ws_frame,
)
from bridge.devtools.simulator import sign

__all__ = ["KINDS", "Kind"]

KindFn = Callable[[FuzzContext, random.Random, Outcome], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Kind:
    """One hostile kind: ``run`` plays one session and fills in its :class:`Outcome`
    (raising when the bridge drops it in a way the kind did not expect); ``about`` is the
    one-line description shown by ``--help``."""

    name: str
    run: KindFn
    may_open_model: bool
    about: str


# ------------------------------------------------------------------ bad frames


def _bad_frame(rng: random.Random, variant: str) -> str | bytes:
    if variant == "malformed":
        return rng.choice(["{not json", '{"event":', "\x00", '{"event":"start"', "[" * 50_000])
    if variant == "non-object":
        return rng.choice(["[]", "1", '"start"', "null", "true", '[{"event":"start"}]'])
    if variant == "oversized":
        return json.dumps({"event": rng.choice(["media", "start", "x"]), "pad": "x" * 70_000})
    return rng.randbytes(rng.randint(1, 2048))  # binary


async def _bad_frame_before_start(ctx: FuzzContext, out: Outcome, frame: str | bytes) -> None:
    ws = await open_media(ctx)
    await ws.send(connected_frame())
    with contextlib.suppress(ConnectionClosed):
        await ws.send(frame)
    await expect_refused(ws, out)


async def malformed_json(ctx: FuzzContext, rng: random.Random, out: Outcome) -> None:
    await _bad_frame_before_start(ctx, out, _bad_frame(rng, "malformed"))


async def non_object_json(ctx: FuzzContext, rng: random.Random, out: Outcome) -> None:
    await _bad_frame_before_start(ctx, out, _bad_frame(rng, "non-object"))


async def oversized_frame(ctx: FuzzContext, rng: random.Random, out: Outcome) -> None:
    await _bad_frame_before_start(ctx, out, _bad_frame(rng, "oversized"))


async def binary_frame(ctx: FuzzContext, rng: random.Random, out: Outcome) -> None:
    await _bad_frame_before_start(ctx, out, _bad_frame(rng, "binary"))


async def invalid_utf8(ctx: FuzzContext, rng: random.Random, out: Outcome) -> None:
    raw = await RawSocket.upgrade(ctx.target)
    await raw.send_text(connected_frame())
    await raw.send_text(rng.choice([b"\xff\xfe", b'{"event":"\xff\xfe"}', b"\xed\xa0\x80"]))
    out.label = await raw.close_code()
    await raw.close()


async def invalid_utf8_with_close(ctx: FuzzContext, rng: random.Random, out: Outcome) -> None:
    raw = await RawSocket.upgrade(ctx.target)
    await raw.send_text(connected_frame())
    # One write, so that the bridge reads the bad text and the close together.
    bad = rng.choice([b"\xff\xfe", b'{"event":"\xff\xfe"}', b"\xed\xa0\x80"])
    await raw.send(ws_frame(0x1, bad) + ws_frame(0x8, b"\x03\xe8"))
    out.label = await raw.close_code()
    await raw.close()


async def reset_mid_frame(ctx: FuzzContext, rng: random.Random, out: Outcome) -> None:
    if rng.random() < 0.3:  # mid-handshake
        raw = await RawSocket.open(ctx.target)
        request = upgrade_request(ctx.target)
        await raw.send(request[: rng.randint(1, len(request) - 1)])
        out.label = "rst in handshake"
    else:
        answer = await answer_call(ctx, out)
        raw = await RawSocket.upgrade(ctx.target)
        await raw.send_text(connected_frame())
        frame = ws_frame(0x1, start_frame(answer.call_sid, answer.params)[0].encode())
        await raw.send(frame[: rng.randint(1, len(frame) - 1)])
        out.label = "rst in frame"
    await asyncio.sleep(0.05)
    await raw.reset()


async def slow_silent(ctx: FuzzContext, rng: random.Random, out: Outcome) -> None:
    raw = await RawSocket.open(ctx.target)
    try:
        async with asyncio.timeout(ctx.hold_s):
            await raw.reader.read(1)
        out.label = "dropped by bridge"
    except TimeoutError:
        out.label = "held"
    await raw.close()


async def slow_headers(ctx: FuzzContext, rng: random.Random, out: Outcome) -> None:
    raw = await RawSocket.open(ctx.target)
    request = upgrade_request(ctx.target)
    pause = ctx.hold_s / len(request)
    try:
        for i in range(len(request)):
            await raw.send(request[i : i + 1])
            await asyncio.sleep(pause)
        out.label = (await raw.read_head()).split(" ", 2)[1]
    except (ConnectionError, TimeoutError, asyncio.IncompleteReadError, IndexError):
        out.label = "dropped by bridge"
    await raw.close()


# ------------------------------------------------------------------ webhooks


async def webhook_forged(ctx: FuzzContext, rng: random.Random, out: Outcome) -> None:
    path = rng.choice(["/twilio/voice", "/twilio/status", "/twilio/stream-status"])
    url = ctx.target.base_url + path
    form = voice_form(new_call_sid(), "+15551230000", "+15557650000")
    form["CallStatus"] = "completed" if path == "/twilio/status" else "ringing"
    signature = rng.choice(
        [
            None,
            "AAAA",
            sign(ctx.target.auth_token, url, {**form, "To": "+15550000000"}),
            sign("not-the-auth-token", url, form),
        ]
    )
    headers = {} if signature is None else {"X-Twilio-Signature": signature}
    response = await ctx.http.post(url, data=form, headers=headers)
    out.label = str(response.status_code)
    if response.status_code != 403:
        out.notes.append(f"forged {path} answered {response.status_code}, not 403")


_XML_HOSTILE = ["\x00", "\x0b", "\ufffe", "\uffff", "\x1b", "\x7f", "\x0c", "<", "&", '"', "]]>"]


async def webhook_control_chars(ctx: FuzzContext, rng: random.Random, out: Outcome) -> None:

    def number() -> str:
        chars = rng.choices(_XML_HOSTILE, k=rng.randint(1, 4))
        return "+1555" + "".join(chars) + "0000"

    form = voice_form(new_call_sid(), number(), number())
    response = await post_voice(ctx, form, out)
    out.label = str(response.status_code)
    if response.status_code >= 500:
        out.notes.append(f"voice webhook answered {response.status_code}")


async def webhook_short_body(ctx: FuzzContext, rng: random.Random, out: Outcome) -> None:
    form = voice_form(new_call_sid(), "+15551230000", "+15557650000")
    url = ctx.target.base_url + "/twilio/voice"
    body = "&".join(f"{k}={v}" for k, v in form.items()).replace("+", "%2B").encode()
    head = (
        "POST /twilio/voice HTTP/1.1\r\n"
        f"Host: {ctx.target.host}:{ctx.target.port}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(body) + rng.randint(1, 5000)}\r\n"
        f"X-Twilio-Signature: {sign(ctx.target.auth_token, url, form)}\r\n\r\n"
    ).encode("ascii")
    raw = await RawSocket.open(ctx.target)
    await raw.send(head + body[: rng.randint(0, len(body))])
    await asyncio.sleep(0.05)
    if rng.random() < 0.5:
        await raw.reset()
        out.label = "rst"
    else:
        await raw.close()
        out.label = "fin"


# ------------------------------------------------------------------ served, then bad input


async def _served(
    ctx: FuzzContext,
    out: Outcome,
    before: list[str | bytes],
    after: list[str | bytes],
    params_patch: dict[str, str] | None = None,
) -> None:
    """A valid call whose stream carries ``before`` ahead of ``start`` and ``after`` once it
    is streaming, then ``stop``. The bridge may close it at any point; that is its call."""
    answer = await answer_call(ctx, out)
    out.legit_streams = 1
    ws = await open_media(ctx, answer.stream_url)
    start, stream_sid = start_frame(answer.call_sid, {**answer.params, **(params_patch or {})})
    frames = [connected_frame(), *before, start, media_frame(stream_sid, 1), *after]
    with contextlib.suppress(ConnectionClosed):
        for frame in frames:
            await ws.send(frame)
        await ws.send(stop_frame(stream_sid, answer.call_sid))
    out.label, _ = await await_close(ws, 10.0)


async def from_surrogate(ctx: FuzzContext, rng: random.Random, out: Outcome) -> None:
    field = rng.choice(["from", "to"])
    value = rng.choice(["\ud800", "+1555\udfff", "\udbff\udfff\ud800", "\x00\ud800"])
    await _served(ctx, out, [], [], {field: value})


_ODD_DIGITS: list[object] = ["\ud800", "\udfff", "", "12", "\u0663", "A" * 1000, "\x00", 5, None]


async def dtmf_odd(ctx: FuzzContext, rng: random.Random, out: Outcome) -> None:
    digit = rng.choice(_ODD_DIGITS)
    frame = json.dumps({"event": "dtmf", "streamSid": "", "dtmf": {"digit": digit}})
    await _served(ctx, out, [], [frame])
    out.label = f"{digit!a:.12} -> {out.label}"


async def dtmf_flood(ctx: FuzzContext, rng: random.Random, out: Outcome) -> None:
    digits = rng.choices("0123456789*#", k=1000)
    frames: list[str | bytes] = [
        json.dumps({"event": "dtmf", "dtmf": {"track": "inbound_track", "digit": d}})
        for d in digits
    ]
    await _served(ctx, out, [], frames)


_ODD_STAMPS: list[object] = [
    "9223372036854775808",
    "18446744073709551616",
    "9" * 400,
    "+5",
    " 5",
    "5 ",
    "\u0663",
    "\uff15",
    "1_000",
    -1,
    "-1",
    1e3,
    1e300,
    True,
    None,
    "",
]


async def media_odd_timestamp(ctx: FuzzContext, rng: random.Random, out: Outcome) -> None:
    stamp = rng.choice(_ODD_STAMPS)
    sid = "MZ" + "0" * 32  # the bridge knows the stream by its socket, not by this
    frames: list[str | bytes] = [media_frame(sid, n) for n in range(2, 5)]
    frames += [media_frame(sid, 5, stamp), media_frame(sid, 6)]
    await _served(ctx, out, [], frames)
    out.label = f"{stamp!a:.12} -> {out.label}"


def _unknown_events(rng: random.Random, count: int) -> list[str | bytes]:
    # Distinct ~60 KB names: whatever the bridge keeps per name, it keeps ~60 KB of.
    pad = "x" * 60_000
    return [json.dumps({"event": rng.randbytes(8).hex() + pad}) for _ in range(count)]


async def unknown_events(ctx: FuzzContext, rng: random.Random, out: Outcome) -> None:
    await _served(ctx, out, _unknown_events(rng, 16), _unknown_events(rng, 16))


async def bad_frame_after_start(ctx: FuzzContext, rng: random.Random, out: Outcome) -> None:
    variant = rng.choice(["malformed", "non-object", "oversized", "binary"])
    await _served(ctx, out, [], [_bad_frame(rng, variant)])
    out.label = f"{variant} -> {out.label}"


async def _raw_served(ctx: FuzzContext, out: Outcome) -> tuple[RawSocket, str, str]:
    answer = await answer_call(ctx, out)
    out.legit_streams = 1
    raw = await RawSocket.upgrade(ctx.target)
    start, stream_sid = start_frame(answer.call_sid, answer.params)
    for text in (connected_frame(), start, media_frame(stream_sid, 1)):
        await raw.send_text(text)
    return raw, stream_sid, answer.call_sid


async def invalid_utf8_after_start(ctx: FuzzContext, rng: random.Random, out: Outcome) -> None:
    raw, stream_sid, call_sid = await _raw_served(ctx, out)
    await raw.send_text(b"\xff\xfe")
    with contextlib.suppress(ConnectionError):
        await raw.send_text(stop_frame(stream_sid, call_sid))
    out.label = await raw.close_code(10.0)
    await raw.close()


async def reset_after_start(ctx: FuzzContext, rng: random.Random, out: Outcome) -> None:
    out.label = "rst in frame"
    raw, stream_sid, _ = await _raw_served(ctx, out)
    frame = ws_frame(0x1, media_frame(stream_sid, 2).encode())
    await raw.send(frame[: rng.randint(1, len(frame) - 1)])
    await asyncio.sleep(rng.uniform(0.0, 0.3))
    await raw.reset()


KINDS: tuple[Kind, ...] = (
    Kind("forged-upgrade", forged_upgrade, False, "upgrade signed wrongly, real token inside"),
    Kind("missing-signature", missing_signature, False, "upgrade with no/empty signature"),
    Kind("idle-no-start", idle_no_start, False, "valid upgrade, then no start"),
    Kind("token-missing", token_missing, False, "start without a token"),
    Kind("token-garbage", token_garbage, False, "start with a malformed token"),
    Kind("token-expired", token_expired, False, "start with a token past its expiry"),
    Kind("token-foreign-call", token_foreign_call, False, "another call's token"),
    Kind("token-replayed", token_replayed, False, "a served stream's token used again"),
    Kind("token-zero-prefixed", token_zero_prefixed, False, 'replay as "0"+T'),
    Kind("token-arabic-digits", token_arabic_digits, False, "replay, expiry in U+0660 digits"),
    Kind("token-fullwidth-digits", token_fullwidth_digits, False, "replay, expiry in U+FF10"),
    Kind("token-non-ascii-mac", token_non_ascii_mac, False, 'T[:-1] + "é" and the like'),
    Kind("start-callsid-surrogate", start_callsid_surrogate, False, 'start.callSid "\\ud800"'),
    Kind("malformed-json", malformed_json, False, "malformed JSON before start"),
    Kind("non-object-json", non_object_json, False, "JSON that is not an object"),
    Kind("oversized-frame", oversized_frame, False, "a text frame over 64 KiB"),
    Kind("binary-frame", binary_frame, False, "a binary frame"),
    Kind("invalid-utf8", invalid_utf8, False, "a text frame of invalid UTF-8 (raw socket)"),
    Kind("invalid-utf8-close", invalid_utf8_with_close, False, "invalid UTF-8 + close, one read"),
    Kind("reset-mid-frame", reset_mid_frame, False, "TCP RST inside the handshake or a frame"),
    Kind("slow-silent", slow_silent, False, "connect and send nothing"),
    Kind("slow-headers", slow_headers, False, "upgrade headers a byte at a time"),
    Kind("webhook-forged", webhook_forged, False, "webhooks with bad signatures"),
    Kind("webhook-control-chars", webhook_control_chars, False, "From/To with \\x00, \\ufffe"),
    Kind("webhook-short-body", webhook_short_body, False, "body short of its Content-Length"),
    Kind("webhook-replayed-call", webhook_replayed_call, False, "2nd stream for a served call"),
    Kind("from-surrogate", from_surrogate, True, "customParameters from/to lone surrogate"),
    Kind("dtmf-odd", dtmf_odd, True, "DTMF digit: lone surrogate, empty, long, int"),
    Kind("dtmf-flood", dtmf_flood, True, "1000 DTMF digits"),
    Kind("media-odd-timestamp", media_odd_timestamp, True, "timestamp 2**63, +5, ٣, 1e3 …"),
    Kind("unknown-events", unknown_events, True, "distinct ~60 KB event names around start"),
    Kind("bad-frame-after-start", bad_frame_after_start, True, "bad JSON/binary/oversized"),
    Kind("invalid-utf8-after-start", invalid_utf8_after_start, True, "invalid UTF-8 mid-call"),
    Kind("reset-after-start", reset_after_start, True, "TCP RST mid-frame during a call"),
)
