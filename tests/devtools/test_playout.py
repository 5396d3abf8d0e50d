"""Twilio's playback buffer as the simulator models it."""

from __future__ import annotations

import pytest

from bridge.devtools.playout import FRAME_BYTES, SILENCE_BYTE, Playout

SILENCE = bytes([SILENCE_BYTE]) * FRAME_BYTES


def audio(value: int, n: int = FRAME_BYTES) -> bytes:
    return bytes([value]) * n


def test_empty_buffer_plays_silence() -> None:
    playout = Playout()
    tick = playout.tick()
    assert tick.audio == SILENCE
    assert tick.played_bytes == 0
    assert tick.marks == ()
    assert playout.total_played_bytes == 0
    assert not playout.segment_active
    assert playout.segments == 0


def test_audio_plays_in_order_across_chunk_boundaries() -> None:
    playout = Playout()
    playout.push_media(audio(1, 100))
    playout.push_media(audio(2, 100))
    playout.push_media(audio(3, 120))
    assert playout.tick().audio == audio(1, 100) + audio(2, 60)
    assert playout.tick().audio == audio(2, 40) + audio(3, 120)
    assert playout.is_idle
    assert playout.total_played_bytes == playout.total_received_bytes == 320


def test_short_buffer_is_padded_with_silence() -> None:
    playout = Playout()
    playout.push_media(audio(7, 60))
    tick = playout.tick()
    assert tick.audio == audio(7, 60) + audio(SILENCE_BYTE, 100)
    assert tick.played_bytes == 60
    assert len(tick.audio) == FRAME_BYTES


def test_custom_tick_size() -> None:
    playout = Playout()
    playout.push_media(audio(1, 50))
    assert playout.tick(8).audio == audio(1, 8)
    assert playout.queued_bytes == 42
    with pytest.raises(ValueError):
        playout.tick(0)


def test_mark_is_due_when_the_audio_before_it_has_played() -> None:
    playout = Playout()
    playout.push_media(audio(1, 320))
    playout.push_mark("m1")
    playout.push_media(audio(2))
    playout.push_mark("m2")
    assert playout.tick().marks == ()
    assert playout.tick().marks == ("m1",)  # the tick that played m1's last byte
    assert playout.tick().marks == ("m2",)
    assert playout.tick().marks == ()


def test_mark_due_mid_tick_and_several_in_one_tick() -> None:
    playout = Playout()
    for name in ("a", "b", "c"):
        playout.push_media(audio(1, 40))
        playout.push_mark(name)
    playout.push_media(audio(2, 200))
    playout.push_mark("d")
    tick = playout.tick()
    assert tick.marks == ("a", "b", "c")
    assert tick.audio == audio(1, 120) + audio(2, 40)
    assert playout.tick().marks == ("d",)
    assert playout.tick().marks == ()


def test_mark_on_an_empty_buffer_is_due_next_tick() -> None:
    playout = Playout()
    playout.push_mark("lonely")
    assert playout.queued_marks == 1
    tick = playout.tick()
    assert tick.marks == ("lonely",)
    assert tick.audio == SILENCE
    assert playout.queued_marks == 0


def test_clear_drops_audio_and_returns_every_queued_mark() -> None:
    playout = Playout()
    playout.push_media(audio(1))
    playout.push_mark("played")
    playout.push_media(audio(2, 400))
    playout.push_mark("x")
    playout.push_media(audio(3))
    playout.push_mark("y")
    assert playout.tick().marks == ("played",)
    assert playout.tick().audio == audio(2)
    assert playout.clear() == ["x", "y"]
    assert playout.is_idle
    assert playout.queued_marks == 0
    assert playout.tick().audio == SILENCE
    assert playout.total_received_bytes == 160 + 400 + 160
    assert playout.total_played_bytes == 320
    assert playout.total_cleared_bytes == 400
    assert playout.clear() == []


def test_clear_mid_chunk_then_new_audio_starts_from_its_beginning() -> None:
    playout = Playout()
    playout.push_media(audio(1, 250))
    playout.tick()
    playout.clear()
    playout.push_media(bytes(range(160)))
    assert playout.tick().audio == bytes(range(160))


def test_segment_runs_until_the_buffer_runs_dry() -> None:
    playout = Playout()
    playout.push_media(audio(1, 400))
    assert playout.segment_active
    assert playout.segments == 1
    playout.tick()
    assert playout.segment_played_ms == 20.0
    playout.tick()
    assert playout.segment_played_ms == 40.0
    playout.tick()  # plays the last 80 bytes, pads the rest: ran dry
    assert playout.segment_played_ms == 50.0
    assert not playout.segment_active
    # Idle ticks keep the last segment's figure until a new one starts.
    playout.tick()
    assert playout.segment_played_ms == 50.0
    playout.push_media(audio(2))
    assert playout.segment_active
    assert playout.segments == 2
    assert playout.segment_played_ms == 0.0
    playout.tick()
    assert playout.segment_played_ms == 20.0


def test_audio_arriving_just_in_time_continues_the_segment() -> None:
    playout = Playout()
    playout.push_media(audio(1))
    playout.tick()  # buffer now empty, but nothing was padded yet
    assert playout.segment_active
    playout.push_media(audio(2))
    playout.tick()
    assert playout.segments == 1
    assert playout.segment_played_ms == 40.0


def test_clear_ends_the_segment() -> None:
    playout = Playout()
    playout.push_media(audio(1, 800))
    for _ in range(3):
        playout.tick()
    assert playout.segment_played_ms == 60.0
    playout.clear()
    assert not playout.segment_active
    assert playout.segment_played_ms == 60.0
    playout.push_media(audio(2))
    assert playout.segments == 2
    assert playout.segment_played_ms == 0.0


def test_marks_alone_do_not_start_a_segment_and_empty_media_is_ignored() -> None:
    playout = Playout()
    playout.push_mark("m")
    playout.push_media(b"")
    assert not playout.segment_active
    assert playout.segments == 0
    assert playout.total_received_bytes == 0


def test_long_run_accounts_for_every_byte() -> None:
    playout = Playout()
    heard = bytearray()
    sent = 0
    for i in range(50):
        chunk = audio(i % 250, 37 + i)
        playout.push_media(chunk)
        sent += len(chunk)
        if i % 7 == 0:
            playout.push_mark(f"m{i}")
        heard += playout.tick(100).audio
    while not playout.is_idle:
        heard += playout.tick().audio
    assert playout.total_received_bytes == sent
    assert playout.total_played_bytes == sent
    # Early pushes are shorter than a tick, so silence is interleaved; the audio itself
    # (which never contains the silence byte here) arrives whole and in order.
    expected = b"".join(audio(i % 250, 37 + i) for i in range(50))
    assert heard.replace(bytes([SILENCE_BYTE]), b"") == expected
