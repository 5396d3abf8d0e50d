"""Levels drive the energy detector; SNR and alignment judge audio in the other tests."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bridge.codecs.g711 import pcm16_to_ulaw, ulaw_to_pcm16
from bridge.codecs.pcm import best_alignment, rms_dbfs, snr_db, ulaw_rms_dbfs


def tone(amplitude: float, n: int = 1600, freq: float = 400.0) -> bytes:
    t = np.arange(n) / 8000
    return (np.sin(2 * np.pi * freq * t) * amplitude).astype("<i2").tobytes()


def test_silence_is_minus_infinity() -> None:
    assert rms_dbfs(b"\x00\x00" * 160) == -math.inf
    assert rms_dbfs(b"") == -math.inf
    assert ulaw_rms_dbfs(b"\xff" * 160) == -math.inf
    assert ulaw_rms_dbfs(b"\x7f" * 160) == -math.inf  # mu-law's other zero
    assert ulaw_rms_dbfs(b"") == -math.inf


def test_full_scale_square_wave_is_zero_dbfs() -> None:
    square = np.array([32767, -32768] * 80, dtype="<i2").tobytes()
    assert rms_dbfs(square) == pytest.approx(0.0, abs=0.01)


def test_sine_level_follows_amplitude() -> None:
    loud = rms_dbfs(tone(16384))
    quiet = rms_dbfs(tone(16384 / 10))
    # a sine at half scale: 20*log10(0.5 / sqrt(2)) = -9.03 dBFS
    assert loud == pytest.approx(-9.03, abs=0.05)
    assert loud - quiet == pytest.approx(20.0, abs=0.1)


def test_ulaw_level_matches_decoding_first() -> None:
    rng = np.random.default_rng(7)
    for amplitude in (30, 300, 3000, 30000):
        frame = pcm16_to_ulaw(tone(amplitude, n=160, freq=float(rng.integers(100, 3000))))
        assert ulaw_rms_dbfs(frame) == pytest.approx(rms_dbfs(ulaw_to_pcm16(frame)), abs=1e-9)


def test_ulaw_level_separates_speech_from_line_noise() -> None:
    assert ulaw_rms_dbfs(pcm16_to_ulaw(tone(3000, n=160))) > -25
    assert ulaw_rms_dbfs(pcm16_to_ulaw(tone(20, n=160))) < -60


def test_odd_byte_is_ignored_by_rms() -> None:
    assert rms_dbfs(tone(1000) + b"\x7f") == rms_dbfs(tone(1000))


def test_snr() -> None:
    ref = np.frombuffer(tone(10000), dtype="<i2").astype(np.float64)
    assert snr_db(ref, ref) == math.inf
    assert snr_db(ref, ref * 0.9) == pytest.approx(20.0, abs=1e-6)  # error is a tenth
    assert snr_db(ref, np.zeros_like(ref)) == pytest.approx(0.0, abs=1e-9)
    assert snr_db(np.zeros(10), np.ones(10)) == -math.inf
    assert snr_db(ref, np.concatenate([ref * 0.9, np.ones(50)])) == pytest.approx(20.0)


@pytest.mark.parametrize("delay", [0, 7, 33, -12])
def test_best_alignment_finds_the_delay(delay: int) -> None:
    rng = np.random.default_rng(1)
    ref = rng.normal(size=2000)
    test = np.concatenate([np.zeros(delay), ref])[:2000] if delay >= 0 else ref[-delay:]
    lag, corr = best_alignment(ref, 0.5 * test, max_lag=50)
    assert lag == delay
    assert corr == pytest.approx(1.0, abs=1e-9)


def test_best_alignment_reports_unrelated_signals() -> None:
    rng = np.random.default_rng(2)
    _, corr = best_alignment(rng.normal(size=4000), rng.normal(size=4000), max_lag=20)
    assert abs(corr) < 0.1
    assert best_alignment(np.zeros(100), np.ones(100), max_lag=5) == (0, 0.0)
    with pytest.raises(ValueError):
        best_alignment(np.ones(10), np.ones(10), max_lag=-1)
