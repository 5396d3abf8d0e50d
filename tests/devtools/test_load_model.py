"""The load test's fake model in its own process: what it records of a pass, how the readings
travel back, and that times read there and here are on one clock."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from bridge.devtools.fake_records import FakeSessionRecord, TruncateRecord
from bridge.devtools.load_model import ModelProcess, ModelReadings, ModelSessionReadings, ModelTap
from bridge.devtools.load_tags import TagScanner, stamp
from bridge.devtools.playout import SILENCE_FRAME


def _record() -> FakeSessionRecord:
    return FakeSessionRecord(dialect="openai", headers={}, query={})


def _append(audio: bytes, *, spaced: bool) -> str:
    event = {"type": "input_audio_buffer.append", "audio": base64.b64encode(audio).decode()}
    return json.dumps(event) if spaced else json.dumps(event, separators=(",", ":"))


def test_readings_travel_as_json_without_losing_a_digit() -> None:
    readings = ModelReadings(
        sessions=[
            ModelSessionReadings(
                12345.678901234567, 7, [12346.000000000002], [(12346.01, 1020, True)]
            )
        ],
        frame_arrived={7: 12345.9, 8: 0.1 + 0.2},
        delta_sent=[1 / 3],
        delta_first=[True],
    )
    assert ModelReadings.from_json(readings.to_json()) == readings


def test_the_tap_records_a_pass_and_nothing_outside_it() -> None:
    tap = ModelTap()
    before = _record()
    tap.opened(before, 1.0)  # before any pass: not recorded
    tap.received(before, _append(stamp(SILENCE_FRAME, 3), spaced=False), 1.5)

    tap.begin()
    record = _record()
    tap.opened(record, 2.0)
    # Compact JSON (the bridge) and the standard library's spacing (the floor) both read.
    tap.received(record, _append(stamp(SILENCE_FRAME, 4), spaced=False), 2.1)
    tap.received(record, _append(stamp(SILENCE_FRAME, 5), spaced=True), 2.2)
    tap.received(record, _append(stamp(SILENCE_FRAME, 4), spaced=True), 2.3)  # seen before
    tap.received(before, _append(stamp(SILENCE_FRAME, 6), spaced=False), 2.4)  # old session
    delta = {
        "type": "response.output_audio.delta",
        "response_id": "resp_1",
        "delta": base64.b64encode(SILENCE_FRAME).decode(),
    }
    tap.sending(record, delta, 2.5)
    second = dict(delta, delta=base64.b64encode(SILENCE_FRAME).decode())
    tap.sending(record, second, 2.6)
    tap.sending(record, {"type": "input_audio_buffer.speech_started"}, 2.7)
    # The truncates the fake judged, accepted or not, go back with the session.
    record.truncates.append(TruncateRecord("item_1", 1012, True, None, 2.71))
    record.truncates.append(TruncateRecord("item_1", 9000, False, "too long", 2.72))
    readings = tap.end()

    assert readings.frame_arrived == {4: 2.1, 5: 2.2}
    assert readings.sessions == [
        ModelSessionReadings(2.0, 4, [2.7], [(2.71, 1012, True), (2.72, 9000, False)])
    ]
    assert readings.delta_sent == [2.5, 2.6] and readings.delta_first == [True, False]
    # The deltas now carry their numbers, for the callers to find.
    found = TagScanner().feed(base64.b64decode(delta["delta"]) + base64.b64decode(second["delta"]))
    assert found == [0, 1]
    # After the pass, nothing more is recorded.
    tap.received(record, _append(stamp(SILENCE_FRAME, 9), spaced=False), 3.0)
    assert tap.end() == ModelReadings()


@pytest.mark.timeout(60)
def test_the_child_times_frames_on_this_process_clock(tmp_path: Path) -> None:
    async def run() -> tuple[float, float, ModelReadings, int | None]:
        model = await ModelProcess.start(
            port=0, api_key="sk-test", realtime_factor=5.0, log=tmp_path / "model.log"
        )
        try:
            await model.begin()
            async with connect(
                model.url, additional_headers={"Authorization": "Bearer sk-test"}
            ) as ws:
                sent = time.monotonic()
                await ws.send(_append(stamp(SILENCE_FRAME, 42), spaced=False))
                # Something the fake answers, so the append has surely been read before it.
                await ws.send(json.dumps({"type": "nonsense"}))
                async with asyncio.timeout(10):
                    while json.loads(await ws.recv())["type"] != "error":
                        pass
                answered = time.monotonic()
            readings = await model.end()
        finally:
            await model.stop()
        return sent, answered, readings, model.returncode

    sent, answered, readings, code = asyncio.run(run())
    assert code == 0  # it ended by itself once its input closed
    assert len(readings.sessions) == 1 and readings.sessions[0].first_frame == 42
    # Read in the child, between two readings here: one clock for both processes.
    assert sent <= readings.frame_arrived[42] <= answered


@pytest.mark.timeout(60)
def test_a_child_that_cannot_listen_says_why(tmp_path: Path) -> None:
    async def run() -> None:
        first = await ModelProcess.start(
            port=0, api_key=None, realtime_factor=5.0, log=tmp_path / "first.log"
        )
        try:
            await ModelProcess.start(
                port=first.port, api_key=None, realtime_factor=5.0, log=tmp_path / "second.log"
            )
        finally:
            await first.stop()

    with pytest.raises(RuntimeError, match="exited"):
        asyncio.run(run())
