"""RTP packets, the receiver (latching, reordering, RFC 4733 DTMF) and the paced sender.

Datagrams in, events out; ``now`` is always passed in, never read.
"""

from __future__ import annotations

import contextlib
import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.errors import LocalProtocolError, RemoteProtocolError
from bridge.protocols.rtp import (
    MAX_LAG_FRAMES,
    MAX_PACKET_SIZE,
    REORDER_HOLD,
    SSRC_SWITCH_GAP,
    AudioReceived,
    Codec,
    DtmfDigit,
    RtpError,
    RtpEvent,
    RtpPacket,
    RtpReceiver,
    RtpSender,
    build_packet,
    parse_packet,
)

PEER = ("198.51.100.7", 40002)
OTHER = ("203.0.113.66", 5004)
SSRC = 0x1234ABCD
PCMU = 0
DTMF_PT = 101
PROPERTY = settings(derandomize=True, deadline=None, max_examples=300)


def audio(seq: int, ts: int | None = None, *, ssrc: int = SSRC, size: int = 160) -> bytes:
    seq %= 0x10000
    return build_packet(
        PCMU, seq, (ts if ts is not None else seq * 160) % 2**32, ssrc, bytes([seq % 256]) * size
    )


def dtmf(seq: int, ts: int, event: int, units: int, *, end: bool, marker: bool = False) -> bytes:
    body = bytes([event, (0x80 if end else 0) | 10]) + units.to_bytes(2, "big")
    return build_packet(DTMF_PT, seq, ts, SSRC, body, marker=marker)


def receiver() -> RtpReceiver:
    return RtpReceiver(PCMU, DTMF_PT)


def seqs_of(events: list[RtpEvent]) -> list[int]:
    """Audio test payloads carry their sequence number's low byte."""
    return [e.payload[0] for e in events if isinstance(e, AudioReceived)]


# ------------------------------------------------------------------- packets


def test_build_parse_round_trip() -> None:
    data = build_packet(8, 65535, 2**32 - 1, 0xDEADBEEF, b"\xd5" * 160, marker=True)
    assert data[:2] == b"\x80\x88"
    assert parse_packet(data) == RtpPacket(8, True, 65535, 2**32 - 1, 0xDEADBEEF, b"\xd5" * 160)


def test_padding_extension_and_csrcs_are_skipped() -> None:
    payload = b"\x01\x02\x03"
    data = build_packet(
        0, 7, 1000, SSRC, payload, csrcs=(1, 2, 3), extension=(0xBEDE, b"\xaa" * 8), padding=5
    )
    assert data[0] == 0x80 | 0x20 | 0x10 | 3
    assert len(data) == 12 + 12 + 4 + 8 + 3 + 5
    packet = parse_packet(data)
    assert packet is not None
    assert (packet.sequence, packet.timestamp, packet.payload) == (7, 1000, payload)


@pytest.mark.parametrize("second", [200, 201, 202, 203, 204, 205, 206, 207])
def test_rtcp_is_recognised_and_ignored(second: int) -> None:
    report = bytes([0x80, second]) + b"\x00\x01" + SSRC.to_bytes(4, "big")  # 8 bytes
    assert parse_packet(report) is None
    assert parse_packet(report + bytes(20)) is None
    rx = receiver()
    rx.receive_datagram(report, PEER, 0.0)
    assert rx.events_received() == []
    assert rx.stats.rtcp == 1
    assert rx.remote_addr is None  # RTCP never latches


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x80",
        b"\x80\x00" + bytes(9),  # 11 bytes
        b"\x40\x00" + bytes(10),  # version 1
        b"\x80\x00" + bytes(MAX_PACKET_SIZE),  # too big
        b"\x81\x00" + bytes(10),  # one CSRC that is not there
        b"\x90\x00" + bytes(10) + b"\x00\x00\x00\x05",  # extension of 5 words missing
        b"\xa0\x00" + bytes(10) + b"\x00",  # padding count zero
        b"\xa0\x00" + bytes(10) + b"\x01\x02\x09",  # padding longer than the payload
    ],
)
def test_garbage_raises_rtp_error(data: bytes) -> None:
    with pytest.raises(RtpError):
        parse_packet(data)
    assert issubclass(RtpError, RemoteProtocolError)
    rx = receiver()
    rx.receive_datagram(data, PEER, 0.0)  # the receiver counts it instead of raising
    assert rx.stats.malformed == 1
    assert rx.events_received() == []


