"""Every shipped clip is there, audible, short, and named in clips.json."""

from __future__ import annotations

import json
from importlib.resources import files

import pytest

from bridge.codecs.clips import clip_names, clip_text, load_clip
from bridge.codecs.pcm import ulaw_rms_dbfs

REQUIRED = {
    "apology",
    "demo_greeting",
    "demo_reply_1",
    "demo_reply_2",
    "demo_reply_3",
    "caller_1",
    "caller_2",
    "caller_3",
}
MANIFEST = json.loads((files("bridge") / "assets" / "clips.json").read_text(encoding="utf-8"))


def test_manifest_lists_the_required_clips() -> None:
    assert set(MANIFEST) >= REQUIRED
    assert clip_names() == list(MANIFEST)
    assert clip_text("apology").startswith("Sorry, we can't take your call right now.")
    assert clip_text("caller_1") == "Hi, what are your opening hours?"


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_clip_is_audible_and_short(name: str) -> None:
    clip = load_clip(name)
    assert clip_text(name) == MANIFEST[name]
    assert len(clip) > 8000 // 2  # at least half a second of speech
    assert len(clip) < 8 * 8000  # under 8 s at 8000 mu-law bytes per second
    assert ulaw_rms_dbfs(clip) > -35.0  # speech, not hiss (silence is -inf)
    # trimmed: the first and last 100 ms are not long stretches of digital silence
    assert clip[:800].count(0xFF) < 700
    assert clip[-800:].count(0xFF) < 700


def test_unknown_names_are_refused() -> None:
    with pytest.raises(KeyError):
        load_clip("../errors")
    with pytest.raises(KeyError):
        load_clip("clips")
    with pytest.raises(KeyError):
        clip_text("nope")
