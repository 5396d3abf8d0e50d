"""Audio codecs: G.711, streaming resampling, levels, WAV files and the shipped clips.

A leaf layer: it imports only the standard library, numpy and soxr, never the rest of the
bridge. Everything works on ``bytes`` of 8-bit G.711 codes or little-endian 16-bit PCM.
"""

from bridge.codecs.clips import clip_names, clip_text, load_clip
from bridge.codecs.g711 import (
    ALAW_SILENCE,
    ULAW_SILENCE,
    alaw_to_pcm16,
    pcm16_to_alaw,
    pcm16_to_ulaw,
    ulaw_to_pcm16,
)
from bridge.codecs.pcm import best_alignment, rms_dbfs, snr_db, ulaw_rms_dbfs
from bridge.codecs.resampler import StreamResampler
from bridge.codecs.wav import read_wav_as_ulaw8k, write_pcm16_wav, write_ulaw8k_wav

__all__ = [
    "ALAW_SILENCE",
    "ULAW_SILENCE",
    "StreamResampler",
    "alaw_to_pcm16",
    "best_alignment",
    "clip_names",
    "clip_text",
    "load_clip",
    "pcm16_to_alaw",
    "pcm16_to_ulaw",
    "read_wav_as_ulaw8k",
    "rms_dbfs",
    "snr_db",
    "ulaw_rms_dbfs",
    "ulaw_to_pcm16",
    "write_pcm16_wav",
    "write_ulaw8k_wav",
]
