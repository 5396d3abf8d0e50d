"""The SIP user agent server without sockets: requests in the shapes of the reference (and of
what sipp sends), a clock moved by hand, and what a PBX expects back."""

from __future__ import annotations

import hashlib
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.protocols.sip import uas as uas_module
from bridge.protocols.sip.message import SipRequest, SipResponse, parse_message
from bridge.protocols.sip.transaction import NonInviteServerTransaction
from bridge.protocols.sip.uas import (
    CallEnded,
    CallEstablished,
    CallOffered,
    DtmfInfo,
    MediaChanged,
    SipServer,
    TransferAnswered,
    UasConfig,
)

PEER = ("127.0.0.1", 5060)
OUTSIDER = ("198.51.100.7", 5060)
SDP_OFFER = (
    "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
    "t=0 0\r\nm=audio 6000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n"
)


def request(
    method: str,
    *,
    call: str = "1-7111@127.0.0.1",
    branch: str = "z9hG4bK-7111-1-0",
    cseq: int = 1,
    to_tag: str | None = None,
    body: str = "",
    extra: str = "",
    host: str = "127.0.0.1",
) -> bytes:
    to = "service <sip:service@127.0.0.1:5070>" + (f";tag={to_tag}" if to_tag else "")
    content_type = "Content-Type: application/sdp\r\n" if body and method == "INVITE" else ""
    return (
        f"{method} sip:service@127.0.0.1:5070 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {host}:5060;branch={branch}\r\n"
        f"From: sipp <sip:+15551230000@{host}:5060>;tag=7111SIPpTag001\r\n"
        f"To: {to}\r\n"
        f"Call-ID: {call}\r\n"
        f"CSeq: {cseq} {method}\r\n"
        f"Contact: <sip:sipp@{host}:5060>\r\n"
        "Max-Forwards: 70\r\n"
        f"{content_type}{extra}"
        f"Content-Length: {len(body)}\r\n\r\n{body}"
    ).encode()


class Uas:
    def __init__(self, **config: object) -> None:
        self.now = 1000.0
        self.server = SipServer(UasConfig(advertise_host="127.0.0.1", port=5070, **config))  # type: ignore[arg-type]
        self.sent: list[SipResponse] = []
        self.requests_out: list[bytes] = []
        self.events: list[object] = []

    def feed(self, data: bytes, source: tuple[str, int] = PEER) -> list[SipResponse]:
        self.server.receive_datagram(data, source, self.now)
        return self._collect()

    def tick(self, seconds: float) -> list[SipResponse]:
        end = self.now + seconds
        out: list[SipResponse] = []
        while (deadline := self.server.next_deadline()) is not None and deadline <= end:
            self.now = max(self.now, deadline)
            self.server.handle_timeout(self.now)
            out += self._collect()
        self.now = end
        return out

    def _collect(self) -> list[SipResponse]:
        out: list[SipResponse] = []
        for data, _ in self.server.datagrams_to_send():
            message = parse_message(data)
            if isinstance(message, SipResponse):
                out.append(message)
            else:
                self.requests_out.append(data)
        self.sent += out
        self.events += self.server.events_received()
        return out

    def invite(self, **kwargs: object) -> list[SipResponse]:
        return self.feed(request("INVITE", body=SDP_OFFER, **kwargs))  # type: ignore[arg-type]

    def answered_call(self) -> str:
        self.invite()
        offered = [e for e in self.events if isinstance(e, CallOffered)]
        self.server.answer(offered[-1].call_id, 40000, self.now)
        ok = self._collect()[-1]
        tag = ok.to.tag
        assert tag
        self.feed(request("ACK", branch="z9hG4bK-ack-1", to_tag=tag))
        return tag


def statuses(responses: list[SipResponse]) -> list[int]:
    return [r.status for r in responses]


