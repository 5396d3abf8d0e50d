"""The Twilio driver hands the call the time each message was read off the socket, so a mark
echo that waited for the call's task (a busy loop) still dates the caller's playout right."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any, cast

from starlette.websockets import WebSocket

from bridge.adapters.server_frames import READ_AT
from bridge.call.records import EndReason
from bridge.twilio_session import TwilioDriver

from .test_call_logic import SID, Harness

_WAITED_S = 0.030  # how long the echo sat in the queue before the call's task took it


async def test_an_echo_taken_late_still_dates_the_playout_from_when_it_was_read() -> None:
    h = Harness(chunk_ms=TwilioDriver.chunk_ms, mark_chunks=TwilioDriver.mark_chunks)
    h.start_session()
    h.to_model()
    h.answer(ms=2000, done=False, text="one two three four")
    sent = h.to_phone()
    first_mark = next(i for i, m in enumerate(sent) if m["event"] == "mark")
    echoed_ms = sum(len(base64.b64decode(m["media"]["payload"])) for m in sent[:first_mark]) / 8
    assert echoed_ms >= 100
    loop = asyncio.get_running_loop()
    echo = json.dumps({"streamSid": SID, "event": "mark", "mark": sent[first_mark]["mark"]})
    inbox: list[dict[str, Any]] = [
        {"type": "websocket.connect"},
        {"type": "websocket.receive", "text": echo},
        {"type": "websocket.disconnect", "code": 1000},
    ]

    async def receive() -> dict[str, Any]:
        message = inbox.pop(0)
        if message["type"] == "websocket.receive":
            message[READ_AT] = loop.time()  # read now, as the server does...
            await asyncio.sleep(_WAITED_S)  # ...and taken later
        return message

    async def send(message: dict[str, Any]) -> None:
        assert message["type"] == "websocket.accept", "nothing else is sent here"

    scope = {"type": "websocket", "path": "/twilio/media", "headers": []}
    ws = WebSocket(scope, receive, send)
    await ws.accept()
    driver = TwilioDriver(ws, cast(Any, None))
    driver.stream = h.twilio  # the stream the call has been playing on
    cuts: list[int] = []

    async def after() -> None:
        # The caller talks over the agent as soon as the echo has been handled.
        h.now = loop.time()
        h.model(
            type="input_audio_buffer.speech_started",
            event_id="e20",
            audio_start_ms=900,
            item_id="u2",
        )
        cuts.extend(
            m["audio_end_ms"] for m in h.to_model() if m["type"] == "conversation.item.truncate"
        )

    await driver.read(h.logic, after)
    assert h.logic.end_reason is EndReason.CALLER_HANGUP
    # The first run echoed, and the caller has been in the next since the echo was read: at
    # least the time it waited. Dated from when it was taken, the cut would be about the run.
    assert len(cuts) == 1 and cuts[0] >= echoed_ms + _WAITED_S * 1000 - 1
