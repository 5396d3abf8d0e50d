"""The call logic: one phone leg and one model leg, wired together. Pure: no I/O, no clock.

``CallLogic`` is fed what each leg received, with the time it arrived: the phone leg's events
(any kind of phone leg: Twilio Media Streams, SIP/RTP) and the model's text frames. In turn it
queues output on the two legs (the session writes it out) and store writes (``outputs()``).
It decides everything a call needs deciding: when audio goes to the caller,
what counts as heard, what a barge-in flushes and truncates, and which turns are final.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from bridge.call.far_playout import FarPlayout
from bridge.call.limits import (
    ARE_YOU_THERE,
    GOODBYE_GRACE_S,
    SHUTTING_DOWN,
    TIME_UP,
    CallLimits,
    LimitAction,
    LimitPolicy,
)
from bridge.call.playback import CHUNK_BYTES, Playback
from bridge.call.recording import CallRecorder
from bridge.call.records import CallEvent, EndReason, Role, Turn
from bridge.call.tools import (
    TRANSFER_CALL,
    Answer,
    ToolCallReady,
    ToolDesk,
    ToolPolicy,
    Transfer,
    error_output,
)
from bridge.call.transcript import INAUDIBLE, TranscriptBuilder
from bridge.codecs.g711 import pcm16_to_ulaw, ulaw_to_pcm16
from bridge.codecs.resampler import StreamResampler
from bridge.protocols.dialects import SessionConfig
from bridge.protocols.phone import (
    DtmfReceived,
    MarkPlayed,
    MediaReceived,
    PhoneEvent,
    PhoneLeg,
    StreamStopped,
    UnknownEvent,
)
from bridge.protocols.realtime import RealtimeConnection, ResponseState
from bridge.protocols.realtime_events import (
    AssistantItemStarted,
    AudioDelta,
    AudioDone,
    FunctionCallRequested,
    InputCommitted,
    InputTranscriptCompleted,
    InputTranscriptFailed,
    OutputAudioStarted,
    OutputAudioStopped,
    RealtimeError,
    ResponseDone,
    SessionCreated,
    SessionUpdated,
    SpeechStarted,
    SpeechStopped,
    TranscriptDelta,
    TranscriptDone,
    provider_limit,
)

# Inbound audio that arrives before the model session is configured is held, at most this
# many 20 ms frames (2 s); older frames are dropped rather than letting a slow provider grow it.
_EARLY_AUDIO_FRAMES = 100
# 60 ms of 24 kHz PCM16 silence: more than the resampler's look-ahead.
_RESAMPLER_DRAIN_BYTES = 60 * 48
# A fresh model session is told the call so far as text items, newest first, up to this many
# characters (about a thousand tokens): enough for the thread of a conversation.
RESEED_CHARS = 4000
# Roll over to a fresh session from this long before the provider's limit, at the first quiet
# moment; for short limits, from a third of the limit before it.
ROLLOVER_MARGIN_S = 180.0
# Keypresses: each becomes a model item, a response request and a record event, so a flood
# would cost the model, the store and other calls' writes. A person types an account number
# in a burst of a dozen keys at a few keys a second; beyond that, keys are dropped.
DTMF_BURST = 12
DTMF_PER_S = 4.0


@dataclass(frozen=True, slots=True)
class CallConfig:
    session: SessionConfig
    greeting: str | None = None
    # True when the model cancels its own response on caller speech (interrupt_response).
    server_cancels: bool = True
    max_lead_ms: int = 600
    # Agent audio goes to the phone leg in chunks of this many ms, a mark after each: 20 for
    # a leg that counts frames itself (RTP), more where every mark is a message each way.
    chunk_ms: int = 20
    # Up to this many chunks of one item may share a mark (see ``Playback``): 1 where marks
    # cost nothing, more where each is a message each way.
    mark_chunks: int = 1
    # What server VAD folds into audio_start_ms / audio_end_ms (reference §7.3).
    vad_padding_ms: int = 300
    vad_silence_ms: int = 500
    # The built-in tools and the names of the HTTP/MCP tools this call's agent offers.
    tools: ToolPolicy = field(default_factory=ToolPolicy)
    limits: LimitPolicy = field(default_factory=LimitPolicy)
    # False: the provider carries the call's audio itself and the model leg is a control
    # channel (OpenAI's SIP sideband). The session was configured when the call was
    # accepted; turns are timed by their words; the provider handles barge-in.
    media: bool = True


class Phase(Enum):
    AWAITING_SESSION = "awaiting_session"
    ACTIVE = "active"
    ENDED = "ended"


@dataclass(frozen=True, slots=True)
class TurnReady:
    turn: Turn


@dataclass(frozen=True, slots=True)
class EventReady:
    event: CallEvent


@dataclass(frozen=True, slots=True)
class TransferReady:
    """The caller has heard the agent's last words before a transfer: transfer the phone
    leg to ``target`` (a name of the agent's), then :meth:`CallLogic.transfer_finished`."""

    call_id: str
    target: str


@dataclass(frozen=True, slots=True)
class RolloverReady:
    """The model session nears its provider's limit and the call is quiet: open a fresh
    session now and hand it over with :meth:`CallLogic.switch_model`."""


@dataclass(frozen=True, slots=True)
class LatencyReady:
    """A latency the caller felt, for the metrics: ``"turn"`` (from the end of the caller's
    speech to the agent's first audio sent to the line) or ``"clear"`` (from the caller
    starting to talk over the agent to its audio being cleared)."""

    kind: str
    seconds: float


@dataclass(frozen=True, slots=True)
class ModelFailure:
    """Why the model session can serve the call no longer.

    ``kind``: ``"expired"`` (its time is up: a fresh session of the same provider will do),
    ``"limit"`` (a rate, quota or concurrency limit: the provider will not take more now) or
    ``"refused"`` (bad key, configuration refused: it never will).
    """

    kind: str
    code: str | None
    message: str


@dataclass(frozen=True, slots=True)
class Notice:
    """Something worth a log line; the session logs it with the call's context."""

    name: str
    level: str = "info"
    fields: dict[str, Any] = field(default_factory=dict)


StoreWrite = TurnReady | EventReady
Output = (
    TurnReady | EventReady | Notice | ToolCallReady | TransferReady | RolloverReady | LatencyReady
)


class CallLogic:
    """Drives one call once the phone leg has started and the model socket is open.

    After every ``receive_*`` the caller must write out what the phone leg and ``realtime``
    queued, and persist ``outputs()``. When ``phase`` is ``ENDED`` the
    call is over; ``end_reason`` says why.
    """

    def __init__(
        self,
        phone: PhoneLeg,
        realtime: RealtimeConnection,
        config: CallConfig,
        started_at: float,
        recorder: CallRecorder | None = None,
    ) -> None:
        self.phone = phone
        self.realtime = realtime
        self.config = config
        # Fed what the caller said and heard when the call is recorded; None costs nothing.
        self.recorder = recorder
        self.phase = Phase.AWAITING_SESSION
        self.end_reason: EndReason | None = None
        self.barge_ins = 0
        self._pcm24k = config.session.audio_format == "pcm24k"
        self._to_model = StreamResampler(8000, 24000) if self._pcm24k else None
        self._to_phone = StreamResampler(24000, 8000) if self._pcm24k else None
        # With several chunks under a mark, each echo frees a whole run at once: the bound grows
        # by the extra chunks of a run, so the least queued at Twilio is what one chunk per
        # mark would leave.
        lead_ms = config.max_lead_ms + (max(1, config.mark_chunks) - 1) * config.chunk_ms
        self._playback = Playback(
            lead_ms, config.chunk_ms, config.mark_chunks, playout_clock=not phone.marks_on_send
        )
        # A marked chunk goes to the leg as media of at most one chunk each.
        self._media_bytes = max(1, config.chunk_ms // 20) * CHUNK_BYTES
        self._transcript = TranscriptBuilder()
        self._outputs: list[Output] = []
        self._early_audio: list[tuple[bytes, int]] = []
        self._greeted = False
        self._discarded_items: set[str] = set()
        self._discarded_responses: set[str] = set()
        self._item_response: dict[str, str | None] = {}
        # Agent items of the current model session: only these can be truncated there.
        self._session_items: set[str] = set()
        # The call clock: the phone leg's media timestamps, advanced by wall time between frames.
        self._started_at = started_at
        self._clock_ts: int | None = None
        self._clock_at = started_at
        # Stream time of the first frame given to the model: origin of its input timeline.
        self._input_origin_ms: int | None = None
        self._dtmf_allowance = float(DTMF_BURST)
        self._dtmf_at = started_at
        #: Keypresses dropped for coming faster than a person types.
        self.dtmf_dropped = 0
        self._tools = ToolDesk(config.tools)
        self._limits = CallLimits(config.limits, started_at)
        # Tool calls being run or waiting for their moment: call id -> (name, args, since).
        self._tool_calls: dict[str, tuple[str, dict[str, Any], float]] = {}
        # The model ended the call (hang up or transfer): done once its last words are heard.
        self._leaving: EndReason | None = None
        self._transfer: Transfer | None = None
        self._transfer_asked = False
        # When the bridge, stopping, asked this call to end (loop time): see shut_down().
        self._shutdown_at: float | None = None
        # Stream time the caller last stopped speaking, until the agent's reply reaches the
        # line: the turn latency the caller feels.
        self._reply_due_ms: int | None = None
        self._far = FarPlayout(enabled=not config.media)
        if not config.media:  # configured already: no session.update, greet at once
            self.phase = Phase.ACTIVE
            self._greet()
        # The turns as last written, by seq: what a fresh model session is re-seeded with.
        self._kept: dict[int, Turn] = {}
        self._reseed = False
        #: Set when the model session failed in a way that ends it (see ModelFailure); the
        #: session replaces it or, failing that, ends the call.
        self.model_failure: ModelFailure | None = None
        # The model session's end, in loop time (from its expires_at or the dialect's limit).
        self._session_deadline: float | None = None
        self._session_opened_at = started_at
        self._rollover_asked = False
        self._lost = False
        #: Seconds to add to loop time to get Unix time (the session sets it).
        self.wall_offset = 0.0

    # -- clocks -----------------------------------------------------------------------------

    def stream_ms(self, now: float) -> int:
        """Milliseconds since the media stream started, on the phone leg's clock."""
        if self._clock_ts is None:
            return max(0, round((now - self._started_at) * 1000))
        return self._clock_ts + max(0, round((now - self._clock_at) * 1000))

    def _input_to_stream(self, input_ms: int | None, shift_ms: int, now: float) -> int:
        if input_ms is None or self._input_origin_ms is None:
            return self.stream_ms(now)
        return max(0, self._input_origin_ms + input_ms + shift_ms)

    # -- outputs ----------------------------------------------------------------------------

    def outputs(self) -> list[Output]:
        """Drain store writes and notices, in the order they happened."""
        out, self._outputs = self._outputs, []
        return out

    def _write_turn(self, turn: Turn | None) -> None:
        # Only a turn that changed is written again: each write is a commit, and at the end
        # of a call every turn cut earlier comes back exactly as it was written.
        if turn is not None and self._kept.get(turn.seq) != turn:
            self._kept[turn.seq] = turn
            self._outputs.append(TurnReady(turn))

    def _event(self, type_: str, now: float, **data: Any) -> None:
        self._outputs.append(EventReady(CallEvent(type_, self.stream_ms(now), data)))

    def note_event(self, type_: str, now: float, **data: Any) -> None:
        """Record an event the session saw (a reconnect, a fallback) in the call record."""
        self._event(type_, now, **data)

    def _notice(self, name: str, level: str = "info", **fields: Any) -> None:
        self._outputs.append(Notice(name, level, fields))

    # -- the phone leg ----------------------------------------------------------------------

    def receive_phone(
        self, events: Iterable[PhoneEvent | object], now: float, read_at: float | None = None
    ) -> None:
        """Feed what the phone leg received, in order, with the time it arrived. Events of a
        leg's own (Twilio's ``Connected``, say) are ignored. ``read_at``, where the leg knows
        it, is when the message was read off the socket: on a busy loop, some milliseconds
        before ``now``. A mark echo places the caller's playout as of then."""
        for event in events:
            match event:
                case MediaReceived(payload=payload, timestamp_ms=ts):
                    self._clock_ts, self._clock_at = ts, now
                    if self.recorder is not None:
                        self.recorder.caller_audio(payload, ts)
                    self._to_model_audio(payload, ts)
                case MarkPlayed(name=name):
                    heard_at = now if read_at is None else min(read_at, now)
                    self._playback.mark_played(name, heard_at)
                    if self.recorder is not None:
                        self.recorder.mark_played(name)
                    self._pump(now)
                    self._limits.agent_heard(now)
                    self._maybe_leave()
                    if not self._playback.is_playing:  # the agent's turn has just ended
                        idle = self.realtime.response_state is ResponseState.IDLE
                        self._check_rollover(now, not idle)
                case DtmfReceived(digit=digit):
                    self._on_dtmf(digit, now)
                case StreamStopped():
                    self._end(EndReason.CALLER_HANGUP)
                case UnknownEvent(name=name):
                    self._notice("phone.unknown_event", "warning", phone_event=name)
                case _:
                    pass

    def _on_dtmf(self, digit: str, now: float) -> None:
        allowance = self._dtmf_allowance + (now - self._dtmf_at) * DTMF_PER_S
        self._dtmf_allowance, self._dtmf_at = min(float(DTMF_BURST), allowance), now
        if self._dtmf_allowance < 1.0:
            if self.dtmf_dropped == 0:
                self._notice("dtmf.rate_limited", "warning", per_s=DTMF_PER_S, burst=DTMF_BURST)
            self.dtmf_dropped += 1
            return
        self._dtmf_allowance -= 1.0
        self._event("dtmf", now, digit=digit)
        self.realtime.add_user_text(f"The caller pressed {digit} on the keypad.")
        self.realtime.create_response()

    def _to_model_audio(self, ulaw: bytes, ts: int) -> None:
        if self.phase is Phase.AWAITING_SESSION:
            if len(self._early_audio) >= _EARLY_AUDIO_FRAMES:
                del self._early_audio[0]
            self._early_audio.append((ulaw, ts))
            return
        if self.phase is Phase.ENDED:
            return
        if self._input_origin_ms is None:
            self._input_origin_ms = ts
        if self._to_model is not None:
            self.realtime.append_audio(self._to_model.process(ulaw_to_pcm16(ulaw)))
        else:
            self.realtime.append_audio(ulaw)

    # -- the model leg ----------------------------------------------------------------------

    def receive_realtime(self, text: str, now: float) -> None:
        """Feed one event from the model. Raises ``RemoteProtocolError`` on garbage."""
        self.realtime.receive_text(text)
        for event in self.realtime.events_received():
            match event:
                case AudioDelta(response_id=rid, item_id=item_id, audio=audio):
                    self._on_audio(rid, item_id, audio, now)
                case TranscriptDelta(item_id=item_id, delta=delta):
                    self._transcript.agent_delta(item_id, delta)
                    if not self.config.media:
                        self._transcript.agent_words(item_id, self.stream_ms(now))
                case TranscriptDone(item_id=item_id, transcript=transcript):
                    self._transcript.agent_text(item_id, transcript)
                    if not self.config.media:
                        self._transcript.agent_words(item_id, self.stream_ms(now))
                case AudioDone(item_id=item_id):
                    if item_id not in self._discarded_items:
                        self._drain_resampler(item_id)
                        self._playback.finish_item(item_id)
                        self._pump(now)
                case SpeechStarted(item_id=item_id, audio_start_ms=start):
                    at = self._input_to_stream(start, self.config.vad_padding_ms, now)
                    self._transcript.caller_started(item_id, min(at, self.stream_ms(now)))
                    self._limits.voice(now)
                    self._reply_due_ms = None
                    if self.config.media:
                        self._barge_in(now, min(at, self.stream_ms(now)))
                case SpeechStopped(item_id=item_id, audio_end_ms=end):
                    at = self._input_to_stream(end, -self.config.vad_silence_ms, now)
                    self._transcript.caller_stopped(item_id, min(at, self.stream_ms(now)))
                    self._reply_due_ms = min(at, self.stream_ms(now))
                    self._limits.voice(now)
                case InputCommitted(item_id=item_id):
                    self._transcript.caller_started(item_id, self.stream_ms(now))
                case InputTranscriptCompleted(item_id=item_id, transcript=transcript):
                    turn = self._transcript.caller_text(item_id, transcript, self.stream_ms(now))
                    self._write_turn(turn)
                case InputTranscriptFailed(item_id=item_id, message=message):
                    self._notice("transcription.failed", "warning", message=message)
                    self._write_turn(self._transcript.caller_text(item_id, "", self.stream_ms(now)))
                case AssistantItemStarted(response_id=rid, item_id=item_id):
                    self._item_response[item_id] = rid
                    self._session_items.add(item_id)
                    if rid is not None and rid in self._discarded_responses:
                        self._discarded_items.add(item_id)
                    self._transcript.agent_started(item_id)
                case ResponseDone(response_id=rid, status=status, reason=reason, transcripts=ts):
                    self._on_response_done(rid, status, reason, ts, now)
                case FunctionCallRequested() as call:
                    self._on_function_call(call, now)
                case OutputAudioStarted():
                    self._far.started()
                    self._reply_heard(now)  # OpenAI's SIP: its audio reaches the line now
                case OutputAudioStopped():
                    self._far.stopped()
                    self._limits.agent_heard(now)
                    self._maybe_leave()
                case SessionCreated(expires_at=expires_at):
                    self._session_created(expires_at, now)
                    self._configure()
                case SessionUpdated():
                    self._greet()
                case RealtimeError() as err:
                    self._on_error(err)
                case _:
                    pass

    def _session_created(self, expires_at: int | None, now: float) -> None:
        limit = self.realtime.dialect.session_limit_s
        deadline = self._session_opened_at + limit if limit else None
        if expires_at is not None and expires_at - self.wall_offset > now:
            deadline = expires_at - self.wall_offset  # the server's own word wins
        self._session_deadline = deadline

    def _configure(self) -> None:
        if self.phase is not Phase.AWAITING_SESSION:
            return
        self.realtime.send_session_update(self.config.session)
        self.phase = Phase.ACTIVE
        if self._reseed:
            self._reseed = False
            self._reseed_context()
            self._maybe_leave()  # a goodbye heard before the old session went: leave now
        early, self._early_audio = self._early_audio, []
        for ulaw, ts in early:
            self._to_model_audio(ulaw, ts)

    def _greet(self) -> None:
        if self._greeted or not self.config.greeting or self.phase is not Phase.ACTIVE:
            return
        self._greeted = True
        self.realtime.create_response(
            instructions=f'Greet the caller by saying exactly: "{self.config.greeting}"'
        )

    def _on_audio(self, rid: str | None, item_id: str, audio: bytes, now: float) -> None:
        if item_id in self._discarded_items or (
            rid is not None and rid in self._discarded_responses
        ):
            # Audio still in flight after a barge-in: the caller must never hear it.
            self._discarded_items.add(item_id)
            return
        if self._to_phone is not None:
            model_ms = len(audio) / 48
            ulaw = pcm16_to_ulaw(self._to_phone.process(audio))
        else:
            model_ms = len(audio) / 8
            ulaw = audio
        self._playback.add_audio(item_id, ulaw, model_ms)
        self._transcript.agent_received(item_id, self._playback.received_ms(item_id))
        self._pump(now)

    def _drain_resampler(self, item_id: str) -> None:
        """Push the end of an item out of the 24 kHz -> 8 kHz resampler. The resampler keeps
        state for the whole call (resetting it clicks), so its look-ahead still holds the item's
        last ~40 ms: feeding a little silence brings them out now, not before the next item."""
        if self._to_phone is not None:
            tail = self._to_phone.process(bytes(_RESAMPLER_DRAIN_BYTES))
            self._playback.add_audio(item_id, pcm16_to_ulaw(tail), 0.0)

    def _pump(self, now: float) -> None:
        """Send what the playout lead allows, each marked chunk followed by its mark."""
        if self.phase is Phase.ENDED:
            return
        size = self._media_bytes
        for chunk in self._playback.release(now):
            if self._reply_due_ms is not None:
                self._reply_heard(now)
            audio = chunk.audio
            if len(audio) <= size:
                self.phone.send_media(audio)
            else:
                for start in range(0, len(audio), size):
                    self.phone.send_media(audio[start : start + size])
            self.phone.send_mark(chunk.mark)
            if self.recorder is not None:
                self.recorder.agent_sent(chunk.mark, chunk.audio, self.stream_ms(now))
            self._transcript.agent_audio_scheduled(
                chunk.item_id, self.stream_ms(now) + round(chunk.ahead_ms)
            )

    def _reply_heard(self, now: float) -> None:
        if self._reply_due_ms is None:
            return
        waited_ms = self.stream_ms(now) - self._reply_due_ms
        self._reply_due_ms = None
        self._outputs.append(LatencyReady("turn", max(waited_ms, 0) / 1000))

    def _barge_in(self, now: float, caller_started_ms: int) -> None:
        playing = self._playback.is_playing
        active = self.realtime.active_response_id if self.realtime.response_in_flight else None
        if not playing and active is None:
            return  # the caller simply took their turn
        cut = self._playback.interrupt(now)
        if cut.flush_needed:
            self.phone.send_clear()  # first: it is what the caller notices
            waited_ms = self.stream_ms(now) - caller_started_ms
            self._outputs.append(LatencyReady("clear", max(waited_ms, 0) / 1000))
            if self.recorder is not None:
                self.recorder.clear(cut.partial_bytes)
        if cut.item_id is not None:
            heard = min(cut.played_ms, cut.received_ms)
            if cut.received_ms > cut.played_ms and cut.item_id in self._session_items:
                self.realtime.truncate(cut.item_id, int(heard))
            self._discarded_items.add(cut.item_id)
            self._write_turn(self._transcript.agent_cut(cut.item_id, heard, self.stream_ms(now)))
        if active is not None:
            self._discarded_responses.add(active)
            if not self.config.server_cancels:
                self.realtime.cancel_response()
        if playing or (cut.item_id is not None and cut.received_ms > 0):
            self.barge_ins += 1
            self._event("barge_in", now)
            self._notice(
                "barge_in", item_id=cut.item_id, heard_ms=int(min(cut.played_ms, cut.received_ms))
            )

    def _on_response_done(
        self,
        rid: str | None,
        status: str,
        reason: str | None,
        transcripts: dict[str, str],
        now: float,
    ) -> None:
        self._far.response_done(now)
        for item_id, text in transcripts.items():
            self._transcript.agent_text(item_id, text)
        items = [i for i, r in self._item_response.items() if r == rid] if rid else []
        items += [i for i in transcripts if i not in items]
        at = self.stream_ms(now)
        cut_response = rid is not None and rid in self._discarded_responses
        for item_id in items:
            self._item_response.pop(item_id, None)
            if item_id in self._discarded_items or cut_response:
                heard = min(
                    self._playback.played_ms(item_id, now), self._playback.received_ms(item_id)
                )
                self._write_turn(self._transcript.agent_cut(item_id, heard, at))
                if cut_response and heard <= 0:
                    # Not a word of it reached the caller: the model must not remember it.
                    self.realtime.delete_item(item_id)
            else:
                self._write_turn(self._transcript.agent_done(item_id, at))
        if rid is not None:
            self._discarded_responses.discard(rid)
        if status == "failed":
            self._notice("realtime.response_failed", "warning", reason=reason)
        if self._tools.response_done(rid):
            self.realtime.create_response()
        self._maybe_leave()

    # -- tools ------------------------------------------------------------------------------

    def _on_function_call(self, call: FunctionCallRequested, now: float) -> None:
        decision = self._tools.requested(call.response_id, call.call_id, call.name, call.arguments)
        match decision:
            case ToolCallReady(call_id=call_id, name=name, arguments=arguments):
                self._tool_calls[call_id] = (name, arguments, now)
                self._outputs.append(decision)
            case Transfer(call_id=call_id, arguments=arguments):
                self._tool_calls[call_id] = (TRANSFER_CALL, arguments, now)
                self._transfer = decision
                self._leaving = EndReason.TRANSFERRED
                self._maybe_leave()
            case Answer(call_id=call_id, name=name, arguments=arguments, ok=ok, output=output):
                self._give(call_id, name, arguments, ok, output, 0, now)
                if decision.hang_up:
                    self._leaving = EndReason.AGENT_HANGUP
                    self._maybe_leave()

    def tool_finished(self, call_id: str, ok: bool, output: str, now: float) -> None:
        """An HTTP/MCP tool from :class:`ToolCallReady` finished (``ok`` false: it failed or
        timed out, and ``output`` says so to the model)."""
        started = self._tool_calls.pop(call_id, None)
        if started is None or self.phase is Phase.ENDED:
            return
        name, arguments, since = started
        self._give(call_id, name, arguments, ok, output, round((now - since) * 1000), now)

    def transfer_finished(self, ok: bool, detail: str, now: float) -> None:
        """The phone leg was transferred (the call ends as ``transferred``), or the far end
        refused (the model is told, and the call goes on)."""
        transfer, self._transfer = self._transfer, None
        if transfer is None or self.phase is Phase.ENDED:
            return
        _, arguments, since = self._tool_calls.pop(transfer.call_id, ("", {}, now))
        ms = round((now - since) * 1000)
        if ok:
            self._event("tool_call", now, name=TRANSFER_CALL, arguments=arguments, ok=True, ms=ms)
            self._event("transfer", now, target=transfer.target)
            self._end(EndReason.TRANSFERRED)
            return
        self._leaving, self._transfer_asked = None, False
        self._tools.transfer_failed(transfer.call_id)
        message = f"the transfer to {transfer.target} failed ({detail}); tell the caller"
        self._give(
            transfer.call_id, TRANSFER_CALL, arguments, False, error_output(message), ms, now
        )

    def _give(
        self, call_id: str, name: str, arguments: dict[str, Any], ok: bool, output: str, ms: int,
        now: float,
    ) -> None:  # fmt: skip
        self.realtime.send_function_output(call_id, output)
        self._event("tool_call", now, name=name, arguments=arguments, ok=ok, ms=ms)
        self._notice("tool.called", "info" if ok else "warning", tool=name, ok=ok, ms=ms)
        if self._tools.answered(call_id):
            self.realtime.create_response()

    # -- limits -----------------------------------------------------------------------------

    def shut_down(self, now: float) -> None:
        """The bridge is stopping and this call outlived its drain: the agent finishes what
        it is saying, says a short goodbye, and the call ends as ``bridge_shutdown`` once
        that has been heard (or ``GOODBYE_GRACE_S`` later, whatever happens meanwhile)."""
        if self.phase is Phase.ENDED or self._shutdown_at is not None:
            return
        self._shutdown_at = now
        self._event("bridge_shutdown", now)
        if self.phase is not Phase.ACTIVE:
            # No model session to speak with (the call is starting, or replacing one).
            self._end(EndReason.BRIDGE_SHUTDOWN)
            return
        self._notice("call.shutdown_goodbye")
        if self._leaving is None:  # else it is on its way out already (a hang-up, a transfer)
            self._leaving = EndReason.BRIDGE_SHUTDOWN
            self.realtime.create_response(instructions=SHUTTING_DOWN)

    def tick(self, now: float) -> None:
        """Call about once a second: the agent's time and silence limits, and the model
        session's own limit (a rollover between turns)."""
        if self._shutdown_at is not None and now - self._shutdown_at >= GOODBYE_GRACE_S:
            self._end(self._leaving or EndReason.BRIDGE_SHUTDOWN)
        if self.phase is not Phase.ACTIVE:
            return
        if self._leaving is not None and self._far.give_up(now):
            self._maybe_leave()  # the goodbye's end was never reported: it has been heard
        busy = self._playback.is_playing or self.realtime.response_state is not ResponseState.IDLE
        self._check_rollover(now, busy)
        match self._limits.due(now, busy):
            case LimitAction.SAY_GOODBYE:
                self._notice("call.time_limit", limit_s=self.config.limits.max_duration_s)
                self._leaving = self._leaving or EndReason.TIMEOUT
                self.realtime.create_response(instructions=TIME_UP)
            case LimitAction.PROMPT:
                self._notice("call.caller_silent", silent_s=self.config.limits.silence_timeout_s)
                self.realtime.create_response(instructions=ARE_YOU_THERE)
            case LimitAction.END:
                self._notice("call.limit_ended")
                self._end(self._leaving or EndReason.TIMEOUT)
            case None:
                pass

    def _deadline_left(self, now: float) -> float:
        return (self._session_deadline or now) - now

    def _check_rollover(self, now: float, busy: bool) -> None:
        if self.phase is Phase.ACTIVE and self._rollover_due(now, busy):
            self._rollover_asked = True
            self._notice("realtime.rollover_due", seconds_left=round(self._deadline_left(now)))
            self._outputs.append(RolloverReady())

    def _rollover_due(self, now: float, busy: bool) -> bool:
        if not self.config.media:
            return False  # a sideband's session is the call's: a fresh one cannot take over
        if self._session_deadline is None or self._rollover_asked or self._leaving is not None:
            return False
        lifetime = self._session_deadline - self._session_opened_at
        margin = min(ROLLOVER_MARGIN_S, lifetime / 3)
        if self._deadline_left(now) > margin:
            return False
        # A quiet moment: the agent is not talking and the caller is not mid-sentence.
        return not busy and not self._transcript.caller_speaking and not self._tool_calls

    # -- a fresh model session --------------------------------------------------------------

    def switch_model(
        self, realtime: RealtimeConnection, now: float, config: CallConfig | None = None
    ) -> None:
        """Carry the call on over ``realtime``, a freshly opened session that replaces one
        lost, failed or about to expire (``config``: for another provider's dialect).

        What the old session had sent still plays, so the caller hears its sentence to the
        end of what arrived; it is not asked for again. The new session is configured the
        same way on its ``session.created`` and re-seeded with the turns kept so far; caller
        audio meanwhile waits as it does at the start of a call.
        """
        self.model_lost(now)
        if self.phase is Phase.ENDED:
            return
        if config is not None:
            self.config = config
        self._tools = ToolDesk(self.config.tools)
        self.realtime = realtime
        self.model_failure = None
        self._session_deadline = None
        self._session_opened_at = now
        self._rollover_asked = False
        self._reseed = True
        self._lost = False

    def model_lost(self, now: float) -> None:
        """The model session is gone: what it sent still plays out, its turns are written
        as far as they arrived, and caller audio waits for the next session. Idempotent."""
        if self.phase is Phase.ENDED or self._lost:
            return
        self._lost = True
        item = self._playback.end_stream()
        if item is not None:
            self._drain_resampler(item)
        self._pump(now)
        at = self.stream_ms(now)
        for item_id in list(self._item_response):
            if item_id not in self._discarded_items:
                received = self._playback.received_ms(item_id)
                self._write_turn(self._transcript.agent_cut(item_id, received, at))
            # The old session's items are unknown to the new one: never truncate them there.
            self._discarded_items.add(item_id)
        self._item_response.clear()
        self._discarded_responses.clear()
        self._session_items.clear()
        if self._tool_calls:
            # Their call ids belong to the lost session: the new one cannot take the outputs.
            self._notice("tool.orphaned", "warning", calls=len(self._tool_calls))
            self._tool_calls.clear()
        self.phase = Phase.AWAITING_SESSION
        self._input_origin_ms = None  # the new session's input timeline starts at zero

    def _reseed_context(self) -> None:
        """Tell the fresh session the call so far, newest turns first up to a budget."""
        chosen: list[Turn] = []
        budget = RESEED_CHARS
        newest = sorted(self._kept.values(), key=lambda t: t.seq, reverse=True)
        for turn in newest:
            if turn.text == INAUDIBLE or not turn.text:
                continue
            if len(turn.text) > budget:
                break
            budget -= len(turn.text)
            chosen.append(turn)
        for turn in reversed(chosen):
            role = "user" if turn.role is Role.CALLER else "assistant"
            self.realtime.add_context(role, turn.text)
        last = newest[0] if newest else None
        unanswered = last is not None and last.role is Role.CALLER and last.text != INAUDIBLE
        if unanswered and self._leaving is None:
            # The caller spoke last and was never answered: answer now, not after they repeat.
            self.realtime.create_response()

    def _maybe_leave(self) -> None:
        """Hang up or transfer once the model has finished and its last audio was heard."""
        if self._leaving is None or self.phase is not Phase.ACTIVE:
            return
        if self.realtime.response_state is not ResponseState.IDLE or self._playback.is_playing:
            return
        if self._far.busy:
            return
        if self._leaving is not EndReason.TRANSFERRED:
            self._end(self._leaving)
        elif self._transfer is not None and not self._transfer_asked:
            self._transfer_asked = True
            self._outputs.append(TransferReady(self._transfer.call_id, self._transfer.target))

    def _on_error(self, err: RealtimeError) -> None:
        if err.benign:
            self._notice("realtime.benign_error", "debug", code=err.code)
            return
        level = "error" if err.fatal else "warning"
        self._notice(
            "realtime.error",
            level,
            code=err.code,
            error=err.message,
            param=err.param,
            caused_by=err.caused_by,
        )
        if err.fatal and self.model_failure is None:
            kind = "expired" if err.code == "session_expired" else "refused"
            if provider_limit(err.code, err.message):
                kind = "limit"
            self.model_failure = ModelFailure(kind, err.code, err.message)

    # -- the end ----------------------------------------------------------------------------

    def _end(self, reason: EndReason) -> None:
        if self.phase is not Phase.ENDED:
            self.phase = Phase.ENDED
            self.end_reason = reason

    def end(self, reason: EndReason) -> None:
        """The call is over for a reason found outside the protocols (socket closed, …)."""
        self._end(reason)

    @property
    def has_turns(self) -> bool:
        """Whether anything was said on the call yet (a turn of either side)."""
        return bool(self._kept)

    @property
    def awaiting_caller_text(self) -> bool:
        """A caller turn is still waiting for its transcription."""
        return self._transcript.awaiting_caller_text

    def finish(self, now: float) -> None:
        """Write every turn still open: agent turns cut at what was heard, caller turns
        whose text never came. Call once, after the call has ended."""
        at = self.stream_ms(now)
        for item_id in self._transcript.agent_items():
            received = self._playback.received_ms(item_id)
            played = self._playback.played_ms(item_id, now)
            if received > played:
                self._write_turn(self._transcript.agent_cut(item_id, played, at))
            elif item_id in self._item_response:
                self._write_turn(self._transcript.agent_done(item_id, at))
        for turn in self._transcript.unwritten_caller_turns(at):
            self._write_turn(turn)
        if self.dtmf_dropped:
            self._notice("dtmf.dropped", "warning", count=self.dtmf_dropped)