def test_build_refuses_out_of_range_fields() -> None:
    with pytest.raises(LocalProtocolError):
        build_packet(128, 0, 0, 0, b"")
    with pytest.raises(LocalProtocolError):
        build_packet(0, 65536, 0, 0, b"")
    with pytest.raises(LocalProtocolError):
        build_packet(0, 0, 0, 0, b"", extension=(1, b"abc"))


@given(st.binary(max_size=80))
@PROPERTY
def test_arbitrary_bytes_only_raise_rtp_error(data: bytes) -> None:
    with contextlib.suppress(RtpError):
        parse_packet(data)


@given(st.lists(st.one_of(st.binary(max_size=40), st.integers(0, 70000)), max_size=30))
@PROPERTY
def test_receiver_survives_any_mix_of_garbage_and_packets(items: list[bytes | int]) -> None:
    rx = receiver()
    now = 0.0
    for item in items:
        now += 0.01
        if isinstance(item, bytes):
            rx.receive_datagram(b"\x80" + item, PEER, now)  # V=2 reaches the deeper checks
        else:
            rx.receive_datagram(audio(item), PEER, now)
        timer = rx.get_timer()
        if timer is not None and timer <= now:
            rx.handle_timer(now)
    rx.handle_timer(now + 1.0)
    assert rx.get_timer() is None
    for event in rx.events_received():
        assert isinstance(event, AudioReceived | DtmfDigit)


@given(st.binary(min_size=12, max_size=80))
@PROPERTY
def test_arbitrary_version_2_headers_only_raise_rtp_error(data: bytes) -> None:
    data = bytes([0x80 | data[0] & 0x3F]) + data[1:]  # force V=2 to reach the deeper checks
    try:
        packet = parse_packet(data)
    except RtpError:
        return
    if packet is not None:
        assert len(packet.payload) <= len(data) - 12


# ----------------------------------------------------------------- receiving


def test_audio_in_order_latches_source_and_reports_arrival_time() -> None:
    rx = RtpReceiver(PCMU, DTMF_PT, remote_addr=("192.0.2.1", 4000))
    rx.receive_datagram(audio(10), PEER, 1.0)
    rx.receive_datagram(audio(11, size=240), PEER, 1.03)  # 30 ms packets are fine too
    events = rx.events_received()
    assert events == [
        AudioReceived(bytes([10]) * 160, 1600, 1.0),
        AudioReceived(bytes([11]) * 240, 1760, 1.03),
    ]
    assert rx.remote_addr == PEER  # symmetric RTP: answer where it came from


def test_other_sources_and_unknown_payload_types_are_ignored() -> None:
    rx = receiver()
    rx.receive_datagram(build_packet(96, 1, 0, SSRC, b"x"), OTHER, 0.0)  # not negotiated
    assert rx.remote_addr is None
    rx.receive_datagram(audio(1), PEER, 0.0)
    rx.receive_datagram(audio(900), OTHER, 0.02)  # never latch arbitrary sources
    rx.receive_datagram(build_packet(13, 2, 320, SSRC, b"\x40"), PEER, 0.04)  # comfort noise
    rx.receive_datagram(build_packet(99, 3, 480, SSRC, b"x"), PEER, 0.06)
    rx.receive_datagram(audio(4), PEER, 0.08)  # released at once: 2 and 3 filled the sequence
    assert seqs_of(rx.events_received()) == [1, 4]
    assert rx.remote_addr == PEER
    assert (rx.stats.foreign, rx.stats.ignored, rx.stats.lost) == (2, 2, 0)


def test_our_own_packets_echoed_back_are_never_latched() -> None:
    mine = 0x0BADF00D
    rx = RtpReceiver(PCMU, DTMF_PT, own_ssrc=mine)
    rx.receive_datagram(audio(7, ssrc=mine), PEER, 0.0)  # an echoing peer answers first
    assert rx.remote_addr is None and rx.events_received() == []
    rx.receive_datagram(audio(1), PEER, 0.01)
    rx.receive_datagram(audio(8, ssrc=mine), PEER, 0.02)
    rx.receive_datagram(audio(2), PEER, 0.03)
    assert seqs_of(rx.events_received()) == [1, 2]
    assert (rx.stats.looped, rx.stats.packets, rx.stats.foreign) == (2, 2, 0)


def test_relatch_after_reinvite() -> None:
    rx = receiver()
    rx.receive_datagram(audio(1), PEER, 0.0)
    rx.relatch()
    rx.receive_datagram(audio(2), OTHER, 0.02)
    assert rx.remote_addr == OTHER
    assert seqs_of(rx.events_received()) == [1, 2]


