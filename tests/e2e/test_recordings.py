"""Call recordings over real sockets: ``bridge serve`` with BRIDGE_RECORDINGS=1, the fake model
and the simulator as Twilio. The WAV must hold the caller on the left, exactly when they spoke,
and on the right only what the caller heard."""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import time
import wave
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from bridge.codecs.clips import load_clip
from bridge.codecs.g711 import ulaw_to_pcm16
from bridge.codecs.pcm import best_alignment
from bridge.devtools import simulator
from bridge.devtools.fake_records import FakeFaults
from bridge.devtools.fake_script import FakeScript, Reply
from bridge.devtools.simulator import SimulationResult, simulate_call

from .conftest import AUTH_TOKEN, REVIEW_TOKEN, RunningBridge, fake_server, provider_env

StartBridge = Callable[[dict[str, str]], RunningBridge]
Samples = npt.NDArray[np.float64]

FRAME = 160  # 20 ms at 8 kHz
MAX_LAG = 320  # 40 ms: how far the recording may sit from what the simulator saw


@pytest.fixture
def sent_frames(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, bytes]]:
    """Every media frame the simulated caller sends, as (timestamp ms, mu-law). The simulator
    does not keep them, so its send is wrapped for the test."""
    frames: list[tuple[int, bytes]] = []
    original = simulator._Stream.send

    async def send(self: Any, event: str, body: str) -> None:
        if event == "media":
            media = json.loads("{" + body + "}")["media"]
            frames.append((int(media["timestamp"]), base64.b64decode(media["payload"])))
        await original(self, event, body)

    monkeypatch.setattr(simulator._Stream, "send", send)
    return frames


def decode(ulaw: bytes) -> Samples:
    return np.frombuffer(ulaw_to_pcm16(ulaw), dtype="<i2").astype(np.float64)


def caller_timeline(frames: list[tuple[int, bytes]]) -> Samples:
    track = bytearray(b"\xff") * max(ts * 8 + len(audio) for ts, audio in frames)
    for ts, audio in frames:
        track[ts * 8 : ts * 8 + len(audio)] = audio
    return decode(bytes(track))


