"""Call recordings, the disk half: placed audio to a stereo WAV, off the event loop.

While the call runs, what :class:`~bridge.call.recording.CallRecorder` placed is written every
half second to two raw 8 kHz mu-law files, one per channel, in a folder of their own inside
the recordings folder, so a long call costs disk, not memory. When the call ends the two are
decoded and interleaved into ``<CallSid>.wav`` (16-bit PCM, 8 kHz, caller left, agent right),
written under a temporary name and renamed into place, so a reader never sees half a file.

Every disk operation runs in a worker thread. A disk that fails (full, read-only, gone) costs
one error in the log and the recording; never the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import threading
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, Final, ParamSpec, TypeVar

import numpy as np
import numpy.typing as npt

from bridge.call.recording import SAMPLES_PER_MS, CallRecorder, Channel, Segment
from bridge.codecs.g711 import ULAW_SILENCE, ulaw_to_pcm16
from bridge.storage.recordings import RecordingFiles

__all__ = ["FLUSH_EVERY_S", "MAX_RECORDING_S", "RecordingWriter"]

_P = ParamSpec("_P")
_T = TypeVar("_T")

FLUSH_EVERY_S: Final = 0.5
# Twilio ends a call after 24 hours at most; a timestamp beyond that is not worth a file
# (and a 16-bit stereo WAV must stay under 4 GiB).
MAX_RECORDING_S: Final = 24 * 3600
_MAX_SAMPLES: Final = MAX_RECORDING_S * 1000 * SAMPLES_PER_MS
_MUX_SAMPLES: Final = 10 * 1000 * SAMPLES_PER_MS  # 10 s per write: bounded memory at the end

# The raw files hold every mu-law code inverted. Parts of a file never written read back as
# zero bytes (holes of a sparse file, or a channel shorter than the other), and an inverted
# zero is the mu-law code of silence: gaps need no bookkeeping.
_INVERT: Final = bytes(code ^ ULAW_SILENCE for code in range(256))
_DECODE_STORED: Final[npt.NDArray[np.int16]] = np.frombuffer(
    ulaw_to_pcm16(_INVERT), dtype="<i2"
).copy()


class _Disk:
    """The files of one recording. Not thread-safe on its own: ``RecordingWriter`` runs one
    operation at a time, under a lock."""

    def __init__(self, files: RecordingFiles, final: Path, call_sid: str) -> None:
        self._files = files
        self._final = final
        self._call_sid = call_sid
        self._folder: Path | None = None
        self._channels: list[BinaryIO] = []

    def _open(self) -> list[BinaryIO]:
        if not self._channels:
            partial = self._files.directory / ".partial"
            partial.mkdir(parents=True, exist_ok=True)
            self._folder = Path(tempfile.mkdtemp(prefix=f"{self._call_sid}-", dir=partial))
            for channel in Channel:
                path = self._folder / f"{channel.name.lower()}.ulaw"
                self._channels.append(open(path, "w+b"))  # noqa: SIM115 - closed in finish()
        return self._channels

    def write(self, segments: list[Segment]) -> None:
        channels = self._open()
        for segment in segments:
            start, audio = segment.start, segment.ulaw
            if start >= _MAX_SAMPLES:
                continue
            if segment.end > _MAX_SAMPLES:
                audio = audio[: _MAX_SAMPLES - start]
            out = channels[segment.channel]
            out.seek(start)  # past the end leaves a hole: silence, see _INVERT
            out.write(audio.translate(_INVERT))
        for out in channels:
            out.flush()  # to the OS now: a crash of the bridge loses at most one batch

    def finish(self) -> Path:
        channels = self._open()
        total = max(out.seek(0, os.SEEK_END) for out in channels)
        assert self._folder is not None
        temporary = self._folder / "mixed.wav"
        with wave.open(str(temporary), "wb") as wav:
            wav.setnchannels(len(channels))
            wav.setsampwidth(2)
            wav.setframerate(1000 * SAMPLES_PER_MS)
            for offset in range(0, total, _MUX_SAMPLES):
                n = min(_MUX_SAMPLES, total - offset)
                frames = np.empty((n, len(channels)), dtype="<i2")
                for index, source in enumerate(channels):
                    source.seek(offset)
                    data = source.read(n).ljust(n, b"\0")
                    frames[:, index] = _DECODE_STORED[np.frombuffer(data, dtype=np.uint8)]
                wav.writeframes(frames.tobytes())
        os.replace(temporary, self._final)
        self.discard()
        return self._final

    def discard(self) -> None:
        """Close and remove the raw files; never raises."""
        for out in self._channels:
            with contextlib.suppress(OSError):
                out.close()
        self._channels = []
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None


class RecordingWriter:
    """Records one call. Build it with :meth:`start`, feed :attr:`recorder` for the whole
    call, then ``await close()`` once, when the call is over (also after an error)."""

    def __init__(self, disk: _Disk, log: Any, flush_every_s: float) -> None:
        self.recorder = CallRecorder()
        self._disk = disk
        self._log = log
        self._flush_every_s = flush_every_s
        self._lock = threading.Lock()
        self._failed = False
        self._closing = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def start(
        cls,
        files: RecordingFiles,
        call_sid: str,
        log: Any,
        flush_every_s: float = FLUSH_EVERY_S,
    ) -> RecordingWriter | None:
        """Start recording ``call_sid`` into ``files``; None when the SID cannot name a
        file (nothing is recorded then). Needs a running event loop."""
        final = files.path_for(call_sid)
        if final is None:
            log.warning("recording.skipped", reason="call SID is not a safe file name")
            return None
        writer = cls(_Disk(files, final, call_sid), log, flush_every_s)
        writer._task = asyncio.create_task(writer._follow(), name="recording-writer")
        return writer

    async def close(self) -> Path | None:
        """Write the last audio and build the WAV. Returns its path, or None when the
        recording failed. Call once."""
        self._closing.set()
        if self._task is not None:
            await asyncio.wait({self._task})
        await self._flush()
        if self._failed:
            return None
        try:
            path = await asyncio.to_thread(self._locked, self._disk.finish)
        except Exception as exc:
            await self._fail(exc)
            return None
        if path is not None:
            self._log.info("recording.saved", path=str(path))
        return path

    async def _follow(self) -> None:
        while not self._closing.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), self._flush_every_s)
            await self._flush()

    async def _flush(self) -> None:
        segments = self.recorder.segments_to_write()
        if not segments or self._failed:
            return
        try:
            await asyncio.to_thread(self._locked, self._disk.write, segments)
        except Exception as exc:  # the disk, not the call: log once, stop recording
            await self._fail(exc)

    def _locked(self, operation: Callable[_P, _T], *args: _P.args, **kw: _P.kwargs) -> _T | None:
        # One operation at a time: a write still running in its thread after its awaiting
        # task was cancelled must not interleave with the next one.
        with self._lock:
            if self._failed:
                return None
            return operation(*args, **kw)

    async def _fail(self, exc: Exception) -> None:
        if self._failed:
            return
        self._failed = True
        self._log.error("recording.failed", error=str(exc))
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self._discard)

    def _discard(self) -> None:
        with self._lock:
            self._disk.discard()
