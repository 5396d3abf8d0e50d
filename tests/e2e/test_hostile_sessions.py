"""What fuzzing the running bridge found, each reproduced end to end against a real server:
replayed webhooks, text the store cannot hold, TwiML that is not XML, tracebacks a client
can cause, DTMF floods, and a status callback racing the session's own end."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any

import httpx
import websockets

from bridge.codecs.clips import load_clip
from bridge.devtools.fake_records import FakeFaults
from bridge.devtools.fake_script import FakeScript, Reply
from bridge.devtools.simulator import sign, simulate_call

from .conftest import AUTH_TOKEN, REVIEW_TOKEN, RunningBridge, fake_server, provider_env
from .twilio_client import answer_call, media_message, open_media, start_message, stream_sid_of

StartBridge = Callable[[dict[str, str]], RunningBridge]
SILENCE = base64.b64encode(b"\xff" * 160).decode()
REVIEW = {"Authorization": f"Bearer {REVIEW_TOKEN}"}


async def _close_code(ws: websockets.asyncio.client.ClientConnection) -> int | None:
    try:
        while True:
            await asyncio.wait_for(ws.recv(), timeout=10)
    except (websockets.ConnectionClosed, TimeoutError):
        pass
    return ws.close_code


async def _record(bridge: RunningBridge, call_sid: str) -> dict[str, Any] | None:
    async with httpx.AsyncClient(headers=REVIEW) as http:
        for _ in range(100):
            response = await http.get(f"{bridge.url}/api/calls/{call_sid}")
            if response.status_code == 200 and response.json()["status"] != "in_progress":
                data: dict[str, Any] = response.json()
                return data
            await asyncio.sleep(0.1)
    return None


def _log_entries(bridge: RunningBridge) -> list[dict[str, Any]]:
    return [json.loads(line) for line in bridge.log().splitlines() if line.startswith("{")]


def _no_tracebacks(bridge: RunningBridge) -> None:
    assert "Traceback" not in bridge.log()
    assert not [e for e in _log_entries(bridge) if e.get("level") == "error"]


async def _stream(
    bridge: RunningBridge, call_sid: str, params: dict[str, str], stream_url: str, frames: int
) -> tuple[websockets.asyncio.client.ClientConnection, str]:
    ws = await open_media(stream_url)
    start = start_message(call_sid, params)
    await ws.send(start)
    sid = stream_sid_of(start)
    for n in range(1, frames + 1):
        await ws.send(media_message(sid, SILENCE, n))
    return ws, sid


async def _stop(ws: websockets.asyncio.client.ClientConnection, stream_sid: str) -> int | None:
    await ws.send(json.dumps({"event": "stop", "streamSid": stream_sid, "stop": {}}))
    return await _close_code(ws)


async def test_a_replayed_webhook_opens_no_second_stream_on_any_instance(
    bridge_factory: StartBridge, tmp_path: Any
) -> None:
    # Twilio's signatures carry no timestamp: a replayed voice webhook verifies and mints a
    # fresh token for the same CallSid. Before, a second stream was fully served with it.
    shared = {"BRIDGE_DATABASE_URL": f"sqlite:///{tmp_path / 'shared.db'}"}
    async with fake_server("openai") as fake:
        first = bridge_factory(provider_env(fake, "openai", **shared))
        second = bridge_factory(provider_env(fake, "openai", **shared))
        call_sid, stream_url, params = await answer_call(first.url)
        ws, stream_sid = await _stream(first, call_sid, params, stream_url, frames=10)
        await asyncio.sleep(0.5)
        sessions = len(fake.sessions)
        assert sessions == 1

        closes = []
        for bridge in (first, second, first):  # while the call is live, here and elsewhere
            _, replay_url, replay_params = await answer_call(bridge.url, call_sid)
            replay, _ = await _stream(bridge, call_sid, replay_params, replay_url, frames=3)
            closes.append(await _close_code(replay))
        assert await _stop(ws, stream_sid) == 1000
        # ... and after it ended.
        _, replay_url, replay_params = await answer_call(second.url, call_sid)
        replay, _ = await _stream(second, call_sid, replay_params, replay_url, frames=3)
        closes.append(await _close_code(replay))
        await asyncio.sleep(0.3)
        assert len(fake.sessions) == sessions

    assert closes == [1008] * 4
    record = await _record(first, call_sid)
    assert record is not None and record["stream_sid"] == stream_sid
    refusals = [
        e
        for b in (first, second)
        for e in _log_entries(b)
        if e["event"] == "stream.rejected" and "already has a stream" in e.get("reason", "")
    ]
    assert len(refusals) == 4
    _no_tracebacks(first)
    _no_tracebacks(second)


async def test_a_served_call_always_has_its_record_whatever_its_parameters_hold(
    bridge_factory: StartBridge,
) -> None:
    # Before: a lone surrogate in `from` failed every store write; the call was served and
    # its record was 404.
    async with fake_server("openai") as fake:
        bridge = bridge_factory(provider_env(fake, "openai"))
        call_sid, stream_url, params = await answer_call(bridge.url)
        hostile = {**params, "from": "+1555\ud800", "to": "\x00" + "9" * 500}
        ws, stream_sid = await _stream(bridge, call_sid, hostile, stream_url, frames=10)
        assert await _stop(ws, stream_sid) == 1000
        record = await _record(bridge, call_sid)

        # A bad keypress after start ends the call as bad input; it is still recorded.
        call_sid2, stream_url2, params2 = await answer_call(bridge.url)
        ws2, _stream_sid2 = await _stream(bridge, call_sid2, params2, stream_url2, frames=3)
        await ws2.send(json.dumps({"event": "dtmf", "dtmf": {"digit": "\ud800"}}))
        assert await _close_code(ws2) == 1007
        record2 = await _record(bridge, call_sid2)

    assert record is not None
    assert (record["status"], record["end_reason"]) == ("completed", "caller_hangup")
    assert record["from"] == "+1555\ufffd"
    assert record["to"] == "\ufffd" + "9" * 127
    assert record2 is not None and record2["status"] == "failed"
    assert "store.write_failed" not in bridge.log()
    _no_tracebacks(bridge)


async def test_twiml_is_xml_whatever_the_webhook_fields_hold(bridge_factory: StartBridge) -> None:
    bridge = bridge_factory({})
    url = f"{bridge.url}/twilio/voice"
    answers = []
    async with httpx.AsyncClient() as http:
        for odd in ("\x00", "\x0b", "\ufffe", "\x1f\x7f"):
            form = {"CallSid": "CA" + os.urandom(16).hex(), "From": f"+1{odd}555", "To": odd}
            headers = {"X-Twilio-Signature": sign(AUTH_TOKEN, url, form)}
            answers.append(await http.post(url, data=form, headers=headers))
    for answer in answers:
        assert answer.status_code == 200
        root = ET.fromstring(answer.content)  # before: "not well-formed (invalid token)"
        values = {p.get("name"): p.get("value") for p in root.iter("Parameter")}
        assert set(values) == {"from", "to", "token"}
    _no_tracebacks(bridge)


async def test_a_webhook_body_cut_short_is_one_warning_not_a_traceback(
    bridge_factory: StartBridge,
) -> None:
    bridge = bridge_factory({})
    host, port = bridge.url.removeprefix("http://").split(":")
    for _ in range(3):
        _reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            b"POST /twilio/voice HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 500\r\n\r\n"
            b"CallSid=CA123&From=%2B1555"
        )
        await writer.drain()
        writer.close()
        await writer.wait_closed()
    async with httpx.AsyncClient() as http:
        huge = await http.post(f"{bridge.url}/twilio/voice", content=b"a=" + b"x" * 100_000)
        assert huge.status_code == 413
        assert (await http.get(f"{bridge.url}/healthz")).status_code == 200
    await asyncio.sleep(0.5)
    warnings = [e for e in _log_entries(bridge) if e["event"] == "twilio.bad_request"]
    assert 1 <= len(warnings) <= 4
    _no_tracebacks(bridge)


def _masked_frame(opcode: int, payload: bytes) -> bytes:
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    assert len(payload) < 126
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + body


async def test_invalid_utf8_in_a_text_frame_is_1007_and_one_warning(
    bridge_factory: StartBridge,
) -> None:
    # No WebSocket library will send this, so the frame is made by hand.
    bridge = bridge_factory({})
    _, stream_url, _ = await answer_call(bridge.url)
    host, port = bridge.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET /twilio/media HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"X-Twilio-Signature: {sign(AUTH_TOKEN, stream_url, {})}\r\n\r\n"
        ).encode()
    )
    assert b" 101 " in await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    writer.write(_masked_frame(0x1, b'{"event":"\xff\xfe"}'))
    await writer.drain()
    close = await asyncio.wait_for(reader.read(4), 5)
    writer.close()
    assert close[0] == 0x88 and struct.unpack("!H", close[2:4])[0] == 1007
    await asyncio.sleep(0.3)
    assert [e["level"] for e in _log_entries(bridge) if e["event"] == "websocket.invalid_utf8"] == [
        "warning"
    ]
    _no_tracebacks(bridge)


async def test_a_dtmf_flood_is_rate_limited_and_the_socket_closes_at_stop(
    bridge_factory: StartBridge,
) -> None:
    async with fake_server("openai") as fake:
        bridge = bridge_factory(provider_env(fake, "openai"))
        call_sid, stream_url, params = await answer_call(bridge.url)
        ws, stream_sid = await _stream(bridge, call_sid, params, stream_url, frames=5)
        for n in range(1000):
            await ws.send(json.dumps({"event": "dtmf", "dtmf": {"digit": "0123456789"[n % 10]}}))
        sent_stop = time.monotonic()
        assert await _stop(ws, stream_sid) == 1000
        # Before: the socket stayed open ~15 s after `stop` while the digits' writes drained.
        assert time.monotonic() - sent_stop < 8
        record = await _record(bridge, call_sid)
        items = sum(
            1
            for s in fake.sessions
            for e in s.client_events
            if e.get("type") == "conversation.item.create"
        )
    assert record is not None and record["status"] == "completed"
    # Keys pressed within one millisecond share a time, so repeats of a key fold into one
    # event (events are idempotent); each key that got through did reach the model.
    dtmf = [e for e in record["events"] if e["type"] == "dtmf"]
    assert 1 <= len(dtmf) <= items <= 20
    assert "store.writes_lost" not in bridge.log()
    dropped = [e for e in _log_entries(bridge) if e["event"] == "dtmf.dropped"]
    assert len(dropped) == 1 and dropped[0]["count"] == 1000 - items
    _no_tracebacks(bridge)


async def test_the_session_not_the_status_callback_says_why_a_call_ended(
    bridge_factory: StartBridge,
) -> None:
    # The model's socket drops mid-call; Twilio's status callback lands while the bridge is
    # still apologising, before the session has written its end. Before: recorded as
    # completed / caller_hangup about one run in three.
    script = FakeScript(replies=[Reply("Hello there.", duration_ms=500)])
    async with fake_server("openai", script=script, faults=FakeFaults(close_after_ms=800)) as fake:
        bridge = bridge_factory(provider_env(fake, "openai"))
        call_sid, stream_url, params = await answer_call(bridge.url)
        ws, stream_sid = await _stream(bridge, call_sid, params, stream_url, frames=5)
        # Once the first session has opened, the provider is down: the drop cannot be mended
        # by a fresh session, so the caller hears the apology.
        for _ in range(200):
            if fake.sessions:
                break
            await asyncio.sleep(0.01)
        fake.refusing = True
        apology = False
        for n in range(6, 400):  # the caller keeps talking until the apology arrives
            await ws.send(media_message(stream_sid, SILENCE, n))
            try:
                message = json.loads(await asyncio.wait_for(ws.recv(), 0.02))
            except TimeoutError:
                continue
            if message["event"] == "mark" and message["mark"]["name"] == "apology":
                apology = True
                break
        assert apology
        url = f"{bridge.url}/twilio/status"
        form = {"CallSid": call_sid, "CallStatus": "completed", "CallDuration": "3"}
        async with httpx.AsyncClient() as http:
            answer = await http.post(
                url, data=form, headers={"X-Twilio-Signature": sign(AUTH_TOKEN, url, form)}
            )
        assert answer.status_code == 204
        await ws.close()
        record = await _record(bridge, call_sid)
    assert record is not None
    assert (record["status"], record["end_reason"]) == ("failed", "provider_error")
    assert any(e["event"] == "twilio.call_status_left_to_session" for e in _log_entries(bridge))


async def test_a_good_call_goes_on_through_all_of_it(bridge_factory: StartBridge) -> None:
    script = FakeScript(
        replies=[Reply("Still here.", duration_ms=1500)], caller_transcripts=["Hello?"]
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
            )
        )
        await asyncio.sleep(0.5)
        for _ in range(5):
            call_sid, stream_url, params = await answer_call(bridge.url)
            ws = await open_media(stream_url)
            start = start_message(call_sid, params)
            await ws.send(start)
            for n in range(300):
                await ws.send(json.dumps({"event": f"x{n:04d}" + "y" * 2000}))
            await _stop(ws, stream_sid_of(start))
        result = await good
    assert result.call_record is not None and result.call_record["status"] == "completed"
    unknown = [e for e in _log_entries(bridge) if e["event"] == "phone.unknown_event"]
    assert len(unknown) == 5 * 8  # the first few names per stream, not 1,500 lines
    _no_tracebacks(bridge)
