"""The silence a caller lives through when the model session drops at the worst moment.

One ``bridge serve`` child process (as in :mod:`bridge.devtools.bench_load`), the fake
realtime server behind it, and the same short call placed over and over: the caller asks
one question and waits for the answer. *Baseline* calls are left alone. In *dropped* calls
the fake model's session fails right after it has sent the caller's transcript and before
it answers (a TCP reset and a 1011 close, alternately), so the bridge must open a new
session, re-seed it with the call so far and ask it for the answer.

The figure is the caller's wait: from the end of its utterance, as the simulator sent it,
to the first agent audio it heard (:meth:`SimulationResult.reply_waits`), which playback in
20 ms ticks rounds up to a tick; the same wait to the audio's arrival is kept beside it,
finer than a tick. Both modes pay the model's own part (end-of-speech detection, the
reply); the reconnect's added gap is a dropped call's wait minus the baseline median. Calls
run one at a time, baseline and dropped in turn, so that the fake's one-shot drop finds the
right session and machine noise falls on both modes alike; one uncounted call warms the
bridge up first. The fake answers on loopback at once: a real provider's handshake and
first audio come on top of these figures.
"""

from __future__ import annotations

import asyncio
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.codecs.clips import load_clip
from bridge.devtools.bench_load import (
    _AUTH_TOKEN,
    _MODEL_KEY,
    _bridge_env,
    _start_bridge,
    _stop,
    _wait_ready,
)
from bridge.devtools.fake_realtime import FakeRealtimeServer
from bridge.devtools.fake_script import FakeScript, Reply
from bridge.devtools.ports import free_port
from bridge.devtools.simulator import SimulationError, SimulationResult, simulate_call

__all__ = [
    "AIM_MS",
    "ANSWER",
    "DROPS",
    "QUESTION",
    "CallWait",
    "ReconnectReport",
    "WaitFigures",
    "format_reconnect",
    "measure_reconnect",
    "reconnect_json",
    "run_reconnect",
]

#: The bridge's stated aim: a reconnect adds less than this to the caller's wait.
AIM_MS = 1500.0
#: How dropped calls lose their session, in turn: ``FakeSession.drop``'s two ways.
DROPS = ("reset", "1011")
_DROP_NAMES = {"reset": "TCP reset", "1011": "close 1011"}
_REVIEW_TOKEN = "bench-review-token"
QUESTION = "What time do you open tomorrow?"
ANSWER = "We open at nine in the morning."
# No greeting, one question, one answer: a fresh session answers the same question the
# same way, so a dropped call's answer can be checked word for word.
_SCRIPT = FakeScript(replies=[Reply(ANSWER, duration_ms=1000)], caller_transcripts=[QUESTION])
_CALL_LIMIT_S = 20.0  # one call lasts about 5 s; a reconnect that fails shows as a timeout
_REPLY_SILENCE_S = 0.3  # the caller hangs up this soon after the answer


@dataclass(frozen=True, slots=True)
class CallWait:
    """One call: ``mode`` is ``baseline`` or the drop (``reset``, ``1011``); ``wait_ms`` the
    caller's wait for the answer (None: none heard), ``arrival_ms`` the same to the answer's
    arrival; ``problem`` why the call does not count as answered (None: it does)."""

    mode: str
    call_sid: str
    wait_ms: float | None
    problem: str | None
    arrival_ms: float | None = None


@dataclass(frozen=True, slots=True)
class WaitFigures:
    """Percentiles of some calls' waits (ms), over the answered calls only."""

    calls: int
    answered: int
    p50_ms: float
    p90_ms: float
    max_ms: float


@dataclass(frozen=True, slots=True)
class ReconnectReport:
    calls: int  # per mode
    waits: tuple[CallWait, ...]
    wall_seconds: float

    def figures(self, *modes: str, arrival: bool = False) -> WaitFigures:
        chosen = [w for w in self.waits if w.mode in modes]
        return _figures(len(chosen), _answered(chosen, arrival))

    @property
    def baseline(self) -> WaitFigures:
        return self.figures("baseline")

    @property
    def dropped(self) -> WaitFigures:
        return self.figures(*DROPS)

    @property
    def added(self) -> WaitFigures:
        """Each answered dropped call's wait minus the baseline median."""
        return self._added(arrival=False)

    @property
    def added_on_arrival(self) -> WaitFigures:
        """:attr:`added`, to the answer's arrival: what the reconnect costs below a tick."""
        return self._added(arrival=True)

    def _added(self, *, arrival: bool) -> WaitFigures:
        base = self.figures("baseline", arrival=arrival).p50_ms
        chosen = [w for w in self.waits if w.mode in DROPS]
        return _figures(len(chosen), [wait - base for wait in _answered(chosen, arrival)])

    @property
    def failures(self) -> tuple[str, ...]:
        return tuple(f"{w.mode} {w.call_sid}: {w.problem}" for w in self.waits if w.problem)

    @property
    def aim_met(self) -> bool:
        """Every dropped call was answered, and nine in ten within the aim's added gap."""
        added = self.added
        return added.answered == added.calls > 0 and added.p90_ms < AIM_MS


