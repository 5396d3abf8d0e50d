"""The call simulator: its pure parts, and whole calls against a tiny fake bridge on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from twilio.request_validator import RequestValidator

from bridge.devtools.playout import SILENCE_FRAME, CallerScript, PlayTick
from bridge.devtools.simulator import (
    CallRefused,
    SimulationError,
    SimulationResult,
    _reachable_url,
    _Stream,
    _tls_context,
    format_transcript,
    parse_twiml,
    sign,
    simulate_call,
)
from bridge.protocols.twilio import (
    DtmfReceived,
    MarkPlayed,
    MediaReceived,
    StreamStarted,
    StreamState,
    StreamStopped,
    TwilioMediaStream,
)

TOKEN = "12345"

# ------------------------------------------------------------ signatures, TwiML


def test_signatures_match_the_reference_vectors() -> None:
    assert sign(TOKEN, "wss://bridge.example.com/twilio/media", {}) == (
        "hGVJmeOLwZmJhPeWsyRDIvgH8Zc="
    )
    params = {
        "AccountSid": "AC0123456789abcdef0123456789abcdef",
        "CallSid": "CA1234567890ABCDE",
        "From": "+15551230000",
        "To": "+15557650000",
    }
    assert sign(TOKEN, "https://bridge.example.com/twilio/voice", params) == (
        "sZu/jNb5b/Dh1mN7uI4tjkEa1PY="
    )
    published = {
        "CallSid": "CA1234567890ABCDE",
        "Caller": "+12349013030",
        "Digits": "1234",
        "From": "+12349013030",
        "To": "+18005551212",
    }
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    assert sign(TOKEN, url, published) == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="


REFERENCE_TWIML = """<?xml version="1.0" encoding="UTF-8"?>
<Response>
  <Connect>
    <Stream url="wss://bridge.example.com/twilio/media"
            statusCallback="https://bridge.example.com/twilio/stream-status"
            statusCallbackMethod="POST">
      <Parameter name="from" value="+15551230000"/>
      <Parameter name="to" value="+15557650000"/>
      <Parameter name="token" value="3q2-7wVf0yY8kQeS"/>
    </Stream>
  </Connect>
