"""What the caller hears when the provider plays the agent's audio itself (OpenAI's SIP
connector): the bridge never sees that audio, only the sideband's
``output_audio_buffer.started`` and ``.stopped`` (or ``.cleared``). Pure: time comes in.

It answers one question, for hanging up or transferring after a goodbye: may the agent
still be heard? While the provider says its audio is playing, yes. A provider that has never
said anything about playout might be playing too, so the answer is yes as well, but only for
``grace_s`` after the last response finished: the goodbye is short, and a call must end
even when the word that it was heard never comes.
"""

from __future__ import annotations

__all__ = ["GOODBYE_WAIT_S", "FarPlayout"]

#: After the last response is done, how long a goodbye may still be playing at most.
GOODBYE_WAIT_S = 5.0


class FarPlayout:
    """Playout at the far end, as the provider reports it. Off (never busy) for calls
    whose audio the bridge carries: there, :class:`~bridge.call.playback.Playback` knows."""

    def __init__(self, enabled: bool, grace_s: float = GOODBYE_WAIT_S) -> None:
        self._enabled = enabled
        self._grace_s = grace_s
        self._playing = False
        self._reported = False
        self._done_at: float | None = None
        self._gave_up = False

    def started(self) -> None:
        self._playing = self._reported = True

    def stopped(self) -> None:
        """Stopped or cleared: what was playing is over (heard, or cut by the caller)."""
        self._playing, self._reported = False, True

    def response_done(self, now: float) -> None:
        self._done_at = now
        self._gave_up = False

    @property
    def busy(self) -> bool:
        """The agent may still be heard."""
        if not self._enabled or self._gave_up:
            return False
        return self._playing or not self._reported

    def give_up(self, now: float) -> bool:
        """Stop waiting if ``grace_s`` has passed since the last response was done; True
        when this ends a wait (call it about once a second while waiting)."""
        if not self.busy or self._done_at is None or now - self._done_at < self._grace_s:
            return False
        self._gave_up = True
        return True
