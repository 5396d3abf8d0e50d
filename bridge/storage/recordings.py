"""Where call recordings live on disk: one stereo WAV per call, named by its call SID.

The recorder writes through ``RecordingFiles.path_for``, the review pages and API read
through it, and ``bridge calls purge`` deletes through it, so the layout is decided here once.
A call SID arrives from the network (a URL path, a form), so every name is checked before it
becomes a path: nothing can reach outside the folder.
"""

from __future__ import annotations

import re
from pathlib import Path

_SAFE_SID = re.compile(r"[A-Za-z0-9_-]{1,64}")


class RecordingFiles:
    """The recordings folder. It is created when the first recording is written."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def __repr__(self) -> str:
        return f"RecordingFiles({str(self.directory)!r})"

    def path_for(self, call_sid: str) -> Path | None:
        """The WAV path for ``call_sid``, or ``None`` when the SID is not a safe file name."""
        if not _SAFE_SID.fullmatch(call_sid):
            return None
        return self.directory / f"{call_sid}.wav"

    def existing(self, call_sid: str) -> Path | None:
        """The recording of ``call_sid`` if there is one on disk."""
        path = self.path_for(call_sid)
        if path is None or not path.is_file():
            return None
        return path

    def delete(self, call_sid: str) -> bool:
        """Remove the recording of ``call_sid``; ``True`` when a file was removed."""
        path = self.path_for(call_sid)
        if path is None:
            return False
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        return True