def test_swapped_packets_are_released_in_order() -> None:
    rx = receiver()
    for seq, now in [(1, 0.0), (3, 0.04), (2, 0.045), (4, 0.06)]:
        rx.receive_datagram(audio(seq), PEER, now)
    assert seqs_of(rx.events_received()) == [1, 2, 3, 4]
    assert rx.stats.late == rx.stats.lost == 0


def test_reordering_across_wraparound() -> None:
    rx = receiver()
    for seq in [65533, 65534, 0, 65535, 2, 1, 3]:
        rx.receive_datagram(audio(seq), PEER, 0.0)
    assert seqs_of(rx.events_received()) == [65533 % 256, 254, 255, 0, 1, 2, 3]
    assert rx.stats.lost == 0


def test_duplicates_and_late_packets_are_dropped() -> None:
    rx = receiver()
    for seq in [1, 2, 2, 4, 4, 3, 1]:
        rx.receive_datagram(audio(seq), PEER, 0.0)
    assert seqs_of(rx.events_received()) == [1, 2, 3, 4]
    assert rx.stats.duplicates == 3
    rx2 = receiver()
    for seq in [10, 12, 13, 14, 15, 11]:  # 11 waited for too long: given up, then late
        rx2.receive_datagram(audio(seq), PEER, 0.0)
    assert seqs_of(rx2.events_received()) == [10, 12, 13, 14, 15]
    assert (rx2.stats.lost, rx2.stats.late, rx2.stats.duplicates) == (1, 1, 0)


def test_a_gap_is_given_up_after_the_hold_time() -> None:
    rx = receiver()
    rx.receive_datagram(audio(1), PEER, 1.0)
    rx.receive_datagram(audio(3), PEER, 1.02)
    assert seqs_of(rx.events_received()) == [1]
    timer = rx.get_timer()
    assert timer == pytest.approx(1.02 + REORDER_HOLD)
    assert timer is not None
    rx.handle_timer(timer - 0.001)
    assert rx.events_received() == []
    rx.handle_timer(timer)
    assert seqs_of(rx.events_received()) == [3]
    assert rx.get_timer() is None
    assert rx.stats.lost == 1


def test_sequence_restart_is_followed_after_two_packets() -> None:
    rx = receiver()
    for seq in [100, 101, 20000, 20001, 20002]:
        rx.receive_datagram(audio(seq), PEER, 0.0)
    assert seqs_of(rx.events_received()) == [100, 101, 20001 % 256, 20002 % 256]


def test_new_ssrc_is_accepted_after_a_gap_only() -> None:
    rx = receiver()
    rx.receive_datagram(audio(1), PEER, 0.0)
    rx.receive_datagram(audio(500, ssrc=77), PEER, 0.01)  # interleaved stream: refused
    rx.receive_datagram(audio(2), PEER, 0.02)
    rx.receive_datagram(audio(900, ssrc=77), PEER, 0.02 + SSRC_SWITCH_GAP)
    rx.receive_datagram(audio(901, ssrc=77), PEER, 0.1)
    rx.receive_datagram(audio(3), PEER, 0.12)  # the old one is not taken back at once
    assert seqs_of(rx.events_received()) == [1, 2, 900 % 256, 901 % 256]
    assert (rx.stats.ssrc_changes, rx.stats.foreign) == (1, 2)


# ---------------------------------------------------------------------- DTMF


def test_dtmf_digit_with_three_end_retransmissions_is_reported_once() -> None:
    rx = receiver()
    rx.receive_datagram(audio(1, ts=0), PEER, 0.0)
    packets = [
        dtmf(2, 160, 5, 160, end=False, marker=True),
        dtmf(3, 160, 5, 320, end=False),
        dtmf(4, 160, 5, 480, end=False),
        dtmf(5, 160, 5, 800, end=True),
        dtmf(6, 160, 5, 800, end=True),
        dtmf(7, 160, 5, 800, end=True),
    ]
    for i, data in enumerate(packets):
        rx.receive_datagram(data, PEER, 0.02 * (i + 1))
    rx.receive_datagram(dtmf(7, 160, 5, 800, end=True), PEER, 0.2)  # same seq: duplicate
    assert [e for e in rx.events_received() if isinstance(e, DtmfDigit)] == [DtmfDigit("5", 100)]


