"""What one load-test pass records, on one clock, and the hop latencies it yields.

The simulated callers live in the load test's process, the fake model in a child of its own
(:mod:`bridge.devtools.load_model`), the server under test in another. Every hop is two
readings of ``time.monotonic()``, one at each end: on Linux that is the system's
``CLOCK_MONOTONIC``, one clock for every process. The hops:

- **first byte out** and **every delta out**: the fake is about to send an answer's audio
  delta (the first of its response, or any) -> the simulated Twilio gets the ``media`` that
  carries its first byte;
- **inbound**: a simulated caller sends a ``media`` frame -> the fake gets the
  ``input_audio_buffer.append`` that carries it;
- **clear**: the fake sends ``input_audio_buffer.speech_started`` because the caller has
  barged in on an answer it is hearing -> that caller gets ``clear``.

Each barge-in is also a check of what the bridge told the model the caller heard: the
``audio_end_ms`` of the ``conversation.item.truncate`` that followed ``speech_started``
against how much of the answer the simulated caller had played when ``clear`` stopped it
(:class:`CutAccuracy`). That check is only as good as the simulated caller's own clock: while
the load generator is starved of CPU (it shares the machine with the server), its echoes go
out late and its playout stalls, and the cut is off by about as much, whatever the server
did. So the cuts are counted again over the barge-ins during which the caller kept time.

Frames and deltas are told apart by a numbered tag in their audio
(:mod:`bridge.devtools.load_tags`), so the server may re-chunk as it likes. The taps only
append to lists on the media path; matching and statistics happen after the pass, when the
model's readings (:class:`~bridge.devtools.load_model.ModelReadings`) have come back.
"""

from __future__ import annotations

import bisect
import math
import time
from dataclasses import dataclass

from bridge.devtools.load_model import ModelReadings, ModelSessionReadings
from bridge.devtools.load_tags import TagScanner, stamp
from bridge.devtools.simulator import BargeInRecord
from bridge.protocols.twilio import MARK_CHUNK_MS, MARK_CHUNKS

__all__ = [
    "CALLER_ON_TIME_MS",
    "CUT_WITHIN_MS",
    "INBOUND_LATE_S",
    "SEND_LATE_S",
    "CallTap",
    "CutAccuracy",
    "FrameCounts",
    "Hop",
    "LoadRecorder",
    "SteadyState",
    "percentile",
]

INBOUND_LATE_S = 0.100
"""An inbound frame reaching the model more than this after it was sent is late: a caller's
speech that far behind is heard by the model as a stall."""

SEND_LATE_S = 0.020
"""A caller frame sent more than one frame after its 20 ms slot: the load generator itself
fell behind (it shares the machine with the server), so its figures mean less."""

CUT_WITHIN_MS = 10.0
"""A truncate's ``audio_end_ms`` this close to what the caller heard is exact enough: the
transcript and the model's memory of the answer end where the caller stopped hearing it."""

CALLER_ON_TIME_MS = 5.0
"""A barge-in's cut is judged with the caller on time when each of the simulated caller's
frames due from one marked run (the audio under one ``mark``) before the model noticed the
barge-in until one frame after the clear went out this close to its slot. Over that span the
caller echoed the mark the bridge's playout clock started from, played on, and took the
clear; a caller late by more than this moves the cut by about its lateness."""

_NAN = math.nan
# The bridge's playout clock starts at the last echo, at most one marked run before the
# barge-in is noticed; the frame after the clear shows whether the caller stalled over it.
_CLOCK_BEFORE_S = MARK_CHUNKS * MARK_CHUNK_MS / 1000
_CLOCK_AFTER_S = 0.020
# A clear (or truncate) later than this after the speech_started it answers is counted as
# missing.
_CLEAR_WITHIN_S = 2.0


def percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (NaN when empty)."""
    if not ordered:
        return _NAN
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True, slots=True)
class Hop:
    """One hop's latency over a pass, in milliseconds (NaN where there were no samples)."""

    samples: int
    p50_ms: float
    p99_ms: float
    max_ms: float

    @classmethod
    def of(cls, seconds: list[float]) -> Hop:
        ordered = sorted(seconds)
        return cls(
            samples=len(ordered),
            p50_ms=percentile(ordered, 50) * 1000,
            p99_ms=percentile(ordered, 99) * 1000,
            max_ms=ordered[-1] * 1000 if ordered else _NAN,
        )


