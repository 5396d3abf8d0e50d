"""Playout the provider does itself (OpenAI SIP): when a goodbye counts as heard."""

from __future__ import annotations

from bridge.call.far_playout import FarPlayout


def test_off_for_calls_whose_audio_the_bridge_carries() -> None:
    far = FarPlayout(enabled=False)
    far.started()
    assert not far.busy


def test_busy_while_the_provider_says_it_plays() -> None:
    far = FarPlayout(enabled=True, grace_s=5)
    far.started()
    far.response_done(10.0)
    assert far.busy and not far.give_up(12.0)
    far.stopped()
    assert not far.busy


def test_silence_about_playout_counts_as_playing_until_the_bound() -> None:
    far = FarPlayout(enabled=True, grace_s=5)
    assert far.busy  # nothing said yet: it may be playing
    far.response_done(10.0)
    assert not far.give_up(14.9)
    assert far.give_up(15.0)
    assert not far.busy and not far.give_up(16.0)
    far.response_done(20.0)  # a new response: waiting starts over
    far.started()
    assert far.busy
