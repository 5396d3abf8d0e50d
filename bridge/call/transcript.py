"""Transcript assembly: turns in conversation order, each handed out the moment it is final.

Turn numbers (``seq``) are given when a turn *starts* (the caller starts speaking, the agent
starts an item), not when its text arrives: caller transcription is asynchronous and often
lands after the agent has answered, yet the review must read in the order people spoke.
An agent turn is handed out when its response is done and again, with the same ``seq``, if a
barge-in later cuts it: the store replaces it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bridge.call.records import Role, Turn

INAUDIBLE = "(inaudible)"


@dataclass(slots=True)
class _CallerTurn:
    seq: int
    start_ms: int | None = None
    end_ms: int | None = None
    written: bool = False


@dataclass(slots=True)
class _AgentTurn:
    seq: int
    start_ms: int | None = None
    deltas: list[str] = field(default_factory=list)
    final_text: str | None = None
    received_ms: float = 0.0
    heard_ms: float | None = None  # set when the caller did not hear it all
    done: bool = False

    @property
    def full_text(self) -> str:
        return self.final_text if self.final_text is not None else "".join(self.deltas)


def heard_text(full_text: str, heard_ms: float, received_ms: float) -> str:
    """The part of ``full_text`` the caller heard, cut in proportion to the audio and backed
    off to a word boundary: the model's text carries no timing, so this is the best estimate
    the transcript allows and it errs on the side of less."""
    if received_ms <= 0 or heard_ms <= 0:
        return ""
    if heard_ms >= received_ms:
        return full_text
    cut = int(len(full_text) * heard_ms / received_ms)
    if cut >= len(full_text):
        return full_text
    if cut > 0 and not full_text[cut].isspace():
        space = full_text.rfind(" ", 0, cut)
        cut = space if space >= 0 else 0
    return full_text[:cut].rstrip(" ,;:-")


class TranscriptBuilder:
    """Collects what both sides said. Every method that can finish a turn returns it."""

    def __init__(self) -> None:
        self._next_seq = 1
        self._caller: dict[str, _CallerTurn] = {}
        self._agent: dict[str, _AgentTurn] = {}

    def _take_seq(self) -> int:
        seq = self._next_seq
        self._next_seq += 1
        return seq

    # -- caller -----------------------------------------------------------------------------

    def _caller_turn(self, item_id: str | None) -> _CallerTurn:
        if item_id is None:
            return _CallerTurn(self._take_seq())
        turn = self._caller.get(item_id)
        if turn is None:
            turn = self._caller[item_id] = _CallerTurn(self._take_seq())
        return turn

    def caller_started(self, item_id: str | None, at_ms: int) -> None:
        turn = self._caller_turn(item_id)
        if turn.start_ms is None:
            turn.start_ms = at_ms

    def caller_stopped(self, item_id: str | None, at_ms: int) -> None:
        turn = self._caller_turn(item_id)
        turn.end_ms = at_ms

    def caller_text(self, item_id: str | None, text: str, now_ms: int) -> Turn | None:
        """The transcription of a caller turn arrived: the caller turn, final."""
        turn = self._caller_turn(item_id)
        if turn.written:
            return None
        turn.written = True
        start = turn.start_ms if turn.start_ms is not None else now_ms
        end = turn.end_ms if turn.end_ms is not None else max(start, now_ms)
        return Turn(turn.seq, Role.CALLER, text.strip() or INAUDIBLE, start, max(start, end))

    def unwritten_caller_turns(self, now_ms: int) -> list[Turn]:
        """Caller turns whose text never came (the call ended first)."""
        out = []
        for item_id, turn in self._caller.items():
            if not turn.written and turn.start_ms is not None:
                done = self.caller_text(item_id, "", now_ms)
                if done is not None:
                    out.append(done)
        return out

    @property
    def caller_speaking(self) -> bool:
        """A caller turn has started and not yet stopped."""
        return any(
            t.start_ms is not None and t.end_ms is None and not t.written
            for t in self._caller.values()
        )

    @property
    def awaiting_caller_text(self) -> bool:
        return any(not t.written and t.start_ms is not None for t in self._caller.values())

    # -- agent ------------------------------------------------------------------------------

    def _agent_turn(self, item_id: str) -> _AgentTurn:
        turn = self._agent.get(item_id)
        if turn is None:
            turn = self._agent[item_id] = _AgentTurn(self._take_seq())
        return turn

    def agent_items(self) -> list[str]:
        return list(self._agent)

    def agent_started(self, item_id: str) -> None:
        self._agent_turn(item_id)

    def agent_audio_scheduled(self, item_id: str, at_ms: int) -> None:
        """The item's first chunk went out and will start playing at ``at_ms``."""
        turn = self._agent_turn(item_id)
        if turn.start_ms is None:
            turn.start_ms = at_ms

    def agent_words(self, item_id: str, at_ms: int) -> None:
        """Words of the item arrived at ``at_ms``, on a call whose audio the bridge never
        sees (OpenAI's SIP connector): the turn starts with its first words and lasts at
        least until its latest, the nearest the bridge can tell when it was spoken."""
        turn = self._agent_turn(item_id)
        if turn.start_ms is None:
            turn.start_ms = at_ms
        turn.received_ms = max(turn.received_ms, float(at_ms - turn.start_ms))

    def agent_delta(self, item_id: str, delta: str) -> None:
        self._agent_turn(item_id).deltas.append(delta)

    def agent_text(self, item_id: str, transcript: str) -> None:
        turn = self._agent_turn(item_id)
        # After a server-side cancel the final text can be shorter than what we already hold.
        if len(transcript) >= len(turn.full_text):
            turn.final_text = transcript

    def agent_received(self, item_id: str, received_ms: float) -> None:
        self._agent_turn(item_id).received_ms = received_ms

    def agent_done(self, item_id: str, now_ms: int) -> Turn | None:
        """The item's response is done: its turn as it stands (full, unless already cut)."""
        turn = self._agent.get(item_id)
        if turn is None:
            return None
        turn.done = True
        return self._agent_snapshot(turn, now_ms)

    def agent_cut(self, item_id: str, heard_ms: float, now_ms: int) -> Turn | None:
        """A barge-in (or hang-up) stopped the item after ``heard_ms`` of its audio."""
        turn = self._agent.get(item_id)
        if turn is None:
            return None
        if heard_ms < turn.received_ms or turn.received_ms <= 0:
            turn.heard_ms = heard_ms
        return self._agent_snapshot(turn, now_ms)

    def _agent_snapshot(self, turn: _AgentTurn, now_ms: int) -> Turn | None:
        full = turn.full_text.strip()
        if not full and turn.received_ms <= 0:
            return None  # an item with neither words nor sound is not a turn
        start = turn.start_ms if turn.start_ms is not None else now_ms
        if turn.heard_ms is None:
            return Turn(turn.seq, Role.AGENT, full, start, start + round(turn.received_ms))
        text = heard_text(full, turn.heard_ms, turn.received_ms)
        return Turn(
            turn.seq,
            Role.AGENT,
            text,
            start,
            start + round(turn.heard_ms),
            interrupted=True,
            full_text=full,
        )
