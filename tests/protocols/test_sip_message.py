"""The SIP message layer: the exchange verified against SIPp (reference sip.md §1.11), the
tolerance real stacks need, hostile input, and properties over generated messages."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.errors import LocalProtocolError, RemoteProtocolError
from bridge.protocols.sip.message import (
    MAX_HEADERS,
    MAX_MESSAGE_BYTES,
    CSeq,
    SipParseError,
    SipRequest,
    SipResponse,
    SipUri,
    headers_of,
    parse_message,
    parse_name_address,
    parse_uri,
    response_for,
    serialize,
    with_source,
)

PROPERTY = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)


def wire(text: str) -> bytes:
    """A message written with LF line ends in this file, sent with CRLF as on the wire."""
    return text.replace("\n", "\r\n").encode()


SDP_OFFER = """v=0
o=user1 53655765 2353687637 IN IP4 127.0.0.1
s=-
c=IN IP4 127.0.0.1
t=0 0
m=audio 6000 RTP/AVP 0
a=rtpmap:0 PCMU/8000
"""

INVITE = wire(
    """INVITE sip:service@127.0.0.1:5070 SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-7111-1-0
From: sipp <sip:sipp@127.0.0.1:5060>;tag=7111SIPpTag001
To: service <sip:service@127.0.0.1:5070>
Call-ID: 1-7111@127.0.0.1
CSeq: 1 INVITE
Contact: sip:sipp@127.0.0.1:5060
Max-Forwards: 70
Subject: Performance Test
Content-Type: application/sdp
Content-Length:   129

"""
    + SDP_OFFER
)

TRYING = wire(
    """SIP/2.0 100 Trying
Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-7111-1-0;received=127.0.0.1
From: sipp <sip:sipp@127.0.0.1:5060>;tag=7111SIPpTag001
To: service <sip:service@127.0.0.1:5070>
Call-ID: 1-7111@127.0.0.1
CSeq: 1 INVITE
Content-Length: 0

"""
)

RINGING = wire(
    """SIP/2.0 180 Ringing
Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-7111-1-0;received=127.0.0.1
From: sipp <sip:sipp@127.0.0.1:5060>;tag=7111SIPpTag001
To: service <sip:service@127.0.0.1:5070>;tag=4f50ba02bf
Call-ID: 1-7111@127.0.0.1
CSeq: 1 INVITE
Content-Length: 0

"""
)

SDP_ANSWER = """v=0
o=bridge 396535419 396535419 IN IP4 127.0.0.1
s=bridge
c=IN IP4 127.0.0.1
t=0 0
m=audio 55355 RTP/AVP 0
a=rtpmap:0 PCMU/8000
a=ptime:20
a=sendrecv
"""

OK = wire(
    """SIP/2.0 200 OK
Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-7111-1-0;received=127.0.0.1
From: sipp <sip:sipp@127.0.0.1:5060>;tag=7111SIPpTag001
To: service <sip:service@127.0.0.1:5070>;tag=4f50ba02bf
Call-ID: 1-7111@127.0.0.1
CSeq: 1 INVITE
Contact: <sip:bridge@127.0.0.1:5070>
Allow: INVITE, ACK, BYE, CANCEL, OPTIONS
Supported:
Content-Type: application/sdp
Content-Length: 160

"""
    + SDP_ANSWER
).replace(b"Supported:\r\n", b"Supported: \r\n")  # the reference keeps the space


def in_dialog(method: str, cseq: int, branch: str) -> bytes:
    """ACK/BYE as SIPp's uac_stream.xml sends them after the 200 (sip.md §3.3)."""
    return wire(
        f"""{method} sip:service@127.0.0.1:5070 SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:5060;branch={branch};rport
From: sipp <sip:sipp@127.0.0.1:5060>;tag=7111SIPpTag001
To: <sip:service@127.0.0.1:5070>;tag=4f50ba02bf
Call-ID: 1-7111@127.0.0.1
CSeq: {cseq} {method}
Contact: <sip:sipp@127.0.0.1:5060>
Max-Forwards: 70
Content-Length: 0

"""
    )


