"""Whole dialogs from a hostile peer against the SIP user agent server: an INVITE, then any
mix of ACKs, re-INVITEs, INFOs, CANCELs, BYEs and answers to the bridge's own requests,
any header or SDP line of which may carry a hostile value, while the bridge answers, refuses,
transfers and hangs up, and its timers run. Whatever comes, the server never raises and
everything it sends is SIP its peer can parse: a raise from its timers would stall every call
on the listener."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.errors import LocalProtocolError
from bridge.protocols.sip.message import SipRequest, SipResponse, parse_message
from bridge.protocols.sip.uas import CallOffered, SipServer, UasConfig

PEER = ("127.0.0.1", 5060)
CALL = "dialog-1@127.0.0.1"
SDP_OFFER = (
    "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
    "t=0 0\r\nm=audio 6000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=sendrecv\r\n"
)
DTMF = "Signal=5\r\nDuration=160\r\n"

# What a line may be given in place of its value: empty, huge, out of range, wrong kind.
HOSTILE = [
    "",
    "0",
    "-1",
    "18446744073709551616",
    "9" * 300,
    "\x00",
    "\ufffe",
    "<",
    "<>",
    '"',
    ";tag=",
    ",",
    "sip:",
    "tel:+15551230000",
    "<sip:a@127.0.0.1:99999>",
    "<sip:a@b> junk",
    "sips:x@[::1]:0",
    "SIP/2.0/TCP 1.2.3.4:99999",
    "1 INVITE",
    "2 ACK",
    "IN IP6 ::1",
    "IN IP4 0.0.0.0",
    "audio 0 RTP/AVP 0",
    "audio 7000 RTP/AVP 18",
    "inactive",
    "application/dtmf-relay",
    "timer",
    "1800;refresher=uac",
    "Signal=\ufffe",
]
# The header or SDP line a hostile value replaces (the text before its value).
TARGETS = [
    "Via: ",
    "From: ",
    "To: ",
    "Call-ID: ",
    "CSeq: ",
    "Contact: ",
    "Max-Forwards: ",
    "Content-Type: ",
    "c=",
    "m=",
    "a=rtpmap:0 ",
    "o=",
    "Signal=",
]
EXTRA = ["", "Record-Route: <sip:proxy.example.com;lr>\r\n", "Session-Expires: 90\r\n"]

Mutation = tuple[str, str] | None


def _request(
    method: str, branch: str, cseq: int, to_tag: str | None, body: str, extra: str
) -> bytes:
    to = "service <sip:service@127.0.0.1:5070>" + (f";tag={to_tag}" if to_tag else "")
    kind = "application/sdp" if method == "INVITE" else "application/dtmf-relay"
    content_type = f"Content-Type: {kind}\r\n" if body else ""
    return (
        f"{method} sip:service@127.0.0.1:5070 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5060;branch={branch}\r\n"
        "From: phone <sip:+15551230000@127.0.0.1:5060>;tag=phone-tag\r\n"
        f"To: {to}\r\nCall-ID: {CALL}\r\nCSeq: {cseq} {method}\r\n"
        "Contact: <sip:phone@127.0.0.1:5060>\r\nMax-Forwards: 70\r\n"
        f"{content_type}{extra}Content-Length: {len(body.encode())}\r\n\r\n{body}"
    ).encode()


def _mutated(data: bytes, mutation: Mutation) -> bytes:
    """``data`` with the first line that starts with the target given the hostile value, and
    Content-Length kept true to the body (what a careless peer sends, not a cut datagram)."""
    if mutation is None:
        return data
    target, value = mutation
    head, _, body = data.decode().partition("\r\n\r\n")
    part = body if target[0].islower() or target == "Signal=" else head
    lines = part.split("\r\n")
    for n, line in enumerate(lines):
        if line.startswith(target):
            lines[n] = target + value
            break
    if part is body:
        body = "\r\n".join(lines)
        length = len(body.encode())
        head = "\r\n".join(
            f"Content-Length: {length}" if line.startswith("Content-Length") else line
            for line in head.split("\r\n")
        )
    else:
        head = "\r\n".join(lines)
    return f"{head}\r\n\r\n{body}".encode()


@dataclass
class Dialog:
    server: SipServer
    now: float = 1000.0
    cseq: int = 1
    to_tag: str | None = None
    sent: list[SipRequest | SipResponse] = field(default_factory=list)
    offered: list[CallOffered] = field(default_factory=list)

    @property
    def call_id(self) -> str:
        """The call as the server knows it (a hostile Call-ID is still its Call-ID)."""
        return self.offered[-1].call_id if self.offered else CALL

    def collect(self) -> None:
        for data, destination in self.server.datagrams_to_send():
            assert destination[0] in ("127.0.0.1", "::1")
            message = parse_message(data)  # raises if the bridge sent what no peer could read
            self.sent.append(message)
            if isinstance(message, SipResponse) and message.status == 200 and message.to.tag:
                self.to_tag = message.to.tag
        self.offered += [e for e in self.server.events_received() if isinstance(e, CallOffered)]

    def feed(self, data: bytes) -> None:
        self.server.receive_datagram(data, PEER, self.now)
        self.collect()

    def run_timers(self, seconds: float) -> None:
        end = self.now + seconds
        while (deadline := self.server.next_deadline()) is not None and deadline <= end:
            self.now = max(self.now, deadline)
            self.server.handle_timeout(self.now)
            self.collect()
        self.now = end

    def step(self, action: str, mutation: Mutation, extra: str) -> None:
        self.cseq += 1
        branch = f"z9hG4bK-{action}-{self.cseq}"
        if action == "answer" and self.offered:
            # As the bridge does: a call cancelled or refused meanwhile cannot be answered.
            with contextlib.suppress(LocalProtocolError):
                self.server.answer(self.call_id, 40000, self.now)
        elif action == "reject" and self.offered:
            self.server.reject(self.call_id, 503, "Service Unavailable", self.now)
        elif action == "hang_up":
            self.server.hang_up(self.call_id, self.now)
        elif action == "refer":
            self.server.refer(self.call_id, "+15550001111", self.now)
        elif action == "reply":
            requests = [m for m in self.sent if isinstance(m, SipRequest)]
            if requests:
                last = requests[-1]
                reply = (
                    f"SIP/2.0 {200 if self.cseq % 2 else 481} X\r\nVia: {last.get('Via')}\r\n"
                    f"From: {last.get('From')}\r\nTo: {last.get('To')};tag=t\r\n"
                    f"Call-ID: {last.call_id}\r\nCSeq: {last.get('CSeq')}\r\n"
                    "Content-Length: 0\r\n\r\n"
                ).encode()
                self.feed(_mutated(reply, mutation))
        elif action == "reinvite":
            data = _request("INVITE", branch, self.cseq, self.to_tag, SDP_OFFER, extra)
            self.feed(_mutated(data, mutation))
            self.feed(_request("ACK", branch + "-ack", self.cseq, self.to_tag, "", ""))
        elif action == "cancel":
            self.feed(_mutated(_request("CANCEL", "z9hG4bK-invite", 1, None, "", ""), mutation))
        else:  # ACK, INFO, BYE, OPTIONS, UPDATE, REFER from the peer
            body = DTMF if action == "INFO" else ""
            cseq = 1 if action == "ACK" else self.cseq
            self.feed(_mutated(_request(action, branch, cseq, self.to_tag, body, extra), mutation))
        self.collect()


ACTIONS = ["answer", "answer", "reject", "hang_up", "refer", "reply", "reinvite", "cancel"]
ACTIONS += ["ACK", "ACK", "INFO", "BYE", "OPTIONS", "UPDATE", "REFER"]
mutations = st.none() | st.tuples(st.sampled_from(TARGETS), st.sampled_from(HOSTILE))
steps = st.tuples(
    st.sampled_from(ACTIONS),
    mutations,
    st.sampled_from(EXTRA),
    st.sampled_from([0.0, 0.5, 4.0, 40.0, 4000.0]),
)


@settings(
    max_examples=400, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(
    invite=mutations,
    extra=st.sampled_from(EXTRA),
    reliable=st.booleans(),
    script=st.lists(steps, min_size=1, max_size=10),
)
def test_a_hostile_dialog_never_makes_the_server_raise_or_send_unreadable_sip(
    invite: Mutation,
    extra: str,
    reliable: bool,
    script: list[tuple[str, Mutation, str, float]],
) -> None:
    config = UasConfig(
        advertise_host="127.0.0.1", port=5070, transport="TCP" if reliable else "UDP"
    )
    dialog = Dialog(SipServer(config))
    dialog.feed(_mutated(_request("INVITE", "z9hG4bK-invite", 1, None, SDP_OFFER, extra), invite))
    for action, mutation, more, wait in script:
        dialog.step(action, mutation, more)
        dialog.run_timers(wait)
    for offered in dialog.offered:  # a re-INVITE's copy with another Call-ID is a call too
        with contextlib.suppress(LocalProtocolError):
            dialog.server.answer(offered.call_id, 40000, dialog.now)
        dialog.server.hang_up(offered.call_id, dialog.now)
    dialog.run_timers(4000.0)
    # Whatever happened, the dialog is over and forgotten once its timers have run.
    assert dialog.server.active_calls == 0 and dialog.server.next_deadline() is None