def _answered(waits: list[CallWait], arrival: bool = False) -> list[float]:
    values = [w.arrival_ms if arrival else w.wait_ms for w in waits if w.problem is None]
    return [value for value in values if value is not None]


def _percentile(ordered: list[float], q: float) -> float:
    """Linear interpolation between the closest ranks (numpy's default)."""
    if not ordered:
        return math.nan
    position = (len(ordered) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _figures(calls: int, values: list[float]) -> WaitFigures:
    ordered = sorted(values)
    return WaitFigures(
        calls=calls,
        answered=len(ordered),
        p50_ms=_percentile(ordered, 0.5),
        p90_ms=_percentile(ordered, 0.9),
        max_ms=ordered[-1] if ordered else math.nan,
    )


def _first_ms(waits: list[float | None]) -> float | None:
    return None if not waits or waits[0] is None else waits[0] * 1000


def _judge(
    result: SimulationResult, sessions: list[Any], dropped: bool
) -> tuple[float | None, str | None]:
    """The call's wait in ms, and what (if anything) says it was not answered as it should."""
    wait_ms = _first_ms(result.reply_waits())
    record = result.call_record or {}
    said = [(t.get("role"), t.get("text")) for t in record.get("turns") or []]
    reconnects = [e for e in record.get("events") or [] if e.get("type") == "reconnect"]
    answers = [s for s in sessions if s.responses]
    if result.protocol_problems:
        return wait_ms, result.protocol_problems[0]
    if result.timed_out or wait_ms is None:
        return wait_ms, "no answer heard"
    if said != [("caller", QUESTION), ("agent", ANSWER)]:
        return wait_ms, f"the record says {said!r}"
    if any(t.get("interrupted") for t in record.get("turns") or []):
        return wait_ms, "the answer was cut short"
    if len(sessions) != (2 if dropped else 1) or len(reconnects) != (1 if dropped else 0):
        return wait_ms, f"{len(sessions)} model sessions, {len(reconnects)} reconnects"
    if answers != sessions[-1:]:
        return wait_ms, "the answer did not come from the last session"
    return wait_ms, None


async def _one_call(url: str, fake: FakeRealtimeServer, mode: str) -> CallWait:
    first = len(fake.sessions)
    dropped = mode in DROPS
    # Armed for the next session to open, which is this call's first: calls never overlap.
    fake.drop_after_transcript = mode if dropped else None
    try:
        result = await simulate_call(
            url,
            auth_token=_AUTH_TOKEN,
            review_token=_REVIEW_TOKEN,
            caller_utterances=[load_clip("caller_1")],
            reply_silence_s=_REPLY_SILENCE_S,
            max_duration_s=_CALL_LIMIT_S,
        )
    except SimulationError as exc:
        return CallWait(mode, "?", None, f"{type(exc).__name__}: {exc}")
    finally:
        fake.drop_after_transcript = None  # never left armed for a call it was not meant for
    wait_ms, problem = _judge(result, fake.sessions[first:], dropped)
    arrival_ms = _first_ms(result.reply_waits(arrived=True))
    return CallWait(mode, result.call_sid, wait_ms, problem, arrival_ms)


async def measure_reconnect(calls: int, timeout_s: float) -> ReconnectReport:
    """Place ``calls`` baseline and ``calls`` dropped calls, one at a time, against a fresh
    bridge process; everything started is stopped before returning. Raises
    ``TimeoutError`` when the whole run exceeds ``timeout_s``."""
    if calls < 1:
        raise ValueError("need calls >= 1")
    waits: list[CallWait] = []
    async with (
        asyncio.timeout(timeout_s),
        FakeRealtimeServer("openai", script=_SCRIPT, api_key=_MODEL_KEY) as fake,
    ):
        with tempfile.TemporaryDirectory(prefix="bridge-bench-") as tmp:
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            log = Path(tmp) / "bridge.log"
            env = _bridge_env(url, fake.url, Path(tmp) / "calls.db")
            env["BRIDGE_REVIEW_TOKEN"] = _REVIEW_TOKEN
            proc = _start_bridge(port, env, log)
            try:
                await _wait_ready(url, proc, log)
                await _one_call(url, fake, "baseline")  # warm-up: first-call costs, not counted
                started = time.monotonic()
                for n in range(calls):
                    waits.append(await _one_call(url, fake, "baseline"))
                    waits.append(await _one_call(url, fake, DROPS[n % len(DROPS)]))
                wall = time.monotonic() - started
            finally:
                _stop(proc)  # blocking, but bounded, and immune to a cancelled run
    return ReconnectReport(calls=calls, waits=tuple(waits), wall_seconds=wall)


def run_reconnect(calls: int = 20, timeout_s: float | None = None) -> ReconnectReport:
    """:func:`measure_reconnect` in a fresh event loop (for the command line)."""
    limit = timeout_s if timeout_s is not None else (2 * calls + 1) * (_CALL_LIMIT_S + 10) + 30
    return asyncio.run(measure_reconnect(calls, limit))


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.0f}"


