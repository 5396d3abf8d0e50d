"""The fake server's voice detector: energy in 20 ms frames on the input timeline.

Sans-I/O and clock-free: positions are milliseconds of audio appended, exactly the input
timeline a real realtime server reports in ``speech_started.audio_start_ms`` and
``speech_stopped.audio_end_ms``. Feed every appended chunk to :meth:`EnergyVad.feed` and
act on the events it returns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from bridge.codecs.pcm import rms_dbfs, ulaw_rms_dbfs

__all__ = [
    "FRAME_MS",
    "AudioFormat",
    "EnergyVad",
    "SpeechStart",
    "SpeechStop",
    "VadEvent",
    "VadParams",
]

FRAME_MS = 20


@dataclass(frozen=True, slots=True)
class AudioFormat:
    """A session audio format: ``pcmu`` (8 kHz mu-law) or ``pcm`` (int16 LE at ``rate``)."""

    kind: str
    rate: int = 8000

    @property
    def bytes_per_second(self) -> int:
        return self.rate if self.kind == "pcmu" else self.rate * 2

    def duration_ms(self, nbytes: int) -> float:
        """How many milliseconds ``nbytes`` of this format last."""
        return nbytes * 1000.0 / self.bytes_per_second


PCMU = AudioFormat("pcmu", 8000)
PCM24K = AudioFormat("pcm", 24000)


@dataclass(frozen=True, slots=True)
class VadParams:
    """Tuning of the fake server's voice detector.

    A 20 ms frame is speech when its level is at least ``threshold_dbfs``. ``start_ms`` of
    consecutive speech fires ``speech_started``; ``silence_ms`` of consecutive non-speech
    ends the turn (a session's ``server_vad`` ``silence_duration_ms`` overrides it).
    ``prefix_padding_ms`` is how far before the detected onset ``audio_start_ms`` points.
    """

    threshold_dbfs: float = -35.0
    start_ms: int = 60
    silence_ms: int = 500
    prefix_padding_ms: int = 300


@dataclass(frozen=True, slots=True)
class SpeechStart:
    """Speech began; ``audio_start_ms`` already includes the prefix padding."""

    audio_start_ms: int
    onset_ms: int


@dataclass(frozen=True, slots=True)
class SpeechStop:
    """Speech ended; ``audio_end_ms`` is the end of the audio received, silence included."""

    audio_end_ms: int


VadEvent = SpeechStart | SpeechStop


class _State(Enum):
    SILENCE = "silence"
    SPEECH = "speech"


class EnergyVad:
    """Turns appended audio into :class:`SpeechStart` / :class:`SpeechStop` events.

    Call :meth:`feed` with each decoded-format chunk in order; call :meth:`reset` when the
    input buffer is committed or cleared by hand, and :meth:`set_format` when the session's
    input format changes.
    """

    __slots__ = (
        "_frame_bytes",
        "_level",
        "_onset_ms",
        "_params",
        "_pending",
        "_position_ms",
        "_run_ms",
        "_state",
        "prefix_padding_ms",
        "silence_ms",
    )

    def __init__(self, params: VadParams, audio_format: AudioFormat = PCMU) -> None:
        self._params = params
        self.silence_ms = params.silence_ms
        self.prefix_padding_ms = params.prefix_padding_ms
        self._position_ms = 0
        self._pending = b""
        self._state = _State.SILENCE
        self._run_ms = 0
        self._onset_ms = 0
        self._frame_bytes = 0
        self._level: Callable[[bytes], float] = ulaw_rms_dbfs
        self.set_format(audio_format)

    @property
    def position_ms(self) -> int:
        """Milliseconds of input analysed so far (whole frames only)."""
        return self._position_ms

    @property
    def in_speech(self) -> bool:
        return self._state is _State.SPEECH

    def configure(self, silence_ms: int, prefix_padding_ms: int, audio_format: AudioFormat) -> None:
        """Apply a session's VAD tuning and input format (a format change drops a partial frame)."""
        self.silence_ms = silence_ms
        self.prefix_padding_ms = prefix_padding_ms
        frame_bytes = audio_format.bytes_per_second * FRAME_MS // 1000
        if frame_bytes != self._frame_bytes or (self._level is rms_dbfs) != (
            audio_format.kind == "pcm"
        ):
            self.set_format(audio_format)

    def set_format(self, audio_format: AudioFormat) -> None:
        """Analyse later chunks as ``audio_format``; a partial frame in hand is dropped."""
        self._frame_bytes = audio_format.bytes_per_second * FRAME_MS // 1000
        self._level = ulaw_rms_dbfs if audio_format.kind == "pcmu" else rms_dbfs
        self._pending = b""

    def reset(self) -> None:
        """Forget any speech in progress (the buffer was committed or cleared)."""
        self._state = _State.SILENCE
        self._run_ms = 0

    def feed(self, audio: bytes) -> list[VadEvent]:
        """Analyse ``audio``; returns the speech edges it crossed, in order."""
        data = self._pending + audio if self._pending else audio
        whole = len(data) - len(data) % self._frame_bytes
        self._pending = data[whole:]
        events: list[VadEvent] = []
        threshold = self._params.threshold_dbfs
        for start in range(0, whole, self._frame_bytes):
            level = self._level(data[start : start + self._frame_bytes])
            event = self._step(level >= threshold)  # silence reads -inf
            if event is not None:
                events.append(event)
        return events

    def _step(self, voiced: bool) -> VadEvent | None:
        frame_start = self._position_ms
        self._position_ms += FRAME_MS
        if self._state is _State.SILENCE:
            if not voiced:
                self._run_ms = 0
                return None
            if self._run_ms == 0:
                self._onset_ms = frame_start
            self._run_ms += FRAME_MS
            if self._run_ms < self._params.start_ms:
                return None
            self._state = _State.SPEECH
            self._run_ms = 0
            start = max(0, self._onset_ms - self.prefix_padding_ms)
            return SpeechStart(audio_start_ms=start, onset_ms=self._onset_ms)
        if voiced:
            self._run_ms = 0
            return None
        self._run_ms += FRAME_MS
        if self._run_ms < self.silence_ms:
            return None
        self._state = _State.SILENCE
        self._run_ms = 0
        return SpeechStop(audio_end_ms=self._position_ms)