def test_a_basic_call_is_offered_answered_acknowledged_and_hung_up() -> None:
    uas = Uas()
    assert statuses(uas.invite()) == [100]
    [offered] = uas.events
    assert isinstance(offered, CallOffered)
    assert (offered.from_user, offered.to_user) == ("+15551230000", "service")
    answer = uas.server.answer(offered.call_id, 40000, uas.now)
    [ok] = uas._collect()
    assert ok.status == 200 and ok.to.tag and ok.get("Contact")
    assert b"m=audio 40000 RTP/AVP 0 101" in ok.body and answer.codec == "PCMU"
    assert answer.remote_port == 6000
    uas.feed(request("ACK", branch="z9hG4bK-ack", to_tag=ok.to.tag))
    assert isinstance(uas.events[-1], CallEstablished)
    assert uas.tick(5.0) == []  # acknowledged: the 200 is not resent
    bye = request("BYE", branch="z9hG4bK-bye", cseq=2, to_tag=ok.to.tag)
    assert statuses(uas.feed(bye)) == [200]
    assert uas.events[-1] == CallEnded(offered.call_id, "caller_hangup")
    # A retransmitted BYE gets the cached 200, not 481.
    assert statuses(uas.feed(bye)) == [200]
    assert uas.server.active_calls == 0


def test_a_retransmitted_invite_gives_one_call() -> None:
    uas = Uas()
    uas.invite()
    assert statuses(uas.invite()) == [100]  # the last response again
    assert len([e for e in uas.events if isinstance(e, CallOffered)]) == 1


def test_the_200_is_resent_until_a_late_ack() -> None:
    uas = Uas()
    uas.invite()
    [offered] = uas.events
    assert isinstance(offered, CallOffered)
    uas.server.answer(offered.call_id, 40000, uas.now)
    [ok] = uas._collect()
    assert statuses(uas.tick(2.0)) == [200, 200]  # at +0.5 and +1.5
    uas.feed(request("ACK", branch="z9hG4bK-late-ack", to_tag=ok.to.tag))
    assert isinstance(uas.events[-1], CallEstablished)
    assert uas.tick(10.0) == []


def test_an_answer_never_acknowledged_ends_the_call_with_a_bye() -> None:
    uas = Uas()
    uas.invite()
    [offered] = uas.events
    assert isinstance(offered, CallOffered)
    uas.server.answer(offered.call_id, 40000, uas.now)
    uas.tick(40.0)
    assert CallEnded(offered.call_id, "no_ack") in uas.events
    assert not any(isinstance(e, CallEstablished) for e in uas.events)
    assert uas.requests_out and uas.requests_out[0].startswith(b"BYE sip:sipp@127.0.0.1:5060 ")


def test_cancel_before_the_answer_gives_200_then_487() -> None:
    uas = Uas()
    uas.invite()
    responses = uas.feed(request("CANCEL"))
    assert statuses(responses) == [200, 487]
    assert responses[0].cseq.method == "CANCEL" and responses[1].cseq.method == "INVITE"
    assert isinstance(uas.events[-1], CallEnded) and uas.events[-1].reason == "cancelled"
    uas.feed(request("ACK", to_tag=responses[1].to.tag))  # the 487's ACK, same branch
    assert uas.tick(1.0) == []  # acknowledged: not resent


def test_cancel_after_the_answer_is_200_with_the_dialogs_tag_and_the_call_goes_on() -> None:
    uas = Uas()
    tag = uas.answered_call()
    [ok] = uas.feed(request("CANCEL"))
    assert (ok.status, ok.cseq.method, ok.to.tag) == (200, "CANCEL", tag)
    assert not any(isinstance(e, CallEnded) for e in uas.events)


def test_requests_outside_any_call_get_481_options_get_200() -> None:
    uas = Uas()
    assert statuses(uas.feed(request("BYE", call="nobody", to_tag="x"))) == [481]
    assert statuses(uas.feed(request("CANCEL", call="nobody"))) == [481]
    [options] = uas.feed(request("OPTIONS", branch="z9hG4bK-opt"))
    assert options.status == 200 and "INVITE" in (options.get("Allow") or "")
    assert options.get("Accept") == "application/sdp"
    assert statuses(uas.feed(request("SUBSCRIBE", branch="z9hG4bK-sub"))) == [405]


def test_an_offer_without_g711_gets_488_and_no_call() -> None:
    uas = Uas()
    g722 = SDP_OFFER.replace("RTP/AVP 0 101", "RTP/AVP 9").replace("a=rtpmap:0 PCMU/8000", "")
    assert statuses(uas.feed(request("INVITE", body=g722))) == [488]
    assert uas.events == []


def test_an_offer_on_the_other_ip_family_gets_488_and_no_call() -> None:
    uas = Uas()  # the bridge's RTP address is 127.0.0.1
    ipv6 = SDP_OFFER.replace("IN IP4 127.0.0.1", "IN IP6 ::1")
    assert statuses(uas.feed(request("INVITE", body=ipv6))) == [488]
    assert uas.events == []