def _row(name: str, figures: WaitFigures) -> str:
    return (
        f"{name:<24}{figures.calls:>6}{figures.answered:>10}"
        f"{_ms(figures.p50_ms):>9}{_ms(figures.p90_ms):>9}{_ms(figures.max_ms):>9}"
    )


def format_reconnect(report: ReconnectReport) -> str:
    """The report as a table, ready to print."""
    added = report.added
    verdict = "met" if report.aim_met else "NOT met"
    lines = [
        f"reconnect: {report.calls} calls per mode against `bridge serve` (fake OpenAI GA model, "
        "pcmu), one at a time",
        "wait = end of the caller's question to the first agent audio it heard; dropped calls",
        "lose their model session after the caller's transcript, before the answer",
        "",
        f"{'mode':<24}{'calls':>6}{'answered':>10}{'p50 ms':>9}{'p90 ms':>9}{'max ms':>9}",
        _row("baseline", report.baseline),
        _row("dropped", report.dropped),
    ]
    lines += [_row(f"  {_DROP_NAMES[how]}", report.figures(how)) for how in DROPS]
    lines += [
        _row("added by the reconnect", added),
        _row("  the same, on arrival", report.added_on_arrival),
        "",
        "added gap = a dropped call's wait minus the baseline p50 (heard: to a 20 ms tick;",
        "on arrival: when the answer's first audio reached the caller's side, finer)",
        f"aim: added gap under {AIM_MS:.0f} ms at p90: {verdict} "
        f"(wall {report.wall_seconds:.1f} s)",
    ]
    lines += [f"failed: {failure}" for failure in report.failures[:5]]
    return "\n".join(lines)


def _figures_json(figures: WaitFigures) -> dict[str, Any]:
    def number(value: float) -> float | None:
        return None if math.isnan(value) else round(value, 1)

    return {
        "calls": figures.calls,
        "answered": figures.answered,
        "p50_ms": number(figures.p50_ms),
        "p90_ms": number(figures.p90_ms),
        "max_ms": number(figures.max_ms),
    }


def reconnect_json(report: ReconnectReport) -> dict[str, Any]:
    """The report as a JSON-ready dict (NaN, where nothing was answered, becomes null)."""
    return {
        "calls_per_mode": report.calls,
        "wall_seconds": round(report.wall_seconds, 1),
        "modes": {
            "baseline": _figures_json(report.baseline),
            "dropped": _figures_json(report.dropped),
            **{f"dropped_{how}": _figures_json(report.figures(how)) for how in DROPS},
        },
        "added": _figures_json(report.added),
        "added_on_arrival": _figures_json(report.added_on_arrival),
        "aim_ms": AIM_MS,
        "aim_met": report.aim_met,
        "calls": [
            {
                "mode": w.mode,
                "call_sid": w.call_sid,
                "wait_ms": None if w.wait_ms is None else round(w.wait_ms, 1),
                "arrival_ms": None if w.arrival_ms is None else round(w.arrival_ms, 1),
                "problem": w.problem,
            }
            for w in report.waits
        ],
        "failures": list(report.failures),
    }
