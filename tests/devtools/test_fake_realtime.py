"""The fake realtime server over real sockets, driven by a plain websockets client.

Every test binds 127.0.0.1 on a free port, bounds each receive, and stops the server.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from bridge.codecs import clips
from bridge.devtools import fake_session
from bridge.devtools.fake_realtime import (
    FakeFaults,
    FakeRealtimeServer,
    add_fake_realtime_arguments,
    run_fake_realtime,
)
from bridge.devtools.fake_script import FakeScript, Reply, demo_script, load_script
from bridge.devtools.fake_script import synthesize_voice as voice
from bridge.errors import ConfigurationError

RECV_TIMEOUT = 5.0
SILENCE = b"\xff"  # one mu-law sample of digital silence
REPLY_TEXT = "Sure, I can help with that."
GA_PCMU = {
    "type": "realtime",
    "instructions": "You are a concise phone agent.",
    "audio": {
        "input": {
            "format": {"type": "audio/pcmu"},
            "transcription": {"model": "gpt-4o-mini-transcribe", "language": "en"},
            "turn_detection": {
                "type": "server_vad",
                "silence_duration_ms": 500,
                "create_response": True,
                "interrupt_response": True,
            },
        },
        "output": {"format": {"type": "audio/pcmu"}, "voice": "marin"},
    },
}
BETA_PCM = {
    "modalities": ["text", "audio"],
    "voice": "alloy",
    "input_audio_format": "pcm16",
    "output_audio_format": "pcm16",
    "input_audio_transcription": {"model": "whisper-1"},
    "turn_detection": {"type": "server_vad", "silence_duration_ms": 500},
}
INWORLD_PCMU = {
    "type": "realtime",
    "model": "openai/gpt-4.1-mini",
    "audio": {
        "input": {
            "format": "g711_ulaw",
            "transcription": {"model": "inworld/inworld-stt-1"},
            "turn_detection": {"type": "semantic_vad", "eagerness": "medium"},
        },
        "output": {"format": {"type": "audio/pcmu"}, "voice": "Clive"},
    },
}


def script(*durations_ms: int) -> FakeScript:
    return FakeScript(
        greeting=Reply("Hello, how can I help?", duration_ms=600),
        replies=[Reply(REPLY_TEXT, duration_ms=d) for d in durations_ms],
        caller_transcripts=["I need help with my order."],
    )


class Client:
    """A realtime client as a test needs it: send events, read them back with a bound."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.seen: list[dict[str, Any]] = []

    async def send(self, event: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(event))

    async def recv(self) -> dict[str, Any]:
        async with asyncio.timeout(RECV_TIMEOUT):
            event: dict[str, Any] = json.loads(await self.ws.recv())
        self.seen.append(event)
        return event

    async def until(self, event_type: str) -> list[dict[str, Any]]:
        """Every event up to and including the first of ``event_type``."""
        events = []
        for _ in range(10_000):
            event = await self.recv()
            events.append(event)
            if event["type"] == event_type:
                return events
        raise AssertionError(f"no {event_type}")

    async def append(self, audio: bytes, frame: int = 160) -> None:
        for i in range(0, len(audio), frame):
            chunk = base64.b64encode(audio[i : i + frame]).decode()
            await self.send({"type": "input_audio_buffer.append", "audio": chunk})

    async def configure(self, session: dict[str, Any]) -> dict[str, Any]:
        await self.send({"type": "session.update", "event_id": "evt_cfg", "session": session})
        return (await self.until("session.updated"))[-1]


def caller_turn() -> bytes:
    """0.5 s of silence, 1 s of voice, 1 s of silence, as 8 kHz mu-law."""
    return SILENCE * 4000 + voice(1000, pitch_hz=180.0) + SILENCE * 8000


def types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


def audio_of(events: list[dict[str, Any]], item_id: str | None = None) -> bytes:
    return b"".join(
        base64.b64decode(e["delta"])
        for e in events
        if e["type"] in ("response.output_audio.delta", "response.audio.delta")
        and (item_id is None or e["item_id"] == item_id)
    )


@pytest.fixture
async def ga() -> AsyncIterator[FakeRealtimeServer]:
    async with FakeRealtimeServer("openai", script=script(1000), realtime_factor=50) as server:
        yield server


