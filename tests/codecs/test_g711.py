"""G.711 must match audioop bit for bit: callers and carriers hear exactly these codes."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from bridge.codecs.g711 import (
    ALAW_SILENCE,
    ULAW_SILENCE,
    alaw_to_pcm16,
    pcm16_to_alaw,
    pcm16_to_ulaw,
    ulaw_to_pcm16,
)

ALL_SAMPLES = np.arange(-32768, 32768, dtype="<i2").tobytes()
ALL_CODES = bytes(range(256))

Codec = Callable[[bytes], bytes]


def pcm(*samples: int) -> bytes:
    return np.array(samples, dtype="<i2").tobytes()


def samples_of(data: bytes) -> list[int]:
    return [int(v) for v in np.frombuffer(data, dtype="<i2")]


# Fixed vectors from the G.711 tables, so the suite still checks something without audioop.
ULAW_ENCODE_VECTORS = [
    (0, 0xFF),
    (1, 0xFF),
    (-1, 0x7E),
    (100, 0xF2),
    (-100, 0x72),
    (1000, 0xCE),
    (-1000, 0x4E),
    (32767, 0x80),
    (-32768, 0x00),
]
ALAW_ENCODE_VECTORS = [
    (0, 0xD5),
    (1, 0xD5),
    (-1, 0x55),
    (100, 0xD3),
    (-100, 0x53),
    (1000, 0xFA),
    (-1000, 0x7A),
    (32767, 0xAA),
    (-32768, 0x2A),
]
ULAW_DECODE_VECTORS = [
    (0x00, -32124),
    (0x80, 32124),
    (0x7F, 0),
    (0xFF, 0),
    (0x55, -716),
    (0xD5, 716),
    (0x2A, -5372),
    (0xAA, 5372),
]
ALAW_DECODE_VECTORS = [
    (0x00, -5504),
    (0x80, 5504),
    (0x55, -8),
    (0xD5, 8),
    (0x2A, -32256),
    (0xAA, 32256),
    (0x7F, -848),
    (0xFF, 848),
]


@pytest.mark.parametrize(("sample", "code"), ULAW_ENCODE_VECTORS)
def test_ulaw_encode_known_vectors(sample: int, code: int) -> None:
    assert pcm16_to_ulaw(pcm(sample)) == bytes([code])


@pytest.mark.parametrize(("sample", "code"), ALAW_ENCODE_VECTORS)
def test_alaw_encode_known_vectors(sample: int, code: int) -> None:
    assert pcm16_to_alaw(pcm(sample)) == bytes([code])


@pytest.mark.parametrize(("code", "sample"), ULAW_DECODE_VECTORS)
def test_ulaw_decode_known_vectors(code: int, sample: int) -> None:
    assert samples_of(ulaw_to_pcm16(bytes([code]))) == [sample]


@pytest.mark.parametrize(("code", "sample"), ALAW_DECODE_VECTORS)
def test_alaw_decode_known_vectors(code: int, sample: int) -> None:
    assert samples_of(alaw_to_pcm16(bytes([code]))) == [sample]


def test_silence_constants_are_the_codes_for_zero() -> None:
    assert pcm16_to_ulaw(pcm(0)) == bytes([ULAW_SILENCE])
    assert pcm16_to_alaw(pcm(0)) == bytes([ALAW_SILENCE])
    assert samples_of(ulaw_to_pcm16(bytes([ULAW_SILENCE]))) == [0]
    assert samples_of(alaw_to_pcm16(bytes([ALAW_SILENCE]))) == [8]  # A-law has no zero


def test_bit_exact_with_audioop_over_every_sample_and_code() -> None:
    audioop = pytest.importorskip("audioop")
    assert pcm16_to_ulaw(ALL_SAMPLES) == audioop.lin2ulaw(ALL_SAMPLES, 2)
    assert pcm16_to_alaw(ALL_SAMPLES) == audioop.lin2alaw(ALL_SAMPLES, 2)
    assert ulaw_to_pcm16(ALL_CODES) == audioop.ulaw2lin(ALL_CODES, 2)
    assert alaw_to_pcm16(ALL_CODES) == audioop.alaw2lin(ALL_CODES, 2)


@pytest.mark.parametrize(
    ("encode", "decode", "changed"),
    # mu-law has two codes for zero (0x7F, "negative zero", re-encodes as 0xFF); every
    # other code is its own round trip.
    [(pcm16_to_ulaw, ulaw_to_pcm16, [0x7F]), (pcm16_to_alaw, alaw_to_pcm16, [])],
    ids=["ulaw", "alaw"],
)
def test_every_code_survives_decode_then_encode(
    encode: Codec, decode: Codec, changed: list[int]
) -> None:
    again = encode(decode(ALL_CODES))
    assert [c for c in range(256) if again[c] != c] == changed


def test_lengths_and_output_types() -> None:
    frame = bytes([0x12, 0x9A]) * 80  # one 20 ms frame
    assert len(ulaw_to_pcm16(frame)) == 320
    assert len(alaw_to_pcm16(frame)) == 320
    assert len(pcm16_to_ulaw(ulaw_to_pcm16(frame))) == 160
    assert type(pcm16_to_ulaw(b"")) is bytes and pcm16_to_ulaw(b"") == b""
    assert ulaw_to_pcm16(b"") == b""


@pytest.mark.parametrize("encode", [pcm16_to_ulaw, pcm16_to_alaw])
def test_encode_rejects_odd_length(encode: Codec) -> None:
    with pytest.raises(ValueError, match="even"):
        encode(b"\x00\x01\x02")


def test_mu_law_round_trip_error_is_small_relative_to_level() -> None:
    t = np.arange(8000) / 8000
    sine = (np.sin(2 * np.pi * 440 * t) * 12000).astype("<i2")
    back = np.frombuffer(ulaw_to_pcm16(pcm16_to_ulaw(sine.tobytes())), dtype="<i2")
    err = back.astype(np.float64) - sine
    snr = 10 * np.log10(np.sum(sine.astype(np.float64) ** 2) / np.sum(err**2))
    assert snr > 30  # G.711 gives about 38 dB on a loud tone