def test_outsiders_are_refused_or_challenged() -> None:
    uas = Uas()
    # What counts is where the datagram came from, not what its Via says.
    assert statuses(uas.feed(request("INVITE", body=SDP_OFFER, call="c2"), OUTSIDER)) == [403]
    assert uas.events == []


def test_an_outsiders_refused_invite_is_answered_once_and_nothing_is_kept() -> None:
    # Kept, a refusal is resent on Timer G until an ACK that a forged source never sends:
    # one datagram would bring its claimed source eleven answers over 32 s.
    uas = Uas()
    invite = request("INVITE", body=SDP_OFFER, call="c2")
    assert statuses(uas.feed(invite, OUTSIDER)) == [403]
    assert uas.server.next_deadline() is None
    assert uas.tick(40.0) == []
    assert statuses(uas.feed(invite, OUTSIDER)) == [403]  # its retransmission: refused again


def test_no_flood_of_outsiders_makes_the_bridge_hold_anything() -> None:
    uas = Uas()
    for n in range(2000):
        options = request("OPTIONS", call=f"scan-{n}", branch=f"z9hG4bK-scan-{n}")
        assert statuses(uas.feed(options, OUTSIDER)) == [200]
    assert uas.server.next_deadline() is None
    assert statuses(uas.invite()) == [100]  # the bridge's own peers are served as before


def test_past_the_limit_a_reply_is_sent_and_not_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(uas_module, "MAX_KEPT_REPLIES", 3)
    uas = Uas()
    sent = [uas.feed(request("OPTIONS", call=f"o{n}", branch=f"z9hG4bK-o{n}"))[0] for n in range(5)]
    # A kept reply is sent again as it was (the same To tag); one past the limit is made
    # afresh, so a retransmission is still answered.
    [again] = uas.feed(request("OPTIONS", call="o0", branch="z9hG4bK-o0"))
    assert again.to.tag == sent[0].to.tag
    [afresh] = uas.feed(request("OPTIONS", call="o4", branch="z9hG4bK-o4"))
    assert afresh.status == 200 and afresh.to.tag != sent[4].to.tag


def test_timers_touch_only_the_replies_that_are_due(monkeypatch: pytest.MonkeyPatch) -> None:
    # Walking every kept reply after each datagram cost 6 ms a datagram at 60,000 kept.
    uas = Uas()
    for n in range(3000):
        uas.feed(request("OPTIONS", call=f"o{n}", branch=f"z9hG4bK-o{n}"))
        uas.now += 0.001
    touched = 0
    original = NonInviteServerTransaction.next_deadline

    def counted(self: NonInviteServerTransaction) -> float | None:
        nonlocal touched
        touched += 1
        return original(self)

    monkeypatch.setattr(NonInviteServerTransaction, "next_deadline", counted)
    uas.feed(request("OPTIONS", call="one-more", branch="z9hG4bK-one-more"))
    deadline = uas.server.next_deadline()
    assert deadline is not None and touched <= 2
    uas.tick(deadline - uas.now + 0.0015)  # the first two replies' Timer J
    assert touched <= 6
    assert uas.server.next_deadline() == pytest.approx(deadline + 0.002)


def _authorization(challenge: str, password: str) -> str:
    nonce = re.search(r'nonce="([^"]+)"', challenge)
    assert nonce is not None
    uri, realm, cnonce, nc = "sip:service@127.0.0.1:5070", "bridge", "abc123", "00000001"

    def h(text: str) -> str:
        return hashlib.sha256(text.encode()).hexdigest()

    response = h(
        f"{h(f'pbx:{realm}:{password}')}:{nonce[1]}:{nc}:{cnonce}:auth:{h('INVITE:' + uri)}"
    )
    return (
        f'Digest username="pbx", realm="{realm}", nonce="{nonce[1]}", uri="{uri}", '
        f'response="{response}", algorithm=SHA-256, qop=auth, nc={nc}, cnonce="{cnonce}"'
    )


