"""Hostile sessions of ``bridge fuzz`` aimed at the media socket's door: the upgrade's
signature and the per-call stream token, including replays of a token (or of the voice
webhook) after a first stream was served. Every one of them must be refused before any
model session is opened; the original streams a replay needs count in
``Outcome.legit_streams``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable

from websockets.exceptions import ConnectionClosed, InvalidStatus

from bridge.devtools.fuzz_wire import (
    Answer,
    FuzzContext,
    Outcome,
    answer_call,
    await_close,
    connected_frame,
    expect_refused,
    open_media,
    serve_stream,
    start_frame,
    stop_frame,
)
from bridge.devtools.simulator import sign
from bridge.protocols.stream_token import mint_stream_token


async def _upgrade_with(ctx: FuzzContext, out: Outcome, signature: str | None) -> None:
    # A real token rides along: if the forged upgrade got through, this start would cost a
    # model session, and the phase's session count shows it.
    answer = await answer_call(ctx, out)
    try:
        ws = await open_media(ctx, answer.stream_url, signature)
    except InvalidStatus as exc:
        out.label = str(exc.response.status_code)
        if exc.response.status_code != 403:
            out.notes.append(f"upgrade refused with {exc.response.status_code}, not 403")
        return
    out.notes.append("upgrade with a bad signature was accepted")
    await ws.send(connected_frame())
    await ws.send(start_frame(answer.call_sid, answer.params)[0])
    await expect_refused(ws, out)


async def forged_upgrade(ctx: FuzzContext, rng: random.Random, out: Outcome) -> None:
    url = ctx.target.media_url
    signature = rng.choice(
        [
            "AAAA",
            "=" * 28,
            sign("not-the-auth-token", url, {}),
            sign(ctx.target.auth_token, url + "/other", {}),
            sign(ctx.target.auth_token, url, {"x": "1"}),
        ]
    )
    await _upgrade_with(ctx, out, signature)


async def missing_signature(ctx: FuzzContext, rng: random.Random, out: Outcome) -> None:
    await _upgrade_with(ctx, out, rng.choice([None, ""]))


async def idle_no_start(ctx: FuzzContext, rng: random.Random, out: Outcome) -> None:
    ws = await open_media(ctx)
    if rng.random() < 0.5:
        await ws.send(connected_frame())
    out.label, _ = await await_close(ws, ctx.hold_s)


async def _start_refused(
    ctx: FuzzContext, answer: Answer, params: object, out: Outcome, call_sid: object = None
) -> None:
    ws = await open_media(ctx, answer.stream_url)
    await ws.send(connected_frame())
    await ws.send(start_frame(answer.call_sid if call_sid is None else call_sid, params)[0])
    await expect_refused(ws, out)


async def token_missing(ctx: FuzzContext, rng: random.Random, out: Outcome) -> None:
    answer = await answer_call(ctx, out)
    params = {k: v for k, v in answer.params.items() if k != "token"}
    await _start_refused(ctx, answer, params, out)


async def token_garbage(ctx: FuzzContext, rng: random.Random, out: Outcome) -> None:
    answer = await answer_call(ctx, out)
    token = rng.choice(
        ["", ".", "123.abc", "abc", "1.", "-5.AAAA", "9" * 40 + ".AAAA", "x" * 500, "1.2.3"]
    )
    await _start_refused(ctx, answer, {**answer.params, "token": token}, out)


async def token_expired(ctx: FuzzContext, rng: random.Random, out: Outcome) -> None:
    answer = await answer_call(ctx, out)
    minted_at = time.time() - rng.randint(600, 86_400)
    token = mint_stream_token(ctx.target.stream_secret, answer.call_sid, minted_at)
    await _start_refused(ctx, answer, {**answer.params, "token": token}, out)


async def token_foreign_call(ctx: FuzzContext, rng: random.Random, out: Outcome) -> None:
    answer = await answer_call(ctx, out)
    other = await answer_call(ctx, out)
    await _start_refused(ctx, answer, {**answer.params, "token": other.params["token"]}, out)


async def _replay(
    ctx: FuzzContext, rng: random.Random, out: Outcome, mutate: Callable[[str], str] | None
) -> None:
    """Serve one valid stream with token T, then start a second with T (or a rewrite of T
    that still names the same call and expiry): that second stream must be refused."""
    answer = await answer_call(ctx, out)
    token = answer.params["token"]
    concurrent = mutate is None and rng.random() < 0.5
    out.legit_streams = 1
    first = await serve_stream(ctx, answer, token, keep_open=concurrent)
    if first is None:
        out.notes.append("the original stream was not served")
    replay = token if mutate is None else mutate(token)
    await _start_refused(ctx, answer, {**answer.params, "token": replay}, out)
    if first is not None and concurrent:
        ws, stream_sid, call_sid = first
        with contextlib.suppress(ConnectionClosed):
            await ws.send(stop_frame(stream_sid, call_sid))
        await await_close(ws)


def _translate_expiry(token: str, zero: int) -> str:
    expiry, dot, mac = token.partition(".")
    return "".join(chr(zero + int(d)) if d.isascii() else d for d in expiry) + dot + mac


async def token_replayed(ctx: FuzzContext, rng: random.Random, out: Outcome) -> None:
    await _replay(ctx, rng, out, None)


async def token_zero_prefixed(ctx: FuzzContext, rng: random.Random, out: Outcome) -> None:
    await _replay(ctx, rng, out, lambda t: "0" * rng.randint(1, 3) + t)


async def token_arabic_digits(ctx: FuzzContext, rng: random.Random, out: Outcome) -> None:
    await _replay(ctx, rng, out, lambda t: _translate_expiry(t, 0x0660))


async def token_fullwidth_digits(ctx: FuzzContext, rng: random.Random, out: Outcome) -> None:
    await _replay(ctx, rng, out, lambda t: _translate_expiry(t, 0xFF10))


async def token_non_ascii_mac(ctx: FuzzContext, rng: random.Random, out: Outcome) -> None:
    answer = await answer_call(ctx, out)
    token = answer.params["token"][:-1] + rng.choice(["é", "\u0663", "\u2603", "\U0001f600"])
    await _start_refused(ctx, answer, {**answer.params, "token": token}, out)


async def start_callsid_surrogate(ctx: FuzzContext, rng: random.Random, out: Outcome) -> None:
    answer = await answer_call(ctx, out)
    call_sid = rng.choice(["\ud800", "\udfff", answer.call_sid + "\ud800", "CA\udc00"])
    await _start_refused(ctx, answer, answer.params, out, call_sid=call_sid)


async def webhook_replayed_call(ctx: FuzzContext, rng: random.Random, out: Outcome) -> None:
    """A signed voice webhook replayed for a call already served mints a fresh token; a
    second stream for that CallSid must still be refused (Twilio opens one per call)."""
    answer = await answer_call(ctx, out)
    out.legit_streams = 1
    if await serve_stream(ctx, answer, answer.params["token"]) is None:
        out.notes.append("the original stream was not served")
    again = await answer_call(ctx, out, call_sid=answer.call_sid)
    for _ in range(3):
        if again.params.get("token") != answer.params["token"]:
            break
        # Minted within the same second, the token can come out identical and so already
        # spent: that is token-replayed's case. This kind needs a genuinely fresh one.
        await asyncio.sleep(1.0)
        again = await answer_call(ctx, out, call_sid=answer.call_sid)
    else:
        out.notes.append("the replayed webhook never minted a fresh token")
    await _start_refused(ctx, again, again.params, out)
