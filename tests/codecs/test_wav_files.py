"""Whatever WAV a user hands the simulator comes out as 8 kHz mono mu-law; what we write plays."""

from __future__ import annotations

import struct
import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from bridge.codecs.g711 import pcm16_to_alaw, pcm16_to_ulaw, ulaw_to_pcm16
from bridge.codecs.pcm import best_alignment, snr_db
from bridge.codecs.wav import read_wav_as_ulaw8k, write_pcm16_wav, write_ulaw8k_wav


def tone(rate: int, seconds: float = 0.5, freq: float = 440.0) -> npt.NDArray[np.int16]:
    t = np.arange(int(rate * seconds)) / rate
    return (np.sin(2 * np.pi * freq * t) * 10000).astype("<i2")


def decoded(ulaw: bytes) -> npt.NDArray[np.float64]:
    return np.frombuffer(ulaw_to_pcm16(ulaw), dtype="<i2").astype(np.float64)


def write_wav(path: Path, frames: bytes, rate: int, channels: int, width: int) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(frames)


def riff(
    fmt_tag: int, channels: int, rate: int, bits: int, data: bytes, *, extensible: bool = False
) -> bytes:
    """A WAV file built by hand, for formats the stdlib cannot write."""
    block = channels * bits // 8
    if extensible:
        guid_tail = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
        head = struct.pack("<HHIIHH", 0xFFFE, channels, rate, rate * block, block, bits)
        fmt = head + struct.pack("<HHIH", 22, bits, 0, fmt_tag) + guid_tail
    else:
        fmt = struct.pack("<HHIIHHH", fmt_tag, channels, rate, rate * block, block, bits, 0)
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt
    chunks += b"fact" + struct.pack("<I", 4) + struct.pack("<I", len(data) // block)
    chunks += b"LIST" + struct.pack("<I", 3) + b"abc\x00"  # odd size: padded to even
    chunks += b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks


def assert_is_the_tone(ulaw: bytes, seconds: float = 0.5) -> None:
    expected = tone(8000, seconds).astype(np.float64)
    got = decoded(ulaw)
    assert abs(got.size - expected.size) <= 2
    lag, corr = best_alignment(expected[400:-400], got[400:-400], max_lag=20)
    assert abs(lag) <= 1
    assert corr > 0.99


def test_8k_pcm16_mono_is_just_encoded(tmp_path: Path) -> None:
    path = tmp_path / "in.wav"
    write_wav(path, tone(8000).tobytes(), 8000, 1, 2)
    assert read_wav_as_ulaw8k(path) == pcm16_to_ulaw(tone(8000).tobytes())


@pytest.mark.parametrize("rate", [16000, 22050, 44100, 48000])
def test_other_rates_are_resampled(tmp_path: Path, rate: int) -> None:
    path = tmp_path / "in.wav"
    write_wav(path, tone(rate).tobytes(), rate, 1, 2)
    assert_is_the_tone(read_wav_as_ulaw8k(path))


def test_stereo_is_mixed_down(tmp_path: Path) -> None:
    left = tone(16000)
    right = np.zeros_like(left)  # half the level after mixing, same shape
    path = tmp_path / "stereo.wav"
    write_wav(path, np.column_stack([left, right]).ravel().tobytes(), 16000, 2, 2)
    got = decoded(read_wav_as_ulaw8k(path))
    expected = tone(8000).astype(np.float64) / 2
    _, corr = best_alignment(expected[400:-400], got[400:-400], max_lag=5)
    assert corr > 0.99
    assert np.sqrt(np.mean(got**2)) == pytest.approx(np.sqrt(np.mean(expected**2)), rel=0.05)


def test_8_bit_24_bit_and_32_bit_pcm(tmp_path: Path) -> None:
    samples = tone(8000).astype(np.int32)
    eight = ((samples >> 8) + 128).astype(np.uint8).tobytes()
    wide = (samples << 16).astype("<i4")
    twenty_four = wide.view(np.uint8).reshape(-1, 4)[:, 1:].tobytes()
    for name, frames, width, min_snr in [
        ("u8.wav", eight, 1, 30),
        ("s24.wav", twenty_four, 3, 35),
        ("s32.wav", wide.tobytes(), 4, 35),
    ]:
        path = tmp_path / name
        write_wav(path, frames, 8000, 1, width)
        got = decoded(read_wav_as_ulaw8k(path))
        assert snr_db(samples, got) > min_snr, name


def test_ulaw_wav_at_8k_mono_passes_through_byte_for_byte(tmp_path: Path) -> None:
    codes = bytes(range(256)) * 20
    path = tmp_path / "ulaw.wav"
    path.write_bytes(riff(7, 1, 8000, 8, codes))
    assert read_wav_as_ulaw8k(path) == codes


def test_alaw_and_extensible_and_resampled_ulaw(tmp_path: Path) -> None:
    pcm8k = tone(8000).tobytes()
    alaw = tmp_path / "alaw.wav"
    alaw.write_bytes(riff(6, 1, 8000, 8, pcm16_to_alaw(pcm8k)))
    assert snr_db(tone(8000), decoded(read_wav_as_ulaw8k(alaw))) > 30

    ext = tmp_path / "ext.wav"
    ext.write_bytes(riff(1, 1, 8000, 16, pcm8k, extensible=True))
    assert read_wav_as_ulaw8k(ext) == pcm16_to_ulaw(pcm8k)

    ulaw16k = tmp_path / "ulaw16k.wav"
    ulaw16k.write_bytes(riff(7, 1, 16000, 8, pcm16_to_ulaw(tone(16000).tobytes())))
    assert_is_the_tone(read_wav_as_ulaw8k(ulaw16k))


def test_write_ulaw8k_wav_round_trips(tmp_path: Path) -> None:
    codes = bytes(c for c in range(256) if c != 0x7F) * 10  # 0x7F re-encodes as 0xFF
    path = tmp_path / "out.wav"
    write_ulaw8k_wav(path, codes)
    with wave.open(str(path), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 8000)
        assert w.getnframes() == len(codes)
    assert read_wav_as_ulaw8k(path) == codes


def test_write_pcm16_wav(tmp_path: Path) -> None:
    pcm = tone(24000).tobytes()
    path = tmp_path / "agent.wav"
    write_pcm16_wav(str(path), pcm, 24000)
    with wave.open(str(path), "rb") as w:
        assert w.getframerate() == 24000
        assert w.readframes(w.getnframes()) == pcm
    with pytest.raises(ValueError):
        write_pcm16_wav(path, b"\x00", 8000)
    with pytest.raises(ValueError):
        write_pcm16_wav(path, b"", 0)


def test_bad_files_raise_value_error(tmp_path: Path) -> None:
    for name, content in [
        ("empty.wav", b""),
        ("text.wav", b"hello, this is not audio at all"),
        ("float.wav", riff(3, 1, 8000, 32, b"\x00" * 64)),
        ("nodata.wav", b"RIFF\x04\x00\x00\x00WAVE"),
    ]:
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(ValueError):
            read_wav_as_ulaw8k(path)
    with pytest.raises(OSError):
        read_wav_as_ulaw8k(tmp_path / "missing.wav")
