"""The short recorded phrases shipped with the bridge, as 8 kHz mono mu-law.

The apology clip is what a caller hears when no realtime session can be had; the demo and
caller clips drive the local agent and the call simulator. They live in ``bridge/assets``
as raw mu-law (``<name>.ulaw``) next to ``clips.json``, which maps each name to its text;
``scripts/make_clips.py`` regenerates them.
"""

from __future__ import annotations

import json
from functools import cache
from importlib.resources import files
from importlib.resources.abc import Traversable

__all__ = ["clip_names", "clip_text", "load_clip"]


def _assets() -> Traversable:
    return files("bridge") / "assets"


@cache
def _texts() -> dict[str, str]:
    raw = json.loads((_assets() / "clips.json").read_text(encoding="utf-8"))
    if not isinstance(raw, dict):
        raise ValueError("bridge/assets/clips.json must map clip names to texts")
    return {str(name): str(text) for name, text in raw.items()}


def clip_names() -> list[str]:
    """Names of every shipped clip, in the order ``clips.json`` lists them."""
    return list(_texts())


def clip_text(name: str) -> str:
    """What is said in clip ``name``; raises ``KeyError`` for a name that is not shipped."""
    return _texts()[name]


@cache
def load_clip(name: str) -> bytes:
    """The audio of clip ``name`` as raw 8 kHz mono mu-law, ready to send in 20 ms frames.

    Raises ``KeyError`` for a name that is not listed in ``clips.json`` (names are never
    used as paths unchecked). The bytes are cached, so calling this per call is cheap.
    """
    if name not in _texts():
        raise KeyError(name)
    return (_assets() / f"{name}.ulaw").read_bytes()