async def open_client(
    server: FakeRealtimeServer, query: str = "?model=gpt-realtime", **headers: str
) -> Client:
    ws = await connect(server.url + query, additional_headers=headers, open_timeout=5)
    return Client(ws)


# ---------------------------------------------------------------- handshake


async def test_ga_handshake_checks_the_bearer_key_and_greets_with_session_created() -> None:
    async with FakeRealtimeServer("openai", api_key="sk-test") as server:
        for headers in ({"Authorization": "Bearer wrong"}, {}):
            with pytest.raises(InvalidStatus) as rejected:
                await open_client(server, **headers)
            assert rejected.value.response.status_code == 401
        client = await open_client(server, Authorization="Bearer sk-test")
        first = await client.recv()
        assert first["type"] == "session.created"
        assert first["session"]["type"] == "realtime"
        assert first["session"]["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
        await client.ws.close()
    assert len(server.sessions) == 1  # rejected handshakes leave no session
    assert server.sessions[0].query == {"model": "gpt-realtime"}


async def test_ga_refuses_the_beta_header_with_4000() -> None:
    async with FakeRealtimeServer("openai") as server:
        client = await open_client(server, **{"OpenAI-Beta": "realtime=v1"})
        error = await client.recv()
        assert error["type"] == "error"
        assert error["error"]["code"] == "beta_api_shape_disabled"
        with pytest.raises(ConnectionClosed) as closed:
            await client.recv()
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 4000
        assert closed.value.rcvd.reason == "beta_api_shape_disabled"


async def test_beta_needs_its_header_and_speaks_flat_sessions() -> None:
    async with FakeRealtimeServer("openai-beta") as server:
        with pytest.raises(InvalidStatus) as rejected:
            await open_client(server)
        assert rejected.value.response.status_code == 400
        client = await open_client(server, **{"OpenAI-Beta": "realtime=v1"})
        created = await client.recv()
        assert created["session"]["input_audio_format"] == "pcm16"
        assert "audio" not in created["session"]
        await client.ws.close()


async def test_inworld_needs_protocol_realtime_a_key_and_basic_auth() -> None:
    async with FakeRealtimeServer("inworld", api_key="aW53b3JsZA==") as server:
        auth = {"Authorization": "Basic aW53b3JsZA=="}
        for query, headers, status in [
            ("?key=s1", auth, 400),
            ("?protocol=realtime", auth, 400),
            ("?key=s1&protocol=realtime", {"Authorization": "Basic bm9wZQ=="}, 401),
            ("?key=s1&protocol=realtime", {"Authorization": "Bearer aW53b3JsZA=="}, 401),
        ]:
            with pytest.raises(InvalidStatus) as rejected:
                await open_client(server, query, **headers)
            assert rejected.value.response.status_code == status, query
        client = await open_client(server, "?key=s1&protocol=realtime", **auth)
        created = await client.recv()
        assert created["type"] == "session.created"
        assert created["session"]["model"] == "openai/gpt-4.1-mini"
        await client.ws.close()


async def test_reject_auth_fault_answers_401_even_with_the_right_key() -> None:
    faults = FakeFaults(reject_auth=True)
    async with FakeRealtimeServer("openai", api_key="k", faults=faults) as server:
        with pytest.raises(InvalidStatus) as rejected:
            await open_client(server, Authorization="Bearer k")
        assert rejected.value.response.status_code == 401


# ---------------------------------------------------------------- session.update


async def test_ga_rejects_a_beta_shaped_update_whole_and_names_the_param(
    ga: FakeRealtimeServer,
) -> None:
    client = await open_client(ga)
    await client.recv()
    beta_shaped = {"input_audio_format": "g711_ulaw", "output_audio_format": "g711_ulaw"}
    await client.send({"type": "session.update", "event_id": "evt_1", "session": beta_shaped})
    error = (await client.until("error"))[-1]["error"]
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "unknown_parameter"
    assert error["param"] == "session.input_audio_format"
    assert error["event_id"] == "evt_1"

    bad_format = {"type": "realtime", "audio": {"input": {"format": {"type": "g711_ulaw"}}}}
    await client.send({"type": "session.update", "session": bad_format})
    error = (await client.until("error"))[-1]["error"]
    assert (error["code"], error["param"]) == ("invalid_value", "session.audio.input.format.type")

    await client.send({"type": "session.update", "session": {"instructions": "hi"}})
    error = (await client.until("error"))[-1]["error"]
    assert (error["code"], error["param"]) == ("missing_required_parameter", "session.type")

    # None of the rejected updates was applied; a valid one is, with the full config echoed.
    updated = await client.configure(GA_PCMU)
    session = updated["session"]
    assert session["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    assert session["audio"]["output"]["format"] == {"type": "audio/pcmu"}
    assert session["audio"]["input"]["turn_detection"]["silence_duration_ms"] == 500
    assert session["instructions"] == "You are a concise phone agent."
    assert "event_id" not in session
    await client.ws.close()


async def test_refuse_session_sends_an_error_then_closes_1008() -> None:
    faults = FakeFaults(refuse_session=True)
    async with FakeRealtimeServer("openai", faults=faults) as server:
        client = await open_client(server)
        assert (await client.recv())["type"] == "session.created"
        await client.send({"type": "session.update", "session": GA_PCMU})
        assert (await client.recv())["type"] == "error"
        with pytest.raises(ConnectionClosed) as closed:
            await client.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    assert server.sessions[0].closed


async def test_unknown_events_and_bad_json_earn_errors_and_the_session_goes_on(
    ga: FakeRealtimeServer,
) -> None:
    client = await open_client(ga)
    await client.recv()
    await client.ws.send("{not json")
    assert (await client.recv())["type"] == "error"
    await client.send({"type": "response.dance", "event_id": "evt_7"})
    error = (await client.recv())["error"]
    assert (error["code"], error["event_id"]) == ("invalid_value", "evt_7")
    await client.configure(GA_PCMU)  # still alive
    assert [e["type"] for e in ga.sessions[0].client_events] == ["response.dance", "session.update"]
    await client.ws.close()


# ---------------------------------------------------------------- turns


async def test_a_full_ga_turn_follows_the_reference_sequence(ga: FakeRealtimeServer) -> None:
    client = await open_client(ga)
    await client.recv()
    await client.configure(GA_PCMU)
    await client.append(caller_turn())
    events = await client.until("response.done")

    started = events[types(events).index("input_audio_buffer.speech_started")]
    stopped = events[types(events).index("input_audio_buffer.speech_stopped")]
    # Voice from 500 ms, 300 ms of prefix padding; the turn ends after 500 ms of silence.
    assert started["audio_start_ms"] == 200
    assert stopped["audio_end_ms"] == 2000
    assert started["item_id"] == stopped["item_id"]
    user_item = started["item_id"]
    head = [t for t in types(events) if not t.endswith(".delta") or "transcription" in t]
    assert head[:9] == [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "conversation.item.done",
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.completed",
        "response.created",
        "response.output_item.added",
    ]
    assert head[9:] == [
        "conversation.item.added",
        "response.content_part.added",
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.content_part.done",
        "conversation.item.done",
        "response.output_item.done",
        "response.done",
    ]
    completed = events[types(events).index("conversation.item.input_audio_transcription.completed")]
    assert completed["transcript"] == "I need help with my order."
    assert completed["item_id"] == user_item

    done = events[-1]["response"]
    assert done["status"] == "completed"
    assistant = done["output"][0]
    assert assistant["content"] == [{"type": "output_audio", "transcript": REPLY_TEXT}]
    words = [e["delta"] for e in events if e["type"] == "response.output_audio_transcript.delta"]
    assert "".join(words) == REPLY_TEXT
    first_word = types(events).index("response.output_audio_transcript.delta")
    assert first_word < types(events).index("response.output_audio.delta")
    audio = audio_of(events, assistant["id"])
    assert len(audio) == 1000 * 8  # the reply lasts 1000 ms of mu-law
    assert audio == ga.sessions[0].audio_sent[assistant["id"]]
    assert ga.sessions[0].responses == [(done["id"], "completed", None)]
    assert (await client.recv())["type"] == "rate_limits.updated"
    record = ga.sessions[0]
    assert record.appended_bytes == len(caller_turn())
    assert set(record.append_sizes) == {160}
    assert len(record.speech_started_at) == 1
    await client.ws.close()


async def test_answer_deltas_take_the_lengths_asked_for_in_turn() -> None:
    async with FakeRealtimeServer(
        "openai", script=script(1000), realtime_factor=50, delta_ms=(20, 40, 100)
    ) as server:
        client = await open_client(server)
        await client.recv()
        await client.configure(GA_PCMU)
        await client.append(caller_turn())
        events = await client.until("response.done")
        deltas = [
            len(base64.b64decode(e["delta"]))
            for e in events
            if e["type"] == "response.output_audio.delta"
        ]
        # 1000 ms of mu-law in 20, 40 and 100 ms pieces, in turn, the last one short.
        assert deltas[:6] == [160, 320, 800, 160, 320, 800]
        assert sum(deltas) == 1000 * 8
        assert all(size <= 800 for size in deltas)
        await client.ws.close()
    with pytest.raises(ConfigurationError):
        FakeRealtimeServer("openai", delta_ms=())


async def test_a_beta_turn_uses_beta_names_and_24k_pcm() -> None:
    async with FakeRealtimeServer("openai-beta", script=script(700), realtime_factor=50) as server:
        client = await open_client(server, **{"OpenAI-Beta": "realtime=v1"})
        await client.recv()
        updated = await client.configure(BETA_PCM)
        assert updated["session"]["output_audio_format"] == "pcm16"
        pcm = base64.b64decode(_pcm24k_turn())
        await client.append(pcm, frame=960)
        events = await client.until("response.done")
        names = set(types(events))
        assert {"conversation.item.created", "response.audio.delta"} <= names
        assert "conversation.item.added" not in names
        assert "conversation.item.input_audio_transcription.delta" not in names  # whisper-1
        assert len(audio_of(events)) == 700 * 48  # 24 kHz, 16-bit
        assert events[-1]["response"]["output"][0]["content"][0]["type"] == "audio"
        assert events[-1]["response"]["output_audio_format"] == "pcm16"
        await client.ws.close()


def _pcm24k_turn() -> str:
    from bridge.codecs.g711 import ulaw_to_pcm16
    from bridge.codecs.resampler import StreamResampler

    resampler = StreamResampler(8000, 24000)
    pcm = resampler.process(ulaw_to_pcm16(caller_turn())) + resampler.flush()
    return base64.b64encode(pcm[: len(pcm) - len(pcm) % 960]).decode()


async def test_inworld_turn_pings_omits_times_and_has_no_rate_limits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(fake_session, "PING_INTERVAL_S", 0.2)
    async with FakeRealtimeServer("inworld", script=script(500), realtime_factor=50) as server:
        client = await open_client(server, "?key=abc&protocol=realtime")
        await client.recv()
        before = time.time() * 1000
        ping = (await client.until("ping"))[-1]
        assert isinstance(ping["event_id"], str)
        assert abs(ping["timestamp"] - before) < 60_000
        updated = await client.configure(INWORLD_PCMU)
        assert updated["session"]["audio"]["input"]["format"] == {"type": "audio/pcmu"}
        await client.append(caller_turn())
        events = [e for e in await client.until("response.done") if e["type"] != "ping"]
        started = next(e for e in events if e["type"] == "input_audio_buffer.speech_started")
        assert "audio_start_ms" not in started
        usage = events[-1]["response"]["usage"]
        assert set(usage) == {"total_tokens", "input_tokens", "output_tokens"}
        await client.send({"type": "response.cancel"})
        error = (await client.until("error"))[-1]
        assert error["error"]["code"] is None  # Inworld: match on the message
        assert "no active response" in error["error"]["message"]
        assert "rate_limits.updated" not in types(client.seen)
        await client.ws.close()


async def test_late_transcripts_arrive_after_response_done() -> None:
    faults = FakeFaults(late_transcripts=True)
    async with FakeRealtimeServer(
        "openai", script=script(300), faults=faults, realtime_factor=50
    ) as server:
        client = await open_client(server)
        await client.recv()
        await client.configure(GA_PCMU)
        await client.append(caller_turn())
        events = await client.until("conversation.item.input_audio_transcription.completed")
        assert types(events).index("response.done") < len(events) - 1
        await client.ws.close()


async def test_noise_fault_slips_in_pings_rate_limits_and_unknown_events() -> None:
    faults = FakeFaults(noise=True)
    async with FakeRealtimeServer(
        "openai", script=script(500), faults=faults, realtime_factor=50
    ) as server:
        client = await open_client(server)
        await client.recv()
        await client.configure(GA_PCMU)
        await client.append(caller_turn())
        events = await client.until("response.done")
        assert {"ping", "rate_limits.updated", "conversation.vendor_extension"} <= set(
            types(events)
        )
        assert events[-1]["response"]["status"] == "completed"
        await client.ws.close()


# ---------------------------------------------------------------- barge-in and cancel


async def test_speech_during_a_reply_cancels_it_with_turn_detected() -> None:
    async with FakeRealtimeServer(
        "openai", script=script(20_000, 400), realtime_factor=2
    ) as server:
        client = await open_client(server)
        await client.recv()
        await client.configure(GA_PCMU)
        await client.send({"type": "response.create"})
        events = await client.until("response.output_audio.delta")
        item_id = events[-1]["item_id"]
        for _ in range(2):
            await client.until("response.output_audio.delta")
        await client.append(voice(1000) + SILENCE * 8000)
        events = await client.until("response.done")
        cut = types(events).index("input_audio_buffer.speech_started")
        after = events[cut + 1 :]
        assert types(after) == [
            "response.output_audio.done",
            "response.output_audio_transcript.done",
            "response.content_part.done",
            "conversation.item.done",
            "response.output_item.done",
            "response.done",
        ]
        done = events[-1]["response"]
        assert done["status"] == "cancelled"
        assert done["status_details"] == {"type": "cancelled", "reason": "turn_detected"}
        assert done["output"][0]["status"] == "incomplete"
        spoken = "".join(
            e["delta"] for e in client.seen if e["type"] == "response.output_audio_transcript.delta"
        )
        assert done["output"][0]["content"][0]["transcript"] == spoken.rstrip()
        assert len(spoken) < len(REPLY_TEXT)
        # The caller's turn is answered next; the cancelled item never streams again.
        later = await client.until("response.done")
        assert later[-1]["response"]["status"] == "completed"
        assert audio_of(later, item_id) == b""
        heard = audio_of(client.seen, item_id)
        assert 0 < len(heard) < 20_000 * 8
        assert server.sessions[0].audio_sent[item_id] == heard
        assert server.sessions[0].responses[0][1:] == ("cancelled", "turn_detected")
        await client.ws.close()


async def test_response_create_and_cancel_rules() -> None:
    long_greeting = FakeScript(
        greeting=Reply("Hello, and welcome to the shop.", duration_ms=20_000)
    )
    async with FakeRealtimeServer("openai", script=long_greeting, realtime_factor=2) as server:
        await _create_and_cancel(server)


async def _create_and_cancel(server: FakeRealtimeServer) -> None:
    client = await open_client(server)
    await client.recv()
    await client.configure(GA_PCMU)
    greet = {"instructions": "Greet the caller."}
    await client.send({"type": "response.create", "response": greet})
    created = (await client.until("response.created"))[-1]["response"]
    await client.send({"type": "response.create", "event_id": "evt_2"})
    error = (await client.until("error"))[-1]["error"]
    assert (error["code"], error["event_id"]) == (
        "conversation_already_has_active_response",
        "evt_2",
    )
    await client.send({"type": "response.cancel", "response_id": created["id"]})
    done = (await client.until("response.done"))[-1]["response"]
    assert done["status_details"] == {"type": "cancelled", "reason": "client_cancelled"}
    transcript = done["output"][0]["content"][0]["transcript"]
    assert "Hello, and welcome to the shop.".startswith(transcript)
    assert transcript != "Hello, and welcome to the shop."  # the greeting, cut short
    await client.send({"type": "response.cancel"})
    error = (await client.until("error"))[-1]["error"]
    assert error["code"] == "response_cancel_not_active"
    await client.ws.close()


async def test_no_server_cancel_keeps_talking_until_the_client_cancels() -> None:
    faults = FakeFaults(no_server_cancel=True)
    async with FakeRealtimeServer(
        "openai", script=script(20_000), faults=faults, realtime_factor=2
    ) as server:
        client = await open_client(server)
        await client.recv()
        await client.configure(GA_PCMU)
        await client.send({"type": "response.create"})
        item_id = (await client.until("response.output_audio.delta"))[-1]["item_id"]
        await client.append(voice(300))
        await client.until("input_audio_buffer.speech_started")
        more = await client.until("response.output_audio.delta")
        assert more[-1]["item_id"] == item_id
        await client.send({"type": "response.cancel"})
        done = (await client.until("response.done"))[-1]["response"]
        assert done["status_details"]["reason"] == "client_cancelled"
        await client.ws.close()


# ---------------------------------------------------------------- truncate and items


async def test_truncate_is_validated_like_the_real_server(ga: FakeRealtimeServer) -> None:
    client = await open_client(ga)
    await client.recv()
    await client.configure(GA_PCMU)
    await client.send({"type": "response.create"})
    item_id = (await client.until("response.done"))[-1]["response"]["output"][0]["id"]

    async def truncate(target: str, end_ms: int) -> dict[str, Any]:
        event = {"type": "conversation.item.truncate", "item_id": target, "content_index": 0}
        await client.send({**event, "audio_end_ms": end_ms})
        for _ in range(100):
            event = await client.recv()
            if event["type"] in ("error", "conversation.item.truncated"):
                return event
        raise AssertionError("no answer to truncate")

    too_long = await truncate(item_id, 1500)
    assert too_long["error"]["code"] is None
    assert too_long["error"]["message"] == "Audio content of 1000ms is already shorter than 1500ms"
    negative = await truncate(item_id, -11)
    assert negative["error"]["code"] == "integer_below_min_value"
    assert negative["error"]["param"] == "audio_end_ms"
    unknown = await truncate("item_nope", 10)
    assert unknown["error"]["code"] == "item_truncate_invalid_item_id"
    ok = await truncate(item_id, 400)
    assert ok == {**ok, "type": "conversation.item.truncated", "item_id": item_id}
    assert ok["audio_end_ms"] == 400

    await client.send({"type": "conversation.item.retrieve", "item_id": item_id})
    item = (await client.until("conversation.item.retrieved"))[-1]["item"]
    kept = item["content"][0]["transcript"]
    assert kept and REPLY_TEXT.startswith(kept) and kept != REPLY_TEXT

    judged = [(t.audio_end_ms, t.accepted) for t in ga.sessions[0].truncates]
    assert judged == [(1500, False), (-11, False), (10, False), (400, True)]
    await client.ws.close()


async def test_text_items_and_manual_commit(ga: FakeRealtimeServer) -> None:
    client = await open_client(ga)
    await client.recv()
    manual = json.loads(json.dumps(GA_PCMU))
    manual["audio"]["input"]["turn_detection"] = None
    await client.configure(manual)
    text_item = {
        "type": "message",
        "role": "user",
        "content": [{"type": "input_text", "text": "(The caller has just connected.)"}],
    }
    await client.send({"type": "conversation.item.create", "item": text_item})
    added, done = await client.recv(), await client.recv()
    assert (added["type"], done["type"]) == ("conversation.item.added", "conversation.item.done")
    assert done["item"]["content"] == text_item["content"]
    bad = {**text_item, "content": [{"type": "output_audio"}]}
    await client.send({"type": "conversation.item.create", "item": bad})
    assert (await client.recv())["error"]["param"] == "item.content[0].type"

    await client.append(voice(50))
    await client.send({"type": "input_audio_buffer.commit"})
    assert (await client.recv())["error"]["code"] == "input_audio_buffer_commit_empty"
    await client.append(caller_turn())  # no VAD in manual mode: nothing fires
    await client.send({"type": "input_audio_buffer.commit"})
    committed = await client.recv()
    assert committed["type"] == "input_audio_buffer.committed"
    assert committed["previous_item_id"] == done["item"]["id"]
    assert "response.created" not in types(client.seen)
    await client.ws.close()


# ---------------------------------------------------------------- lifecycle and tools


async def test_close_after_ms_drops_the_connection_without_a_close_frame() -> None:
    faults = FakeFaults(close_after_ms=100)
    async with FakeRealtimeServer("openai", faults=faults) as server:
        client = await open_client(server)
        await client.recv()
        with pytest.raises(ConnectionClosed) as closed:
            await client.recv()
        assert closed.value.rcvd is None  # abrupt: no close frame


@pytest.mark.parametrize("how", ["1011", "reset"])
async def test_drop_after_transcript_fails_the_next_session_before_it_answers(
    ga: FakeRealtimeServer, how: str
) -> None:
    ga.drop_after_transcript = how
    client = await open_client(ga)
    await client.recv()
    assert ga.drop_after_transcript is None  # one shot: the session took it
    await client.configure(GA_PCMU)
    await client.append(caller_turn())
    events = await client.until("conversation.item.input_audio_transcription.completed")
    with pytest.raises(ConnectionClosed) as closed:
        await client.recv()
    frame = closed.value.rcvd
    if how == "reset":
        assert frame is None  # abrupt: no close frame
    else:
        assert frame is not None and frame.code == 1011
    assert "response.created" not in types(events)
    assert ga.sessions[0].responses == []
    # The next session answers as usual.
    client = await open_client(ga)
    await client.recv()
    await client.configure(GA_PCMU)
    await client.append(caller_turn())
    assert (await client.until("response.done"))[-1]["response"]["status"] == "completed"
    await client.ws.close()


async def test_stop_closes_live_connections() -> None:
    server = FakeRealtimeServer("openai", script=script(60_000), realtime_factor=1)
    await server.start()
    client = await open_client(server)
    await client.recv()
    await client.configure(GA_PCMU)
    await client.send({"type": "response.create"})
    await client.until("response.output_audio.delta")
    await server.stop()
    with pytest.raises(ConnectionClosed):
        for _ in range(10_000):
            await client.recv()
    assert server.sessions[0].closed


def test_scripts_load_from_json_and_fall_back_when_exhausted(tmp_path: Path) -> None:
    path = tmp_path / "script.json"
    path.write_text(
        json.dumps(
            {
                "greeting": {"text": "Hi there.", "duration_ms": 400},
                "replies": ["First answer."],
                "caller_transcripts": ["Hello?"],
            }
        )
    )
    loaded = load_script(path)
    assert loaded.greeting is not None and len(loaded.greeting.render()) == 400 * 8
    assert loaded.reply(0).text == "First answer."
    assert loaded.reply(1).text != "First answer."  # the generic reply
    assert loaded.caller_transcript(1) == "Hello?"
    assert loaded.caller_transcript(2) == "(caller turn 2)"
    assert len(Reply("abcdefghij").render()) == 8 * max(300, 70 * 10)


def test_demo_script_uses_the_shipped_clips() -> None:
    demo = demo_script()
    assert demo.greeting is not None
    assert demo.greeting.audio == clips.load_clip("demo_greeting")
    assert [r.text for r in demo.replies] == [clips.clip_text(f"demo_reply_{n}") for n in (1, 2, 3)]
    assert demo.caller_transcripts[0] == clips.clip_text("caller_1")


async def _printed_url(capsys: pytest.CaptureFixture[str]) -> str:
    """What ``bridge fake-realtime`` printed once it listens: its URL (bounded wait)."""
    for _ in range(200):
        if url := capsys.readouterr().out.strip():
            return url
        await asyncio.sleep(0.02)
    return ""


async def test_cli_prints_its_url_and_serves_until_cancelled(
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = argparse.ArgumentParser()
    add_fake_realtime_arguments(parser)
    args = parser.parse_args(["--dialect", "openai-beta", "--fault", "noise", "--api-key", "k"])
    task = asyncio.create_task(run_fake_realtime(args))
    try:
        url = await _printed_url(capsys)
        assert url.startswith("ws://127.0.0.1:")
        headers = {"Authorization": "Bearer k", "OpenAI-Beta": "realtime=v1"}
        async with connect(url, additional_headers=headers, open_timeout=5) as ws:
            async with asyncio.timeout(RECV_TIMEOUT):
                assert json.loads(await ws.recv())["type"] == "session.created"
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_cli_session_limit_ends_each_session_as_openai_does(
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = argparse.ArgumentParser()
    add_fake_realtime_arguments(parser)
    args = parser.parse_args(["--session-limit-s", "0.3"])
    task = asyncio.create_task(run_fake_realtime(args))
    try:
        url = await _printed_url(capsys)
        async with connect(url, open_timeout=5) as ws:
            async with asyncio.timeout(RECV_TIMEOUT):
                created = json.loads(await ws.recv())
                assert created["type"] == "session.created"
                error = json.loads(await ws.recv())
                assert error["type"] == "error" and error["error"]["code"] == "session_expired"
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