OPTIONS = wire(
    """OPTIONS sip:service@127.0.0.1:5070 SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-opt-1;rport
From: <sip:sipp@127.0.0.1:5060>;tag=opt1
To: <sip:service@127.0.0.1:5070>
Call-ID: 1-7111@127.0.0.1
CSeq: 1 OPTIONS
Max-Forwards: 70
Content-Length: 0

"""
)


def parse_request(data: bytes) -> SipRequest:
    message = parse_message(data)
    assert isinstance(message, SipRequest)
    return message


def refused(data: bytes) -> SipParseError:
    with pytest.raises(SipParseError) as info:
        parse_message(data)
    return info.value


# -- the verified exchange ---------------------------------------------------------------


def test_the_sipp_invite_is_read_completely() -> None:
    invite = parse_request(INVITE)
    assert (invite.method, invite.uri) == ("INVITE", "sip:service@127.0.0.1:5070")
    assert invite.call_id == "1-7111@127.0.0.1"
    assert invite.cseq == CSeq(1, "INVITE")
    assert invite.from_.display_name == "sipp"
    assert invite.from_.tag == "7111SIPpTag001"
    assert invite.to.tag is None
    assert invite.to.uri == "sip:service@127.0.0.1:5070"
    assert invite.max_forwards == 70
    assert invite.contact == SipUri("sip", "sipp", "127.0.0.1", 5060, {})
    assert invite.content_type == "application/sdp"
    assert invite.get("subject") == "Performance Test"
    assert invite.body == SDP_OFFER.replace("\n", "\r\n").encode()
    via = invite.top_via
    assert (via.transport, via.sent_by, via.branch) == (
        "UDP",
        ("127.0.0.1", 5060),
        "z9hG4bK-7111-1-0",
    )
    assert via.rport is None and via.received is None


def test_the_bridge_answers_are_rebuilt_byte_for_byte() -> None:
    invite = with_source(parse_request(INVITE), "127.0.0.1", 5060)
    assert serialize(response_for(invite, 100, "Trying", to_tag="4f50ba02bf")) == TRYING
    assert serialize(response_for(invite, 180, "Ringing", to_tag="4f50ba02bf")) == RINGING
    ok = response_for(
        invite,
        200,
        "OK",
        [
            ("Contact", "<sip:bridge@127.0.0.1:5070>"),
            ("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS"),
            ("Supported", ""),
            ("Content-Type", "application/sdp"),
        ],
        SDP_ANSWER.replace("\n", "\r\n").encode(),
        to_tag="4f50ba02bf",
    )
    # The reference shows "Supported: " with its trailing space; ours has it too.
    assert serialize(ok) == OK


@pytest.mark.parametrize("data", [TRYING, RINGING, OK])
def test_the_responses_parse(data: bytes) -> None:
    response = parse_message(data)
    assert isinstance(response, SipResponse)
    assert response.top_via.received == "127.0.0.1"
    assert response.cseq == CSeq(1, "INVITE")
    assert serialize(response) == data


def test_ack_bye_options_parse_and_rport_is_filled() -> None:
    ack = parse_request(in_dialog("ACK", 1, "z9hG4bK-7111-1-5"))
    bye = parse_request(in_dialog("BYE", 2, "z9hG4bK-7111-1-6"))
    assert ack.cseq == CSeq(1, "ACK") and bye.cseq == CSeq(2, "BYE")
    assert ack.to.tag == bye.to.tag == "4f50ba02bf"
    assert bye.top_via.rport is True
    stamped = with_source(bye, "127.0.0.1", 5060)
    # sip.md §1.11: "branch=z9hG4bK-10757-1-0;rport=5060;received=127.0.0.1" (order is free).
    assert stamped.top_via.rport == 5060 and stamped.top_via.received == "127.0.0.1"
    reply = response_for(stamped, 200, "OK", to_tag="ignored-in-dialog")
    assert reply.to.tag == "4f50ba02bf"
    options = parse_request(OPTIONS)
    assert options.method == "OPTIONS" and options.body == b""


