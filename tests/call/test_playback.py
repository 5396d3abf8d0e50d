from __future__ import annotations

from bridge.call.playback import CHUNK_BYTES, Playback


def _audio(ms: int) -> bytes:
    return b"\x01" * (ms * 8)


def test_audio_is_cut_into_20ms_chunks_each_with_its_own_mark() -> None:
    pb = Playback(max_lead_ms=10_000)
    pb.add_audio("item_a", _audio(100), 100)
    chunks = pb.release()
    assert [len(c.audio) for c in chunks] == [CHUNK_BYTES] * 5
    assert len({c.mark for c in chunks}) == 5
    assert all(c.item_id == "item_a" for c in chunks)


def test_partial_chunks_wait_for_more_audio_and_flush_at_item_end() -> None:
    pb = Playback(max_lead_ms=10_000)
    pb.add_audio("a", b"\x01" * 100, 12.5)
    assert pb.release() == []
    pb.add_audio("a", b"\x01" * 100, 12.5)
    assert [len(c.audio) for c in pb.release()] == [160]
    pb.finish_item("a")
    assert [len(c.audio) for c in pb.release()] == [40]


def test_lead_is_bounded_and_echoes_release_more() -> None:
    pb = Playback(max_lead_ms=100)
    pb.add_audio("a", _audio(1000), 1000)
    first = pb.release()
    assert len(first) == 5  # 100 ms queued at Twilio, the rest held back
    assert pb.release() == []
    pb.mark_played(first[0].mark)
    assert len(pb.release()) == 1
    assert first[1].ahead_ms == 20


def test_only_echoed_chunks_count_as_heard() -> None:
    pb = Playback(max_lead_ms=10_000)
    pb.add_audio("a", _audio(200), 200)
    chunks = pb.release()
    for chunk in chunks[:3]:
        assert pb.mark_played(chunk.mark) == "a"
    assert pb.played_ms("a") == 60
    assert pb.received_ms("a") == 200


def test_an_echo_implies_every_earlier_chunk_played() -> None:
    pb = Playback(max_lead_ms=10_000)
    pb.add_audio("a", _audio(100), 100)
    chunks = pb.release()
    pb.mark_played(chunks[2].mark)
    assert pb.played_ms("a") == 60


def test_barge_in_flushes_and_later_echoes_are_ignored() -> None:
    pb = Playback(max_lead_ms=10_000)
    pb.add_audio("a", _audio(1000), 1000)
    chunks = pb.release()
    for chunk in chunks[:10]:
        pb.mark_played(chunk.mark)
    cut = pb.interrupt()
    assert cut.item_id == "a"
    assert cut.flush_needed
    assert cut.played_ms == 200
    assert cut.received_ms == 1000
    # Twilio echoes every flushed mark after a clear: they were not heard.
    for chunk in chunks[10:]:
        assert pb.mark_played(chunk.mark) is None
    assert pb.played_ms("a") == 200
    assert not pb.is_playing
    pb.add_audio("b", _audio(40), 40)
    assert all(c.mark.startswith("g1-") for c in pb.release())


def test_interrupt_with_nothing_playing_names_no_item() -> None:
    cut = Playback().interrupt()
    assert cut.item_id is None and not cut.flush_needed


def test_unknown_and_duplicate_echoes_are_harmless() -> None:
    pb = Playback(max_lead_ms=10_000)
    pb.add_audio("a", _audio(40), 40)
    chunks = pb.release()
    assert pb.mark_played("nonsense") is None
    assert pb.mark_played(chunks[0].mark) == "a"
    assert pb.mark_played(chunks[0].mark) is None
    assert pb.played_ms("a") == 20


def test_oldest_pending_item_is_the_one_cut() -> None:
    pb = Playback(max_lead_ms=10_000)
    pb.add_audio("a", _audio(40), 40)
    pb.add_audio("b", _audio(40), 40)
    pb.release()
    assert pb.interrupt().item_id == "a"


def test_a_chunk_sent_after_the_echo_before_it_was_read_plays_from_its_sending() -> None:
    playback = Playback(max_lead_ms=600, chunk_ms=100)
    playback.add_audio("a", bytes(800), 100.0)
    (first,) = playback.release(now=10.0)
    # The caller heard all of it by 10.100, when the echo was read; more audio went out at
    # 10.120, to a leg with nothing left to play; the call took the echo after that.
    playback.add_audio("a", bytes(800), 100.0)
    assert len(playback.release(now=10.120)) == 1
    playback.mark_played(first.mark, now=10.100)
    assert playback.played_ms("a", now=10.150) == 100.0 + 30.0  # not 50 ms into the second
