"""G.711 mu-law and A-law, bit-exact with the classic ``audioop`` functions at width 2.

Phone audio arrives as 8-bit G.711 codes; the rest of the bridge speaks little-endian
16-bit PCM. Every function takes ``bytes`` and returns new ``bytes``; none keeps state, so
frames can be converted independently and in any order.

The four lookup tables are computed once at import from the G.711 segment rules. Decoding
is one 256-entry table lookup per byte and encoding one 65,536-entry lookup per sample, so a
20 ms frame costs a couple of numpy calls and no Python loop.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

__all__ = [
    "ALAW_SILENCE",
    "ULAW_SILENCE",
    "alaw_to_pcm16",
    "alaw_to_ulaw",
    "pcm16_to_alaw",
    "pcm16_to_ulaw",
    "ulaw_to_alaw",
    "ulaw_to_pcm16",
]

ULAW_SILENCE: Final[int] = 0xFF
"""The mu-law code for a zero sample; fill with it when a frame must be padded."""

ALAW_SILENCE: Final[int] = 0xD5
"""The A-law code for a zero sample (the smallest positive step)."""

# Segment end points (inclusive) of the biased 14-bit mu-law magnitude and of the 13-bit
# A-law magnitude: the segment of a value is the first end point it does not exceed.
_ULAW_SEGMENT_ENDS: Final = np.array(
    [0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], dtype=np.int32
)
_ALAW_SEGMENT_ENDS: Final = np.array(
    [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF], dtype=np.int32
)
_ULAW_BIAS: Final = 0x84  # added to the 16-bit magnitude so each segment starts on a power of two
_ULAW_CLIP: Final = 8159  # largest 14-bit magnitude that still fits the top segment


def _all_samples() -> npt.NDArray[np.int32]:
    """Every int16 value, placed at the index its bit pattern has when read as uint16."""
    return np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.int16).astype(np.int32)


def _build_ulaw_decode() -> npt.NDArray[np.int16]:
    codes = np.arange(256, dtype=np.int32)
    inverted = ~codes & 0xFF  # mu-law transmits every bit inverted
    exponent = (inverted & 0x70) >> 4
    magnitude = (((inverted & 0x0F) << 3) + _ULAW_BIAS) << exponent
    pcm = np.where(inverted & 0x80, _ULAW_BIAS - magnitude, magnitude - _ULAW_BIAS)
    return pcm.astype("<i2")


def _build_ulaw_encode() -> npt.NDArray[np.uint8]:
    # The 16-bit sample is first reduced to 14 bits with an arithmetic shift (floor), which
    # is what makes -1 encode as a negative code, exactly like audioop.
    value = _all_samples() >> 2
    negative = value < 0
    mask = np.where(negative, 0x7F, 0xFF)
    magnitude = np.minimum(np.where(negative, -value, value), _ULAW_CLIP) + (_ULAW_BIAS >> 2)
    segment = np.searchsorted(_ULAW_SEGMENT_ENDS, magnitude, side="left").astype(np.int32)
    mantissa = (magnitude >> np.minimum(segment + 1, 31)) & 0x0F
    code = np.where(segment >= 8, 0x7F, (np.minimum(segment, 7) << 4) | mantissa)
    return (code ^ mask).astype(np.uint8)


def _build_alaw_decode() -> npt.NDArray[np.int16]:
    codes = np.arange(256, dtype=np.int32)
    toggled = codes ^ 0x55  # A-law inverts every even bit on the wire
    mantissa = toggled & 0x0F
    segment = (toggled & 0x70) >> 4
    magnitude = np.where(
        segment > 0,
        (2 * mantissa + 33) << (segment + 2),
        (2 * mantissa + 1) << 3,
    )
    pcm = np.where(toggled & 0x80, magnitude, -magnitude)
    return pcm.astype("<i2")


def _build_alaw_encode() -> npt.NDArray[np.uint8]:
    value = _all_samples() >> 3  # 13-bit A-law range, floor shift as in audioop
    negative = value < 0
    mask = np.where(negative, 0x55, 0xD5)
    # One's-complement magnitude: -1 maps to 0, so both signs share the same steps.
    magnitude = np.where(negative, -value - 1, value)
    segment = np.searchsorted(_ALAW_SEGMENT_ENDS, magnitude, side="left").astype(np.int32)
    shift = np.where(segment < 2, 1, np.minimum(segment, 7))
    mantissa = (magnitude >> shift) & 0x0F
    code = np.where(segment >= 8, 0x7F, (np.minimum(segment, 7) << 4) | mantissa)
    return (code ^ mask).astype(np.uint8)


_ULAW_DECODE: Final = _build_ulaw_decode()
_ULAW_ENCODE: Final = _build_ulaw_encode()
_ALAW_DECODE: Final = _build_alaw_decode()
_ALAW_ENCODE: Final = _build_alaw_encode()


def _sample_indices(data: bytes) -> npt.NDArray[np.uint16]:
    if len(data) % 2:
        raise ValueError(f"16-bit PCM needs an even number of bytes, got {len(data)}")
    return np.frombuffer(data, dtype="<u2")


def ulaw_to_pcm16(data: bytes) -> bytes:
    """Decode mu-law codes to little-endian 16-bit PCM (two bytes out per byte in)."""
    return _ULAW_DECODE[np.frombuffer(data, dtype=np.uint8)].tobytes()


def pcm16_to_ulaw(data: bytes) -> bytes:
    """Encode little-endian 16-bit PCM as mu-law; raises ``ValueError`` on an odd length.

    Callers that receive PCM in arbitrary chunks must carry a dangling byte themselves
    (``StreamResampler`` output is always whole samples).
    """
    return _ULAW_ENCODE[_sample_indices(data)].tobytes()


def alaw_to_pcm16(data: bytes) -> bytes:
    """Decode A-law codes to little-endian 16-bit PCM (two bytes out per byte in)."""
    return _ALAW_DECODE[np.frombuffer(data, dtype=np.uint8)].tobytes()


def pcm16_to_alaw(data: bytes) -> bytes:
    """Encode little-endian 16-bit PCM as A-law; raises ``ValueError`` on an odd length."""
    return _ALAW_ENCODE[_sample_indices(data)].tobytes()


# Code-to-code tables for a phone leg that speaks A-law while the bridge works in mu-law:
# decoding to the sample and encoding it again, once per code, so converting a frame is one
# bytes.translate() rather than two array passes.
_ULAW_TO_ALAW: Final = bytes(_ALAW_ENCODE[_ULAW_DECODE.astype(np.uint16)].tolist())
_ALAW_TO_ULAW: Final = bytes(_ULAW_ENCODE[_ALAW_DECODE.astype(np.uint16)].tolist())


def ulaw_to_alaw(data: bytes) -> bytes:
    """Mu-law codes as the A-law codes of the same samples (to the nearest A-law level)."""
    return data.translate(_ULAW_TO_ALAW)


def alaw_to_ulaw(data: bytes) -> bytes:
    """A-law codes as the mu-law codes of the same samples (to the nearest mu-law level)."""
    return data.translate(_ALAW_TO_ULAW)
