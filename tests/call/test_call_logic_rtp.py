"""The same call logic over a SIP call's RTP leg: no sockets, a clock moved by hand. On RTP the
bridge paces the audio itself, so barge-in is exact: the next frame after ``speech_started``
is silence, and the truncate carries exactly the agent audio sent."""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

import pytest

from bridge.call.call_logic import CallConfig, CallLogic, EventReady
from bridge.codecs.g711 import alaw_to_ulaw, ulaw_to_alaw
from bridge.protocols.dialects import DIALECTS, SessionConfig
from bridge.protocols.realtime import RealtimeConnection
from bridge.protocols.rtp import Codec, RtpReceiver, RtpSender, build_packet
from bridge.protocols.rtp_leg import RtpPhoneLeg

PEER = ("127.0.0.1", 40000)
TE = 101  # telephone-event payload type


class RtpHarness:
    def __init__(self, codec: Codec = Codec.PCMU) -> None:
        self.now = 100.0
        self.codec = codec
        receiver = RtpReceiver(codec.value, TE, remote_addr=PEER)
        sender = RtpSender(codec, ssrc=0x1234, sequence=1000, timestamp=5000, start=self.now)
        self.leg = RtpPhoneLeg(receiver, sender)
        session = SessionConfig(instructions="Be brief.", voice=None, audio_format="pcmu")
        self.realtime = RealtimeConnection(DIALECTS["openai"], "pcmu")
        self.logic = CallLogic(self.leg, self.realtime, CallConfig(session=session), self.now)
        self.events: list[Any] = []
        self.seq = 0
        self.sent: list[bytes] = []
        self.model(type="session.created", event_id="e1", session={})
        self.model(type="session.updated", event_id="e2", session={})
        self.realtime.data_to_send()

    def model(self, **event: Any) -> None:
        self.logic.receive_realtime(json.dumps(event), self.now)
        self._collect()

    def _collect(self) -> None:
        self.logic.receive_phone(self.leg.events_received(), self.now)
        self.events += [o.event for o in self.logic.outputs() if isinstance(o, EventReady)]

    def rtp_in(self, payload: bytes, pt: int | None = None, ts_step: int = 160) -> None:
        self.seq += 1
        packet = build_packet(
            self.codec.value if pt is None else pt, self.seq, self.seq * ts_step, 77, payload
        )
        self.leg.receive_datagram(packet, PEER, self.now)
        self._collect()

    def tick(self, ms: int) -> None:
        """Let ``ms`` of wall time pass, sending what the pacer says is due."""
        end = self.now + ms / 1000
        while (deadline := self.leg.next_deadline(self.now)) <= end + 1e-9:
            self.now = max(self.now, deadline)
            self.sent += self.leg.datagrams_due(self.now)
            self.leg.handle_timer(self.now)
            self._collect()
        self.now = end

    def agent_says(self, ms: int, item: str = "item_a", resp: str = "resp_a") -> bytes:
        audio = bytes((n % 100) + 1 for n in range(ms * 8))  # never the silence code
        self.model(type="response.created", event_id="e3", response={"id": resp, "output": []})
        self.model(
            type="response.output_item.added",
            event_id="e4",
            response_id=resp,
            item={"id": item, "type": "message", "role": "assistant"},
        )
        for start in range(0, len(audio), 1600):
            self.model(
                type="response.output_audio.delta",
                event_id="e5",
                response_id=resp,
                item_id=item,
                delta=base64.b64encode(audio[start : start + 1600]).decode(),
            )
        return audio

    def payloads(self) -> list[bytes]:
        return [packet[12:] for packet in self.sent]


def test_agent_audio_goes_out_as_paced_rtp_frames() -> None:
    h = RtpHarness()
    audio = h.agent_says(200)
    h.tick(300)
    frames = [p for p in h.payloads() if p != b"\xff" * 160]
    assert b"".join(frames) == audio
    seqs = [struct.unpack_from(">H", p, 2)[0] for p in h.sent]
    assert seqs == list(range(1000, 1000 + len(h.sent)))
    assert len(h.sent) in (15, 16)  # 300 ms of 20 ms frames, silence once the agent is done