def test_a_digest_challenge_is_passed_with_the_right_password_only() -> None:
    uas = Uas(username="pbx", password="s3cret")
    [challenge] = uas.feed(request("INVITE", body=SDP_OFFER, call="c3"), OUTSIDER)
    assert challenge.status == 401
    header = [value for name, value in challenge.headers if name == "WWW-Authenticate"]
    assert any("SHA-256" in h for h in header) and any("MD5" in h for h in header)
    wrong = _authorization(header[0], "guess")
    extra = f"Authorization: {wrong}\r\n"
    assert statuses(
        uas.feed(request("INVITE", body=SDP_OFFER, call="c4", branch="b2", extra=extra), OUTSIDER)
    ) == [401]
    right = f"Authorization: {_authorization(header[0], 's3cret')}\r\n"
    assert statuses(
        uas.feed(request("INVITE", body=SDP_OFFER, call="c5", branch="b3", extra=right), OUTSIDER)
    ) == [100]
    assert [type(e) for e in uas.events] == [CallOffered]


def test_a_copy_of_an_authenticated_invite_cannot_start_a_second_call() -> None:
    # The digest response covers neither the Call-ID nor the SDP: whoever saw the INVITE
    # could otherwise place calls with it for as long as the nonce is fresh (five minutes).
    uas = Uas(username="pbx", password="s3cret")
    [challenge] = uas.feed(request("INVITE", body=SDP_OFFER, call="c1"), OUTSIDER)
    header = [value for name, value in challenge.headers if name == "WWW-Authenticate"]
    right = f"Authorization: {_authorization(header[0], 's3cret')}\r\n"
    # Refused for another reason, it is not spent: the same response still places the call.
    g722 = SDP_OFFER.replace("RTP/AVP 0 101", "RTP/AVP 9").replace("a=rtpmap:0 PCMU/8000", "")
    refused = request("INVITE", body=g722, call="c2", branch="b2", extra=right)
    assert statuses(uas.feed(refused, OUTSIDER)) == [488]
    taken = request("INVITE", body=SDP_OFFER, call="c3", branch="b3", extra=right)
    assert statuses(uas.feed(taken, OUTSIDER)) == [100]
    assert statuses(uas.feed(taken, OUTSIDER)) == [100]  # its retransmission: the same call
    copy = request("INVITE", body=SDP_OFFER, call="c4", branch="b4", extra=right)
    assert statuses(uas.feed(copy, OUTSIDER)) == [401]
    assert [e.call_id for e in uas.events if isinstance(e, CallOffered)] == ["c3"]
    # Once the nonce has aged out, what is remembered goes too; the copy is stale anyway.
    uas.now += 306.0
    late = request("INVITE", body=SDP_OFFER, call="c5", branch="b5", extra=right)
    assert statuses(uas.feed(late, OUTSIDER)) == [401]
    assert uas.server._spent == {}  # nothing grows with the calls taken


def test_503_with_retry_after_at_the_call_limit() -> None:
    uas = Uas(max_calls=1)
    uas.answered_call()
    [busy] = uas.feed(request("INVITE", body=SDP_OFFER, call="second", branch="z9hG4bK-2"))
    assert busy.status == 503 and busy.get("Retry-After") == "5"


def test_an_unsupported_required_extension_gets_420() -> None:
    uas = Uas()
    [refused] = uas.invite(extra="Require: 100rel\r\n")
    assert refused.status == 420 and refused.get("Unsupported") == "100rel"


def test_info_dtmf_and_a_hold_reinvite_in_the_call() -> None:
    uas = Uas()
    tag = uas.answered_call()
    info = request(
        "INFO", branch="z9hG4bK-info", cseq=2, to_tag=tag, body="Signal=5\r\nDuration=160\r\n"
    )
    info = info.replace(b"Max-Forwards", b"Content-Type: application/dtmf-relay\r\nMax-Forwards")
    assert statuses(uas.feed(info)) == [200]
    assert isinstance(uas.events[-1], DtmfInfo) and uas.events[-1].digit == "5"
    hold = SDP_OFFER.replace("2353687637", "2353687638") + "a=sendonly\r\n"
    [ok] = uas.feed(request("INVITE", branch="z9hG4bK-hold", cseq=3, to_tag=tag, body=hold))
    assert ok.status == 200 and b"a=recvonly" in ok.body and b"m=audio 40000" in ok.body
    changed = uas.events[-1]
    assert isinstance(changed, MediaChanged) and changed.answer.on_hold


