"""CPU the pure call path spends per call, next to a naive pass-through measured in the same run.

A simulated call is two passes over prebuilt frames, each timed with ``time.process_time``:

* inbound: one Twilio ``media`` text per 20 ms (160 bytes of mu-law, base64), fed to
  :meth:`CallLogic.receive_phone`, which appends it to the model;
* outbound: the model's replies (5 s each, back to back, so the agent talks all call long)
  as ``response.output_audio.delta`` texts of 100 ms with the events around them, fed to
  :meth:`CallLogic.receive_realtime`; every mark the bridge sends is echoed back one per
  20 ms, as Twilio does when the chunk has played, so chunking, marks and the playout lead run.

After every frame both protocol objects are drained, as the session does. The figures are a
full-duplex upper bound: in a real call the agent is silent part of the time.

The baseline is what the simplest public Twilio <-> Realtime samples do per message: one
``json.loads`` and one ``json.dumps`` each way, the delta forwarded whole with one mark,
no chunking, no playout tracking, no transcript.
"""

from __future__ import annotations

import base64
import gc
import json
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bridge.call.call_logic import CallConfig, CallLogic
from bridge.codecs.clips import load_clip
from bridge.codecs.g711 import ulaw_to_pcm16
from bridge.devtools.fake_script import synthesize_voice
from bridge.protocols.dialects import DIALECTS, SessionConfig
from bridge.protocols.realtime import RealtimeConnection
from bridge.protocols.twilio import MARK_CHUNK_MS, MARK_CHUNKS, TwilioMediaStream

__all__ = ["MicroReport", "PathFigures", "format_micro", "run_micro"]

FRAME_MS = 20
DELTA_MS = 100
REPLY_MS = 5000
_SID = "MZ" + "0" * 32
_CALL_SID = "CA" + "1" * 32
# The bridge's own mark frames are valid Twilio echoes, so "Twilio" returns them unchanged
# and the harness adds almost nothing to what is measured.
_MARK_PREFIX = '{"event":"mark"'


@dataclass(frozen=True, slots=True)
class PathFigures:
    """Best-of CPU seconds of one path for ``simulated_s`` of call, inbound and outbound."""

    path: str
    simulated_s: float
    in_frames: int
    out_chunks: int
    in_cpu_s: float
    out_cpu_s: float

    @property
    def cpu_ms_per_call_minute(self) -> float:
        return (self.in_cpu_s + self.out_cpu_s) * 1000.0 * 60.0 / self.simulated_s

    @property
    def us_per_frame_in(self) -> float:
        return self.in_cpu_s * 1e6 / self.in_frames

    @property
    def us_per_chunk_out(self) -> float:
        return self.out_cpu_s * 1e6 / self.out_chunks

    @property
    def calls_per_core(self) -> float:
        """Concurrent calls one core could carry on this path alone (60 000 ms per minute)."""
        return 60_000.0 / self.cpu_ms_per_call_minute


@dataclass(frozen=True, slots=True)
class MicroReport:
    seconds: float
    repeat: int
    baseline: PathFigures
    rows: tuple[PathFigures, ...]  # the bridge's paths; the baseline is printed last

    def ratio(self, row: PathFigures) -> float:
        """CPU per call-minute of ``row`` over the baseline's."""
        return row.cpu_ms_per_call_minute / self.baseline.cpu_ms_per_call_minute


