"""WAV files in and out: caller audio for the simulator, agent audio for people to listen to.

Reading accepts what people usually have at hand (8/16/24/32-bit integer PCM, G.711
mu-law or A-law, any rate, any channel count) and always yields 8 kHz mono mu-law, the
phone network's format. Writing always produces 16-bit PCM, which every player opens.
Unreadable or unsupported files raise ``ValueError``; a missing file raises ``OSError``.
"""

from __future__ import annotations

import os
import struct
import wave
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from bridge.codecs.g711 import alaw_to_pcm16, pcm16_to_ulaw, ulaw_to_pcm16
from bridge.codecs.resampler import StreamResampler

__all__ = ["read_wav_as_ulaw8k", "write_pcm16_wav", "write_ulaw8k_wav"]

StrPath = str | os.PathLike[str]

PHONE_RATE: Final = 8000

_FORMAT_PCM: Final = 0x0001
_FORMAT_ALAW: Final = 0x0006
_FORMAT_ULAW: Final = 0x0007
_FORMAT_EXTENSIBLE: Final = 0xFFFE


@dataclass(frozen=True, slots=True)
class _WavAudio:
    format_tag: int
    channels: int
    rate: int
    sample_width: int  # bytes per sample of one channel
    frames: bytes


def read_wav_as_ulaw8k(path: StrPath) -> bytes:
    """Read a WAV file and return its audio as 8 kHz mono mu-law, ready to stream to a call.

    Channels are mixed down by averaging; other rates are resampled. A file that already is
    8 kHz mono mu-law comes back byte for byte.
    """
    audio = _read(path)
    if audio.format_tag == _FORMAT_ULAW and audio.channels == 1 and audio.rate == PHONE_RATE:
        return audio.frames
    samples = _to_mono(_to_int16(audio), audio.channels)
    pcm = samples.astype("<i2").tobytes()
    if audio.rate != PHONE_RATE:
        resampler = StreamResampler(audio.rate, PHONE_RATE)
        pcm = resampler.process(pcm) + resampler.flush()
    return pcm16_to_ulaw(pcm)


def write_ulaw8k_wav(path: StrPath, ulaw: bytes) -> None:
    """Write 8 kHz mono mu-law audio to ``path`` as a 16-bit PCM WAV (overwrites)."""
    write_pcm16_wav(path, ulaw_to_pcm16(ulaw), PHONE_RATE)


def write_pcm16_wav(path: StrPath, pcm: bytes, rate: int) -> None:
    """Write little-endian 16-bit mono PCM to ``path`` as a WAV file (overwrites).

    Raises ``ValueError`` on an odd byte count or a non-positive rate.
    """
    if len(pcm) % 2:
        raise ValueError(f"16-bit PCM needs an even number of bytes, got {len(pcm)}")
    if rate <= 0:
        raise ValueError(f"sample rate must be positive, got {rate}")
    with wave.open(os.fspath(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm)


def _read(path: StrPath) -> _WavAudio:
    filename = os.fspath(path)
    try:
        with wave.open(filename, "rb") as wav:
            return _WavAudio(
                format_tag=_FORMAT_PCM,
                channels=wav.getnchannels(),
                rate=wav.getframerate(),
                sample_width=wav.getsampwidth(),
                frames=wav.readframes(wav.getnframes()),
            )
    except wave.Error:
        # The stdlib reads integer PCM only; G.711 files (and, before Python 3.12,
        # WAVE_FORMAT_EXTENSIBLE ones) need the chunks read by hand, which also gives a
        # clearer message for files that are no WAV at all.
        pass
    except EOFError as exc:
        raise ValueError(f"{filename}: truncated WAV file") from exc
    with open(filename, "rb") as f:
        return _parse_riff(f.read(), filename)


def _parse_riff(blob: bytes, filename: str) -> _WavAudio:
    if len(blob) < 12 or blob[:4] != b"RIFF" or blob[8:12] != b"WAVE":
        raise ValueError(f"{filename}: not a RIFF/WAVE file")
    fmt: tuple[int, int, int, int] | None = None
    pos = 12
    while pos + 8 <= len(blob):
        chunk_id = blob[pos : pos + 4]
        (size,) = struct.unpack_from("<I", blob, pos + 4)
        body = blob[pos + 8 : pos + 8 + size]
        if chunk_id == b"fmt " and len(body) >= 16:
            tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", body)
            if tag == _FORMAT_EXTENSIBLE and len(body) >= 26:
                (tag,) = struct.unpack_from("<H", body, 24)  # first field of the sub-format GUID
            fmt = (tag, channels, rate, bits)
        elif chunk_id == b"data":
            if fmt is None:
                break
            tag, channels, rate, bits = fmt
            if tag not in (_FORMAT_PCM, _FORMAT_ULAW, _FORMAT_ALAW):
                raise ValueError(f"{filename}: unsupported WAV format tag {tag:#06x}")
            if channels < 1 or rate < 1 or bits % 8 or not 8 <= bits <= 32:
                raise ValueError(f"{filename}: bad WAV header")
            width = bits // 8
            whole = len(body) - len(body) % (width * channels)
            return _WavAudio(tag, channels, rate, width, body[:whole])
        pos += 8 + size + (size & 1)  # chunks are padded to an even length
    raise ValueError(f"{filename}: WAV file without a fmt chunk before its data")


def _to_int16(audio: _WavAudio) -> npt.NDArray[np.int32]:
    frames, width = audio.frames, audio.sample_width
    if audio.format_tag == _FORMAT_ULAW:
        frames, width = ulaw_to_pcm16(frames), 2
    elif audio.format_tag == _FORMAT_ALAW:
        frames, width = alaw_to_pcm16(frames), 2
    if width == 1:  # 8-bit WAV is unsigned, centred on 128
        return (np.frombuffer(frames, dtype=np.uint8).astype(np.int32) - 128) << 8
    if width == 2:
        return np.frombuffer(frames, dtype="<i2").astype(np.int32)
    if width == 3:  # keep the two most significant bytes of each little-endian sample
        triples = np.frombuffer(frames, dtype=np.uint8).reshape(-1, 3)
        return np.ascontiguousarray(triples[:, 1:]).view("<i2").ravel().astype(np.int32)
    if width == 4:
        return np.frombuffer(frames, dtype="<i4") >> 16
    raise ValueError(f"unsupported sample width: {width} bytes")


def _to_mono(samples: npt.NDArray[np.int32], channels: int) -> npt.NDArray[np.int32]:
    if channels == 1:
        return samples
    usable = samples.size - samples.size % channels
    mixed: npt.NDArray[np.int32] = samples[:usable].reshape(-1, channels).sum(axis=1) // channels
    return mixed