def test_a_reinvite_2xx_is_resent_until_its_own_ack_and_no_longer() -> None:
    uas = Uas()
    tag = uas.answered_call()
    hold = SDP_OFFER.replace("2353687637", "2353687638") + "a=sendonly\r\n"
    reinvite = request("INVITE", branch="z9hG4bK-hold", cseq=2, to_tag=tag, body=hold)
    assert statuses(uas.feed(reinvite)) == [200]
    assert statuses(uas.tick(0.6)) == [200]  # Timer G: resent while no ACK came
    # The ACK for a 2xx has a branch of its own: matched by dialog and CSeq.
    uas.feed(request("ACK", branch="z9hG4bK-ack-2", cseq=2, to_tag=tag))
    assert uas.tick(40) == []
    assert not any(isinstance(e, CallEnded) for e in uas.events)


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (request("INVITE", body=SDP_OFFER)[:-40], 400),  # the datagram ends inside the body
        (request("INVITE", body=SDP_OFFER, extra="Content-Length: 9\r\n"), 400),
        (request("INVITE", body=SDP_OFFER + "a=x:" + "y" * 70_000 + "\r\n"), 513),
        (request("OPTIONS", extra="X-Pad: " + "a" * 9_000 + "\r\n"), 513),
    ],
    ids=["truncated", "two-lengths", "huge-body", "huge-line"],
)
def test_a_broken_but_readable_request_gets_its_error_and_no_call(data: bytes, status: int) -> None:
    uas = Uas()
    [reply] = uas.feed(data)
    assert reply.status == status and reply.call_id == "1-7111@127.0.0.1"
    assert reply.vias[0].params.get("received") == PEER[0]  # answered to its source
    assert uas.events == [] and uas.server.active_calls == 0


@pytest.mark.parametrize(
    "contact",
    [
        "<sip:sipp@127.0.0.1:99999>",
        "<sip:sipp@bad host>",
        "<tel:+15551230000>",
        "<sip:sipp@127.0.0.1:5060> junk",
        "<sip:sipp@127.0.0.1:5060",
    ],
    ids=["port", "host", "not-sip", "junk-after", "unbalanced"],
)
def test_an_invite_whose_contact_cannot_be_read_gets_400_and_no_call(contact: str) -> None:
    # Every request the bridge sends in the dialog goes to the Contact: a call taken with one
    # it cannot read could never be hung up (the BYE raised from the server's timers).
    uas = Uas()
    good = "Contact: <sip:sipp@127.0.0.1:5060>"
    [reply] = uas.feed(
        request("INVITE", body=SDP_OFFER).replace(good.encode(), b"Contact: " + contact.encode())
    )
    assert reply.status == 400 and reply.cseq.method == "INVITE"
    assert uas.events == [] and uas.server.active_calls == 0


def test_a_call_taken_without_a_contact_is_still_hung_up_at_its_source() -> None:
    uas = Uas()
    uas.feed(
        request("INVITE", body=SDP_OFFER).replace(b"Contact: <sip:sipp@127.0.0.1:5060>\r\n", b"")
    )
    [offered] = [e for e in uas.events if isinstance(e, CallOffered)]
    uas.server.answer(offered.call_id, 40000, uas.now)
    uas.server.hang_up(offered.call_id, uas.now)
    sent = uas.server.datagrams_to_send()
    assert [parse_message(data).cseq.method for data, _ in sent] == ["INVITE", "BYE"]
    assert {destination for _, destination in sent} == {PEER}


def test_rejecting_a_call_cancelled_meanwhile_sends_nothing_more() -> None:
    # The RTP port is bound between the offer and the answer or refusal; a CANCEL may land
    # in that gap.
    uas = Uas()
    uas.invite()
    [offered] = [e for e in uas.events if isinstance(e, CallOffered)]
    assert statuses(uas.feed(request("CANCEL"))) == [200, 487]
    uas.server.reject(offered.call_id, 503, "Service Unavailable", uas.now)
    assert uas._collect() == []


@pytest.mark.parametrize(
    "data",
    [
        request("ACK", body="x" * 10)[:-5],  # an ACK is never answered
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1\r\nContent-Length: 9\r\n\r\n",
        request("INVITE", body=SDP_OFFER)[:60],  # cut inside the headers: nothing trusted
        request("OPTIONS", extra="X-Pad: " + "a" * 66_000 + "\r\n"),  # a head past 64 KiB
    ],
    ids=["ack", "response", "head-cut", "huge-head"],
)
def test_broken_messages_that_cannot_be_answered_are_dropped(data: bytes) -> None:
    uas = Uas()
    assert uas.feed(data) == [] and uas.server.dropped == 1


