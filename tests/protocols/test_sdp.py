"""SDP offer/answer: the examples of the SIP reference, the interop cases it lists, and
properties under hostile input (only ``SdpError`` escapes; whatever is accepted is in range
and reads back the same)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.errors import LocalProtocolError, RemoteProtocolError
from bridge.protocols.sdp import (
    MAX_SDP_CHARS,
    Answer,
    Direction,
    NoCommonCodec,
    SdpError,
    answer,
    answer_received,
    build_offer,
    parse,
    reanswer,
)

PROPERTY = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
US = {"address": "203.0.113.10", "port": 40000, "session_id": 396535419, "version": 396535419}


def sdp(*lines: str) -> str:
    return "".join(line + "\r\n" for line in lines)


def offer(*media_lines: str, head: tuple[str, ...] | None = None) -> str:
    if head is None:
        head = ("v=0", "o=sipp 1 1 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0")
    return sdp(*head, *media_lines)


def answered(*media_lines: str, **changes: object) -> Answer:
    return answer(offer(*media_lines), **{**US, **changes})  # type: ignore[arg-type]


# -- the examples in the SIP reference ---------------------------------------------------

# §1.11: the verified SIPp `uac` INVITE body and the 200 body the test UAS sent back.
SIPP_UAC_OFFER = sdp(
    "v=0",
    "o=user1 53655765 2353687637 IN IP4 127.0.0.1",
    "s=-",
    "c=IN IP4 127.0.0.1",
    "t=0 0",
    "m=audio 6000 RTP/AVP 0",
    "a=rtpmap:0 PCMU/8000",
)
SIPP_UAC_ANSWER = sdp(
    "v=0",
    "o=bridge 396535419 396535419 IN IP4 127.0.0.1",
    "s=bridge",
    "c=IN IP4 127.0.0.1",
    "t=0 0",
    "m=audio 55355 RTP/AVP 0",
    "a=rtpmap:0 PCMU/8000",
    "a=ptime:20",
    "a=sendrecv",
)
# §1.6: the answer example, against the offer `m=audio 6000 RTP/AVP 0 8 101`.
REFERENCE_ANSWER = sdp(
    "v=0",
    "o=bridge 396535419 396535419 IN IP4 203.0.113.10",
    "s=bridge",
    "c=IN IP4 203.0.113.10",
    "t=0 0",
    "m=audio 40000 RTP/AVP 0 101",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:101 telephone-event/8000",
    "a=fmtp:101 0-15",
    "a=ptime:20",
    "a=sendrecv",
)
# §3 uac_stream.xml / uac_hold.xml: the first INVITE, then the hold re-INVITE (version 2).
SIPP_STREAM_OFFER = offer(
    "m=audio 6000 RTP/AVP 0 8 101",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:8 PCMA/8000",
    "a=rtpmap:101 telephone-event/8000",
    "a=fmtp:101 0-15",
    "a=ptime:20",
    "a=sendrecv",
)
SIPP_HOLD_OFFER = offer(
    "m=audio 6000 RTP/AVP 0 101",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:101 telephone-event/8000",
    "a=sendonly",
    head=("v=0", "o=sipp 1 2 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0"),
)
# §3 uac_pcap: PCMA only, no ptime (the pcap itself is 30 ms).
SIPP_PCMA_OFFER = offer("m=audio 6000 RTP/AVP 8", "a=rtpmap:8 PCMA/8000")


def test_the_verified_sipp_exchange_is_reproduced_byte_for_byte() -> None:
    result = answer(
        SIPP_UAC_OFFER, address="127.0.0.1", port=55355, session_id=396535419, version=396535419
    )
    assert result.sdp == SIPP_UAC_ANSWER
    assert (result.remote_address, result.remote_port) == ("127.0.0.1", 6000)
    assert (result.codec, result.payload_type, result.telephone_event) == ("PCMU", 0, None)
    assert (result.ptime, result.direction, result.on_hold) == (20, Direction.SENDRECV, False)


def test_the_reference_answer_example_is_reproduced_byte_for_byte() -> None:
    result = answered(
        "m=audio 6000 RTP/AVP 0 8 101", "a=rtpmap:101 telephone-event/8000", "a=fmtp:101 0-15"
    )
    assert result.sdp == REFERENCE_ANSWER
    assert result.telephone_event == 101


def test_the_sipp_stream_offer_gets_pcmu_and_its_dtmf_type() -> None:
    result = answer(SIPP_STREAM_OFFER, **US)  # type: ignore[arg-type]
    assert result.sdp == REFERENCE_ANSWER


def test_the_sipp_hold_reinvite_is_answered_recvonly_with_a_new_version() -> None:
    first = answer(SIPP_STREAM_OFFER, **US)  # type: ignore[arg-type]
    held = reanswer(SIPP_HOLD_OFFER, first, address=US["address"], port=40000)  # type: ignore[arg-type]
    assert "a=recvonly\r\n" in held.sdp and "a=sendrecv" not in held.sdp
    assert held.direction is Direction.RECVONLY and held.on_hold
    assert held.version == first.version + 1 and held.session_id == first.session_id
    assert f"o=bridge {first.session_id} {first.version + 1} IN IP4" in held.sdp
    # A session-timer refresh repeating the same offer changes nothing, so no new version.
    assert reanswer(SIPP_HOLD_OFFER, held, address=US["address"], port=40000) is held  # type: ignore[arg-type]
    resumed = reanswer(SIPP_STREAM_OFFER, held, address=US["address"], port=40000)  # type: ignore[arg-type]
    assert resumed.direction is Direction.SENDRECV and not resumed.on_hold
    assert resumed.version == first.version + 2


def test_a_pcma_only_offer_is_answered_with_pcma() -> None:
    result = answer(SIPP_PCMA_OFFER, **US)  # type: ignore[arg-type]
    assert (result.codec, result.payload_type, result.telephone_event) == ("PCMA", 8, None)
    assert "m=audio 40000 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n" in result.sdp


# -- codecs and payload types ------------------------------------------------------------


def test_static_payload_types_need_no_rtpmap_and_our_preference_wins() -> None:
    result = answered("m=audio 6000 RTP/AVP 8 0")
    assert (result.codec, result.payload_type) == ("PCMU", 0)
    pcma = answered("m=audio 6000 RTP/AVP 8 0", prefer=("PCMA", "PCMU"))
    assert (pcma.codec, pcma.payload_type) == ("PCMA", 8)


def test_pcmu_on_a_dynamic_payload_type_is_used_with_that_number() -> None:
    result = answered("m=audio 6000 RTP/AVP 112", "a=rtpmap:112\t pcmu/8000/1")
    assert (result.codec, result.payload_type) == ("PCMU", 112)


@pytest.mark.parametrize(
    "media",
    [
        ("m=audio 6000 RTP/AVP 18", "a=rtpmap:18 G729/8000"),
        ("m=audio 6000 RTP/AVP 111 9", "a=rtpmap:111 opus/48000/2"),
        ("m=audio 6000 RTP/AVP 96", "a=rtpmap:96 PCMU/16000"),
        ("m=audio 6000 RTP/AVP 101", "a=rtpmap:101 telephone-event/8000"),
        ("m=audio 6000 RTP/SAVP 0",),  # SRTP: we have no keys
        ("m=audio 0 RTP/AVP 0",),  # the offerer turned the stream off
        ("m=video 6000 RTP/AVP 0",),
        ("m=audio 6000 RTP/AVP 0", "c=IN IP4 233.252.0.1/127"),  # multicast
    ],
)
def test_no_usable_g711_stream_is_a_488(media: tuple[str, ...]) -> None:
    with pytest.raises(NoCommonCodec) as info:
        answered(*media)
    assert info.value.status == 488
    assert isinstance(info.value, SdpError) and isinstance(info.value, RemoteProtocolError)


@pytest.mark.parametrize("pt", [96, 100, 101, 127])
def test_telephone_event_keeps_the_offerers_payload_type(pt: int) -> None:
    result = answered(f"m=audio 6000 RTP/AVP 0 {pt}", f"a=rtpmap:{pt} telephone-event/8000")
    assert result.telephone_event == pt
    assert f"m=audio 40000 RTP/AVP 0 {pt}\r\n" in result.sdp
    assert f"a=rtpmap:{pt} telephone-event/8000\r\na=fmtp:{pt} 0-16\r\n" in result.sdp


def test_telephone_event_at_another_rate_or_a_static_number_is_left_out() -> None:
    result = answered(
        "m=audio 6000 RTP/AVP 0 110 50",
        "a=rtpmap:110 telephone-event/48000",
        "a=rtpmap:50 telephone-event/8000",
    )
    assert result.telephone_event is None
    assert "telephone-event" not in result.sdp and "m=audio 40000 RTP/AVP 0\r\n" in result.sdp


def test_the_offered_event_range_is_echoed_and_nonsense_replaced() -> None:
    echoed = answered(
        "m=audio 6000 RTP/AVP 0 96", "a=rtpmap:96 telephone-event/8000", "a=fmtp:96 0-16"
    )
    assert "a=fmtp:96 0-16\r\n" in echoed.sdp
    for odd in ("<x>", "0-\u0661\u0665", "0-15 extra", "1" * 80):
        result = answered(
            "m=audio 6000 RTP/AVP 0 96", "a=rtpmap:96 telephone-event/8000", f"a=fmtp:96 {odd}"
        )
        assert "a=fmtp:96 0-16\r\n" in result.sdp


# -- packet time -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attributes", "ptime"),
    [
        ((), 20),
        (("a=ptime:30",), 30),
        (("a=ptime:10",), 10),
        (("a=ptime:60",), 60),
        (("a=ptime:30.0",), 30),
        (("a=ptime:5",), 20),
        (("a=ptime:100",), 20),
        (("a=ptime:abc",), 20),
        (("a=maxptime:10",), 10),
        (("a=ptime:40", "a=maxptime:30"), 30),
        (("a=maxptime:1",), 10),
        (("a=maxptime:150",), 20),
    ],
)
def test_ptime_is_echoed_within_10_to_60_ms(attributes: tuple[str, ...], ptime: int) -> None:
    result = answered("m=audio 6000 RTP/AVP 8", *attributes)
    assert result.ptime == ptime
    assert f"a=ptime:{ptime}\r\n" in result.sdp


def test_a_session_level_ptime_is_taken_when_the_media_has_none() -> None:
    text = offer("a=ptime:30", "m=audio 6000 RTP/AVP 0")
    assert answer(text, **US).ptime == 30  # type: ignore[arg-type]


# -- direction and hold ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offered", "answered_with", "held"),
    [
        ("sendrecv", Direction.SENDRECV, False),
        ("sendonly", Direction.RECVONLY, True),
        ("recvonly", Direction.SENDONLY, False),
        ("inactive", Direction.INACTIVE, True),
    ],
)
def test_direction_is_mirrored(offered: str, answered_with: Direction, held: bool) -> None:
    result = answered("m=audio 6000 RTP/AVP 0", f"a={offered}")
    assert result.direction is answered_with and result.on_hold is held
    assert result.sdp.endswith(f"a={answered_with.value}\r\n")


def test_session_level_direction_is_the_default_and_media_level_overrides_it() -> None:
    head = ("v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=-", "c=IN IP4 192.0.2.1", "t=0 0", "a=sendonly")
    default = answer(offer("m=audio 6000 RTP/AVP 0", head=head), **US)  # type: ignore[arg-type]
    assert default.direction is Direction.RECVONLY
    override = answer(offer("m=audio 6000 RTP/AVP 0", "a=sendrecv", head=head), **US)  # type: ignore[arg-type]
    assert override.direction is Direction.SENDRECV and not override.on_hold


@pytest.mark.parametrize("address", ["0.0.0.0", "::"])
def test_the_legacy_unspecified_address_means_hold(address: str) -> None:
    family = "IP6" if ":" in address else "IP4"
    result = answered("m=audio 6000 RTP/AVP 0", f"c=IN {family} {address}")
    assert result.on_hold and result.remote_address == address
    assert result.direction is Direction.SENDRECV


# -- addresses ---------------------------------------------------------------------------


def test_media_level_c_wins_over_session_level() -> None:
    result = answered("m=audio 6000 RTP/AVP 0", "c=IN IP4 198.51.100.7")
    assert result.remote_address == "198.51.100.7"


def test_ipv6_on_both_sides() -> None:
    result = answered("m=audio 6000 RTP/AVP 0", "c=IN IP6 2001:DB8:0:0::1", address="2001:db8::10")
    assert result.remote_address == "2001:db8::1"
    assert "o=bridge 396535419 396535419 IN IP6 2001:db8::10\r\n" in result.sdp
    assert "c=IN IP6 2001:db8::10\r\n" in result.sdp


@pytest.mark.parametrize(
    ("offered", "ours"),
    [("c=IN IP6 2001:db8::1", "203.0.113.10"), ("c=IN IP4 198.51.100.7", "2001:db8::10")],
    ids=["ipv6-offer", "ipv4-offer"],
)
def test_audio_on_the_other_ip_family_is_a_488(offered: str, ours: str) -> None:
    # Our RTP socket could not send to it (uvloop raised at the first packet), nor could the
    # peer reach the address in our answer.
    with pytest.raises(NoCommonCodec) as info:
        answered("m=audio 6000 RTP/AVP 0", offered, address=ours)
    assert info.value.status == 488 and "IPv" in str(info.value)


def test_a_later_stream_on_our_ip_family_is_the_one_answered() -> None:
    result = answered(
        "m=audio 6000 RTP/AVP 0",
        "c=IN IP6 2001:db8::1",
        "m=audio 7000 RTP/AVP 0",
        "c=IN IP4 198.51.100.7",
    )
    assert (result.remote_address, result.remote_port) == ("198.51.100.7", 7000)
    assert "m=audio 0 RTP/AVP 0\r\n" in result.sdp


def test_a_reinvite_moving_to_the_other_ip_family_is_a_488() -> None:
    first = answered("m=audio 6000 RTP/AVP 0")
    moved = offer("m=audio 6000 RTP/AVP 0", "c=IN IP6 2001:db8::1")
    with pytest.raises(NoCommonCodec):
        reanswer(moved, first, address=US["address"], port=40000)  # type: ignore[arg-type]


def test_missing_c_line_is_a_400_not_a_488() -> None:
    text = offer("m=audio 6000 RTP/AVP 0", head=("v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=-", "t=0 0"))
    with pytest.raises(SdpError) as info:
        answer(text, **US)  # type: ignore[arg-type]
    assert type(info.value) is SdpError and info.value.status == 400


# -- several media sections --------------------------------------------------------------


def test_only_the_first_usable_audio_stream_is_answered_and_the_rest_refused_in_place() -> None:
    result = answered(
        "m=video 6002 RTP/AVP 31 34",
        "a=rtpmap:31 H261/90000",
        "m=audio 6000 RTP/AVP 18 0",
        "m=audio 6004 RTP/AVP 0 8",
        "m=application 6006 UDP/BFCP *",
    )
    assert result.remote_port == 6000
    sections = [line for line in result.sdp.split("\r\n") if line.startswith("m=")]
    assert sections == [
        "m=video 0 RTP/AVP 31",
        "m=audio 40000 RTP/AVP 0",
        "m=audio 0 RTP/AVP 0",
        "m=application 0 UDP/BFCP *",
    ]
    again = parse(result.sdp)
    assert [m.port for m in again.media] == [0, 40000, 0, 0]


def test_a_disabled_audio_stream_is_skipped_for_the_next_one() -> None:
    result = answered("m=audio 0 RTP/AVP 0", "m=audio 7000 RTP/AVP 8")
    assert (result.remote_port, result.codec) == (7000, "PCMA")


# -- tolerance and garbage ---------------------------------------------------------------


def test_lf_line_ends_blank_lines_and_unknown_attributes_are_fine() -> None:
    text = "v=0\no=- 1 1 IN IP4 192.0.2.1\n\ns=-\nc=IN IP4 192.0.2.1\nt=0 0\nm=audio 6000/2 RTP/AVP 0\na=x-custom:{}\na=rtpmap:nonsense\na=rtcp:6001\n\n"
    result = answer(text.encode(), **US)  # type: ignore[arg-type]
    assert (result.remote_port, result.codec) == (6000, "PCMU")


@pytest.mark.parametrize(
    "attribute", ["a=rtpmap:", "a=fmtp:", "a=rtpmap:0", "a=rtpmap:0 PCMU", "a=ptime:"]
)
def test_empty_or_truncated_attributes_are_ignored(attribute: str) -> None:
    # Found by the property tests: an empty "a=rtpmap:" once raised ValueError.
    assert answered("m=audio 6000 RTP/AVP 0", attribute).codec == "PCMU"


def test_origin_is_read() -> None:
    origin = parse(SIPP_UAC_OFFER).origin
    assert origin is not None
    assert (origin.username, origin.session_id, origin.version) == ("user1", 53655765, 2353687637)


GARBAGE = [
    "",
    "hello",
    "\r\n\r\n",
    "v=1\r\nm=audio 6000 RTP/AVP 0\r\n",
    offer(),  # no m= line
    offer("m=audio 6000 RTP/AVP"),  # no format
    offer("m=audio port RTP/AVP 0"),
    offer("m=audio 65536 RTP/AVP 0"),
    offer("m=audio -1 RTP/AVP 0"),
    offer("m=audio 6000 RTP/AVP 0", "this is not sdp"),
    offer("m=audio 6000 RTP/AVP 0", "x=unknown type letter"),
    offer("m=audio 6000 RTP/AVP 0", "v=0"),
    offer("m=audio 6000 RTP/AVP 0", "a=ptime:20\x00"),
    offer("m=audio 6000 RTP/AVP 0", "c=IN IP4 pbx.example.com"),
    offer("m=audio 6000 RTP/AVP 0", "c=IN IP4 ::1"),
    offer("m=audio 6000 RTP/AVP 0", "c=IN IP6 fe80::1%eth0"),
    offer("m=audio 6000 RTP/AVP 0", "c=IN IP4"),
    offer("m=audio 6000 RTP/AVP 0", "c=ATM NSAP 47.0091"),
    offer("m=audio 6000 RTP/AVP 0", head=("v=0", "o=- x 1 IN IP4 192.0.2.1", "c=IN IP4 192.0.2.1")),
    offer("m=audio 6000 RTP/AVP 0", head=("v=0", "o=too few", "c=IN IP4 192.0.2.1")),
    offer("m=audio 6000 RTP/AVP " + " ".join(["0"] * 200)),
    offer(*["m=audio 6000 RTP/AVP 0"] * 17),
    offer("m=audio 6000 RTP/AVP 0", "a=" + "x" * MAX_SDP_CHARS),
    "v=0\r\nm=audio 6000 RTP/AVP 0\r\n\ud800\r\n",
]


@pytest.mark.parametrize("text", GARBAGE)
def test_garbage_is_a_400(text: str) -> None:
    with pytest.raises(SdpError) as info:
        answer(text, **US)  # type: ignore[arg-type]
    assert type(info.value) is SdpError and info.value.status == 400


def test_bytes_that_are_not_utf8_are_a_400() -> None:
    with pytest.raises(SdpError):
        parse(SIPP_UAC_OFFER.encode().replace(b"s=-", b"s=\xff"))


@pytest.mark.parametrize(
    "changes",
    [
        {"address": "example.com"},
        {"address": "0.0.0.0"},
        {"address": "fe80::1%eth0"},
        {"port": 0},
        {"port": 70000},
        {"session_id": -1},
        {"version": 2**64},
        {"prefer": ("G729",)},
        {"prefer": ()},
    ],
)
def test_our_own_bad_arguments_are_a_local_error(changes: dict[str, object]) -> None:
    with pytest.raises(LocalProtocolError):
        answer(SIPP_UAC_OFFER, **{**US, **changes})  # type: ignore[arg-type]


# -- our own offer and the round trip ----------------------------------------------------


def test_our_offer_and_the_answer_to_it() -> None:
    ours = build_offer(address="192.0.2.5", port=20000, session_id=7, version=7)
    assert ours == sdp(
        "v=0",
        "o=bridge 7 7 IN IP4 192.0.2.5",
        "s=bridge",
        "c=IN IP4 192.0.2.5",
        "t=0 0",
        "m=audio 20000 RTP/AVP 0 8 101",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-16",
        "a=ptime:20",
        "a=sendrecv",
    )
    theirs = answer(ours, **US)  # type: ignore[arg-type]
    assert (theirs.codec, theirs.telephone_event, theirs.remote_port) == ("PCMU", 101, 20000)
    got = answer_received(theirs.sdp)
    assert (got.remote_address, got.remote_port) == ("203.0.113.10", 40000)
    assert (got.codec, got.payload_type, got.telephone_event, got.ptime) == ("PCMU", 0, 101, 20)
    assert got.direction is Direction.SENDRECV and got.sdp == ""
    assert (got.session_id, got.version) == (US["session_id"], US["version"])


def test_a_refused_answer_to_our_offer_is_a_488() -> None:
    with pytest.raises(NoCommonCodec):
        answer_received(offer("m=audio 0 RTP/AVP 0"))


def _reads_back(result: Answer) -> None:
    """The answer text says what the Answer says, to a parser and to the peer."""
    described = parse(result.sdp)
    assert described.origin is not None
    assert (described.origin.session_id, described.origin.version) == (
        result.session_id,
        result.version,
    )
    used = [m for m in described.media if m.port != 0]
    assert len(used) == 1
    media = used[0]
    expected = [str(result.payload_type)]
    if result.telephone_event is not None:
        expected.append(str(result.telephone_event))
    assert list(media.formats) == expected
    assert media.rtpmap[result.payload_type].name == result.codec
    assert media.ptime == result.ptime and media.direction is result.direction
    peer = answer_received(result.sdp)
    assert (peer.codec, peer.payload_type, peer.telephone_event, peer.ptime) == (
        result.codec,
        result.payload_type,
        result.telephone_event,
        result.ptime,
    )
    assert peer.direction is result.direction.reverse


@pytest.mark.parametrize(
    "text", [SIPP_UAC_OFFER, SIPP_STREAM_OFFER, SIPP_HOLD_OFFER, SIPP_PCMA_OFFER]
)
def test_round_trip(text: str) -> None:
    _reads_back(answer(text, **US))  # type: ignore[arg-type]


# -- properties --------------------------------------------------------------------------


def _check(result: Answer) -> None:
    assert 0 <= result.remote_port <= 65535
    assert 0 <= result.payload_type <= 127
    assert result.telephone_event is None or 96 <= result.telephone_event <= 127
    assert 10 <= result.ptime <= 60
    assert result.codec in ("PCMU", "PCMA")
    assert result.sdp.isascii() and result.sdp.endswith("\r\n")
    _reads_back(result)


@PROPERTY
@given(st.one_of(st.text(max_size=400), st.binary(max_size=400)))
def test_any_text_at_all_only_raises_sdp_error(body: str | bytes) -> None:
    try:
        result = answer(body, **US)  # type: ignore[arg-type]
    except SdpError:
        return
    _check(result)


HOSTILE_NUMBERS = ["", "-1", "0x10", "+5", "1e3", "20.5", "nan", "inf", "\u0663", "9" * 25, "70000"]


@PROPERTY
@given(
    st.sampled_from([SIPP_UAC_OFFER, SIPP_STREAM_OFFER, SIPP_HOLD_OFFER, SIPP_PCMA_OFFER]),
    st.integers(0, 400),
    st.integers(0, 8),
    st.text(max_size=12),
)
def test_damaged_real_offers_only_raise_sdp_error(
    text: str, at: int, cut: int, insert: str
) -> None:
    try:
        result = answer(text[:at] + insert + text[at + cut :], **US)  # type: ignore[arg-type]
    except SdpError:
        return
    _check(result)


def _number(valid: st.SearchStrategy[int]) -> st.SearchStrategy[str]:
    """Mostly a plausible number, sometimes something no peer should send."""
    hostile = st.sampled_from(HOSTILE_NUMBERS)
    return st.integers(0, 15).flatmap(lambda i: hostile if i == 0 else valid.map(str))


@st.composite
def plausible_offers(draw: st.DrawFn) -> str:
    head = [
        "v=0",
        f"o=- {draw(_number(st.integers(0, 2**64 - 1)))} {draw(_number(st.integers(0, 9)))} IN IP4 192.0.2.1",
        "s=-",
    ]
    addresses = st.one_of(
        st.sampled_from(["IN IP4 192.0.2.1", "IN IP4 0.0.0.0", "IN IP6 2001:db8::1", "IN IP6 ::"]),
        st.sampled_from(["IN IP4 192.0.2.1", "IN IP4 198.51.100.20"]),
        st.sampled_from(
            ["IN IP4 ::1", "IN IP4 300.1.1.1", "IN IP4 233.252.0.1/3", "IN IP4 host", "IN IP4"]
        ),
    )
    if draw(st.booleans()):
        head.append(f"c={draw(addresses)}")
    head.append("t=0 0")
    if draw(st.booleans()):
        head.append(f"a={draw(st.sampled_from(['sendrecv', 'sendonly', 'recvonly', 'inactive']))}")
    lines = list(head)
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["audio", "video", "AUDIO"]))
        proto = draw(st.sampled_from(["RTP/AVP", "RTP/SAVP", "rtp/avp", "UDP"]))
        pts = draw(
            st.lists(
                _number(st.sampled_from([0, 8, 18, 96, 101, 101, 127, 128])), min_size=1, max_size=5
            )
        )
        pts = [p or "0" for p in pts]
        lines.append(
            f"m={kind} {draw(_number(st.integers(0, 65535))) or '0'} {proto} {' '.join(pts)}"
        )
        if draw(st.booleans()):
            lines.append(f"c={draw(addresses)}")
        if draw(st.booleans()):
            lines.append(f"a=rtpmap:{pts[-1]} telephone-event/8000")
        for _ in range(draw(st.integers(0, 5))):
            pt = draw(st.sampled_from(pts))
            name = draw(st.sampled_from(["PCMU", "PCMA", "telephone-event", "opus", "pcmu"]))
            rate = draw(st.sampled_from(["8000", "48000", "8000/1", "8000/2", "", "x"]))
            attribute = draw(
                st.sampled_from(
                    [
                        f"a=rtpmap:{pt} {name}/{rate}",
                        f"a=fmtp:{pt} {draw(st.sampled_from(['0-15', '0-16', '0-15,66', 'x', '']))}",
                        f"a=ptime:{draw(_number(st.integers(1, 200)))}",
                        f"a=maxptime:{draw(_number(st.integers(1, 200)))}",
                        "a=sendonly",
                        "a=inactive",
                        "a=recvonly",
                        f"a=rtpmap:{draw(_number(st.integers(0, 127)))}",
                    ]
                )
            )
            lines.append(attribute)
    ending = draw(st.sampled_from(["\r\n", "\n"]))
    return ending.join(lines) + ending


@PROPERTY
@given(plausible_offers())
def test_plausible_offers_with_hostile_fields_only_raise_sdp_error(text: str) -> None:
    try:
        result = answer(text, **US)  # type: ignore[arg-type]
    except SdpError:
        return
    _check(result)


@PROPERTY
@given(plausible_offers(), st.integers(0, 2**64 - 2))
def test_a_repeated_offer_keeps_the_version(text: str, version: int) -> None:
    try:
        first = answer(text, **{**US, "version": version})  # type: ignore[arg-type]
    except SdpError:
        return
    assert reanswer(text, first, address=US["address"], port=40000) is first  # type: ignore[arg-type]


@st.composite
def sound_offers(draw: st.DrawFn) -> tuple[str, dict[str, object]]:
    """A well-formed offer with a usable audio stream, and what the answer must say."""
    codecs = draw(st.lists(st.sampled_from(["PCMU", "PCMA"]), min_size=1, max_size=2, unique=True))
    pts = {"PCMU": 0, "PCMA": 8}
    if draw(st.booleans()):  # dynamic numbers instead of the static ones
        pts = {"PCMU": draw(st.integers(96, 111)), "PCMA": draw(st.integers(112, 127))}
    te = draw(st.none() | st.integers(96, 127).filter(lambda n: n not in pts.values()))
    ptime = draw(st.none() | st.integers(1, 200))
    direction = draw(st.sampled_from(list(Direction)))
    host = draw(st.sampled_from(["IP4 192.0.2.1", "IP4 0.0.0.0", "IP6 2001:db8::7"]))
    port = draw(st.integers(1, 65535))
    formats = [str(pts[c]) for c in codecs] + ([str(te)] if te is not None else [])
    audio = [f"m=audio {port} RTP/AVP {' '.join(formats)}"]
    audio += [f"a=rtpmap:{pts[c]} {c}/8000" for c in codecs]
    if te is not None:
        audio += [f"a=rtpmap:{te} telephone-event/8000", f"a=fmtp:{te} 0-15"]
    if ptime is not None:
        audio.append(f"a=ptime:{ptime}")
    audio.append(f"a={direction.value}")
    before = draw(
        st.lists(st.sampled_from(["m=video 5000 RTP/AVP 31", "m=audio 0 RTP/AVP 0"]), max_size=2)
    )
    head = ("v=0", f"o=- 1 2 IN {host}", "s=-", f"c=IN {host}", "t=0 0")
    ending = draw(st.sampled_from(["\r\n", "\n"]))
    text = ending.join([*head, *before, *audio]) + ending
    codec = "PCMU" if "PCMU" in codecs else "PCMA"
    expected = {
        "codec": codec,
        "payload_type": pts[codec],
        "telephone_event": te,
        "ptime": ptime if ptime is not None and 10 <= ptime <= 60 else 20,
        "direction": direction.reverse,
        "remote_port": port,
        "on_hold": direction in (Direction.SENDONLY, Direction.INACTIVE) or "0.0.0.0" in host,
    }
    return text, expected


@PROPERTY
@given(sound_offers())
def test_sound_offers_are_answered_as_specified(case: tuple[str, dict[str, object]]) -> None:
    text, expected = case
    # Answered from an RTP address of the offer's own IP family.
    ours = {**US, "address": "2001:db8::10"} if "c=IN IP6" in text else US
    result = answer(text, **ours)  # type: ignore[arg-type]
    assert {key: getattr(result, key) for key in expected} == expected
    _check(result)
