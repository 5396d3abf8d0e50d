"""Whether a started Twilio media stream may be served: the gate between an accepted socket
and a paid model session.

A stream is admitted when its per-call token checks out and the call has had no stream
before. Twilio opens one stream per call, so a second is a replay: of the token, or of the
signed voice webhook (Twilio's signatures carry no timestamp), which mints a fresh token for
the same call. This instance remembers the calls it streamed; the store, shared by every
instance, has the last word.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable
from typing import Any

from bridge.protocols.stream_token import StreamedCalls, check_stream_token
from bridge.storage.base import CallStore, NewCall, RefusedValueError, StoreUnavailableError

# How long the store may take to say whether a call already has a stream. Past it the call is
# served unchecked across instances: answering a caller matters more during a database outage.
CLAIM_TIMEOUT_S = 3.0
# How long this instance remembers a call that streamed, to refuse a second stream for it
# without asking the store; longer than almost any call.
STREAMED_CALL_MEMORY_S = 4 * 3600.0


class Admission(enum.Enum):
    BAD_TOKEN = "bad or expired stream token"
    SECOND_STREAM = "the call already has a stream"
    CLAIMED = "claimed"  # the store holds the call for this stream
    UNCHECKED = "unchecked"  # the store could not say in time; the call is not in it yet

    @property
    def admitted(self) -> bool:
        return self in (Admission.CLAIMED, Admission.UNCHECKED)


class StreamAdmission:
    """Shared by every call of one app. For each started stream call ``check()``, then, if it
    gave None, ``await claim()``."""

    def __init__(self, store: CallStore, token_secret: bytes, clock: Callable[[], float]) -> None:
        self.store = store
        self.token_secret = token_secret
        self.clock = clock
        self.streamed = StreamedCalls()

    def check(self, call_sid: str, token: str) -> Admission | None:
        """The refusal for a bad token or a call this instance has streamed, else None."""
        now = self.clock()
        if not check_stream_token(self.token_secret, call_sid, token, now):
            return Admission.BAD_TOKEN
        if not self.streamed.claim(call_sid, now + STREAMED_CALL_MEMORY_S, now):
            return Admission.SECOND_STREAM
        return None

    async def claim(self, call: NewCall, log: Any) -> Admission:
        """Claim the call for its stream in the store. ``CLAIMED`` means the call's record
        exists; for ``UNCHECKED`` the caller must still create it."""
        claim = asyncio.ensure_future(self.store.claim_call(call))
        try:
            # Shielded: a claim cut off mid-transaction would leave its connection unusable;
            # one that answers late finishes in the background, and the record writer's
            # create, which is idempotent, follows it.
            claimed = await asyncio.wait_for(asyncio.shield(claim), CLAIM_TIMEOUT_S)
        except (StoreUnavailableError, TimeoutError) as exc:
            claim.add_done_callback(_ignore_outcome)
            log.warning("stream.claim_unchecked", error=str(exc) or "timed out")
            return Admission.UNCHECKED
        except RefusedValueError as exc:
            # The call's record cannot be kept (its writer will count the loss), but the
            # caller is still answered.
            log.error("stream.claim_refused", error=str(exc))
            return Admission.UNCHECKED
        return Admission.CLAIMED if claimed else Admission.SECOND_STREAM


def _ignore_outcome(task: asyncio.Future[bool]) -> None:
    """Retrieve a late claim's outcome so an exception in it is not reported as unhandled."""
    if not task.cancelled():
        task.exception()