def test_two_identical_digits_in_a_row_are_two_digits() -> None:
    rx = receiver()
    seq = 0
    for start, event in [(1000, 11), (4000, 11)]:
        for units, end in [(160, False), (400, True), (400, True), (400, True)]:
            seq += 1
            rx.receive_datagram(dtmf(seq, start, event, units, end=end), PEER, seq * 0.02)
    assert rx.events_received() == [DtmfDigit("#", 50), DtmfDigit("#", 50)]


def test_dtmf_without_end_is_reported_when_the_next_starts_or_audio_moves_on() -> None:
    rx = receiver()
    rx.receive_datagram(dtmf(1, 1000, 1, 160, end=False), PEER, 0.0)
    rx.receive_datagram(dtmf(2, 3000, 12, 160, end=False), PEER, 0.02)
    assert rx.events_received() == [DtmfDigit("1", 20)]
    rx.receive_datagram(audio(3, ts=3200), PEER, 0.04)  # still within the event: wait
    assert seqs_of(rx.events_received()) == [3]
    rx.receive_datagram(audio(4, ts=3000 + 160 + 1600), PEER, 0.06)
    assert rx.events_received()[0] == DtmfDigit("A", 20)


def test_flash_and_short_payloads_are_not_digits() -> None:
    rx = receiver()
    rx.receive_datagram(dtmf(1, 1000, 16, 800, end=True), PEER, 0.0)
    rx.receive_datagram(build_packet(DTMF_PT, 2, 2000, SSRC, b"\x01\x80"), PEER, 0.02)
    assert rx.events_received() == []
    assert rx.stats.malformed == 1


# ------------------------------------------------------- reordering property


@st.composite
def shuffled_within_window(draw: st.DrawFn) -> tuple[int, list[int]]:
    """A start sequence number and offsets 0..n-1 where the first arrives first and the
    rest are shuffled within blocks of four: never more than three ahead of a missing one."""
    start = draw(st.integers(0, 65535))
    blocks = draw(st.lists(st.permutations(range(4)), min_size=1, max_size=20))
    order = [0] + [1 + 4 * i + j for i, block in enumerate(blocks) for j in block]
    return start, order


@given(shuffled_within_window())
@PROPERTY
def test_permutations_within_the_window_are_released_in_order(case: tuple[int, list[int]]) -> None:
    start, order = case
    rx = receiver()
    for i, offset in enumerate(order):
        rx.receive_datagram(audio(start + offset), PEER, i * 0.01)
    want = [(start + k) % 0x10000 % 256 for k in range(len(order))]
    assert seqs_of(rx.events_received()) == want
    assert (rx.stats.lost, rx.stats.late, rx.stats.duplicates) == (0, 0, 0)
    assert rx.get_timer() is None


# ------------------------------------------------------------------- sending


def header(packet: bytes) -> tuple[bool, int, int, int, int]:
    first, second, seq, ts, ssrc = struct.unpack_from(">BBHII", packet)
    assert first == 0x80
    return second >= 0x80, second & 0x7F, seq, ts, ssrc


def test_sender_sequence_timestamp_and_marker() -> None:
    tx = RtpSender(Codec.PCMA, ssrc=0xCAFE, sequence=65534, timestamp=2**32 - 320, start=10.0)
    packets = tx.data_to_send(10.0)  # frame 0: silence, first packet marked
    tx.send_audio(b"\x01" * 400)  # 2.5 frames
    packets += tx.data_to_send(10.06)
    packets += tx.data_to_send(10.1)
    heads = [header(p) for p in packets]
    assert [h[2] for h in heads] == [65534, 65535, 0, 1, 2, 3]
    assert [h[3] for h in heads] == [2**32 - 320, 2**32 - 160, 0, 160, 320, 480]
    assert [h[0] for h in heads] == [True, True, False, False, False, False]
    assert {h[1] for h in heads} == {8} and {h[4] for h in heads} == {0xCAFE}
    assert packets[3][12:] == b"\x01" * 80 + b"\xd5" * 80  # the tail padded with silence
    assert packets[4][12:] == tx.silence_frame() == b"\xd5" * 160
    tx.send_audio(b"\x02" * 160)  # a new talkspurt after silence
    assert header(tx.data_to_send(10.12)[0])[0] is True
    assert Codec.PCMU.silence_byte == 0xFF