def test_cancel_gets_its_own_response() -> None:
    cancel = parse_request(
        INVITE.split(b"\r\n\r\n")[0]
        .replace(b"INVITE sip:", b"CANCEL sip:")
        .replace(b"CSeq: 1 INVITE", b"CSeq: 1 CANCEL")
        .replace(b"Content-Length:   129", b"Content-Length: 0")
        + b"\r\n\r\n"
    )
    reply = response_for(cancel, 200, "OK", to_tag="abc")
    assert reply.cseq == CSeq(1, "CANCEL") and reply.to.tag == "abc"
    assert reply.get("Record-Route") is None


# -- tolerance ------------------------------------------------------------------------------


def test_compact_forms_case_and_folding() -> None:
    data = (
        b"BYE sip:service@example.com SIP/2.0\r\n"
        b"v: SIP/2.0/UDP a.example.com;branch=z9hG4bK1\r\n"
        b"f: <sip:a@example.com>;tag=1\r\n"
        b"T: <sip:b@example.com>\r\n"
        b"i: abc\r\n"
        b"cSEQ: 7\r\n   BYE\r\n"
        b"m: <sip:a@10.0.0.1>\r\n"
        b"k: timer\r\n"
        b"s: folded\r\n\tsubject\r\n"
        b"c: text/plain\r\n"
        b"l: 2\r\n\r\nhi"
    )
    bye = parse_request(data)
    assert bye.cseq == CSeq(7, "BYE")
    assert bye.get("Supported") == "timer" and bye.get("subject") == "folded subject"
    assert [name for name, _ in bye.headers][:4] == ["Via", "From", "To", "Call-ID"]
    assert bye.content_type == "text/plain" and bye.body == b"hi"
    assert bye.contact is not None and bye.contact.host == "10.0.0.1"


# RFC 4475 §3.1.1.1 "wsinv", a short tortuous INVITE: legal, and every line is odd.
TORTUOUS = (
    b"INVITE sip:vivekg@chair-dnrc.example.com;unknownparam SIP/2.0\r\n"
    b"TO :\r\n"
    b" sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n\r\n"
    b'from   : "J Rosenberg \\\\\\""       <sip:jdrosen@example.com>\r\n'
    b"  ;\r\n"
    b"  tag = 98asjd8\r\n"
    b"MaX-fOrWaRdS: 0068\r\n"
    b"Call-ID: wsinv.ndaksdj@192.0.2.1\r\n"
    b"Content-Length   : 150\r\n"
    b"cseq: 0009\r\n"
    b"  INVITE\r\n"
    b"Via  : SIP  /   2.0\r\n"
    b" /UDP\r\n"
    b"    192.0.2.2;branch=390skdjuw\r\n"
    b"s :\r\n"
    b"NewFangledHeader:   newfangled value\r\n"
    b" continued newfangled value\r\n"
    b"UnknownHeaderWithUnusualValue: ;;,,;;,;\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Route:\r\n"
    b" <sip:services.example.com;lr;unknownwith=value;unknown-no-value>\r\n"
    b"v:  SIP  / 2.0  / TCP     spindle.example.com   ;\r\n"
    b"  branch  =   z9hG4bK9ikj8  ,\r\n"
    b" SIP  /    2.0   / UDP  192.168.255.111   ; branch=\r\n"
    b" z9hG4bK30239\r\n"
    b'm:"Quoted string \\"\\"" <sip:jdrosen@example.com> ; newparam =\r\n'
    b"      newvalue ;\r\n"
    b"  secondparam ; q = 0.33\r\n"
    b"\r\n"
    b"v=0\r\n"
    b"o=mhandley 29739 7272939 IN IP4 192.0.2.3\r\n"
    b"s=-\r\n"
    b"c=IN IP4 192.0.2.4\r\n"
    b"t=0 0\r\n"
    b"m=audio 49217 RTP/AVP 0 12\r\n"
    b"m=video 3227 RTP/AVP 31\r\n"
    b"a=rtpmap:31 LPC\r\n"
)


