"""A model of Twilio's playback buffer for one call, as the call simulator needs it.

Twilio keeps the bridge's ``media`` and ``mark`` messages in one queue and plays the audio
in real time; a mark is echoed once everything queued before it has played; ``clear`` drops
the queued audio and echoes every mark still queued (those echoes mean "discarded").

:class:`Playout` is pure: no clock, no I/O. The simulator calls :meth:`Playout.tick` once
per 20 ms of wall time and sends the echoes the tick reports.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

__all__ = ["BYTES_PER_MS", "FRAME_BYTES", "SILENCE_BYTE", "PlayTick", "Playout"]

BYTES_PER_MS = 8  # mu-law, 8 kHz, one byte per sample
FRAME_BYTES = 160  # 20 ms
SILENCE_BYTE = 0xFF  # mu-law digital silence


@dataclass(frozen=True, slots=True)
class PlayTick:
    """What the caller heard during one tick.

    ``audio`` is exactly the requested length: queued audio first, then silence padding
    when the buffer ran dry. ``played_bytes`` counts the queued audio in it (not the
    padding). ``marks`` are the names whose echo is now due, in queue order: send one
    ``mark`` message back for each.
    """

    audio: bytes
    played_bytes: int
    marks: tuple[str, ...]


class Playout:
    """Twilio's playback queue for one stream.

    Feed it what the bridge sends (:meth:`push_media`, :meth:`push_mark`), drive it with
    :meth:`tick` every 20 ms, and call :meth:`clear` on a ``clear`` message (then echo the
    names it returns).

    A *segment* is one stretch of uninterrupted playback: it starts when audio arrives
    while nothing is playing and ends at a :meth:`clear` or on the first tick that finds
    the buffer dry. :attr:`segment_played_ms` keeps the last segment's figure until the
    next segment starts; :attr:`segment_active` tells the two cases apart.
    """

    def __init__(self) -> None:
        # Audio chunks are bytes, marks are str: the type tells them apart.
        self._queue: deque[bytes | str] = deque()
        self._head_offset = 0  # bytes of the head chunk already played
        self._queued_bytes = 0
        self._segment_active = False
        self._segment_played_bytes = 0
        self.segments = 0
        self.total_received_bytes = 0
        self.total_played_bytes = 0
        self.total_cleared_bytes = 0

    # ------------------------------------------------------------------ feed

    def push_media(self, ulaw: bytes) -> None:
        """Queue audio behind everything already queued. Empty payloads are ignored."""
        if not ulaw:
            return
        if not self._segment_active:
            self._segment_active = True
            self._segment_played_bytes = 0
            self.segments += 1
        self._queue.append(bytes(ulaw))
        self._queued_bytes += len(ulaw)
        self.total_received_bytes += len(ulaw)

    def push_mark(self, name: str) -> None:
        """Queue a mark; :meth:`tick` reports it once all audio queued before it has played."""
        self._queue.append(name)

    def clear(self) -> list[str]:
        """Drop all queued audio and marks; return the dropped marks' names in queue order.

        Twilio echoes each of them right away although their audio was never played.
        """
        names = [item for item in self._queue if isinstance(item, str)]
        self.total_cleared_bytes += self._queued_bytes
        self._queue.clear()
        self._head_offset = 0
        self._queued_bytes = 0
        self._segment_active = False
        return names

    # ------------------------------------------------------------------ play

    def tick(self, n_bytes: int = FRAME_BYTES) -> PlayTick:
        """Play ``n_bytes`` (20 ms by default) and report what was heard and which marks
        are due. Call it once per tick of wall time, whether or not anything is queued."""
        if n_bytes <= 0:
            raise ValueError("a tick must play at least one byte")
        out = bytearray()
        marks: list[str] = []
        need = n_bytes
        queue = self._queue
        while queue:
            head = queue[0]
            if isinstance(head, str):
                # Everything before this mark has played (possibly in this very tick).
                marks.append(head)
                queue.popleft()
                continue
            if need == 0:
                break
            start = self._head_offset
            take = min(len(head) - start, need)
            out += head[start : start + take]
            need -= take
            if start + take == len(head):
                queue.popleft()
                self._head_offset = 0
            else:
                self._head_offset = start + take
        played = n_bytes - need
        self._queued_bytes -= played
        self.total_played_bytes += played
        if self._segment_active:
            self._segment_played_bytes += played
            if need:
                self._segment_active = False  # ran dry: this stretch of playback is over
        if need:
            out += bytes((SILENCE_BYTE,)) * need
        return PlayTick(bytes(out), played, tuple(marks))

    # ----------------------------------------------------------------- state

    @property
    def queued_bytes(self) -> int:
        """Audio bytes waiting to be played."""
        return self._queued_bytes

    @property
    def queued_marks(self) -> int:
        return sum(1 for item in self._queue if isinstance(item, str))

    @property
    def is_idle(self) -> bool:
        """True when no audio is waiting (marks may still be, due on the next tick)."""
        return self._queued_bytes == 0

    @property
    def segment_active(self) -> bool:
        return self._segment_active

    @property
    def segment_played_ms(self) -> float:
        """Milliseconds played in the current segment (or the last one, when idle)."""
        return self._segment_played_bytes / BYTES_PER_MS
