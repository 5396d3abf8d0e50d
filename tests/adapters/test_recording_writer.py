"""The recording on disk: raw channel files while the call runs, one stereo WAV at the end, and
a broken disk that costs the recording but never the call."""

from __future__ import annotations

import asyncio
import wave
from pathlib import Path
from typing import Any

import numpy as np

from bridge.adapters.recording_writer import RecordingWriter
from bridge.codecs.g711 import ulaw_to_pcm16
from bridge.storage.recordings import RecordingFiles

SID = "CA" + "ab" * 16


class Log:
    """Collects what the writer logs."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def _add(self, level: str, event: str, **kw: Any) -> None:
        self.lines.append((level, event, kw))

    def info(self, event: str, **kw: Any) -> None:
        self._add("info", event, **kw)

    def warning(self, event: str, **kw: Any) -> None:
        self._add("warning", event, **kw)

    def error(self, event: str, **kw: Any) -> None:
        self._add("error", event, **kw)

    def events(self, level: str) -> list[str]:
        return [event for lvl, event, _ in self.lines if lvl == level]


def samples(ulaw: bytes) -> np.ndarray[Any, np.dtype[np.int16]]:
    return np.frombuffer(ulaw_to_pcm16(ulaw), dtype="<i2")


def read_wav(path: Path) -> tuple[wave._wave_params, np.ndarray[Any, np.dtype[np.int16]]]:
    with wave.open(str(path), "rb") as wav:
        params = wav.getparams()
        frames = np.frombuffer(wav.readframes(params.nframes), dtype="<i2")
    return params, frames.reshape(-1, params.nchannels)


async def test_a_call_becomes_a_stereo_wav_caller_left_agent_right(tmp_path: Path) -> None:
    files = RecordingFiles(tmp_path / "recordings")
    log = Log()
    writer = RecordingWriter.start(files, SID, log, flush_every_s=0.02)
    assert writer is not None
    rec = writer.recorder
    caller = bytes(range(0, 256, 2)) * 25  # 400 ms, not silence
    rec.caller_audio(caller[:1600], 0)
    rec.agent_sent("m1", bytes(range(1, 256, 2)) * 5, 100)  # 80 ms at 100 ms
    rec.agent_sent("m2", b"\x00" * 160, 100)  # sent, then cleared: never heard
    rec.mark_played("m1")
    rec.clear()
    for _ in range(100):  # the call goes on; what was placed reaches the disk meanwhile
        await asyncio.sleep(0.02)
        raw = list((files.directory / ".partial").glob("*/caller.ulaw"))
        if raw and raw[0].stat().st_size == 1600:
            break
    else:
        raise AssertionError("nothing was written while the call ran")
    rec.caller_audio(caller[1600:], 200)
    path = await writer.close()

    assert path == files.existing(SID)
    params, frames = read_wav(path)
    assert (params.nchannels, params.sampwidth, params.framerate) == (2, 2, 8000)
    assert params.nframes == 3200
    left, right = frames[:, 0], frames[:, 1]
    assert np.array_equal(left, samples(caller))
    assert not right[:800].any() and not right[1440:].any()  # silence around the heard part
    assert np.array_equal(right[800:1440], samples(bytes(range(1, 256, 2)) * 5))
    assert list((files.directory / ".partial").iterdir()) == []  # the raw files are gone
    assert log.events("error") == []


async def test_a_call_without_any_audio_still_leaves_a_valid_file(tmp_path: Path) -> None:
    files = RecordingFiles(tmp_path)
    writer = RecordingWriter.start(files, SID, Log())
    assert writer is not None
    path = await writer.close()
    assert path is not None
    params, _ = read_wav(path)
    assert (params.nchannels, params.nframes) == (2, 0)


async def test_a_broken_disk_costs_one_error_and_the_recording_not_the_call(
    tmp_path: Path,
) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the recordings folder should be")
    log = Log()
    writer = RecordingWriter.start(RecordingFiles(blocked), SID, log, flush_every_s=0.01)
    assert writer is not None
    for ts in range(0, 400, 20):
        writer.recorder.caller_audio(b"\x10" * 160, ts)
        await asyncio.sleep(0.01)
    assert await writer.close() is None
    assert log.events("error") == ["recording.failed"]
    assert blocked.read_text().startswith("a file")


def test_an_unsafe_call_sid_is_not_recorded(tmp_path: Path) -> None:
    log = Log()
    assert RecordingWriter.start(RecordingFiles(tmp_path), "../../etc/passwd", log) is None
    assert log.events("warning") == ["recording.skipped"]
    assert list(tmp_path.iterdir()) == []


async def test_a_timestamp_beyond_any_real_call_does_not_make_a_huge_file(
    tmp_path: Path,
) -> None:
    writer = RecordingWriter.start(RecordingFiles(tmp_path), SID, Log())
    assert writer is not None
    writer.recorder.caller_audio(b"\x10" * 160, 0)
    writer.recorder.caller_audio(b"\x10" * 160, 25 * 3600 * 1000)
    path = await writer.close()
    assert path is not None
    params, _ = read_wav(path)
    assert params.nframes == 160