def test_the_rfc_4475_tortuous_invite() -> None:
    invite = parse_request(TORTUOUS)
    assert invite.uri == "sip:vivekg@chair-dnrc.example.com;unknownparam"
    assert invite.to.uri == "sip:vivekg@chair-dnrc.example.com"
    assert invite.to.tag == "1918181833n"
    assert invite.from_.display_name == 'J Rosenberg \\"'
    assert invite.from_.tag == "98asjd8"
    assert invite.max_forwards == 68
    assert invite.cseq == CSeq(9, "INVITE")
    assert invite.get("Subject") == ""
    assert invite.get("newfangledheader") == "newfangled value continued newfangled value"
    assert [(v.transport, v.host, v.branch) for v in invite.vias] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    assert invite.contact == SipUri("sip", "jdrosen", "example.com", None, {})
    assert len(invite.body) == 150 and invite.body.endswith(b"LPC\r\n")
    reply = response_for(invite, 200, "OK", to_tag="ignored")
    assert reply.to.tag == "1918181833n" and len(reply.vias) == 3
    assert parse_message(serialize(reply)) == reply


def test_lf_only_line_ends_are_tolerated() -> None:
    invite = parse_request(INVITE.replace(b"\r\n", b"\n").replace(b"129", b"122"))
    assert invite.body.startswith(b"v=0\no=user1")


def test_several_via_headers_and_comma_separated_values() -> None:
    data = INVITE.replace(
        b"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-7111-1-0\r\n",
        b"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-a;rport, SIP/2.0/TCP [2001:db8::1]:5080;branch=z9hG4bK-b\r\n"
        b"Record-Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n"
        b"Via: SIP / 2.0 / tls proxy.example.com ;branch=z9hG4bK-c;received=192.0.2.1\r\n",
    )
    invite = parse_request(data)
    assert [(v.transport, v.host, v.port, v.branch) for v in invite.vias] == [
        ("UDP", "127.0.0.1", 5060, "z9hG4bK-a"),
        ("TCP", "2001:db8::1", 5080, "z9hG4bK-b"),
        ("TLS", "proxy.example.com", None, "z9hG4bK-c"),
    ]
    stamped = with_source(invite, "198.51.100.7", 40000)
    assert stamped.vias[0].rport == 40000 and stamped.vias[0].received == "198.51.100.7"
    assert stamped.vias[1:] == invite.vias[1:]
    ringing = response_for(stamped, 180, "Ringing", to_tag="t")
    assert [v.branch for v in ringing.vias] == ["z9hG4bK-a", "z9hG4bK-b", "z9hG4bK-c"]
    assert ringing.get_all("Record-Route") == ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]
    assert response_for(stamped, 486, "Busy Here").get("Record-Route") is None


def test_leading_crlf_and_missing_content_length_on_udp() -> None:
    data = b"\r\n\r\n" + INVITE.replace(b"Content-Length:   129\r\n", b"")
    assert parse_request(data).body == SDP_OFFER.replace("\n", "\r\n").encode()


def test_bytes_beyond_content_length_are_ignored() -> None:
    assert parse_request(INVITE + b"garbage").body.endswith(b"PCMU/8000\r\n")


# -- refusals ---------------------------------------------------------------------------------


def test_a_body_shorter_than_declared_is_refused() -> None:
    assert refused(INVITE[:-5]).status == 400


def test_oversized_messages_and_lines_are_refused_with_513() -> None:
    assert refused(INVITE + b"x" * MAX_MESSAGE_BYTES).status == 513
    long_line = INVITE.replace(b"Subject: Performance Test", b"Subject: " + b"x" * 9000)
    assert refused(long_line).status == 513
    many = INVITE.replace(b"Max-Forwards: 70\r\n", b"X-A: 1\r\n" * (MAX_HEADERS + 1))
    assert refused(many).status == 513