</Response>
"""


def test_parse_reference_twiml() -> None:
    url, params = parse_twiml(REFERENCE_TWIML)
    assert url == "wss://bridge.example.com/twilio/media"
    assert params == {"from": "+15551230000", "to": "+15557650000", "token": "3q2-7wVf0yY8kQeS"}


def test_parse_twiml_unescapes_values() -> None:
    text = (
        '<Response><Connect><Stream url="wss://h/twilio/media?a=1&amp;b=2">'
        '<Parameter name="q" value="&lt;&quot;&amp;&gt;"/></Stream></Connect></Response>'
    )
    assert parse_twiml(text) == ("wss://h/twilio/media?a=1&b=2", {"q": '<"&>'})


@pytest.mark.parametrize(
    "text",
    [
        "not xml",
        "<Response><Say>hello</Say></Response>",
        "<Response><Start><Stream url='wss://h/x'/></Start></Response>",
        "<Response><Connect><Stream/></Connect></Response>",
        "<Other><Connect><Stream url='wss://h/x'/></Connect></Other>",
    ],
)
def test_parse_twiml_without_a_connect_stream_fails(text: str) -> None:
    with pytest.raises(SimulationError):
        parse_twiml(text)


def test_stream_url_is_reached_through_base_url() -> None:
    public = "https://bridge.example.com"
    base = "http://127.0.0.1:9000"
    media = "wss://bridge.example.com/twilio/media"
    assert _reachable_url(media, base, public) == "ws://127.0.0.1:9000/twilio/media"
    assert _reachable_url("/twilio/media", base, public) == "ws://127.0.0.1:9000/twilio/media"
    same = "ws://127.0.0.1:9000/twilio/media"
    assert _reachable_url(same, base, base) == same
    # A stream URL on another host still goes to the bridge under test.
    assert _reachable_url("wss://other/twilio/media", base, base) == same


# ------------------------------------------------------------ the caller script

QUIET = PlayTick(SILENCE_FRAME, 0, ())
AGENT = PlayTick(b"\x10" * 160, 160, ())


def run(script: CallerScript, ticks: list[PlayTick]) -> list[Any]:
    return [script.step(t) for t in ticks]


def test_script_waits_for_silence_then_talks_then_waits_for_the_reply() -> None:
    speech = b"\x01" * 400  # 2.5 frames
    script = CallerScript([speech, b"\x02" * 160], reply_silence_s=0.1, initial_silence_s=0.1)
    # A greeting plays: the caller keeps quiet until it has been silent for 0.1 s.
    steps = run(script, [QUIET, AGENT, AGENT] + [QUIET] * 5)
    assert [s.audio for s in steps[:7]] == [SILENCE_FRAME] * 7
    assert steps[7].audio == b"\x01" * 160
    steps = run(script, [QUIET, QUIET])
    assert steps[0].audio == b"\x01" * 160
    assert steps[1].audio == b"\x01" * 80 + b"\xff" * 80
    # No reply yet: the caller waits as long as it takes.
    assert all(s.audio == SILENCE_FRAME for s in run(script, [QUIET] * 50))
    steps = run(script, [AGENT, AGENT, QUIET, QUIET, QUIET, QUIET, QUIET, QUIET])
    assert [s.audio for s in steps[:6]] == [SILENCE_FRAME] * 6
    assert steps[6].audio == b"\x02" * 160  # after 5 quiet ticks = 0.1 s
    assert not script.done
    run(script, [QUIET, AGENT, QUIET, QUIET, QUIET, QUIET])
    assert not script.done
    run(script, [QUIET])
    assert script.done


def test_script_counts_an_utterance_on_the_step_of_its_last_frame() -> None:
    script = CallerScript([b"\x01" * 400, b"\x02" * 160], reply_silence_s=0.02)
    ends: list[bytes] = []
    for tick in [QUIET] * 30 + [AGENT, QUIET, QUIET]:
        said = script.utterances_said
        step = script.step(tick)
        if script.utterances_said > said:
            ends.append(step.audio)
        assert script.utterances_said == len(ends)
    # Each count came with the utterance's last frame: the third of 2.5 frames (padded),
    # then the one-frame second utterance once the reply had played.
    assert ends == [b"\x01" * 80 + b"\xff" * 80, b"\x02" * 160]
    assert not script.done


def test_script_barges_in_on_the_first_reply_only() -> None:
    script = CallerScript(
        [b"\x01" * 160, b"\x02" * 320, b"\x03" * 160],
        barge_in_at=0.1,
        reply_silence_s=0.04,
        initial_silence_s=0.0,
    )
    assert script.step(QUIET).audio == b"\x01" * 160
    steps = run(script, [AGENT] * 5)
    assert [s.barge_in_ms for s in steps] == [None, None, None, None, 100.0]
    assert steps[4].audio == b"\x02" * 160  # talking over the agent
    assert script.step(AGENT).audio == b"\x02" * 160
    # The second reply is not interrupted, however long it is.
    steps = run(script, [AGENT] * 20 + [QUIET])
    assert all(s.barge_in_ms is None and s.audio == SILENCE_FRAME for s in steps)
    assert script.step(QUIET).audio == b"\x03" * 160


def test_barge_in_with_one_utterance_repeats_it() -> None:
    script = CallerScript([b"\x01" * 160], barge_in_at=0.02, initial_silence_s=0.0)
    script.step(QUIET)
    step = script.step(AGENT)
    assert step.barge_in_ms == 20.0
    assert step.audio == b"\x01" * 160


def test_short_reply_disarms_the_barge_in() -> None:
    script = CallerScript(
        [b"\x01" * 160, b"\x02" * 160, b"\x03" * 160],
        barge_in_at=1.0,
        reply_silence_s=0.02,
        initial_silence_s=0.0,
    )
    script.step(QUIET)
    steps = run(script, [AGENT, QUIET])  # a 20 ms reply, then the quiet spell
    assert steps[-1].audio == b"\x02" * 160 and steps[-1].barge_in_ms is None
    steps = run(script, [AGENT] * 60)
    assert all(s.barge_in_ms is None for s in steps)


def test_digits_follow_the_first_reply_200_ms_apart() -> None:
    script = CallerScript(
        [b"\x01" * 160, b"\x02" * 160],
        digits=["1", "#"],
        reply_silence_s=0.02,
        initial_silence_s=0.0,
    )
    script.step(QUIET)
    steps = run(script, [AGENT, QUIET] + [QUIET] * 11)
    keyed = [(i, s.digits) for i, s in enumerate(steps) if s.digits]
    assert keyed == [(2, ("1",)), (12, ("#",))]
    assert all(s.audio == SILENCE_FRAME for s in steps)
    # After the last digit, another quiet spell, then the next utterance.
    assert script.step(QUIET).audio == b"\x02" * 160


def test_no_utterances_ends_after_the_opening_silence() -> None:
    script = CallerScript([], initial_silence_s=0.04)
    run(script, [QUIET])
    assert not script.done
    run(script, [QUIET])
    assert script.done


# ------------------------------------------------------------ transcript


def test_what_was_heard_counts_the_tick_under_way_as_far_as_the_clock_has_got() -> None:
    # A tick plays the 20 ms after it: a clear 5 ms into one cuts it after 5 ms.
    stream = _Stream(None, SimulationResult("CA1", "MZ1", {}), "AC1")  # type: ignore[arg-type]
    assert stream.heard_ms(0.0) == 0.0
    stream.playout.push_media(b"\x21" * 8 * 70)  # 70 ms of answer
    assert stream.heard_ms(0.001) == 0.0  # it arrived after the last tick
    stream.tick(10.0)
    assert stream.heard_ms(10.0) == 0.0
    assert stream.heard_ms(10.005) == pytest.approx(5.0)
    stream.tick(10.02)
    stream.tick(10.04)
    assert stream.heard_ms(10.043) == pytest.approx(43.0)
    # A late tick still plays only 20 ms: the caller has heard no more than that.
    assert stream.heard_ms(10.09) == pytest.approx(60.0)
    # The last 10 ms run dry half-way through the tick, and the segment ends there.
    stream.tick(10.06)
    assert stream.heard_ms(10.065) == pytest.approx(65.0)
    assert stream.heard_ms(10.075) == pytest.approx(70.0)
    stream.tick(10.08)
    assert stream.heard_ms(10.5) == pytest.approx(70.0)
    # A new answer starts a new count.
    stream.playout.push_media(b"\x22" * 8 * 40)
    assert stream.heard_ms(10.51) == 0.0
    stream.tick(10.52)
    assert stream.heard_ms(10.53) == pytest.approx(10.0)


def test_format_transcript() -> None:
    record = {
        "turns": [
            {"seq": 1, "role": "caller", "text": "Hi, a table please.", "start_ms": 1020},
            {
                "seq": 2,
                "role": "agent",
                "text": "Sure! For how many people",
                "start_ms": 3100,
                "end_ms": 4900,
                "interrupted": True,
                "full_text": "Sure! For how many people, and at what time?",
            },
            {"seq": 3, "role": "agent", "text": "Four.", "start_ms": 12000, "interrupted": False},
        ],
        "events": [
            {"type": "barge_in", "at_ms": 4900},
            {"type": "dtmf", "at_ms": 8000, "digit": "1"},
        ],
    }
    assert format_transcript(record).splitlines() == [
        "[  1.02s] caller: Hi, a table please.",
        "[  3.10s] agent: Sure! For how many people"
        '  [interrupted; full reply: "Sure! For how many people, and at what time?"]',
        "[  4.90s] * barge_in",
        "[  8.00s] * dtmf (digit=1)",
        "[ 12.00s] agent: Four.",
    ]
    assert format_transcript({"turns": [], "events": []}) == ""


# ------------------------------------------------------------ against a fake bridge

REPLY_FRAMES = 30  # 600 ms per reply
GREETING_FRAMES = 10


@dataclass
class FakeBridge:
    """Just enough of a bridge: answers the webhook, speaks a reply after each caller
    utterance (one 20 ms media + mark each), clears when the caller talks over it."""

    token: str | None
    base: str = ""
    greeting: bool = False
    close_with: int | None = None
    signatures_ok: list[str] = field(default_factory=list)
    started: list[StreamStarted] = field(default_factory=list)
    inbound: list[dict[str, Any]] = field(default_factory=list)
    caller_audio: list[bytes] = field(default_factory=list)
    echoes: list[str] = field(default_factory=list)
    digits: list[str] = field(default_factory=list)
    sent_marks: list[str] = field(default_factory=list)
    clears: int = 0
    stopped: bool = False
    statuses: list[str] = field(default_factory=list)
    # Turning callers away as a busy bridge does: ``redirect`` sends the first landing back
    # with ``?busy=1``; ``refuse`` then says so and hangs up instead of connecting.
    redirect: bool = False
    refuse: bool = False

    def _check(self, kind: str, url: str, params: dict[str, str], signature: str | None) -> bool:
        ok = self.token is None or RequestValidator(self.token).validate(
            url, params, signature or ""
        )
        if ok:
            self.signatures_ok.append(kind)
        return ok

    async def voice(self, request: Request) -> Response:
        form = {k: str(v) for k, v in (await request.form()).items()}
        sig = request.headers.get("x-twilio-signature")
        query = request.url.query
        url = self.base + "/twilio/voice" + (f"?{query}" if query else "")
        if not self._check("voice", url, form, sig):
            return Response(status_code=403)
        if self.redirect and "busy=1" not in query:
            twiml = f'<Response><Redirect method="POST">{url}?busy=1</Redirect></Response>'
            return Response(twiml, media_type="text/xml")
        if self.refuse:
            twiml = "<Response><Say>All our lines are busy.</Say><Hangup/></Response>"
            return Response(twiml, media_type="text/xml")
        twiml = (
            f'<Response><Connect><Stream url="{self._ws()}/twilio/media">'
            f'<Parameter name="from" value="{form["From"]}"/>'
            '<Parameter name="token" value="t&amp;k"/></Stream></Connect></Response>'
        )
        return Response(twiml, media_type="text/xml")

    def _ws(self) -> str:
        return "ws" + self.base.removeprefix("http")

    async def status(self, request: Request) -> Response:
        form = {k: str(v) for k, v in (await request.form()).items()}
        sig = request.headers.get("x-twilio-signature")
        if not self._check("status", self.base + "/twilio/status", form, sig):
            return Response(status_code=403)
        self.statuses.append(form["CallStatus"])
        return Response(status_code=204)

    async def record(self, request: Request) -> Response:
        if request.headers.get("authorization") != "Bearer review":
            return Response(status_code=401)
        return JSONResponse(
            {"call_sid": request.path_params["sid"], "status": "completed", "turns": []}
        )

    async def media(self, ws: WebSocket) -> None:
        sig = ws.headers.get("x-twilio-signature")
        if not self._check("media", self._ws() + "/twilio/media", {}, sig):
            await ws.close(1008)
            return
        await ws.accept()
        stream = TwilioMediaStream()
        speaking, quiet, turn, pending = False, 0, 0, set[str]()
        try:
            while stream.state is not StreamState.STOPPED:
                text = await ws.receive_text()
                self.inbound.append(json.loads(text))
                stream.receive_text(text)
                for event in stream.events_received():
                    if isinstance(event, StreamStarted):
                        self.started.append(event)
                        if self.close_with is not None:
                            await ws.close(self.close_with)
                            return
                        if self.greeting:
                            pending |= self._speak(stream, "g", GREETING_FRAMES, 0x30)
                    elif isinstance(event, MediaReceived):
                        loud = event.payload != SILENCE_FRAME
                        if loud:
                            self.caller_audio.append(event.payload)
                            quiet = 0
                            if not speaking and pending:
                                stream.send_clear()
                                self.clears += 1
                                pending = set()
                            speaking = True
                        elif speaking:
                            quiet += 1
                            if quiet == 5:
                                speaking, turn = False, turn + 1
                                pending |= self._speak(
                                    stream, f"r{turn}", REPLY_FRAMES, 0x20 + turn
                                )
                    elif isinstance(event, MarkPlayed):
                        self.echoes.append(event.name)
                        pending.discard(event.name)
                    elif isinstance(event, DtmfReceived):
                        self.digits.append(event.digit)
                    elif isinstance(event, StreamStopped):
                        self.stopped = True
                for out in stream.data_to_send():
                    await ws.send_text(out)
        except WebSocketDisconnect:
            return
        await ws.close()

    def _speak(self, stream: TwilioMediaStream, tag: str, frames: int, value: int) -> set[str]:
        names = {f"{tag}-{i}" for i in range(frames)}
        for i in range(frames):
            stream.send_media(bytes([value]) * 160)
            stream.send_mark(f"{tag}-{i}")
            self.sent_marks.append(f"{tag}-{i}")
        return names

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/twilio/voice", self.voice, methods=["POST"]),
                Route("/twilio/status", self.status, methods=["POST"]),
                Route("/api/calls/{sid}", self.record),
                WebSocketRoute("/twilio/media", self.media),
            ]
        )


@asynccontextmanager
async def serving(bridge: FakeBridge) -> AsyncIterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    bridge.base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    config = uvicorn.Config(bridge.app(), log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        for _ in range(500):
            if server.started:
                break
            await asyncio.sleep(0.01)
        assert server.started
        yield bridge.base
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()


def caller(value: int, frames: int) -> bytes:
    return bytes([value]) * (160 * frames)


async def test_a_whole_call_with_greeting_and_two_turns() -> None:
    fake = FakeBridge(token=TOKEN, greeting=True)
    async with serving(fake) as base:
        result = await simulate_call(
            base,
            auth_token=TOKEN,
            review_token="review",
            caller_utterances=[caller(1, 10), caller(2, 5)],
            reply_silence_s=0.2,
            max_duration_s=20,
        )
    assert fake.signatures_ok == ["voice", "media", "status"]
    assert fake.statuses == ["completed"]
    assert result.call_record == {"call_sid": result.call_sid, "status": "completed", "turns": []}
    assert result.call_sid.startswith("CA") and len(result.call_sid) == 34
    assert result.stream_sid.startswith("MZ") and len(result.stream_sid) == 34
    assert result.twiml_parameters == {"from": "+15551230000", "token": "t&k"}
    [start] = fake.started
    assert start.custom_parameters == result.twiml_parameters
    assert (start.call_sid, start.stream_sid) == (result.call_sid, result.stream_sid)
    assert fake.stopped and not result.closed_by_bridge and not result.timed_out
    assert result.close_code == 1000
    assert result.protocol_problems == []

    # The caller said both utterances, whole and in order.
    assert b"".join(fake.caller_audio) == caller(1, 10) + caller(2, 5)
    # Every message after `connected` is numbered; media carries chunk and timestamp.
    assert [int(m["sequenceNumber"]) for m in fake.inbound[1:]] == list(range(1, len(fake.inbound)))
    media = [m["media"] for m in fake.inbound if m["event"] == "media"]
    assert [int(m["chunk"]) for m in media] == list(range(1, len(media) + 1))
    assert [int(m["timestamp"]) for m in media] == [20 * i for i in range(len(media))]

    # The greeting, then both replies were heard in full, and every mark came back once.
    heard = result.heard_audio
    assert heard.count(0x30) == GREETING_FRAMES * 160
    assert heard.count(0x21) == heard.count(0x22) == REPLY_FRAMES * 160
    assert result.received_audio == caller(0x30, GREETING_FRAMES) + caller(
        0x21, REPLY_FRAMES
    ) + caller(0x22, REPLY_FRAMES)
    assert sorted(fake.echoes) == sorted(fake.sent_marks)
    assert result.marks_echoed == len(fake.sent_marks)
    # The caller did not talk over the greeting: it started 0.5 s after it ended.
    first_word = len(media) - len([m for m in media if m["payload"] != media[0]["payload"]])
    assert heard.index(bytes([0x30])) < heard.rindex(bytes([0x30])) < first_word * 160
    assert result.clears == [] and result.barge_ins == []
    assert len(heard) == len(media) * 160 + 160  # one tick ends the call without media


async def test_simulated_calls_share_one_tls_context(tls_contexts_built: list[Any]) -> None:
    # A TLS context reads the whole CA bundle as it is built: tens of ms of CPU on the loop
    # that runs every simulated caller's 20 ms clock. A load test starts a hundred calls.
    _tls_context.cache_clear()
    fake = FakeBridge(token=TOKEN)
    async with serving(fake) as base:
        for value in (1, 2, 3):
            result = await simulate_call(
                base,
                auth_token=TOKEN,
                review_token="review",
                caller_utterances=[caller(value, 5)],
                reply_silence_s=0.2,
                max_duration_s=20,
            )
            assert result.close_code == 1000 and result.call_record is not None
    assert len(fake.started) == 3
    assert len(tls_contexts_built) == 1
    _tls_context.cache_clear()  # built while ssl was patched


async def test_reply_waits_run_from_each_utterance_end_to_the_first_audio_heard() -> None:
    fake = FakeBridge(token=None)
    async with serving(fake) as base:
        result = await simulate_call(
            base,
            auth_token=None,
            caller_utterances=[caller(1, 10), caller(2, 5)],
            reply_silence_s=0.2,
            max_duration_s=20,
            send_status_callback=False,
        )
    assert len(result.utterances_ended_at) == len(result.replies_heard_at) == 2
    first_end, second_end = result.utterances_ended_at
    first_reply, second_reply = result.replies_heard_at
    first_arrival, second_arrival = result.replies_arrived_at
    assert first_reply is not None and second_reply is not None
    assert first_arrival is not None and second_arrival is not None
    # Audio plays from the first tick after it arrived.
    assert first_end < first_arrival <= first_reply < second_end < second_arrival <= second_reply
    waits = result.reply_waits()
    assert waits == [first_reply - first_end, second_reply - second_end]
    arrivals = result.reply_waits(arrived=True)
    assert arrivals == [first_arrival - first_end, second_arrival - second_end]
    # The fake answers after five quiet frames, sent on a 20 ms schedule that never runs
    # early: four intervals at least, whatever the machine's speed.
    assert all(wait is not None and wait >= 0.08 for wait in waits)


async def test_barge_in_talks_over_the_reply_and_honours_clear() -> None:
    fake = FakeBridge(token=None)
    async with serving(fake) as base:
        result = await simulate_call(
            base,
            auth_token=None,
            caller_utterances=[caller(1, 5), caller(2, 5)],
            barge_in_at=0.2,
            reply_silence_s=0.2,
            max_duration_s=20,
            digits=["4", "2"],
            send_status_callback=False,
        )
    assert fake.signatures_ok == ["voice", "media"]
    [barge] = result.barge_ins
    assert barge.reply_played_ms == 200.0
    [clear] = result.clears
    assert clear.at >= barge.started_at
    assert 200.0 <= clear.segment_played_ms < REPLY_FRAMES * 20
    # Heard: the ticks before the clear, and as much of the one under way as had passed.
    assert clear.segment_played_ms - 20 <= clear.heard_ms <= clear.segment_played_ms
    assert fake.clears == 1
    # The first reply was cut: the caller heard only its start; the flushed marks came back.
    assert 0 < result.heard_audio.count(0x21) < REPLY_FRAMES * 160
    assert result.received_audio.count(0x21) == REPLY_FRAMES * 160
    assert sorted(fake.echoes) == sorted(fake.sent_marks)
    assert result.heard_audio.count(0x22) == REPLY_FRAMES * 160
    # Digits are keyed after the first reply that plays out (here the second).
    assert fake.digits == ["4", "2"]
    dtmf = [m for m in fake.inbound if m["event"] == "dtmf"]
    assert dtmf[0]["dtmf"] == {"track": "inbound_track", "digit": "4"}
    assert dtmf[0]["streamSid"] == result.stream_sid
    assert result.call_record is None  # no review token: the fake refuses


async def test_bridge_closing_the_socket_ends_the_call() -> None:
    fake = FakeBridge(token=TOKEN, close_with=1008)
    async with serving(fake) as base:
        result = await simulate_call(
            base, auth_token=TOKEN, caller_utterances=[caller(1, 5)], max_duration_s=10
        )
    assert result.closed_by_bridge
    assert result.close_code == 1008
    assert not fake.stopped


async def test_forged_signatures_are_refused() -> None:
    fake = FakeBridge(token=TOKEN)
    async with serving(fake) as base:
        with pytest.raises(SimulationError) as info:
            await simulate_call(base, auth_token="wrong", caller_utterances=[], max_duration_s=5)
        assert info.value.status == 403
        # Signed for another public URL than the one the bridge knows.
        with pytest.raises(SimulationError):
            await simulate_call(
                base,
                auth_token=TOKEN,
                caller_utterances=[],
                max_duration_s=5,
                signature_url_base="https://elsewhere.example.com",
            )


async def test_signature_url_base_signs_public_urls_but_connects_locally() -> None:
    fake = FakeBridge(token=TOKEN)
    async with serving(fake) as base:
        public = "https://bridge.example.com"
        fake.base = public  # the fake now believes it is reached through a tunnel
        result = await simulate_call(
            base,
            auth_token=TOKEN,
            caller_utterances=[],
            signature_url_base=public,
            initial_silence_s=0.1,
            max_duration_s=10,
        )
    assert fake.signatures_ok == ["voice", "media", "status"]
    assert result.stream_url == "wss://bridge.example.com/twilio/media"
    assert fake.stopped


async def test_max_duration_bounds_a_call_with_no_reply() -> None:
    fake = FakeBridge(token=None)
    async with serving(fake) as base:
        result = await simulate_call(
            base,
            auth_token=None,
            caller_utterances=[caller(1, 100)],  # 2 s of talking, longer than allowed
            max_duration_s=1.0,
            send_status_callback=False,
        )
    assert result.timed_out
    assert result.utterances_ended_at == [] and result.reply_waits() == []  # never finished
    assert fake.stopped
    assert result.close_code == 1000
    assert len(result.heard_audio) <= 8000 * 1.0


async def test_unreachable_bridge_is_a_simulation_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(SimulationError):
        await simulate_call(
            f"http://127.0.0.1:{port}", auth_token=None, caller_utterances=[], max_duration_s=3
        )


def test_serve_refuses_a_sip_flag_it_cannot_listen_on(capsys: pytest.CaptureFixture[str]) -> None:
    from bridge.cli import main

    assert main(["serve", "--sip", "sctp:127.0.0.1:5060"]) == 2
    assert "BRIDGE_SIP_LISTEN entry 'sctp:127.0.0.1:5060'" in capsys.readouterr().err


async def test_a_redirect_is_followed_signed_like_twilio_and_the_call_goes_on() -> None:
    fake = FakeBridge(token=TOKEN, redirect=True)
    async with serving(fake) as base:
        result = await simulate_call(
            base,
            auth_token=TOKEN,
            caller_utterances=[],
            initial_silence_s=0.2,
            max_duration_s=10,
            fetch_record=False,
        )
    # Signed over the redirect's own URL, query and all, or the fake would have said 403.
    assert fake.signatures_ok[:3] == ["voice", "voice", "media"]
    assert len(fake.started) == 1 and not result.timed_out


async def test_a_caller_turned_away_is_a_refusal_with_what_was_said() -> None:
    fake = FakeBridge(token=TOKEN, redirect=True, refuse=True)
    async with serving(fake) as base:
        with pytest.raises(CallRefused) as refused:
            await simulate_call(base, auth_token=TOKEN, caller_utterances=[], max_duration_s=10)
    assert refused.value.said == "All our lines are busy."
    assert fake.signatures_ok == ["voice", "voice"]  # no stream was opened
    assert not fake.started
