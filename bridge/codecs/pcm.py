"""Small measurements on audio: levels for voice detection, and comparisons for tests.

``rms_dbfs`` and ``ulaw_rms_dbfs`` return dB relative to a full-scale square wave
(32768), so a full-scale sine reads about -3 dBFS and digital silence reads ``-inf``;
compare them against a threshold such as ``-45.0``, never test them for equality.
"""

from __future__ import annotations

import math
from typing import Final

import numpy as np
import numpy.typing as npt

from bridge.codecs.g711 import ulaw_to_pcm16

__all__ = ["best_alignment", "rms_dbfs", "snr_db", "ulaw_rms_dbfs"]

_FULL_SCALE_SQUARED: Final = 32768.0 * 32768.0

# Squared value of every decoded mu-law code: the energy detector runs 50 times a second
# per call, and with this table a frame costs one lookup and one sum, with no decode.
_ULAW_SQUARED: Final = (
    np.frombuffer(ulaw_to_pcm16(bytes(range(256))), dtype="<i2").astype(np.float64) ** 2
)


def _dbfs(mean_square: float) -> float:
    if mean_square <= 0.0:
        return -math.inf
    return 10.0 * math.log10(mean_square / _FULL_SCALE_SQUARED)


def rms_dbfs(pcm16: bytes) -> float:
    """RMS level of little-endian int16 PCM in dBFS; ``-inf`` for empty or all-zero input.

    A dangling odd byte is ignored.
    """
    samples = np.frombuffer(pcm16, dtype="<i2", count=len(pcm16) // 2)
    if samples.size == 0:
        return -math.inf
    as_float = samples.astype(np.float64)
    return _dbfs(float(np.dot(as_float, as_float)) / samples.size)


def ulaw_rms_dbfs(ulaw: bytes) -> float:
    """RMS level of mu-law audio in dBFS, as if decoded first; ``-inf`` for empty or silence."""
    if not ulaw:
        return -math.inf
    codes = np.frombuffer(ulaw, dtype=np.uint8)
    return _dbfs(float(np.add.reduce(_ULAW_SQUARED.take(codes))) / codes.size)


def snr_db(reference: npt.ArrayLike, test: npt.ArrayLike) -> float:
    """Signal-to-noise ratio of ``test`` against ``reference`` in dB.

    Both are sample arrays; when their lengths differ the longer is cut to the shorter,
    so align them first (see :func:`best_alignment`). Returns ``inf`` when they are equal
    and ``-inf`` when the reference is silent but the test is not.
    """
    ref = np.asarray(reference, dtype=np.float64).ravel()
    tst = np.asarray(test, dtype=np.float64).ravel()
    n = min(ref.size, tst.size)
    ref, tst = ref[:n], tst[:n]
    signal = float(np.dot(ref, ref))
    noise_vec = ref - tst
    noise = float(np.dot(noise_vec, noise_vec))
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def best_alignment(
    reference: npt.ArrayLike, test: npt.ArrayLike, max_lag: int
) -> tuple[int, float]:
    """Find the lag at which ``test`` best matches ``reference``.

    Tries every lag in ``[-max_lag, max_lag]`` and returns ``(lag, correlation)`` for the
    highest normalized correlation (1.0 is a perfect match up to gain). A positive lag
    means ``test`` runs late: ``test[n + lag]`` lines up with ``reference[n]``; compare
    ``reference[:len(test) - lag]`` with ``test[lag:]`` to use it. Returns ``(0, 0.0)``
    when nothing overlaps or either side is silent over every overlap.
    """
    if max_lag < 0:
        raise ValueError(f"max_lag must be >= 0, got {max_lag}")
    ref = np.asarray(reference, dtype=np.float64).ravel()
    tst = np.asarray(test, dtype=np.float64).ravel()
    best_lag, best_corr = 0, 0.0
    found = False
    for lag in range(-max_lag, max_lag + 1):
        if lag >= 0:
            a, b = ref, tst[lag:]
        else:
            a, b = ref[-lag:], tst
        n = min(a.size, b.size)
        if n == 0:
            continue
        a, b = a[:n], b[:n]
        energy = float(np.dot(a, a)) * float(np.dot(b, b))
        if energy <= 0.0:
            continue
        corr = float(np.dot(a, b)) / math.sqrt(energy)
        if not found or corr > best_corr:
            best_lag, best_corr, found = lag, corr, True
    return best_lag, best_corr