# -- the workload (built before timing) -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Workload:
    inbound: list[tuple[str, float]]  # (text, arrival time)
    replies: list[list[str]]  # each reply's server events, in order
    audio_ms: int


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _inbound(seconds: float) -> list[tuple[str, float]]:
    voice = load_clip("caller_1") + bytes([0xFF]) * 8000 + load_clip("caller_2")
    frame = FRAME_MS * 8
    frames: list[tuple[str, float]] = []
    for i in range(int(seconds * 1000) // FRAME_MS):
        start = (i * frame) % (len(voice) - frame)
        media = {
            "track": "inbound",
            "chunk": str(i + 1),
            "timestamp": str(i * FRAME_MS),
            "payload": _b64(voice[start : start + frame]),
        }
        text = json.dumps(
            {"event": "media", "sequenceNumber": str(i + 2), "media": media, "streamSid": _SID}
        )
        frames.append((text, 100.0 + i * FRAME_MS / 1000))
    return frames


def _reply_audio(audio_format: str) -> bytes:
    ulaw = synthesize_voice(REPLY_MS)
    if audio_format == "pcmu":
        return ulaw
    # 24 kHz PCM16: each 8 kHz sample three times. The content hardly matters to the cost.
    samples = np.frombuffer(ulaw_to_pcm16(ulaw), dtype="<i2")
    return np.repeat(samples, 3).astype("<i2").tobytes()


def _reply_events(n: int, audio: bytes, bytes_per_ms: int) -> list[str]:
    rid, item = f"resp_{n}", f"item_{n}"
    text = "Of course, let me look that up for you."
    head: dict[str, Any] = {"response_id": rid, "item_id": item, "output_index": 0}
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": {"id": rid, "status": "in_progress"}},
        {
            "type": "response.output_item.added",
            "response_id": rid,
            "output_index": 0,
            "item": {"id": item, "type": "message", "role": "assistant", "content": []},
        },
        {"type": "response.output_audio_transcript.delta", **head, "delta": text},
    ]
    step = DELTA_MS * bytes_per_ms
    for start in range(0, len(audio), step):
        delta = _b64(audio[start : start + step])
        events.append({"type": "response.output_audio.delta", **head, "delta": delta})
    events += [
        {"type": "response.output_audio.done", **head, "content_index": 0},
        {"type": "response.output_audio_transcript.done", **head, "transcript": text},
        {
            "type": "response.done",
            "response": {
                "id": rid,
                "status": "completed",
                "output": [
                    {
                        "id": item,
                        "type": "message",
                        "role": "assistant",
                        "content": [{"type": "output_audio", "transcript": text}],
                    }
                ],
            },
        },
    ]
    for i, event in enumerate(events):
        event["event_id"] = f"event_{n}_{i}"
    return [json.dumps(event) for event in events]


def _workload(seconds: float, audio_format: str) -> _Workload:
    audio = _reply_audio(audio_format)
    bytes_per_ms = 8 if audio_format == "pcmu" else 48
    n_replies = max(1, round(seconds * 1000 / REPLY_MS))
    replies = [_reply_events(n, audio, bytes_per_ms) for n in range(n_replies)]
    return _Workload(_inbound(seconds), replies, n_replies * REPLY_MS)


# -- the bridge's path ------------------------------------------------------------------------


def _bridge_call(audio_format: str) -> CallLogic:
    """A call whose stream has started and whose model session is configured."""
    twilio = TwilioMediaStream()
    twilio.receive_text('{"event":"connected","protocol":"Call","version":"1.0.0"}')
    start = {
        "accountSid": "AC" + "2" * 32,
        "streamSid": _SID,
        "callSid": _CALL_SID,
        "tracks": ["inbound"],
        "customParameters": {},
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
    }
    twilio.receive_text(json.dumps({"event": "start", "streamSid": _SID, "start": start}))
    twilio.events_received()
    session = SessionConfig(instructions="Be brief.", voice=None, audio_format=audio_format)
    realtime = RealtimeConnection(DIALECTS["openai"], audio_format)
    config = CallConfig(session=session, chunk_ms=MARK_CHUNK_MS, mark_chunks=MARK_CHUNKS)
    logic = CallLogic(twilio, realtime, config, started_at=100.0)
    logic.receive_realtime('{"type":"session.created","event_id":"e1","session":{}}', 100.0)
    logic.receive_realtime('{"type":"session.updated","event_id":"e2","session":{}}', 100.0)
    realtime.data_to_send()
    logic.outputs()
    return logic