# Noticed as a frame goes out, and 10 ms after one went out.
@pytest.mark.parametrize("noticed_at_ms", [500, 510])
def test_barge_in_stops_the_agent_before_the_next_frame_and_truncates_at_what_was_sent(
    noticed_at_ms: int,
) -> None:
    h = RtpHarness()
    h.agent_says(2000)
    h.tick(noticed_at_ms)
    sent_before = len([p for p in h.payloads() if p != b"\xff" * 160])
    h.model(type="input_audio_buffer.speech_started", event_id="e9", audio_start_ms=0, item_id="u1")
    h.tick(100)
    after = h.payloads()[-5:]
    assert after == [b"\xff" * 160] * 5  # nothing more of the agent: silence frames
    assert len([p for p in h.payloads() if p != b"\xff" * 160]) == sent_before
    truncates = [e for e in map(json.loads, h.realtime.data_to_send()) if "truncate" in e["type"]]
    assert len(truncates) == 1
    # Exactly the agent audio that went out: the phone plays all it gets, and the next frame
    # never goes (a clock running on from the last frame would count half of it at 510 ms).
    assert truncates[0]["audio_end_ms"] == sent_before * 20
    assert [e.type for e in h.events] == ["barge_in"]


def test_caller_rtp_reaches_the_model_and_a_keypress_is_recorded() -> None:
    h = RtpHarness()
    for _ in range(5):
        h.rtp_in(b"\x55" * 160)
        h.now += 0.02
    h.tick(100)
    appended = [
        base64.b64decode(e["audio"])
        for e in map(json.loads, h.realtime.data_to_send())
        if e["type"] == "input_audio_buffer.append"
    ]
    assert b"".join(appended) == b"\x55" * 800
    # RFC 4733: digit 5, three end packets, one digit.
    for end in (False, True, True, True):
        body = struct.pack(">BBH", 5, 0x80 if end else 0, 800)
        h.seq += 1
        h.leg.receive_datagram(build_packet(TE, h.seq, 99999, 77, body), PEER, h.now)
        h._collect()
    h.tick(100)
    assert [(e.type, e.data) for e in h.events] == [("dtmf", {"digit": "5"})]


@pytest.mark.parametrize("codec", [Codec.PCMA])
def test_a_pcma_call_is_converted_at_the_leg(codec: Codec) -> None:
    h = RtpHarness(codec)
    audio = h.agent_says(100)
    h.tick(200)
    frames = [p for p in h.payloads() if p != b"\xd5" * 160]
    assert b"".join(frames) == ulaw_to_alaw(audio)
    h.rtp_in(ulaw_to_alaw(b"\x22" * 160))
    h.tick(100)
    appended = [
        base64.b64decode(e["audio"])
        for e in map(json.loads, h.realtime.data_to_send())
        if e["type"] == "input_audio_buffer.append"
    ]
    assert b"".join(appended) == alaw_to_ulaw(ulaw_to_alaw(b"\x22" * 160))


def test_a_bye_ends_the_call_as_a_caller_hang_up() -> None:
    h = RtpHarness()
    h.leg.stop()
    h._collect()
    assert h.logic.end_reason is not None and h.logic.end_reason.value == "caller_hangup"


def test_a_cut_response_keeps_what_was_heard_and_its_unheard_items_are_deleted() -> None:
    h = RtpHarness()
    h.agent_says(2000, item="item_a", resp="resp_a")
    # The same response goes on with a second item, queued behind the first.
    h.model(
        type="response.output_item.added",
        event_id="e4",
        response_id="resp_a",
        item={"id": "item_b", "type": "message", "role": "assistant"},
    )
    h.model(
        type="response.output_audio.delta",
        event_id="e5",
        response_id="resp_a",
        item_id="item_b",
        delta=base64.b64encode(bytes(range(1, 161)) * 5).decode(),
    )
    h.tick(400)
    h.model(type="input_audio_buffer.speech_started", event_id="e9", audio_start_ms=0, item_id="u1")
    h.model(
        type="response.done",
        event_id="e10",
        response={"id": "resp_a", "status": "cancelled", "output": []},
    )
    sent = [json.loads(text) for text in h.realtime.data_to_send()]
    truncated = [e["item_id"] for e in sent if e["type"] == "conversation.item.truncate"]
    deleted = [e["item_id"] for e in sent if e["type"] == "conversation.item.delete"]
    assert truncated == ["item_a"]  # heard in part: kept, cut at what was heard
    assert deleted == ["item_b"]  # never heard: gone from the model's memory
