"""The Twilio driver writes what the call queued for the caller from the task that queued it
(an answer's first audio, a ``clear``), without waiting for a turn of the event loop, and
never two writers at once."""

from __future__ import annotations

import asyncio
import json
from typing import Any, cast

from starlette.websockets import WebSocket

from bridge.twilio_session import TwilioDriver

from .test_call_logic import Harness


class _Socket:
    """The ASGI side of a media socket: records every frame sent; can hold a send."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.hold: asyncio.Event | None = None

    async def receive(self) -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "websocket.send":
            if self.hold is not None:
                await self.hold.wait()
            self.sent.append(json.loads(message["text"]))


async def _driver() -> tuple[TwilioDriver, Harness, _Socket]:
    h = Harness(chunk_ms=TwilioDriver.chunk_ms, mark_chunks=TwilioDriver.mark_chunks)
    h.start_session()
    h.to_model()
    socket = _Socket()
    ws = WebSocket(
        {"type": "websocket", "path": "/twilio/media", "headers": []}, socket.receive, socket.send
    )
    await ws.accept()
    driver = TwilioDriver(ws, cast(Any, None))
    driver.stream = h.twilio
    return driver, h, socket


async def test_an_answer_goes_out_before_the_loop_turns() -> None:
    driver, h, socket = await _driver()
    h.answer(ms=500, done=False, text="hello there")
    assert h.twilio.has_data_to_send
    turned: list[bool] = []
    asyncio.get_running_loop().call_soon(turned.append, True)
    assert await driver.write_now()
    assert not turned, "the write waited for the event loop"
    assert socket.sent and socket.sent[0]["event"] == "media"
    assert not h.twilio.has_data_to_send


async def test_one_writer_at_a_time_and_nothing_left_behind() -> None:
    driver, h, socket = await _driver()
    socket.hold = asyncio.Event()
    h.answer(ms=300, done=False, text="first")
    first = asyncio.create_task(driver.write_now())
    await asyncio.sleep(0)  # the first writer is now held inside its first send
    assert socket.sent == []
    h.model(
        type="input_audio_buffer.speech_started", event_id="e9", audio_start_ms=100, item_id="u2"
    )
    assert h.twilio.has_data_to_send  # the clear
    # A second writer would put the clear among the first one's frames: it leaves it.
    assert not await driver.write_now()
    socket.hold.set()
    assert await first
    events = [m["event"] for m in socket.sent]
    assert events[-1] == "clear" and "clear" not in events[:-1]
    assert not h.twilio.has_data_to_send


async def test_a_gone_socket_takes_nothing_more() -> None:
    driver, h, socket = await _driver()
    driver.gone = True
    h.answer(ms=200, done=False, text="late")
    assert not await driver.write_now()
    assert socket.sent == []
