"""Numbered tags hidden in mu-law audio, so the load test can follow a frame through a server.

The load generator writes a tag at the start of each caller frame and of each answer delta;
whoever receives the audio at the other end (the fake model, the simulated Twilio) finds the
tags again and knows which frame it got, whichever server re-chunked it in between. Matching
by content needs no cooperation from the server under test and no shared sequence numbers.

A tag is 11 bytes (1.4 ms at 8 kHz): a 3-byte marker, then a 32-bit number as 8 nibbles.
Every byte is a mu-law code of magnitude at most 30 in 8159, about -48 dBFS, so a tag reads as
near-silence: it never starts a voice detector on a silent frame and barely dents a loud one.
The marker's 0x70 codes are rare in real audio, and never occur in digital silence (0xFF,
0x7F), so a search for it in C (``bytes.find``) is all a scan costs.
"""

from __future__ import annotations

__all__ = ["TAG_BYTES", "TagScanner", "stamp"]

_MARKER = b"\x70\x7f\x70"
_NIBBLES = 8
TAG_BYTES = len(_MARKER) + _NIBBLES
_ID_LIMIT = 1 << (4 * _NIBBLES)
# Nibble n is written as the mu-law code 0xF0 | n: a tiny positive sample.
_NIBBLE_BASE = 0xF0
# The id's hex digits, as ASCII, translated to those codes in one C call.
_HEX_TO_CODES = bytes.maketrans(b"0123456789abcdef", bytes(range(_NIBBLE_BASE, _NIBBLE_BASE + 16)))


def stamp(audio: bytes, ident: int) -> bytes:
    """``audio`` with tag ``ident`` written over its first bytes; audio too short for a
    tag is returned as it is (and will simply not be found)."""
    if not 0 <= ident < _ID_LIMIT:
        raise ValueError(f"tag id out of range: {ident}")
    if len(audio) < TAG_BYTES:
        return audio
    digits = b"%08x" % ident
    return _MARKER + digits.translate(_HEX_TO_CODES) + audio[TAG_BYTES:]


class TagScanner:
    """Finds the tags in one stream of audio fed in pieces of any size, including a tag
    split across two pieces. One scanner per stream (per call, per model session)."""

    __slots__ = ("_tail",)

    def __init__(self) -> None:
        # Just too short to hold a whole tag: a tag already reported cannot be found again.
        self._tail = b""

    def feed(self, audio: bytes) -> list[int]:
        """The ids of the tags that end in ``audio``, in stream order."""
        data = self._tail + audio if self._tail else audio
        found: list[int] = []
        at = data.find(_MARKER)
        while at >= 0 and at + TAG_BYTES <= len(data):
            ident = 0
            for code in data[at + len(_MARKER) : at + TAG_BYTES]:
                if code & 0xF0 != _NIBBLE_BASE:
                    ident = -1  # the marker by chance in real audio: not a tag
                    break
                ident = ident << 4 | code & 0xF
            if ident >= 0:
                found.append(ident)
                at = data.find(_MARKER, at + TAG_BYTES)
            else:
                at = data.find(_MARKER, at + 1)
        self._tail = data[-(TAG_BYTES - 1) :]
        return found