def test_pacer_does_not_drift_over_ten_thousand_frames() -> None:
    rng = random.Random(7)
    start = 1000.0
    tx = RtpSender(Codec.PCMU, ssrc=1, sequence=0, timestamp=0, start=start)
    now = start
    sent = 0
    for _ in range(10_000):
        deadline = tx.next_send_at(now)
        assert deadline == pytest.approx(start + sent * 0.02, abs=1e-9)
        now = max(now, deadline + rng.uniform(0.0, 0.015))  # oversleep, never early
        packets = tx.data_to_send(now)
        sent += len(packets)
        assert 1 <= len(packets) <= 2
    assert sent == tx.packets_sent
    assert tx.frames_skipped == 0
    # Exactly one frame per 20 ms of the clock, however the sleeps wobbled.
    assert sent == int((now - start) / 0.02 + 1e-6) + 1
    assert header(tx.next_packet())[3] == sent * 160


def test_pacer_catches_up_a_little_but_skips_when_far_behind() -> None:
    tx = RtpSender(Codec.PCMU, ssrc=1, sequence=0, timestamp=0, start=0.0)
    assert len(tx.data_to_send(0.0)) == 1
    assert tx.due(0.019) == 0
    assert len(tx.data_to_send(0.02 * MAX_LAG_FRAMES)) == MAX_LAG_FRAMES  # a short burst
    assert tx.next_send_at(0.0) == pytest.approx(0.02 * (MAX_LAG_FRAMES + 1))
    tx.send_audio(b"\x01" * 160)
    assert tx.next_send_at(10.0) == pytest.approx(10.0)
    packets = tx.data_to_send(10.0)  # 10 s stall: one frame, not 494
    assert len(packets) == 1
    marker, _, seq, ts, _ = header(packets[0])
    assert (seq, ts, marker) == (MAX_LAG_FRAMES + 1, 500 * 160, True)  # time moved on
    assert tx.frames_skipped == 500 - MAX_LAG_FRAMES - 1
    assert tx.due(10.0) == 0
    assert tx.due(9.0) == 0


def test_a_stream_whose_pacer_starts_late_opens_without_a_burst() -> None:
    tx = RtpSender(Codec.PCMU, ssrc=1, sequence=0, timestamp=0, start=0.0)
    tx.restart_clock(0.09)  # the call's pacer first ran 90 ms after the stream was made
    assert len(tx.data_to_send(0.09)) == 1 and tx.due(0.1) == 0
    assert tx.next_send_at(0.09) == pytest.approx(0.11)
    tx.restart_clock(5.0)  # once frames have gone out the grid is fixed
    assert tx.next_send_at(0.1) == pytest.approx(0.11)


def test_flush_drops_queued_audio_and_counts_what_was_sent() -> None:
    tx = RtpSender(Codec.PCMU, ssrc=1, sequence=0, timestamp=0, start=0.0)
    tx.data_to_send(0.0)  # silence is not agent audio
    tx.send_audio(b"\x11" * 1000)  # 125 ms
    tx.data_to_send(0.06)  # three frames: 60 ms heard
    assert (tx.audio_sent_ms, tx.queued_ms) == (60, 65)
    assert tx.flush() == 60
    after = tx.data_to_send(0.08)
    assert after[0][12:] == tx.silence_frame()
    assert tx.flush() == 0
    tx.send_audio(b"\x22" * 160)
    marker, *_ = header(tx.data_to_send(0.1)[0])
    assert marker  # the next answer is a new talkspurt
    assert tx.flush() == 20


def test_sender_refuses_bad_arguments() -> None:
    with pytest.raises(LocalProtocolError):
        RtpSender(Codec.PCMU, ssrc=2**32, sequence=0, timestamp=0, start=0.0)
    with pytest.raises(LocalProtocolError):
        RtpSender(Codec.PCMU, ssrc=0, sequence=0, timestamp=0, start=0.0, ptime_ms=25)


def test_sender_packets_parse_back() -> None:
    tx = RtpSender(Codec.PCMU, ssrc=99, sequence=5, timestamp=7, start=0.0, ptime_ms=30)
    tx.send_audio(b"\x33" * 240)
    packet = parse_packet(tx.data_to_send(0.0)[0])
    assert packet == RtpPacket(0, True, 5, 7, 99, b"\x33" * 240)


def test_ssrc_change_releases_what_the_old_stream_left_held() -> None:
    rx = receiver()
    rx.receive_datagram(audio(1), PEER, 0.0)
    rx.receive_datagram(audio(3), PEER, 0.02)  # waits for 2, which never comes
    rx.receive_datagram(audio(40, ssrc=9), PEER, 0.02 + SSRC_SWITCH_GAP)
    assert seqs_of(rx.events_received()) == [1, 3, 40]
    assert rx.stats.lost == 1
