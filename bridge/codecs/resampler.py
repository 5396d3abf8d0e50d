"""A streaming sample-rate converter for mono 16-bit PCM, one per direction per call."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import soxr

__all__ = ["StreamResampler"]


class StreamResampler:
    """Converts a continuous mono int16 PCM stream from ``in_rate`` to ``out_rate``.

    Feed every chunk of one stream, in order, to :meth:`process` and send on whatever it
    returns; call :meth:`flush` once when the stream ends to get the tail. The filter keeps
    history across chunks, so chunk boundaries leave no clicks; the price is a short delay
    (a few milliseconds for ``"HQ"``): the first calls return fewer samples than the ratio
    suggests, and the missing ones come out later or at :meth:`flush`. Never reuse one
    object for two streams: make a new one instead.

    ``quality`` is a soxr recipe: ``"QQ"``, ``"LQ"``, ``"MQ"``, ``"HQ"`` or ``"VHQ"``.
    """

    __slots__ = ("_carry", "_flushed", "_in_rate", "_out_rate", "_passthrough", "_stream")

    def __init__(self, in_rate: int, out_rate: int, quality: str = "HQ") -> None:
        if in_rate <= 0 or out_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {in_rate} -> {out_rate}")
        self._in_rate = in_rate
        self._out_rate = out_rate
        # Equal rates need no filter; skipping soxr keeps the audio bit-exact.
        self._passthrough = in_rate == out_rate
        self._stream: soxr.ResampleStream | None = (
            None
            if self._passthrough
            else soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality=quality)
        )
        self._carry = b""
        self._flushed = False

    @property
    def in_rate(self) -> int:
        return self._in_rate

    @property
    def out_rate(self) -> int:
        return self._out_rate

    def process(self, pcm16: bytes) -> bytes:
        """Resample the next chunk; returns zero or more whole little-endian int16 samples.

        A chunk with an odd byte count is fine: the dangling byte waits for the next call.
        Raises ``RuntimeError`` after :meth:`flush`.
        """
        if self._flushed:
            raise RuntimeError("StreamResampler.process() called after flush()")
        data = self._carry + pcm16 if self._carry else pcm16
        usable = len(data) & ~1
        self._carry = data[usable:]
        if self._passthrough:
            return bytes(data[:usable])
        if usable == 0:
            return b""
        return self._resample(np.frombuffer(data, dtype="<i2", count=usable // 2), last=False)

    def flush(self) -> bytes:
        """End the stream and return the samples still held in the filter.

        A dangling odd byte is dropped (it is half a sample). Call once; afterwards the
        object is spent, and a second call returns ``b""``.
        """
        if self._flushed:
            return b""
        self._flushed = True
        self._carry = b""
        if self._passthrough:
            return b""
        return self._resample(np.zeros(0, dtype="<i2"), last=True)

    def _resample(self, samples: npt.NDArray[np.int16], *, last: bool) -> bytes:
        assert self._stream is not None
        out = self._stream.resample_chunk(samples, last=last)
        return np.asarray(out, dtype="<i2").tobytes()
