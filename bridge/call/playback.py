"""What the caller has heard: outbound audio chunking, marks, and the bounded playout lead.

Twilio plays outbound ``media`` in order and echoes each ``mark`` once the audio queued before it
has played. So the audio the caller really heard is the chunks whose marks came back, and the
audio queued at Twilio is the chunks whose marks are still pending: byte counts.

A mark per 20 ms makes three messages per frame (media, mark, echo), so a leg may send larger
chunks (``chunk_ms``), and may let up to ``mark_chunks`` chunks of one item travel under one
mark: a *marked chunk* is then that run of chunks, sent as that many ``media`` messages and
one ``mark``. Between two echoes the caller is somewhere inside the head marked chunk, which
started playing when the echo before it came back or when it was sent, whichever came later
(a leg that had played all it had starts on what it is sent at once): the playout clock
places them there, capped at its length, so what counts as heard never runs ahead of what
was sent (an estimate past the end would make the model reject the truncation,
see twilio-media-streams.md §11.3). How many chunks share a mark changes only how often the
clock is corrected, not where it puts the caller. A leg that reports a mark as its audio
goes out, to a far end that plays all it gets (RTP), runs no clock: there the audio sent is
the audio heard, and the chunk after the last echo has not gone out.

``Playback`` keeps, per assistant item, how much audio the model sent (``received_ms``) and how
much the caller heard (``played_ms``). Chunks wait in a local hold queue and are released to
Twilio only while less than ``max_lead_ms`` is queued there, so a barge-in has little to flush.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from dataclasses import dataclass

# 20 ms of 8 kHz mu-law: the smallest chunk, one RTP frame.
CHUNK_BYTES = 160
BYTES_PER_MS = 8


@dataclass(frozen=True, slots=True)
class OutboundChunk:
    """A marked chunk to send now: ``audio`` as ``media`` (in pieces of the leg's chunk size),
    then a ``mark`` named ``mark``. ``ahead_ms`` is the audio already queued at Twilio before
    it: when it will start playing."""

    item_id: str
    mark: str
    audio: bytes
    ahead_ms: float


@dataclass(frozen=True, slots=True)
class Interruption:
    """What a barge-in cut: the item playing (if any), and what of it the caller heard.

    ``flush_needed`` is true when audio was queued at Twilio and a ``clear`` must go out.
    """

    item_id: str | None
    played_ms: float
    received_ms: float
    flush_needed: bool
    #: Bytes of the chunk that was playing which the caller heard (by the playout clock).
    partial_bytes: int = 0


class Playback:
    """Tracks outbound audio for one call. Feed it model audio, echoes and barge-ins; it says
    which chunks to send. Pure: no clock, no I/O."""

    def __init__(
        self,
        max_lead_ms: int = 600,
        chunk_ms: int = 20,
        mark_chunks: int = 1,
        *,
        playout_clock: bool = True,
    ) -> None:
        self._max_lead_bytes = max_lead_ms * BYTES_PER_MS
        # Off where an echo means the chunk went out and the far end plays all that went out
        # (RTP): between two echoes nothing more has been sent, so nothing more is heard.
        self._playout_clock = playout_clock
        self._chunk_bytes = max(1, chunk_ms // 20) * CHUNK_BYTES
        self._mark_chunks = max(1, mark_chunks)
        # When the last echo came (loop time): the head pending chunk started playing then,
        # or when it was sent if that was later.
        self._echoed_at = -math.inf
        self._gen = 0
        self._seq = 0
        # Sent, not yet echoed: mark name -> (item, bytes, when it was sent).
        self._pending: OrderedDict[str, tuple[str, int, float]] = OrderedDict()
        self._pending_bytes = 0
        self._held: deque[tuple[str, bytes]] = deque()
        self._partial: dict[str, bytearray] = {}
        self._received_ms: dict[str, float] = {}
        self._played_bytes: dict[str, int] = {}
        self._receiving: str | None = None

    # -- model side -------------------------------------------------------------------------

    def add_audio(self, item_id: str, ulaw: bytes, model_ms: float) -> None:
        """Queue ``ulaw`` (8 kHz mu-law) for ``item_id``. ``model_ms`` is the duration the model
        sent, in its own format, which bounds any truncation of this item. Call ``release``
        afterwards to learn what to send."""
        self._received_ms[item_id] = self._received_ms.get(item_id, 0.0) + model_ms
        if self._receiving is not None and self._receiving != item_id:
            self.finish_item(self._receiving)
        self._receiving = item_id
        buf = self._partial.setdefault(item_id, bytearray())
        buf += ulaw
        size = self._chunk_bytes
        whole = len(buf) - len(buf) % size
        for start in range(0, whole, size):
            self._held.append((item_id, bytes(buf[start : start + size])))
        del buf[:whole]

    def finish_item(self, item_id: str) -> None:
        """The model sent all of ``item_id``'s audio: queue its last, short chunk."""
        buf = self._partial.pop(item_id, None)
        if buf:
            self._held.append((item_id, bytes(buf)))
        if self._receiving == item_id:
            self._receiving = None

    def end_stream(self) -> str | None:
        """The model stopped sending mid-item (its session was lost): queue what was
        received of it to play out. Returns that item, if one was arriving."""
        item_id = self._receiving
        if item_id is not None:
            self.finish_item(item_id)
        return item_id

    def release(self, now: float = 0.0) -> list[OutboundChunk]:
        """Marked chunks to send to Twilio now, keeping the lead bounded.

        With ``mark_chunks`` > 1 a mark covers a run of up to that many chunks of one item.
        While less than a run's worth below the bound is queued (the low-water mark), what is
        held goes out at once, a chunk at a time if that is all there is: a response starts
        playing as soon as its first chunk arrives. Above it, a run waits until it is whole
        (or its item has ended) and fits under the bound, so each echo lets out a whole run
        under one mark and the lead stays between the low-water mark and the bound."""
        out: list[OutboundChunk] = []
        held = self._held
        if self._mark_chunks == 1:
            while held and self._pending_bytes < self._max_lead_bytes:
                item_id, audio = held.popleft()
                out.append(self._send(item_id, audio, now))
            return out
        low = self._max_lead_bytes - self._mark_chunks * self._chunk_bytes
        while held:
            item_id = held[0][0]
            run = 0
            size = 0
            while run < min(self._mark_chunks, len(held)) and held[run][0] == item_id:
                size += len(held[run][1])
                run += 1
            whole = run == self._mark_chunks or run < len(held) or self._receiving != item_id
            pending = self._pending_bytes
            if not (pending < low or (whole and pending + size <= self._max_lead_bytes)):
                break
            audio = b"".join(held.popleft()[1] for _ in range(run))
            out.append(self._send(item_id, audio, now))
        return out

    def _send(self, item_id: str, audio: bytes, now: float) -> OutboundChunk:
        name = f"g{self._gen}-{item_id}-{self._seq}"
        self._seq += 1
        ahead_ms = self._pending_bytes / BYTES_PER_MS
        self._pending[name] = (item_id, len(audio), now)
        self._pending_bytes += len(audio)
        return OutboundChunk(item_id, name, audio, ahead_ms)

    # -- phone side -------------------------------------------------------------------------

    def mark_played(self, name: str, now: float = 0.0) -> str | None:
        """Twilio echoed ``name``: its chunk (and any before it) has been played. Returns the
        item it belonged to, or None for a late, flushed, duplicate or unknown name."""
        if name not in self._pending:
            return None
        # The next chunk, if one is queued and was sent by then, starts playing now.
        self._echoed_at = now
        # Echoes come in queue order, so anything still pending ahead of this one played too.
        while self._pending:
            pending_name, (item_id, n_bytes, _) = self._pending.popitem(last=False)
            self._pending_bytes -= n_bytes
            self._played_bytes[item_id] = self._played_bytes.get(item_id, 0) + n_bytes
            if pending_name == name:
                return item_id
        return None  # pragma: no cover - the name was in pending, so the loop returned

    def _head_progress(self, now: float | None) -> tuple[str | None, int]:
        """The head pending chunk's item and how many of its bytes have played by ``now``
        on the playout clock: from the echo before it or from its sending, whichever came
        later, and never more than the chunk holds."""
        if now is None or not self._playout_clock or not self._pending:
            return None, 0
        item_id, n_bytes, sent_at = next(iter(self._pending.values()))
        # An echo is dated from when it was read, before the call took it; the chunk after it
        # may have gone out in between, to a leg that had nothing left to play.
        since = max(self._echoed_at, sent_at)
        elapsed = round((now - since) * 1000 * BYTES_PER_MS)
        return item_id, max(0, min(n_bytes, elapsed))

    def interrupt(self, now: float | None = None) -> Interruption:
        """The caller started talking: forget everything queued and say what was cut.
        ``now`` (loop time) places the caller inside the chunk playing (see the module doc).

        The caller must send Twilio ``clear`` first when ``flush_needed``, then truncate the
        item at ``played_ms`` if that is less than ``received_ms``."""
        head, progress = self._head_progress(now)
        if head is not None:
            self._played_bytes[head] = self._played_bytes.get(head, 0) + progress
        item_id: str | None = None
        if self._pending:
            item_id = next(iter(self._pending.values()))[0]
        elif self._held:
            item_id = self._held[0][0]
        else:
            item_id = self._receiving
        flush_needed = bool(self._pending)
        self._gen += 1
        self._pending.clear()
        self._pending_bytes = 0
        self._held.clear()
        self._partial.clear()
        self._receiving = None
        if item_id is None:
            return Interruption(None, 0.0, 0.0, flush_needed, progress)
        return Interruption(
            item_id, self.played_ms(item_id), self.received_ms(item_id), flush_needed, progress
        )

    # -- queries ----------------------------------------------------------------------------

    @property
    def is_playing(self) -> bool:
        """True while audio is queued at Twilio or held back here."""
        return bool(self._pending or self._held)

    def played_ms(self, item_id: str, now: float | None = None) -> float:
        """What the caller heard of ``item_id``: the echoed chunks, and with ``now`` the
        playout clock's part of the chunk playing."""
        played = self._played_bytes.get(item_id, 0)
        head, progress = self._head_progress(now)
        if head == item_id:
            played += progress
        return played / BYTES_PER_MS

    def received_ms(self, item_id: str) -> float:
        return self._received_ms.get(item_id, 0.0)
