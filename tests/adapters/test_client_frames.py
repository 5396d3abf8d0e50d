"""Client text frames framed by the bridge: what RFC 6455 §5.2-5.3 asks of them, and mask keys
that are never reused, within a process or across a fork."""

from __future__ import annotations

import os
import struct

import pytest

from bridge.adapters.client_frames import POOL_KEYS, MaskKeys, client_text_frame


def _read_frame(frame: bytes) -> tuple[int, bytes, bytes]:
    """(first byte, key, unmasked payload) of one whole masked frame, checked as a server
    would: the mask bit set and the length in its shortest form."""
    first, second = frame[0], frame[1]
    assert second & 0x80, "a client frame must be masked"
    size, at = second & 0x7F, 2
    if size == 126:
        (size,) = struct.unpack_from("!H", frame, at)
        at += 2
        assert size >= 126
    elif size == 127:
        (size,) = struct.unpack_from("!Q", frame, at)
        at += 8
        assert size >= 65536
    key = frame[at : at + 4]
    body = frame[at + 4 :]
    assert len(body) == size
    return first, key, bytes(b ^ key[i % 4] for i, b in enumerate(body))


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_a_frame_carries_its_text_whole_at_every_length_encoding(size: int) -> None:
    data = (b"ab\xc3\xa9" * (size // 4 + 1))[:size]
    first, _, payload = _read_frame(client_text_frame(data))
    assert first == 0x81  # FIN, text, no reserved bits: one whole message, uncompressed
    assert payload == data


def test_each_frame_has_a_key_of_its_own_across_pool_refills() -> None:
    keys = MaskKeys()
    frames = [client_text_frame(b"x" * 20, keys) for _ in range(3 * POOL_KEYS)]
    seen = {_read_frame(frame)[1] for frame in frames}
    # Random 32-bit keys: two equal among 3072 happens about once in a million runs.
    assert len(seen) >= 3 * POOL_KEYS - 1


def test_a_forked_child_does_not_use_its_parents_keys() -> None:
    client_text_frame(b"fill the pool")  # the parent's pool now holds unused keys
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next key, to the parent
        try:
            os.write(write_end, _read_frame(client_text_frame(b"child"))[1])
        finally:
            os._exit(0)
    os.close(write_end)
    try:
        child_key = os.read(read_end, 4)
    finally:
        os.close(read_end)
        os.waitpid(pid, 0)
    parent_key = _read_frame(client_text_frame(b"parent"))[1]
    assert len(child_key) == 4
    assert child_key != parent_key
