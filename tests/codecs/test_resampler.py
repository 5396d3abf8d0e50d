"""The streaming resampler keeps the signal, keeps count, and does not care how it is fed."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from bridge.codecs.pcm import best_alignment
from bridge.codecs.resampler import StreamResampler


def sine(freq: float, rate: int, seconds: float, amplitude: float = 12000.0) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    return (np.sin(2 * np.pi * freq * t) * amplitude).astype("<i2").tobytes()


def samples(data: bytes) -> npt.NDArray[np.int16]:
    return np.frombuffer(data, dtype="<i2")


def run_chunked(resampler: StreamResampler, data: bytes, chunk: int) -> bytes:
    out = [resampler.process(data[i : i + chunk]) for i in range(0, len(data), chunk)]
    return b"".join(out) + resampler.flush()


def test_sine_survives_8k_to_24k_and_back() -> None:
    original = sine(440, 8000, 1.0)
    up = run_chunked(StreamResampler(8000, 24000), original, 160)
    down = run_chunked(StreamResampler(24000, 8000), up, 480)
    ref, back = samples(original), samples(down)
    assert abs(back.size - ref.size) <= 2
    lag, corr = best_alignment(ref[800:-800], back[800:-800], max_lag=40)
    assert corr > 0.99
    assert abs(lag) <= 2  # the filter delay is compensated, not passed on


def test_upsampled_tone_is_at_the_same_pitch() -> None:
    up = samples(run_chunked(StreamResampler(8000, 24000), sine(440, 8000, 1.0), 160))
    spectrum = np.abs(np.fft.rfft(up.astype(np.float64)))
    peak_hz = np.argmax(spectrum) * 24000 / up.size
    assert abs(peak_hz - 440) < 2


def test_sample_counts_add_up_over_many_small_frames() -> None:
    resampler = StreamResampler(8000, 24000)
    frame = sine(440, 8000, 0.02)  # 160 samples, 320 bytes
    produced = 0
    frames = 500  # 10 seconds of audio
    for i in range(frames):
        out = resampler.process(frame)
        assert len(out) % 2 == 0
        produced += len(out) // 2
        # output may lag behind (filter delay) but never runs ahead of the input
        assert produced <= (i + 1) * 480
    assert frames * 480 - produced < 2400  # never more than 100 ms held back
    produced += len(resampler.flush()) // 2
    assert abs(produced - frames * 480) <= 2


def test_chunked_output_equals_one_shot_output() -> None:
    data = sine(300, 24000, 0.5) + sine(1200, 24000, 0.5)
    one_shot = StreamResampler(24000, 8000)
    whole = samples(one_shot.process(data) + one_shot.flush()).astype(np.int32)
    chunked = samples(run_chunked(StreamResampler(24000, 8000), data, 160)).astype(np.int32)
    assert abs(whole.size - chunked.size) <= 1
    n = min(whole.size, chunked.size)
    assert np.max(np.abs(whole[:n] - chunked[:n])) <= 2  # rounding only


def test_odd_byte_counts_are_carried_to_the_next_call() -> None:
    data = sine(440, 8000, 0.5)
    even = samples(run_chunked(StreamResampler(8000, 16000), data, 320))
    odd = samples(run_chunked(StreamResampler(8000, 16000), data, 33))  # splits samples
    assert even.size == odd.size
    assert np.max(np.abs(even.astype(np.int32) - odd)) <= 2


def test_equal_rates_pass_audio_through_unchanged() -> None:
    data = sine(440, 8000, 0.1)
    resampler = StreamResampler(8000, 8000)
    assert resampler.process(data[:101]) + resampler.process(data[101:]) == data
    assert resampler.flush() == b""


def test_empty_input_and_flush_are_harmless() -> None:
    resampler = StreamResampler(16000, 8000)
    assert resampler.process(b"") == b""
    assert resampler.process(b"\x01") == b""  # half a sample waits
    resampler.flush()
    assert resampler.flush() == b""
    with pytest.raises(RuntimeError):
        resampler.process(b"\x00\x00")


def test_rejects_nonsense_rates() -> None:
    with pytest.raises(ValueError):
        StreamResampler(0, 8000)
    with pytest.raises(ValueError):
        StreamResampler(8000, -1)
