"""The pure halves of the call simulator: Twilio's playback buffer and the caller's script.

Twilio keeps the bridge's ``media`` and ``mark`` messages in one queue and plays the audio
in real time; a mark is echoed once everything queued before it has played; ``clear`` drops
the queued audio and echoes every mark still queued (those echoes mean "discarded").

:class:`Playout` is pure: no clock, no I/O. The simulator calls :meth:`Playout.tick` once
per 20 ms of wall time and sends the echoes the tick reports. :class:`CallerScript` then
decides, from what the caller just heard, what the caller says in the next 20 ms.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass

__all__ = [
    "BYTES_PER_MS",
    "FRAME_BYTES",
    "FRAME_S",
    "SILENCE_BYTE",
    "SILENCE_FRAME",
    "CallerScript",
    "CallerStep",
    "PlayTick",
    "Playout",
]

BYTES_PER_MS = 8  # mu-law, 8 kHz, one byte per sample
FRAME_BYTES = 160  # 20 ms
FRAME_S = 0.02
SILENCE_BYTE = 0xFF  # mu-law digital silence
SILENCE_FRAME = bytes([SILENCE_BYTE]) * FRAME_BYTES


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


class _Phase(enum.Enum):
    SETTLING = "settling"  # silent until the agent has been quiet long enough
    TALKING = "talking"
    AWAITING_REPLY = "awaiting_reply"
    DIALING = "dialing"
    DONE = "done"


@dataclass(frozen=True, slots=True)
class CallerStep:
    """What the caller does in the next 20 ms: send ``audio`` as the next inbound frame,
    key ``digits`` (one ``dtmf`` message each) and, when ``barge_in_ms`` is set, note that
    the caller just started talking over a reply that had played that long."""

    audio: bytes
    digits: tuple[str, ...] = ()
    barge_in_ms: float | None = None


def _ticks(seconds: float) -> int:
    return max(0, round(seconds / FRAME_S))


class CallerScript:
    """The caller's side of the conversation, one 20 ms tick at a time.

    Silent until the agent has been quiet for ``initial_silence_s`` (so a greeting plays
    out first); then each utterance in turn; after each one, silent until the reply has
    played and the agent has been quiet for ``reply_silence_s``. With ``barge_in_at``,
    the caller talks over the first reply once that many seconds of it have played,
    saying the next utterance (or the last one again when none is left); with
    ``barge_in_every`` n as well, it does so again on every n-th reply after that (the
    replies in between play out). ``digits`` are
    keyed 200 ms apart after the first reply that plays out, followed by another quiet
    ``reply_silence_s``. After the last reply the script is :attr:`done`.

    Call :meth:`step` once per tick with that tick's :class:`PlayTick`; stop (send
    ``stop``) as soon as :attr:`done` is true, without sending the step's audio.
    """

    def __init__(
        self,
        utterances: list[bytes],
        *,
        barge_in_at: float | None = None,
        barge_in_every: int = 0,
        reply_silence_s: float = 0.8,
        initial_silence_s: float = 0.5,
        digits: list[str] | None = None,
    ) -> None:
        self._utterances = list(utterances)
        self._next = 0
        self._speech = b""
        self._offset = 0
        self._phase = _Phase.SETTLING
        self._settle_ticks = _ticks(initial_silence_s)
        self._reply_quiet_ticks = max(1, _ticks(reply_silence_s))
        self._idle_ticks = 0
        self._reply_bytes = 0
        # Armed only until the first reply ends or is talked over, unless barge_in_every
        # re-arms it for later replies (counted in _replies_awaited).
        self._barge_at_bytes = (
            None if barge_in_at is None else round(barge_in_at * 1000 * BYTES_PER_MS)
        )
        self._barge_bytes = self._barge_at_bytes
        self._barge_every = max(0, barge_in_every)
        self._replies_awaited = 0
        self._digits = list(digits or [])
        self._dial_wait = 0
        self._said = 0

    @property
    def done(self) -> bool:
        return self._phase is _Phase.DONE

    @property
    def talking(self) -> bool:
        return self._phase is _Phase.TALKING

    @property
    def utterances_said(self) -> int:
        """Utterances said to their end: it grows on the step whose audio is an utterance's
        last frame (a barge-in's repeat counts again)."""
        return self._said

    def step(self, tick: PlayTick) -> CallerStep:
        """Take what the caller heard in the last tick; return what the caller does next."""
        self._idle_ticks = 0 if tick.played_bytes else self._idle_ticks + 1
        phase = self._phase
        if phase is _Phase.SETTLING and self._idle_ticks >= self._settle_ticks:
            self._say_next()
        elif phase is _Phase.AWAITING_REPLY:
            self._reply_bytes += tick.played_bytes
            barge = self._barge_bytes
            if barge is not None and self._reply_bytes and self._reply_bytes >= barge:
                heard_ms = self._reply_bytes / BYTES_PER_MS
                self._barge_bytes = None
                if self._next < len(self._utterances):
                    self._say_next()
                else:
                    self._say(self._utterances[-1])
                return CallerStep(self._speak(), barge_in_ms=heard_ms)
            if self._reply_bytes and self._idle_ticks >= self._reply_quiet_ticks:
                self._barge_bytes = None
                if self._digits:
                    self._phase = _Phase.DIALING
                else:
                    self._say_next()
        elif phase is _Phase.DIALING:
            if self._dial_wait > 0:
                self._dial_wait -= 1
            else:
                digit = self._digits.pop(0)
                self._dial_wait = _ticks(0.2) - 1
                if not self._digits:
                    self._settle_ticks, self._idle_ticks = self._reply_quiet_ticks, 0
                    self._phase = _Phase.SETTLING
                return CallerStep(SILENCE_FRAME, digits=(digit,))
        return CallerStep(self._speak())

    def _say_next(self) -> None:
        if self._next < len(self._utterances):
            self._next += 1
            self._say(self._utterances[self._next - 1])
        else:
            self._phase = _Phase.DONE

    def _say(self, speech: bytes) -> None:
        self._speech, self._offset, self._phase = speech, 0, _Phase.TALKING

    def _speak(self) -> bytes:
        if self._phase is not _Phase.TALKING:
            return SILENCE_FRAME
        frame = self._speech[self._offset : self._offset + FRAME_BYTES]
        self._offset += FRAME_BYTES
        if self._offset >= len(self._speech):
            self._phase, self._reply_bytes = _Phase.AWAITING_REPLY, 0
            self._said += 1
            every = self._barge_every
            if every and self._replies_awaited % every == 0:
                self._barge_bytes = self._barge_at_bytes
            self._replies_awaited += 1
        return frame + SILENCE_FRAME[len(frame) :]
