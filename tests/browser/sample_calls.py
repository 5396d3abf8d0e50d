"""A realistic call log for the browser tests and the README screenshots: a restaurant's
phone agent over two evenings. Numbers are in the 555-01xx range kept for fiction."""

from __future__ import annotations

import hashlib
import wave
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bridge.call.records import CallEvent, CallStatus, EndReason, Role, Turn
from bridge.storage import NewCall, sqlite_store

RESTAURANT = "+14155550100"
DAY1 = datetime(2026, 3, 13, tzinfo=UTC)
DAY2 = datetime(2026, 3, 14, tzinfo=UTC)


def sid(prefix: str, name: str) -> str:
    """A Twilio-shaped SID (two letters, 32 hex digits), the same on every run."""
    return prefix + hashlib.sha256(name.encode()).hexdigest()[:32]


BOOKING_SID = sid("CA", "booking")
HEARD = "Thank you, Priya. Just so you know, our terrace"
UNHEARD = "is heated tonight, so you can choose the terrace or the main dining room."
GLUTEN = "one of us is gluten free"


def a(seq: int, start: float, end: float, text: str, full: str | None = None) -> Turn:
    ms = (round(start * 1000), round(end * 1000))
    return Turn(seq, Role.AGENT, text, *ms, interrupted=full is not None, full_text=full)


def c(seq: int, start: float, end: float, text: str) -> Turn:
    return Turn(seq, Role.CALLER, text, round(start * 1000), round(end * 1000))


@dataclass
class SampleCall:
    name: str
    caller: str
    started_at: datetime
    seconds: float
    status: CallStatus
    end_reason: EndReason
    turns: list[Turn]
    events: list[CallEvent] = field(default_factory=list)

    @property
    def call_sid(self) -> str:
        return BOOKING_SID if self.name == "booking" else sid("CA", self.name)


CALLS = [
    SampleCall(
        "booking", "+14155550123", DAY2 + timedelta(hours=18, minutes=42, seconds=7), 37.4,
        CallStatus.COMPLETED, EndReason.CALLER_HANGUP,
        [
            a(1, 0.4, 2.6, "Thanks for calling Bella Cucina, this is Sofia. How can I help you today?"),
            c(2, 3.3, 6.1, "Hi, I'd like to book a table for four tonight, around eight."),
            a(3, 6.52, 10.8, "Lovely! I have a table for four at eight o'clock. "
                             "Can I take a name for the booking?"),
            c(4, 11.4, 12.9, "It's Priya Natarajan."),
            a(5, 13.31, 16.0, HEARD, f"{HEARD} {UNHEARD}"),
            c(6, 15.9, 19.6, f"Sorry, quick question: {GLUTEN}, is that okay?"),
            a(7, 20.05, 25.3, "Absolutely. Most of our pasta can be made gluten free, "
                              "and I'll add a note to your booking."),
            a(8, 25.8, 29.9, "To confirm a table for four at eight tonight, press 1. "
                             "To change it, press 2."),
            a(9, 31.6, 34.4, "You're all set, Priya. We'll see you at eight. Goodbye!"),
            c(10, 34.6, 35.3, "Thanks, bye!"),
        ],
        [CallEvent("barge_in", 16000), CallEvent("dtmf", 31200, {"digit": "1"})],
    ),
    SampleCall(
        "hours", "+16505550142", DAY2 + timedelta(hours=17, minutes=5, seconds=51), 21.8,
        CallStatus.COMPLETED, EndReason.CALLER_HANGUP,
        [
            a(1, 0.4, 2.6, "Thanks for calling Bella Cucina, this is Sofia. How can I help you today?"),
            c(2, 3.1, 5.0, "Are you open on Sunday evenings?"),
            a(3, 5.38, 9.9, "We are! Sundays we serve dinner from five until ten."),
            c(4, 10.6, 11.4, "Great, thank you."),
        ],
    ),
    SampleCall(
        "manager", "+13125550187", DAY2 + timedelta(hours=14, minutes=20, seconds=3), 48.2,
        CallStatus.COMPLETED, EndReason.TRANSFERRED,
        [
            a(1, 0.4, 2.6, "Thanks for calling Bella Cucina, this is Sofia. How can I help you today?"),
            c(2, 3.0, 7.9, "I left a jacket there last night, could I speak to the manager?"),
            a(3, 8.41, 11.0, "Of course, I'll put you through to Marco now."),
        ],
    ),
    SampleCall(
        "outage", "+12065550119", DAY2 + timedelta(hours=12, minutes=2, seconds=40), 9.1,
        CallStatus.FAILED, EndReason.PROVIDER_ERROR,
        [c(1, 0.9, 2.4, "Hello? Is this Bella Cucina?")],
    ),
    SampleCall(
        "change", "+17185550163", DAY1 + timedelta(hours=19, minutes=15, seconds=22), 63.0,
        CallStatus.COMPLETED, EndReason.AGENT_HANGUP,
        [
            a(1, 0.4, 2.6, "Thanks for calling Bella Cucina, this is Sofia. How can I help you today?"),
            c(2, 3.2, 6.8, "I have a booking for Saturday under Okafor. Can we make it six people?"),
            a(3, 7.25, 11.9, "Let me check. Yes, I can move you to a table for six at seven thirty."),
            c(4, 12.5, 13.2, "Perfect."),
            a(5, 13.62, 16.0, "Done. See you on Saturday!"),
        ],
    ),
    SampleCall(
        "silence", "+19175550131", DAY1 + timedelta(hours=16, minutes=48, seconds=9), 15.5,
        CallStatus.COMPLETED, EndReason.TIMEOUT,
        [a(1, 0.4, 2.6, "Thanks for calling Bella Cucina, this is Sofia. How can I help you today?")],
    ),
]  # fmt: skip


async def fill(db: Path) -> None:
    """Write ``CALLS`` into the SQLite database at ``db`` through the store."""
    store = sqlite_store(str(db))
    await store.open()
    try:
        for call in CALLS:
            await store.create_call(
                NewCall(call.call_sid, sid("MZ", call.name), call.caller, RESTAURANT, "openai",
                        "gpt-realtime", call.started_at)
            )  # fmt: skip
            for turn in call.turns:
                await store.append_turn(call.call_sid, turn)
            for event in call.events:
                await store.append_event(call.call_sid, event)
            ended = call.started_at + timedelta(seconds=call.seconds)
            await store.finish_call(call.call_sid, call.status, call.end_reason, ended)
    finally:
        await store.close()


def write_recording(directory: Path, call_sid: str, seconds: float = 2.0) -> None:
    """A short, quiet stereo WAV, as the recorder would leave it."""
    directory.mkdir(parents=True, exist_ok=True)
    with wave.open(str(directory / f"{call_sid}.wav"), "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(8000)
        wav.writeframes(b"\x00\x00\x00\x00" * int(8000 * seconds))