def test_a_wrong_version_gets_505() -> None:
    assert refused(INVITE.replace(b"SIP/2.0\r\n", b"SIP/3.0\r\n", 1)).status == 505


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b"INVITE sip:", b"INV(TE sip:"),
        (b"INVITE sip:service@127.0.0.1:5070 SIP/2.0", b"INVITE  sip:service SIP/2.0"),
        (b"CSeq: 1 INVITE", b"CSeq: 2147483648 INVITE"),
        (b"CSeq: 1 INVITE", b"CSeq: 1 BYE"),
        (b"CSeq: 1 INVITE", b"CSeq: one INVITE"),
        (b"Call-ID: 1-7111@127.0.0.1\r\n", b""),
        (b"Call-ID: 1-7111@127.0.0.1\r\n", b"Call-ID: a\r\ni: b\r\n"),
        (b"Via: SIP/2.0/UDP 127.0.0.1:5060;", b"Via: SIP/2.0/UDP 127.0.0.1:99999;"),
        (b"Via: SIP/2.0/UDP 127.0.0.1:5060;", b"Via: HTTP/1.1/UDP 127.0.0.1:5060;"),
        (b"From: sipp <sip:sipp@127.0.0.1:5060>", b"From: sipp <sip:sipp@127.0.0.1:5060"),
        (b"Max-Forwards: 70", b"Max-Forwards: -1"),
        (b"Content-Length:   129", b"Content-Length: 12x"),
        (b"Content-Length:   129", b"Content-Length: 129\r\nl: 129"),
        (b"Subject: Performance Test", b"Subject: a\x00b"),
        (b"Subject: Performance Test", b"Subject Performance Test"),
        (b"Subject: Performance Test", "Subject: caf\u00e9".encode("latin-1")),
    ],
)
def test_malformed_requests_are_refused(old: bytes, new: bytes) -> None:
    assert old in INVITE
    error = refused(INVITE.replace(old, new))
    assert isinstance(error, RemoteProtocolError) and error.status in (400, 513)


def test_a_bad_contact_fails_when_read() -> None:
    invite = parse_request(INVITE.replace(b"Contact: sip:sipp@", b"Contact: sip:@"))
    with pytest.raises(SipParseError):
        _ = invite.contact


@pytest.mark.parametrize(
    "data",
    [b"", b"\r\n\r\n", b"SIP/2.0 99 Odd\r\n\r\n", b"SIP/2.0 200OK\r\n\r\n", b"\x00" * 50],
)
def test_garbage_is_refused(data: bytes) -> None:
    refused(data)


def test_serialize_refuses_header_injection() -> None:
    invite = parse_request(INVITE)
    with pytest.raises(LocalProtocolError):
        serialize(response_for(invite, 200, "OK", [("X-Evil", "a\r\nVia: forged")]))
    with pytest.raises(LocalProtocolError):
        response_for(invite, 700, "Nope")


# -- URIs -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("sip:alice@example.com", SipUri("sip", "alice", "example.com", None, {})),
        ("SIPS:+15551230000@10.0.0.1:5061", SipUri("sips", "+15551230000", "10.0.0.1", 5061, {})),
        (
            "sip:bob@[2001:db8::10]:5070;transport=tcp;lr",
            SipUri("sip", "bob", "2001:db8::10", 5070, {"transport": "tcp", "lr": None}),
        ),
        (
            '"Bob, the \\"B\\"" <sip:bob@h.example>;tag=9',
            SipUri("sip", "bob", "h.example", None, {}),
        ),
        (
            "Bob <sip:pbx.example.com;transport=udp>",
            SipUri("sip", None, "pbx.example.com", None, {"transport": "udp"}),
        ),
        (
            "sip:carol:secret@host.example?subject=x",
            SipUri("sip", "carol", "host.example", None, {}),
        ),
    ],
)
def test_uris(text: str, expected: SipUri) -> None:
    assert parse_uri(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "tel:+15551230000",
        "sip:",
        "sip:@host",
        "sip:user@",
        "sip:user@host:0",
        "sip:user@host:70000",
        "sip:user@[::1",
        "sip:user@[not:v6]",
        "sip:user@ho st",
        "<sip:user@host",
        "sip:user@host;=x",
        '"unterminated <sip:a@b>',
    ],
)
def test_garbage_uris_are_refused(text: str) -> None:
    with pytest.raises(SipParseError):
        parse_uri(text)


