"""An agent's limits on a call, in time: how long a call may last (``max_duration_s``: a
polite goodbye, then the end) and how long the caller may stay silent (``silence_timeout_s``:
one prompt, then the end). Pure: the call logic ticks it with ``now``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

__all__ = ["GOODBYE_GRACE_S", "SHUTTING_DOWN", "CallLimits", "LimitAction", "LimitPolicy"]

#: How long the agent's goodbye may take before the call ends anyway.
GOODBYE_GRACE_S = 15.0

TIME_UP = (
    "The call has reached its time limit. Without asking anything more, thank the caller "
    "and say a short, polite goodbye now."
)
SHUTTING_DOWN = (
    "This line is closing now for maintenance. Without asking anything more, tell the "
    "caller briefly that you have to end the call, invite them to call back, and say goodbye."
)
ARE_YOU_THERE = (
    "The caller has been silent for a while. Briefly ask whether they are still there "
    "and whether you can help with anything else."
)


@dataclass(frozen=True, slots=True)
class LimitPolicy:
    max_duration_s: float | None = None
    silence_timeout_s: float | None = None


class LimitAction(Enum):
    SAY_GOODBYE = "say_goodbye"  # ask the model for a goodbye; end once it is heard
    PROMPT = "prompt"  # ask the model to check the caller is still there
    END = "end"  # end the call now, as ``timeout``


class CallLimits:
    def __init__(self, policy: LimitPolicy, started_at: float) -> None:
        self.policy = policy
        self._started_at = started_at
        self._last_voice = started_at
        self._prompted = False
        self._goodbye_at: float | None = None

    @property
    def saying_goodbye(self) -> bool:
        return self._goodbye_at is not None

    def voice(self, now: float) -> None:
        """Someone spoke (the caller started or stopped, the agent's audio was heard)."""
        self._last_voice = now
        self._prompted = False

    def agent_heard(self, now: float) -> None:
        """Agent audio was heard: the caller's silence counts from the end of it."""
        self._last_voice = now

    def due(self, now: float, busy: bool) -> LimitAction | None:
        """What a limit asks for now; ``busy``: the agent is speaking or about to."""
        if self._goodbye_at is not None:
            return LimitAction.END if now - self._goodbye_at >= GOODBYE_GRACE_S else None
        limit = self.policy.max_duration_s
        if limit is not None and now - self._started_at >= limit:
            self._goodbye_at = now
            return LimitAction.SAY_GOODBYE
        silence = self.policy.silence_timeout_s
        if busy:
            self._last_voice = now  # the agent is talking: nobody is waiting on the caller
            return None
        if silence is None:
            return None
        if now - self._last_voice < silence:
            return None
        self._last_voice = now
        if not self._prompted:
            self._prompted = True
            return LimitAction.PROMPT
        return LimitAction.END