def read_stereo(path: Path) -> tuple[Samples, Samples]:
    with wave.open(str(path), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (2, 2, 8000)
        frames = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    stereo = frames.reshape(-1, 2).astype(np.float64)
    return stereo[:, 0], stereo[:, 1]


def loud_frames(x: Samples) -> npt.NDArray[np.bool_]:
    """Per 20 ms frame: is anything audible in it?"""
    n = len(x) // FRAME
    return np.abs(x[: n * FRAME]).reshape(n, FRAME).mean(axis=1) > 30.0


def stretches(mask: npt.NDArray[np.bool_]) -> list[tuple[int, int]]:
    """[start, end) frame ranges where ``mask`` holds; pauses within speech (under 800 ms)
    are bridged, so each answer is one range."""
    out: list[tuple[int, int]] = []
    for i in np.flatnonzero(mask):
        if out and i - out[-1][1] <= 40:
            out[-1] = (out[-1][0], int(i) + 1)
        else:
            out.append((int(i), int(i) + 1))
    return out


def files_under(folder: Path, pattern: str) -> list[Path]:
    return list(folder.rglob(pattern))


async def wait_for_file(path: Path, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not files_under(path.parent, path.name):
        assert time.monotonic() < deadline, f"no recording at {path}"
        await asyncio.sleep(0.1)


def call(bridge: RunningBridge, utterances: list[bytes], **kw: Any) -> Coroutine[Any, Any, Any]:
    return simulate_call(
        bridge.url,
        auth_token=AUTH_TOKEN,
        review_token=REVIEW_TOKEN,
        caller_utterances=utterances,
        max_duration_s=30,
        **kw,
    )


@pytest.mark.timing
async def test_a_barge_in_call_is_recorded_as_the_caller_heard_it(
    bridge_factory: StartBridge, tmp_path: Path, sent_frames: list[tuple[int, bytes]]
) -> None:
    long_answer = load_clip("demo_reply_1")  # 4.3 s of speech, to be cut after about 1 s
    script = FakeScript(
        replies=[
            Reply("A long answer.", audio=long_answer),
            Reply("Sorry, go ahead.", audio=load_clip("demo_reply_3")),
        ],
        caller_transcripts=["Tell me everything.", "Wait, stop."],
    )
    folder = tmp_path / "rec"
    env = {"BRIDGE_RECORDINGS": "1", "BRIDGE_RECORDINGS_DIR": str(folder)}
    async with fake_server("openai", script=script) as fake:
        bridge = bridge_factory(provider_env(fake, "openai", **env))
        result: SimulationResult = await call(
            bridge, [load_clip("caller_1"), load_clip("caller_2")], barge_in_at=1.0
        )
        wav = folder / f"{result.call_sid}.wav"
        await wait_for_file(wav)
    assert len(result.barge_ins) == 1 and result.clears
    left, right = read_stereo(wav)

    # As long as the stream: the caller's last frame ends the file.
    sent = caller_timeline(sent_frames)
    assert abs(len(left) - len(sent)) <= 2 * FRAME

    # The left channel is the caller, on the stream clock.
    lag, corr = best_alignment(sent, left, MAX_LAG)
    print(f"caller channel: lag {lag} samples, correlation {corr:.4f}")
    assert abs(lag) <= FRAME and corr > 0.99

    # The right channel is what the caller heard: each stretch of agent audio lines up with
    # the simulator's playout, and where the cut answer would have gone on there is silence.
    heard = decode(result.heard_audio)
    heard_parts = stretches(loud_frames(heard))
    agent_parts = stretches(loud_frames(right))
    print(f"heard {heard_parts}, recorded {agent_parts} (20 ms frames)")
    assert len(heard_parts) == len(agent_parts) == 2  # the cut answer, then the second one
    for (h0, h1), (a0, a1) in zip(heard_parts, agent_parts, strict=True):
        assert abs(a0 - h0) <= 2 and abs(a1 - h1) <= 2
        ref = heard[h0 * FRAME : h1 * FRAME]
        got = right[max(0, h0 * FRAME - MAX_LAG) : h1 * FRAME + MAX_LAG]
        lag, corr = best_alignment(ref, got, 2 * MAX_LAG)
        print(f"agent stretch at {h0 * 20} ms: offset {lag - MAX_LAG} samples, corr {corr:.4f}")
        assert abs(lag - min(MAX_LAG, h0 * FRAME)) <= MAX_LAG and corr > 0.95
    cut_heard_s = (heard_parts[0][1] - heard_parts[0][0]) * 0.02
    assert 0.9 <= cut_heard_s <= 2.5 < len(long_answer) / 8000
    # The rest of the long answer went to Twilio in part but never played: where it would
    # have gone on, until the second answer, the recording is silent.
    quiet = right[(heard_parts[0][1] + 2) * FRAME : (heard_parts[1][0] - 2) * FRAME]
    assert len(quiet) > 8000 and not quiet.any()


async def test_provider_failure_records_the_apology(
    bridge_factory: StartBridge, tmp_path: Path
) -> None:
    folder = tmp_path / "rec"
    env = {"BRIDGE_RECORDINGS": "1", "BRIDGE_RECORDINGS_DIR": str(folder)}
    async with fake_server("openai", faults=FakeFaults(refuse_session=True)) as fake:
        bridge = bridge_factory(provider_env(fake, "openai", **env))
        result = await call(bridge, [load_clip("caller_1")])
        wav = folder / f"{result.call_sid}.wav"
        await wait_for_file(wav)
    _, right = read_stereo(wav)
    heard_parts = stretches(loud_frames(decode(result.heard_audio)))
    agent_parts = stretches(loud_frames(right))
    assert heard_parts and agent_parts, "the apology is not in the recording"
    assert abs(agent_parts[0][0] - heard_parts[0][0]) <= 2
    start = agent_parts[0][0] * FRAME
    apology = decode(load_clip("apology"))
    _, corr = best_alignment(apology, right[max(0, start - MAX_LAG) :], 2 * MAX_LAG)
    assert corr > 0.95


async def test_a_call_ended_by_shutdown_is_still_saved(
    bridge_factory: StartBridge, tmp_path: Path
) -> None:
    folder = tmp_path / "rec"
    bridge = bridge_factory({"BRIDGE_RECORDINGS": "1", "BRIDGE_RECORDINGS_DIR": str(folder)})
    running = asyncio.create_task(call(bridge, [load_clip("caller_1")]))
    for _ in range(100):  # until the stream is up and the greeting plays
        await asyncio.sleep(0.1)
        if files_under(folder, "caller.ulaw"):
            break
    await asyncio.sleep(1.0)
    # SIGINT (Ctrl-C) stops at once, where SIGTERM would let the call finish.
    bridge.process.send_signal(signal.SIGINT)
    result = await asyncio.wait_for(running, timeout=30)
    assert bridge.process.wait(timeout=15) == 0
    left, right = read_stereo(folder / f"{result.call_sid}.wav")
    assert len(left) > 8000 and np.abs(right).max() > 0  # the greeting was heard
    assert files_under(folder / ".partial", "*") == []


async def test_recordings_are_off_unless_asked_for(
    bridge_factory: StartBridge, tmp_path: Path
) -> None:
    script = FakeScript(replies=[Reply("Nine.", duration_ms=600)], caller_transcripts=["Hours?"])
    async with fake_server("openai", script=script) as fake:
        bridge = bridge_factory(provider_env(fake, "openai"))
        result = await call(bridge, [load_clip("caller_2")])
    assert result.call_record is not None and result.call_record["status"] == "completed"
    bridge.process.terminate()
    bridge.process.wait(timeout=15)
    assert not files_under(tmp_path, "*.wav") and not files_under(tmp_path, "*.ulaw")