def test_name_address_with_quoted_display_name() -> None:
    address = parse_name_address('"A \\"quoted\\" name" <sip:a@b.example>;tag=xyz;foo')
    assert address.display_name == 'A "quoted" name'
    assert address.uri == "sip:a@b.example"
    assert address.params == {"tag": "xyz", "foo": None}


# -- properties ---------------------------------------------------------------------------------


@PROPERTY
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_raise_only_sip_parse_error(data: bytes) -> None:
    with contextlib.suppress(SipParseError):
        parse_message(data)


_LINES = INVITE.split(b"\r\n")
_HOSTILE = st.one_of(
    st.binary(max_size=40),
    st.sampled_from(
        [
            b"",
            b" ",
            b"\t",
            b":",
            b";",
            b",",
            b"<",
            b">",
            b'"',
            b"\\",
            b"[",
            b"]",
            b"\r",
            b"\n",
            b"\x00",
            b"\xff",
            b"\xc3\x28",
            b"99999999999",
            b"-1",
            b"SIP/2.0",
            b"z9hG4bK",
            b"=",
            b"@",
        ]
    ),
)


@PROPERTY
@given(
    st.lists(st.tuples(st.integers(0, len(_LINES) - 1), st.integers(0, 60), _HOSTILE), max_size=6)
)
def test_hostile_fields_in_a_plausible_message_raise_only_sip_parse_error(
    edits: list[tuple[int, int, bytes]],
) -> None:
    lines = list(_LINES)
    for line, position, junk in edits:
        lines[line] = lines[line][:position] + junk + lines[line][position:]
    try:
        message = parse_message(b"\r\n".join(lines))
    except SipParseError:
        return
    # Whatever parsed must be readable or refused cleanly, and serializable.
    for read in ("vias", "max_forwards", "contact", "content_type", "cseq"):
        with contextlib.suppress(SipParseError):
            getattr(message, read)
    with contextlib.suppress(LocalProtocolError):
        serialize(message)


_token = st.text(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~",
    min_size=1,
    max_size=12,
)
_safe = st.text(
    st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="\u2028\u2029\x85"),
    max_size=30,
).map(str.strip)
_host = st.sampled_from(["127.0.0.1", "example.com", "[2001:db8::1]", "pbx-1.example.org"])


@st.composite
def messages(draw: st.DrawFn) -> SipRequest | SipResponse:
    method = draw(_token)
    call_id = draw(_token)
    cseq = f"{draw(st.integers(0, 2**31 - 1))} {method}"
    vias = [
        f"SIP/2.0/UDP {draw(_host)}:{draw(st.integers(1, 65535))};branch=z9hG4bK{draw(_token)}"
        for _ in range(draw(st.integers(1, 3)))
    ]
    extra = draw(
        st.lists(
            st.tuples(st.sampled_from(["Subject", "X-Custom", "Allow", "Supported"]), _safe),
            max_size=5,
        )
    )
    headers = headers_of(
        [("Via", v) for v in vias]
        + [
            ("From", f"<sip:{draw(_token)}@{draw(_host)}>;tag={draw(_token)}"),
            ("To", f"<sip:{draw(_token)}@{draw(_host)}>"),
            ("Call-ID", call_id),
            ("CSeq", cseq),
        ]
        + extra
    )
    body = draw(st.binary(max_size=200))
    if draw(st.booleans()):
        return SipRequest(method, f"sip:{draw(_token)}@{draw(_host)}", headers, body)
    return SipResponse(draw(st.integers(100, 699)), draw(_safe), headers, body)


@PROPERTY
@given(messages())
def test_parse_of_serialize_round_trips(message: SipRequest | SipResponse) -> None:
    assert parse_message(serialize(message)) == message


@PROPERTY
@given(messages())
def test_responses_copy_the_dialog_fields(message: SipRequest | SipResponse) -> None:
    if not isinstance(message, SipRequest):
        return
    reply = response_for(message, 200, "OK", to_tag="t1")
    assert reply.vias == message.vias
    assert (reply.call_id, reply.cseq, reply.from_) == (
        message.call_id,
        message.cseq,
        message.from_,
    )
    assert reply.to.tag == "t1"
    assert parse_message(serialize(reply)) == reply