@dataclass(frozen=True, slots=True)
class FrameCounts:
    """Caller frames over a pass. ``startup``: sent before the call's model session was
    open (a server must hold or drop those, so they are left out of the inbound hop);
    ``late``: reached the model more than INBOUND_LATE_S after sending; ``undelivered``:
    sent while the session was open, never seen by the model; ``late_sends``: sent more
    than SEND_LATE_S after their slot (the generator's fault, not the server's)."""

    sent: int
    startup: int
    delivered: int
    late: int
    undelivered: int
    late_sends: int
    send_lateness_p99_ms: float


@dataclass(frozen=True, slots=True)
class CutAccuracy:
    """Each barge-in's ``audio_end_ms`` (the bridge's truncate) less what the caller had heard
    of the answer when ``clear`` arrived, in ms: ``samples`` barge-ins with both,
    ``within`` of them no more than CUT_WITHIN_MS off, the median error (signed: above 0
    the bridge said more than was heard), the p99 and largest of its size. ``untruncated``:
    barge-ins cleared but never truncated (a pass-through tells the model nothing);
    ``refused``: truncates the model turned down (an ``audio_end_ms`` past the audio it sent).
    ``on_time``: the samples during which the simulated caller kept time (CALLER_ON_TIME_MS),
    ``on_time_within`` of them no more than CUT_WITHIN_MS off.
    """

    samples: int
    within: int
    median_ms: float
    p99_abs_ms: float
    max_abs_ms: float
    untruncated: int
    refused: int
    on_time: int
    on_time_within: int

    @classmethod
    def of(
        cls,
        errors_ms: list[float],
        untruncated: int,
        refused: int,
        caller_late_ms: list[float],
    ) -> CutAccuracy:
        """From the errors, and beside them how late the caller ran at worst during each
        barge-in."""
        sizes = sorted(abs(e) for e in errors_ms)
        pairs = zip(errors_ms, caller_late_ms, strict=True)
        on_time = [abs(e) for e, late_ms in pairs if late_ms <= CALLER_ON_TIME_MS]
        return cls(
            samples=len(errors_ms),
            within=sum(1 for size in sizes if size <= CUT_WITHIN_MS),
            median_ms=percentile(sorted(errors_ms), 50),
            p99_abs_ms=percentile(sizes, 99),
            max_abs_ms=sizes[-1] if sizes else _NAN,
            untruncated=untruncated,
            refused=refused,
            on_time=len(on_time),
            on_time_within=sum(1 for size in on_time if size <= CUT_WITHIN_MS),
        )


@dataclass(frozen=True, slots=True)
class SteadyState:
    """The hops again, over only what began while every call was up: after the last call's
    model session opened and before the first call sent its last frame. Calls arriving and
    hanging up are bursts of work (webhooks, handshakes, store writes) for the server and
    for the load generator alike, and the generator's own frames run late while they last;
    this is what a call hears between them. ``seconds`` is 0, and each hop empty, when the
    calls were never all up at once. ``cut``: the barge-ins the model noticed in the window."""

    seconds: float
    first_byte: Hop
    delta: Hop
    inbound: Hop
    clear: Hop
    cut: CutAccuracy


# (when the hop began, how long it took) for each sample of one hop.
_Samples = list[tuple[float, float]]


def _hop_within(samples: _Samples, window: tuple[float, float] | None) -> Hop:
    if window is None:
        return Hop.of([])
    start, end = window
    return Hop.of([took for began, took in samples if start <= began < end])


class CallTap:
    """The simulated Twilio side of one call (a :class:`~bridge.devtools.simulator.CallProbe`)."""

    __slots__ = ("_call", "_rec", "_scanner", "clears", "heard_ms")

    def __init__(self, recorder: LoadRecorder, call: int) -> None:
        self._rec = recorder
        self._call = call
        self._scanner = TagScanner()
        self.clears: list[float] = []
        self.heard_ms: list[float] = []  # beside ``clears``: what the caller had heard

    def caller_frame(self, audio: bytes, due: float) -> bytes:
        rec = self._rec
        now = time.monotonic()
        ident = len(rec.frame_sent)
        rec.frame_sent.append(now)
        rec.frame_due.append(due)
        rec.frame_call.append(self._call)
        rec.send_lateness.append(now - due)
        return stamp(audio, ident)

    def media(self, audio: bytes, at: float) -> None:
        arrived = self._rec.delta_arrived
        for ident in self._scanner.feed(audio):
            arrived.setdefault(ident, at)  # the first sight is the one that counts

    def clear(self, at: float, heard_ms: float) -> None:
        self.clears.append(at)
        self.heard_ms.append(heard_ms)