def _twilio(logic: CallLogic) -> TwilioMediaStream:
    phone = logic.phone
    assert isinstance(phone, TwilioMediaStream)
    return phone


def _bridge_inbound(logic: CallLogic, work: _Workload) -> float:
    twilio, realtime = _twilio(logic), logic.realtime
    started = time.process_time()
    for text, now in work.inbound:
        twilio.receive_text(text)
        logic.receive_phone(twilio.events_received(), now)
        realtime.data_to_send()
        twilio.data_to_send()
        logic.outputs()
    cpu = time.process_time() - started
    # The resampler holds back a few ms (soxr works in blocks); pass-through holds nothing.
    expected_ms = len(work.inbound) * FRAME_MS
    if not expected_ms - 100 <= realtime.appended_ms <= expected_ms:
        raise AssertionError(f"bridge appended {realtime.appended_ms} of {expected_ms} ms")
    return cpu


def _drain(logic: CallLogic, at_twilio: deque[str]) -> int:
    """Empty both legs' outboxes as the session would; queue marks at "Twilio" for echoing.
    Returns how many media frames went to the phone."""
    logic.realtime.data_to_send()
    media = 0
    for frame in _twilio(logic).data_to_send():
        if frame.startswith(_MARK_PREFIX):
            at_twilio.append(frame)
        else:
            media += 1
    logic.outputs()
    return media


def _bridge_outbound(logic: CallLogic, work: _Workload) -> float:
    at_twilio: deque[str] = deque()  # marks queued at "Twilio", one per marked chunk
    twilio = _twilio(logic)
    media = 0
    now = 200.0
    started = time.process_time()
    for reply in work.replies:
        for text in reply:
            logic.receive_realtime(text, now)
            media += _drain(logic, at_twilio)
        while at_twilio:
            now += MARK_CHUNK_MS / 1000
            twilio.receive_text(at_twilio.popleft())
            logic.receive_phone(twilio.events_received(), now)
            media += _drain(logic, at_twilio)
    cpu = time.process_time() - started
    # pcm24k adds a short chunk or so per reply: the resampler's tail, drained at audio.done.
    expected = work.audio_ms // MARK_CHUNK_MS
    if not expected <= media <= expected + 4 * len(work.replies):
        raise AssertionError(f"bridge sent {media} chunks, expected {expected}")
    return cpu


# -- the baseline -----------------------------------------------------------------------------


class _NaiveBridge:
    """The simplest public samples' per-message work, for comparison only."""

    def __init__(self, stream_sid: str) -> None:
        self.stream_sid = stream_sid
        self.to_model: list[str] = []
        self.to_twilio: list[str] = []
        self.mark_queue: deque[str] = deque()

    def from_twilio(self, text: str) -> None:
        msg = json.loads(text)
        event = msg["event"]
        if event == "media":
            append = {"type": "input_audio_buffer.append", "audio": msg["media"]["payload"]}
            self.to_model.append(json.dumps(append))
        elif event == "mark" and self.mark_queue:
            self.mark_queue.popleft()

    def from_model(self, text: str) -> None:
        msg = json.loads(text)
        if msg["type"] == "response.output_audio.delta":
            media = {
                "event": "media",
                "streamSid": self.stream_sid,
                "media": {"payload": msg["delta"]},
            }
            self.to_twilio.append(json.dumps(media))
            mark = {"event": "mark", "streamSid": self.stream_sid, "mark": {"name": "responsePart"}}
            self.to_twilio.append(json.dumps(mark))
            self.mark_queue.append("responsePart")

    def drain(self) -> list[str]:
        self.to_model = []
        out, self.to_twilio = self.to_twilio, []
        return out


def _naive_inbound(naive: _NaiveBridge, work: _Workload) -> float:
    started = time.process_time()
    for text, _now in work.inbound:
        naive.from_twilio(text)
        naive.drain()
    return time.process_time() - started


