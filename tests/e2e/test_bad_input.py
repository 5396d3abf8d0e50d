"""Bad input on one media socket closes that call alone, with a fitting close code and one
warning line bound to its call SID; a good call running alongside goes on unharmed."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable

import httpx
import websockets

from bridge.codecs.clips import load_clip
from bridge.devtools.fake_script import FakeScript, Reply
from bridge.devtools.simulator import simulate_call

from .conftest import AUTH_TOKEN, REVIEW_TOKEN, RunningBridge, fake_server, provider_env
from .twilio_client import answer_call, media_message, open_media, start_message, stream_sid_of

StartBridge = Callable[[dict[str, str]], RunningBridge]
SILENCE = base64.b64encode(b"\xff" * 160).decode()


async def _close_code(ws: websockets.asyncio.client.ClientConnection) -> int | None:
    try:
        while True:
            await asyncio.wait_for(ws.recv(), timeout=5)
    except (websockets.ConnectionClosed, TimeoutError):
        pass
    return ws.close_code


async def _bad_call(
    base_url: str, frames: list[str | bytes], *, started: bool
) -> tuple[str, int | None]:
    call_sid, stream_url, parameters = await answer_call(base_url)
    ws = await open_media(stream_url)
    await ws.send('{"event":"connected","protocol":"Call","version":"1.0.0"}')
    if started:
        start = start_message(call_sid, parameters)
        await ws.send(start)
        await ws.send(media_message(stream_sid_of(start), SILENCE))
    for frame in frames:
        await ws.send(frame)
    return call_sid, await _close_code(ws)


async def test_each_bad_input_closes_only_its_own_call(bridge_factory: StartBridge) -> None:
    script = FakeScript(
        replies=[Reply("I am still here and talking to you.", duration_ms=2500)],
        caller_transcripts=["Are you there?"],
    )
    async with fake_server("openai", script=script) as fake:
        bridge = bridge_factory(provider_env(fake, "openai"))
        good = asyncio.create_task(
            simulate_call(
                bridge.url,
                auth_token=AUTH_TOKEN,
                review_token=REVIEW_TOKEN,
                caller_utterances=[load_clip("caller_1")],
                max_duration_s=30,
                initial_silence_s=1.0,
            )
        )
        await asyncio.sleep(0.5)
        sid = "MZ" + "1" * 32
        cases = {
            "malformed json": (["{not json"], False, 1007),
            "binary frame": ([b"\x00\x01\x02"], False, 1003),
            "media before start": ([media_message(sid, SILENCE)], False, 1002),
            "invalid base64": ([media_message(sid, "***not base64***")], True, 1007),
            "frame over 64 KiB": (
                [json.dumps({"event": "media", "pad": "x" * 70_000})],
                True,
                1009,
            ),
        }
        closes: dict[str, int | None] = {}
        sids: dict[str, str] = {}
        for name, (frames, started, _) in cases.items():
            sids[name], closes[name] = await _bad_call(bridge.url, frames, started=started)
        # An unknown event is not an error: protocols grow. The call goes on until `stop`.
        call_sid, stream_url, parameters = await answer_call(bridge.url)
        ws = await open_media(stream_url)
        start = start_message(call_sid, parameters)
        await ws.send(start)
        await ws.send(json.dumps({"event": "someday_new", "streamSid": stream_sid_of(start)}))
        await ws.send(media_message(stream_sid_of(start), SILENCE))
        await asyncio.sleep(0.3)
        assert ws.close_code is None
        await ws.send(json.dumps({"event": "stop", "streamSid": stream_sid_of(start), "stop": {}}))
        unknown_close = await _close_code(ws)

        result = await good
        async with httpx.AsyncClient() as http:
            health = await http.get(f"{bridge.url}/healthz")

    assert closes == {name: code for name, (_, _, code) in cases.items()}
    assert unknown_close == 1000
    assert health.status_code == 200
    record = result.call_record
    assert record is not None and record["status"] == "completed"
    assert [t["text"] for t in record["turns"]] == [
        "Are you there?",
        "I am still here and talking to you.",
    ]

    lines = [json.loads(line) for line in bridge.log().splitlines() if line.startswith("{")]
    warnings = [entry for entry in lines if entry.get("level") == "warning"]
    for name in ("invalid base64", "frame over 64 KiB"):
        mine = [w for w in warnings if w.get("call_sid") == sids[name]]
        assert len(mine) == 1 and mine[0]["event"] == "twilio.bad_input", name
    bad = [w for w in warnings if w["event"] == "twilio.bad_input"]
    assert len(bad) == len(cases)
    assert not any("Traceback" in line for line in bridge.log().splitlines())
    assert SILENCE not in bridge.log()  # no audio payloads in the logs


async def test_a_silent_phone_leg_times_out_and_frees_the_model(
    bridge_factory: StartBridge,
) -> None:
    async with fake_server("openai") as fake:
        bridge = bridge_factory(provider_env(fake, "openai", BRIDGE_IDLE_TIMEOUT_S="1.5"))
        call_sid, stream_url, parameters = await answer_call(bridge.url)
        ws = await open_media(stream_url)
        start = start_message(call_sid, parameters)
        await ws.send(start)
        await ws.send(media_message(stream_sid_of(start), SILENCE))
        # ... and then nothing, as when a network path dies without a close.
        assert await _close_code(ws) == 1000
        for _ in range(40):
            if fake.sessions and fake.sessions[0].closed:
                break
            await asyncio.sleep(0.1)
        assert fake.sessions[0].closed
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {REVIEW_TOKEN}"}) as http:
            record = (await http.get(f"{bridge.url}/api/calls/{call_sid}")).json()
    assert (record["status"], record["end_reason"]) == ("completed", "timeout")
