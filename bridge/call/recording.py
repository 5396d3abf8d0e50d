"""Call recordings, the pure half: where each piece of audio sits on the call's timeline.

A recording is two channels on the Twilio stream clock (sample 0 is the start of the stream,
8 kHz): the caller on one, the agent on the other.

- Caller audio is placed by its media timestamp: a frame stamped ``T`` ms starts at sample
  ``T * 8``.
- Agent audio is placed where Twilio played it. Twilio plays outbound audio back to back, so
  a chunk starts when the chunk before it finished or, when its queue had run dry, when the
  chunk was sent, whichever is later.
- Agent audio counts only once its mark comes back, which is Twilio saying the caller heard
  it. A ``clear`` drops every chunk still waiting for its mark: that audio was sent but never
  played, and a recording holds what the caller heard, not what the model said.

:class:`CallRecorder` is fed all of that with stream times as arguments and hands back placed
:class:`Segment` s for a writer to put on disk. No clock, no I/O.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from dataclasses import dataclass

__all__ = ["SAMPLES_PER_MS", "CallRecorder", "Channel", "Segment"]

SAMPLES_PER_MS = 8  # 8 kHz mu-law: one byte per sample


class Channel(enum.IntEnum):
    """Which side of the stereo file: the caller left, the agent right."""

    CALLER = 0
    AGENT = 1


@dataclass(frozen=True, slots=True)
class Segment:
    """``ulaw`` (8 kHz mu-law) belongs on ``channel`` from sample ``start`` on."""

    channel: Channel
    start: int
    ulaw: bytes

    @property
    def end(self) -> int:
        return self.start + len(self.ulaw)


class _Run:
    """Contiguous audio of one channel, gathered so that a writer gets a few large segments
    instead of one per 20 ms frame."""

    __slots__ = ("buf", "channel", "start")

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.start = 0
        self.buf = bytearray()

    def add(self, start: int, ulaw: bytes, ready: list[Segment]) -> None:
        if start != self.start + len(self.buf):
            self.flush(ready)
            self.start = start
        self.buf += ulaw

    def flush(self, ready: list[Segment]) -> None:
        if self.buf:
            ready.append(Segment(self.channel, self.start, bytes(self.buf)))
            self.start += len(self.buf)
            self.buf.clear()


class CallRecorder:
    """Places one call's audio on the stream clock. Feed it, in the order things happen:

    - :meth:`caller_audio` for every inbound media frame;
    - :meth:`agent_sent` for every outbound chunk as it is queued for Twilio, with its mark;
    - :meth:`mark_played` for every mark Twilio echoes;
    - :meth:`clear` whenever a ``clear`` is sent.

    Take :meth:`segments_to_write` now and then and write them; once the call is over take it
    a last time. Chunks whose marks never came back by then are left out.
    """

    def __init__(self) -> None:
        self._ready: list[Segment] = []
        self._caller = _Run(Channel.CALLER)
        self._agent = _Run(Channel.AGENT)
        # Sent chunks waiting for their marks, in send order: name -> (start sample, audio).
        self._pending: OrderedDict[str, tuple[int, bytes]] = OrderedDict()
        # Where the audio queued at Twilio runs out, as far as sends and clears tell.
        self._queue_end = 0
        self._heard_end = 0

    # -- the phone leg ------------------------------------------------------------------------

    def caller_audio(self, ulaw: bytes, timestamp_ms: int) -> None:
        """One inbound frame, stamped ``timestamp_ms`` by Twilio."""
        self._caller.add(timestamp_ms * SAMPLES_PER_MS, ulaw, self._ready)

    def agent_sent(self, mark: str, ulaw: bytes, sent_ms: int) -> None:
        """``ulaw`` went to Twilio at stream time ``sent_ms``, followed by the mark ``mark``.
        Mark names must be unique within the call."""
        start = max(sent_ms * SAMPLES_PER_MS, self._queue_end)
        self._queue_end = start + len(ulaw)
        self._pending[mark] = (start, ulaw)

    def mark_played(self, name: str) -> None:
        """Twilio echoed ``name``: its chunk, and every chunk sent before it, was heard.
        Unknown names (a mark echoed for audio a ``clear`` dropped, a repeat) change nothing."""
        if name not in self._pending:
            return
        while self._pending:
            pending_name, (start, ulaw) = self._pending.popitem(last=False)
            self._agent.add(start, ulaw, self._ready)
            self._heard_end = max(self._heard_end, start + len(ulaw))
            if pending_name == name:
                return

    def clear(self, partial_bytes: int = 0) -> None:
        """A ``clear`` went out: what was still queued at Twilio was never heard, except the
        first ``partial_bytes`` of the chunk that was playing (a leg whose chunks are longer
        than its marks are frequent: the playout clock says how far into it the caller was)."""
        if partial_bytes > 0 and self._pending:
            start, ulaw = next(iter(self._pending.values()))
            heard = ulaw[:partial_bytes]
            self._agent.add(start, heard, self._ready)
            self._heard_end = max(self._heard_end, start + len(heard))
        self._pending.clear()
        # Twilio's queue is empty now: the next chunk plays when it is sent, but never on top
        # of audio already counted as heard.
        self._queue_end = self._heard_end

    # -- output -------------------------------------------------------------------------------

    def segments_to_write(self) -> list[Segment]:
        """Return, and forget, the audio placed since the last call; write them in this order
        (per channel it is the order of placing, so a later segment that overlaps an earlier
        one wins)."""
        self._caller.flush(self._ready)
        self._agent.flush(self._ready)
        out, self._ready = self._ready, []
        return out

    @property
    def awaiting_marks(self) -> int:
        """Chunks sent whose marks have not come back yet."""
        return len(self._pending)