def _naive_outbound(naive: _NaiveBridge, work: _Workload) -> float:
    at_twilio: deque[str] = deque()
    started = time.process_time()
    for reply in work.replies:
        for text in reply:
            naive.from_model(text)
            for frame in naive.drain():
                if frame.startswith(_MARK_PREFIX):
                    at_twilio.append(frame)
        while at_twilio:
            naive.from_twilio(at_twilio.popleft())
            naive.drain()
    return time.process_time() - started


# -- running ----------------------------------------------------------------------------------


def _best(
    name: str,
    work: _Workload,
    repeat: int,
    passes: Callable[[], tuple[float, float]],
) -> PathFigures:
    best_in = best_out = float("inf")
    for _ in range(repeat):
        gc.collect()
        cpu_in, cpu_out = passes()
        best_in, best_out = min(best_in, cpu_in), min(best_out, cpu_out)
    return PathFigures(
        path=name,
        simulated_s=len(work.inbound) * FRAME_MS / 1000,
        in_frames=len(work.inbound),
        out_chunks=work.audio_ms // FRAME_MS,
        in_cpu_s=best_in,
        out_cpu_s=best_out,
    )


def _bridge_passes(audio_format: str, work: _Workload) -> Callable[[], tuple[float, float]]:
    def run() -> tuple[float, float]:
        cpu_in = _bridge_inbound(_bridge_call(audio_format), work)
        gc.collect()
        return cpu_in, _bridge_outbound(_bridge_call(audio_format), work)

    return run


def _naive_passes(work: _Workload) -> Callable[[], tuple[float, float]]:
    def run() -> tuple[float, float]:
        cpu_in = _naive_inbound(_NaiveBridge(_SID), work)
        gc.collect()
        return cpu_in, _naive_outbound(_NaiveBridge(_SID), work)

    return run


def run_micro(seconds: float = 60.0, repeat: int = 5) -> MicroReport:
    """Measure the bridge (pcmu and pcm24k) and the baseline on ``seconds`` of simulated call,
    best of ``repeat`` runs each. Raises ``ValueError`` for sizes too small to measure, and
    ``AssertionError`` if the bridge did not pass every frame through (a broken path is not
    worth timing)."""
    if seconds < REPLY_MS / 1000 or repeat < 1:
        raise ValueError(f"need seconds >= {REPLY_MS / 1000} and repeat >= 1")
    pcmu = _workload(seconds, "pcmu")
    pcm24k = _workload(seconds, "pcm24k")
    rows = (
        _best("bridge pcmu", pcmu, repeat, _bridge_passes("pcmu", pcmu)),
        _best("bridge pcm24k", pcm24k, repeat, _bridge_passes("pcm24k", pcm24k)),
    )
    baseline = _best("naive baseline", pcmu, repeat, _naive_passes(pcmu))
    return MicroReport(seconds, repeat, baseline, rows)


def format_micro(report: MicroReport) -> str:
    """The report as a table, ready to print."""
    lines = [
        f"micro: pure call path, {report.seconds:g} s simulated call (caller audio in, agent "
        f"speaking throughout), best of {report.repeat}, CPU time (time.process_time)",
        "",
        f"{'path':<16} {'CPU ms/call-min':>15} {'us/frame in':>12} {'us/20ms out':>12} "
        f"{'x baseline':>10} {'calls/core':>10}",
    ]
    rows: Sequence[PathFigures] = (*report.rows, report.baseline)
    for row in rows:
        lines.append(
            f"{row.path:<16} {row.cpu_ms_per_call_minute:>15.1f} {row.us_per_frame_in:>12.2f} "
            f"{row.us_per_chunk_out:>12.2f} {report.ratio(row):>10.2f} {row.calls_per_core:>10.0f}"
        )
    lines.append("")
    lines.append(
        "calls/core = 60 000 / CPU ms per call-minute: concurrent calls one core could carry "
        "on this path alone (no sockets, no event loop, no TLS)."
    )
    return "\n".join(lines)