class _CallerClocks:
    """Each call's frames by slot, and how late each went: when did a caller run late."""

    def __init__(self) -> None:
        self._due: dict[int, list[float]] = {}
        self._late: dict[int, list[float]] = {}

    def add(self, call: int, due: float, late: float) -> None:
        # A call's frames are recorded in slot order.
        self._due.setdefault(call, []).append(due)
        self._late.setdefault(call, []).append(late)

    def worst_ms(self, call: int, start: float, end: float) -> float:
        """The most any of the call's frames due from ``start`` to ``end`` went out after
        its slot, in ms (0 if none was due then)."""
        due = self._due.get(call, [])
        lo, hi = bisect.bisect_left(due, start), bisect.bisect_right(due, end)
        return max(self._late.get(call, [])[lo:hi], default=0.0) * 1000


class LoadRecorder:
    """One pass's readings: give each call :meth:`call_tap`; after the pass, set
    :attr:`model` to the fake model's readings of it, then ask for the figures."""

    def __init__(self) -> None:
        # Caller frames, indexed by their tag id.
        self.frame_sent: list[float] = []
        self.frame_due: list[float] = []  # each frame's slot on the caller's own clock
        self.frame_call: list[int] = []
        self.send_lateness: list[float] = []
        # Answer deltas (the model numbers them): tag id -> when a caller first got it.
        self.delta_arrived: dict[int, float] = {}
        self.calls: list[CallTap] = []
        self.model = ModelReadings()

    def call_tap(self) -> CallTap:
        tap = CallTap(self, len(self.calls))
        self.calls.append(tap)
        return tap

    @property
    def sessions_opened(self) -> int:
        return len(self.model.sessions)

    def _session_calls(self) -> list[tuple[int, ModelSessionReadings]]:
        """Each model session whose call is known, with that call (from its first frame)."""
        calls = self.frame_call
        return [
            (calls[s.first_frame], s)
            for s in self.model.sessions
            if 0 <= s.first_frame < len(calls)
        ]

    # ------------------------------------------------------------ the figures

    def outbound(self) -> tuple[Hop, Hop, int]:
        """(first byte out, every delta out, deltas never seen by a caller). Unseen deltas
        are expected after a barge-in: a server drops what the caller will not hear."""
        first, every, unseen = self._outbound_samples()
        return Hop.of([took for _, took in first]), Hop.of([took for _, took in every]), unseen

    def _outbound_samples(self) -> tuple[_Samples, _Samples, int]:
        first: _Samples = []
        every: _Samples = []
        unseen = 0
        arrivals = self.delta_arrived
        for ident, (sent, is_first) in enumerate(
            zip(self.model.delta_sent, self.model.delta_first, strict=True)
        ):
            arrived = arrivals.get(ident)
            if arrived is None:
                unseen += 1
                continue
            every.append((sent, arrived - sent))
            if is_first:
                first.append((sent, arrived - sent))
        return first, every, unseen

    def _opened_by_call(self) -> dict[int, float]:
        opened: dict[int, float] = {}
        for call, session in self._session_calls():
            opened[call] = min(opened.get(call, math.inf), session.opened_at)
        return opened

    def inbound(self) -> tuple[Hop, FrameCounts]:
        samples, startup, undelivered = self._inbound_samples()
        lateness = sorted(self.send_lateness)
        counts = FrameCounts(
            sent=len(self.frame_sent),
            startup=startup,
            delivered=len(samples),
            late=sum(1 for _, latency in samples if latency > INBOUND_LATE_S),
            undelivered=undelivered,
            late_sends=sum(1 for late in lateness if late > SEND_LATE_S),
            send_lateness_p99_ms=percentile(lateness, 99) * 1000,
        )
        return Hop.of([took for _, took in samples]), counts

    def _inbound_samples(self) -> tuple[_Samples, int, int]:
        """The delivered frames' samples, and how many were sent before their call's session
        opened (startup) or never arrived (undelivered)."""
        opened = self._opened_by_call()
        samples: _Samples = []
        startup = undelivered = 0
        arrivals = self.model.frame_arrived
        for ident, (sent, call) in enumerate(zip(self.frame_sent, self.frame_call, strict=True)):
            arrived = arrivals.get(ident)
            if sent < opened.get(call, math.inf):
                startup += 1
            elif arrived is None:
                undelivered += 1
            else:
                samples.append((sent, arrived - sent))
        return samples, startup, undelivered

    def clear_hop(self, barge_ins: list[list[BargeInRecord]]) -> tuple[Hop, int]:
        """speech_started -> clear for each barge-in (``barge_ins[call]``, from the
        simulator), and how many barge-ins got no clear within 2 s of the model noticing
        them (or were never noticed)."""
        samples, missing = self._clear_samples(barge_ins)
        return Hop.of([took for _, took in samples]), missing

    def _clear_samples(self, barge_ins: list[list[BargeInRecord]]) -> tuple[_Samples, int]:
        samples: _Samples = []
        missing = 0
        for barge in self._cleared_barge_ins(barge_ins):
            if barge is None:
                missing += 1
            else:
                call, noticed, cleared = barge
                samples.append((noticed, self.calls[call].clears[cleared] - noticed))
        return samples, missing

    def _cleared_barge_ins(
        self, barge_ins: list[list[BargeInRecord]]
    ) -> list[tuple[int, float, int] | None]:
        """For each barge-in, its call, when the model noticed it (the first speech_started
        after the caller began) and the index in the call's tap of the clear that answered
        it; None when it was not noticed, or not cleared within 2 s of that."""
        started: dict[int, list[float]] = {}
        for call, session in self._session_calls():
            started.setdefault(call, []).extend(session.speech_started)
        found: list[tuple[int, float, int] | None] = []
        for call, records in enumerate(barge_ins):
            speech = sorted(started.get(call, ()))
            clears = self.calls[call].clears if call < len(self.calls) else []
            for barge in records:
                noticed = next((at for at in speech if at >= barge.started_at), None)
                cleared = (
                    None
                    if noticed is None
                    else next((i for i, at in enumerate(clears) if at >= noticed), None)
                )
                if (
                    noticed is None
                    or cleared is None
                    or clears[cleared] - noticed > _CLEAR_WITHIN_S
                ):
                    found.append(None)
                else:
                    found.append((call, noticed, cleared))
        return found

    def cut_accuracy(
        self,
        barge_ins: list[list[BargeInRecord]],
        window: tuple[float, float] | None = None,
    ) -> CutAccuracy:
        """For each barge-in that was cleared, the first truncate the model got after it
        noticed the barge-in, against what the caller had heard (``barge_ins`` as for
        :meth:`clear_hop`); with ``window``, only those noticed within it."""
        truncates: dict[int, list[tuple[float, int, bool]]] = {}
        for call, session in self._session_calls():
            truncates.setdefault(call, []).extend(session.truncates)
        errors: list[float] = []
        caller_late: list[float] = []
        untruncated = refused = 0
        clocks = self._caller_clocks()
        for barge in self._cleared_barge_ins(barge_ins):
            if barge is None:
                continue
            call, noticed, cleared = barge
            if window is not None and not window[0] <= noticed < window[1]:
                continue
            cut = min(
                (t for t in truncates.get(call, ()) if 0 <= t[0] - noticed <= _CLEAR_WITHIN_S),
                default=None,
            )
            if cut is None:
                untruncated += 1
            elif not cut[2]:
                refused += 1
            else:
                cleared_at = self.calls[call].clears[cleared]
                errors.append(cut[1] - self.calls[call].heard_ms[cleared])
                caller_late.append(
                    clocks.worst_ms(call, noticed - _CLOCK_BEFORE_S, cleared_at + _CLOCK_AFTER_S)
                )
        return CutAccuracy.of(errors, untruncated, refused, caller_late)

    def _caller_clocks(self) -> _CallerClocks:
        clocks = _CallerClocks()
        for sent, due, call in zip(self.frame_sent, self.frame_due, self.frame_call, strict=True):
            clocks.add(call, due, sent - due)
        return clocks

    def steady_window(self) -> tuple[float, float] | None:
        """From the last call's model session opening to the first call's last frame (each
        of the calls whose session opened), or None if those never overlapped."""
        opened = self._opened_by_call()
        last_frame: dict[int, float] = {}
        for sent, call in zip(self.frame_sent, self.frame_call, strict=True):
            last_frame[call] = max(sent, last_frame.get(call, sent))
        ends = [last_frame[call] for call in opened if call in last_frame]
        if not ends:
            return None
        start, end = max(opened.values()), min(ends)
        return (start, end) if end > start else None

    def steady(self, barge_ins: list[list[BargeInRecord]]) -> SteadyState:
        """The hops over :meth:`steady_window` (``barge_ins`` as for :meth:`clear_hop`)."""
        window = self.steady_window()
        first, every, _ = self._outbound_samples()
        inbound, _, _ = self._inbound_samples()
        clear, _ = self._clear_samples(barge_ins)
        return SteadyState(
            seconds=0.0 if window is None else window[1] - window[0],
            first_byte=_hop_within(first, window),
            delta=_hop_within(every, window),
            inbound=_hop_within(inbound, window),
            clear=_hop_within(clear, window),
            cut=self.cut_accuracy(barge_ins, window) if window else CutAccuracy.of([], 0, 0, []),
        )