def test_the_bridge_hangs_up_with_a_bye_resent_until_answered() -> None:
    uas = Uas()
    tag = uas.answered_call()
    [offered] = [e for e in uas.events if isinstance(e, CallOffered)]
    uas.server.hang_up(offered.call_id, uas.now)
    uas._collect()
    [bye] = uas.requests_out
    message = parse_message(bye)
    assert message.from_.tag == tag and message.to.tag == "7111SIPpTag001"
    assert message.cseq.method == "BYE"
    uas.tick(1.0)
    assert len(uas.requests_out) == 2  # resent at +0.5
    branch = message.top_via.branch
    ok = (
        "SIP/2.0 200 OK\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5070;branch={branch}\r\n"
        f"From: {message.get('From')}\r\nTo: {message.get('To')}\r\n"
        f"Call-ID: {message.call_id}\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    uas.feed(ok)
    uas.tick(10.0)
    assert len(uas.requests_out) == 2


@settings(
    max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(
    st.binary(max_size=600)
    | st.sampled_from([request("INVITE", body=SDP_OFFER)]).map(lambda b: b[: len(b) // 2])
)
def test_any_datagram_is_dropped_or_answered_never_raised(data: bytes) -> None:
    uas = Uas()
    uas.server.receive_datagram(data, PEER, uas.now)
    for reply, destination in uas.server.datagrams_to_send():
        assert destination == PEER
        assert isinstance(parse_message(reply), SipResponse)  # never a request of its own
    # The server is still usable afterwards: another call goes through.
    uas.server.events_received()
    assert statuses(uas.invite(call="after-junk", branch="z9hG4bK-after")) == [100]


def _timed_call(uas: Uas, headers: str) -> SipResponse:
    uas.invite(extra=headers)
    offered = [e for e in uas.events if isinstance(e, CallOffered)]
    uas.server.answer(offered[-1].call_id, 40000, uas.now)
    [ok] = uas._collect()
    assert ok.status == 200 and ok.to.tag
    uas.feed(request("ACK", branch="z9hG4bK-ack-1", to_tag=ok.to.tag))
    return ok


def test_a_session_timer_is_accepted_with_the_caller_refreshing() -> None:
    uas = Uas()
    ok = _timed_call(uas, "Supported: timer\r\nSession-Expires: 1800\r\n")
    assert ok.get("Session-Expires") == "1800;refresher=uac"
    assert ok.get("Require") == "timer" and "timer" in (ok.get("Supported") or "")


def test_refreshes_keep_the_call_and_their_absence_ends_it_with_a_bye() -> None:
    uas = Uas()
    ok = _timed_call(uas, "Supported: timer\r\nSession-Expires: 600;refresher=uac\r\n")
    tag = ok.to.tag or ""
    uas.tick(300)  # the caller's side refreshes at half the interval, by UPDATE ...
    [refreshed] = uas.feed(
        request(
            "UPDATE", branch="z9hG4bK-upd", cseq=2, to_tag=tag, extra="Session-Expires: 600\r\n"
        )
    )
    assert refreshed.status == 200 and refreshed.get("Session-Expires") == "600;refresher=uac"
    uas.tick(300)  # ... and by re-INVITE
    reinvite = request(
        "INVITE", branch="z9hG4bK-re", cseq=3, to_tag=tag, body=SDP_OFFER,
        extra="Session-Expires: 600;refresher=uac\r\n",
    )  # fmt: skip
    assert statuses(uas.feed(reinvite)) == [200]
    uas.feed(request("ACK", branch="z9hG4bK-ack-3", cseq=3, to_tag=tag))
    uas.tick(567)  # 600 s less 32 s: not yet
    assert not any(isinstance(e, CallEnded) for e in uas.events) and uas.requests_out == []
    uas.tick(2)  # refreshes stopped: the caller is gone
    assert [e.reason for e in uas.events if isinstance(e, CallEnded)] == ["session_expired"]
    assert uas.requests_out and uas.requests_out[0].startswith(b"BYE ")


@pytest.mark.parametrize(
    ("headers", "status", "header", "value"),
    [
        ("Require: timer\r\nSession-Expires: 60\r\n", 422, "Min-SE", "90"),
        ("Require: 100rel, timer\r\nSession-Expires: 1800\r\n", 420, "Unsupported", "100rel"),
        ("Session-Expires: soon\r\n", 400, "Session-Expires", None),
    ],
)
def test_timers_that_cannot_be_honoured_are_refused_with_the_reason(
    headers: str, status: int, header: str, value: str | None
) -> None:
    uas = Uas()
    [reply] = [r for r in uas.invite(extra=headers) if r.status >= 200]
    assert reply.status == status and reply.get(header) == value
    assert not any(isinstance(e, CallOffered) for e in uas.events)


def test_a_timer_the_caller_wants_the_bridge_to_refresh_is_left_out() -> None:
    uas = Uas()
    ok = _timed_call(uas, "Supported: timer\r\nSession-Expires: 600;refresher=uas\r\n")
    assert ok.get("Session-Expires") is None and ok.get("Require") is None
    uas.tick(3600)
    assert not any(isinstance(e, CallEnded) for e in uas.events)


def _answer_request(data: bytes, status: int) -> bytes:
    sent = parse_message(data)
    assert isinstance(sent, SipRequest)
    lines = [f"SIP/2.0 {status} Whatever"]
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        lines.append(f"{name}: {sent.get(name)}")
    return ("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode()


def test_a_blind_transfer_is_a_refer_in_the_dialog_and_its_answer_an_event() -> None:
    uas = Uas()
    tag = uas.answered_call()
    call_id = "1-7111@127.0.0.1"
    uas.server.refer(call_id, "+15550001111", uas.now)
    uas._collect()
    [refer_data] = uas.requests_out
    refer = parse_message(refer_data)
    assert isinstance(refer, SipRequest) and refer.method == "REFER"
    assert refer.get("Refer-To") == "<sip:+15550001111@127.0.0.1>"
    assert refer.from_.tag == tag and refer.cseq.method == "REFER"
    assert statuses(uas.tick(0.6)) == [] and len(uas.requests_out) == 2  # resent (Timer E)
    uas.feed(_answer_request(refer_data, 202))
    assert [e for e in uas.events if isinstance(e, TransferAnswered)] == [
        TransferAnswered(call_id, 202)
    ]
    notify = request("NOTIFY", branch="z9hG4bK-n1", cseq=2, to_tag=tag, body="SIP/2.0 200 OK")
    assert statuses(uas.feed(notify)) == [200]


def test_a_refused_or_unanswered_refer_keeps_the_call() -> None:
    uas = Uas()
    uas.answered_call()
    uas.server.refer("1-7111@127.0.0.1", "sip:desk@pbx.example.com", uas.now)
    uas._collect()
    refer = parse_message(uas.requests_out[0])
    assert isinstance(refer, SipRequest) and refer.get("Refer-To") == "<sip:desk@pbx.example.com>"
    uas.feed(_answer_request(uas.requests_out[0], 403))
    uas.server.refer("1-7111@127.0.0.1", "+15550001111", uas.now)
    uas._collect()
    uas.tick(40)  # never answered: Timer F
    answers = [e.status for e in uas.events if isinstance(e, TransferAnswered)]
    assert answers == [403, 408]
    assert not any(isinstance(e, CallEnded) for e in uas.events)


def test_a_draining_bridge_answers_new_invites_503_and_keeps_its_calls() -> None:
    uas = Uas()
    tag = uas.answered_call()
    uas.server.accepting = False
    [busy] = uas.feed(request("INVITE", body=SDP_OFFER, call="late", branch="z9hG4bK-9"))
    assert busy.status == 503 and busy.get("Retry-After") == "5"
    assert uas.server.active_calls == 1 and tag


def test_an_overloaded_bridge_answers_new_invites_503_and_keeps_its_calls() -> None:
    overloaded = [False]
    asked: list[bool] = []

    def ask() -> bool:
        asked.append(overloaded[0])
        return overloaded[0]

    uas = Uas()
    uas.server = SipServer(UasConfig(advertise_host="127.0.0.1", port=5070), overloaded=ask)
    tag = uas.answered_call()
    overloaded[0] = True
    [busy] = uas.feed(request("INVITE", body=SDP_OFFER, call="late", branch="z9hG4bK-9"))
    assert busy.status == 503 and busy.get("Retry-After") == "5"
    assert uas.server.active_calls == 1 and tag
    # Caught up: the next INVITE is taken as usual.
    overloaded[0] = False
    taken = uas.feed(request("INVITE", body=SDP_OFFER, call="next", branch="z9hG4bK-a"))
    assert statuses(taken) == [100]
    # Asked once for each INVITE that would otherwise have been taken, and only then.
    assert asked == [False, True, False]
