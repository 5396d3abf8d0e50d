"""The bridge's SIP user agent server, sans-I/O: datagrams and ``now`` in; datagrams to send,
call events and timers out. One object serves every call on one listening address.

The transport adapter feeds :meth:`SipServer.receive_datagram` with every datagram and its
source, sends what :meth:`SipServer.datagrams_to_send` returns, runs
:meth:`SipServer.handle_timeout` at :meth:`SipServer.next_deadline`, and acts on
:meth:`SipServer.events_received`:

- :class:`CallOffered`: an authorised INVITE with a usable offer. Bind an RTP port and call
  :meth:`SipServer.answer` (or :meth:`SipServer.reject`). No model session before
  :class:`CallEstablished`: a call that is cancelled or never acknowledged costs nothing.
- :class:`CallEstablished`: the ACK came; start the call.
- :class:`CallEnded`: the caller hung up, cancelled, or never acknowledged the answer.
- :class:`DtmfInfo`, :class:`MediaChanged`: a keypress by SIP INFO; a re-INVITE (hold).

The server never forwards or relays a request: everything it sends is a response to the
request's source, or a BYE for a call it answered.
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from bridge.errors import LocalProtocolError
from bridge.protocols import sdp
from bridge.protocols.sip import digest, session_timer
from bridge.protocols.sip.events import (
    Address,
    CallEnded,
    CallEstablished,
    CallOffered,
    DtmfInfo,
    MediaChanged,
    SipEvent,
    TransferAnswered,
    UasConfig,
)
from bridge.protocols.sip.message import (
    SipParseError,
    SipRequest,
    SipResponse,
    parse_message,
    parse_uri,
    response_for,
    serialize,
    with_source,
)
from bridge.protocols.sip.salvage import REASONS, answerable_request
from bridge.protocols.sip.server_transactions import (
    InviteReply,
    NonInviteReply,
    ServerTransactions,
    ServerTx,
    tx_key,
)
from bridge.protocols.sip.transaction import (
    InviteOutcome,
    InviteServerTransaction,
    NonInviteClientTransaction,
)

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, NOTIFY"
USER_AGENT = "bridge"
RETRY_AFTER_S = 5
#: Replies kept at once to answer retransmissions; past it, replies are sent and forgotten.
MAX_KEPT_REPLIES = 10_000
#: Digest responses remembered as spent on a call (far more than calls can start in the
#: five minutes a nonce lives).
MAX_SPENT_RESPONSES = 100_000
_DIGITS = "0123456789*#ABCD"


# -- per call state -------------------------------------------------------------------------


@dataclass
class _Call:
    call_id: str
    source: Address
    invite: SipRequest
    invite_tx: InviteServerTransaction
    local_tag: str
    offer: sdp.SessionDescription
    answer: sdp.Answer | None = None
    rtp_port: int = 0
    established: bool = False
    ended: bool = False
    remote_cseq: int = 0
    local_cseq: int = 0
    # The last re-INVITE's CSeq number and its 2xx transaction: its ACK comes on a new
    # branch (RFC 3261 section 17.1.1.3), so it is matched here, by the dialog and CSeq.
    reinvite: tuple[int, ServerTx] | None = None
    # RFC 4028: the timer agreed, and when the call is given up without a refresh.
    timer: session_timer.SessionTimer | None = None
    expires_at: float | None = None

    @property
    def remote_tag(self) -> str | None:
        return self.invite.from_.tag


class SipServer:
    """Every SIP dialog and transaction on one listening address; see the module doc."""

    def __init__(
        self,
        config: UasConfig,
        others_active: Callable[[], int] = lambda: 0,
        overloaded: Callable[[], bool] = lambda: False,
    ) -> None:
        self.config = config
        # Calls the bridge carries on its other SIP transports: one limit for them all.
        self._others_active = others_active
        # Asked only of an INVITE that would otherwise be taken: True refuses it (503 with
        # Retry-After), as when full; the bridge is too far behind to take another call.
        self._overloaded = overloaded
        #: False once the bridge drains (it is stopping): new INVITEs get 503 with
        #: Retry-After, so a dispatcher in front tries another bridge.
        self.accepting = True
        self._calls: dict[str, _Call] = {}
        self._server_tx = ServerTransactions()
        self._out: list[tuple[bytes, Address]] = []
        self._events: list[SipEvent] = []
        self._requests: list[NonInviteClientTransaction] = []  # our BYEs and REFERs
        self._refers: dict[str, str] = {}  # branch of a REFER -> its call
        self._spent: dict[tuple[str, str], float] = {}  # (nonce, response) -> forget at
        #: Datagrams dropped because they were not SIP at all.
        self.dropped = 0

    # -- the adapter's side ---------------------------------------------------------------

    def datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        """Return, and forget, what to send, each with its destination, in order."""
        out, self._out = self._out, []
        return out

    def events_received(self) -> list[SipEvent]:
        events, self._events = self._events, []
        return events

    @property
    def active_calls(self) -> int:
        return sum(1 for call in self._calls.values() if not call.ended)

    @property
    def kept_replies(self) -> int:
        """Replies held to answer retransmissions (at most ``MAX_KEPT_REPLIES``)."""
        return len(self._server_tx)

    def allows(self, host: str) -> bool:
        """Whether ``host`` is in ``BRIDGE_SIP_ALLOW`` (served without authentication)."""
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in net for net in self.config.allow)

    def has_call_from(self, source: Address) -> bool:
        """Whether a call not yet over came from ``source`` (a TCP connection to keep)."""
        return any(c.source == source and not c.ended for c in self._calls.values())

    def receive_datagram(self, data: bytes, source: Address, now: float) -> None:
        """One datagram from ``source``. Never raises for anything the peer sent."""
        try:
            message = parse_message(data)
        except SipParseError as exc:
            readable = answerable_request(data)
            try:
                request = None if readable is None else with_source(readable, *source)
            except SipParseError:
                request = None
            if request is None:
                self.dropped += 1  # nothing readable enough to answer
                return
            self._reply_or_drop(request, source, exc.status, REASONS.get(exc.status, "Bad Request"))
            return
        if isinstance(message, SipResponse):
            self._receive_response(message, now)
            return
        try:
            request = with_source(message, source[0], source[1])
            self._receive_request(request, source, now)
        except SipParseError as exc:
            self._reply_or_drop(message, source, exc.status, "Bad Request")

    def next_deadline(self) -> float | None:
        deadlines = [self._server_tx.next_deadline()]
        deadlines += [c.invite_tx.next_deadline() for c in self._calls.values()]
        deadlines += [request.resend_at for request in self._requests]
        deadlines += [c.expires_at for c in self._calls.values() if not c.ended]
        pending = [d for d in deadlines if d is not None]
        return min(pending) if pending else None

    def handle_timeout(self, now: float) -> None:
        self._server_tx.run_due(now, self._out)
        for call in list(self._calls.values()):
            invite_tx = call.invite_tx
            for data in invite_tx.handle_timeout(now):
                self._out.append((data, call.source))
            if invite_tx.outcome is InviteOutcome.NO_ACK and not call.ended:
                call.ended = True
                self._events.append(CallEnded(call.call_id, "no_ack"))
                self._send_bye(call, now)
            if call.expires_at is not None and now >= call.expires_at and not call.ended:
                # The caller's side stopped refreshing the session: it is gone.
                call.ended = True
                self._events.append(CallEnded(call.call_id, "session_expired"))
                self._send_bye(call, now)
            if invite_tx.terminated and (call.ended or not call.established):
                del self._calls[call.call_id]
        for request in list(self._requests):
            request.handle_timeout(now, self._out)
            if request.done:
                self._requests.remove(request)
                if (call_id := self._refers.pop(request.branch, None)) is not None:
                    self._events.append(TransferAnswered(call_id, 408))  # Timer F

    # -- the application's side -----------------------------------------------------------

    def answer(self, call_id: str, rtp_port: int, now: float) -> sdp.Answer:
        """Answer an offered call with 200 OK and our SDP (RTP on ``rtp_port``)."""
        call = self._require(call_id)
        answer = sdp.answer(
            call.offer,
            address=self.config.advertise_host,
            port=rtp_port,
            session_id=secrets.randbelow(2**31),
            version=1,
        )
        call.answer, call.rtp_port = answer, rtp_port
        self._respond_invite(call, 200, "OK", now, body=answer.sdp.encode(), sdp_body=True)
        return answer

    def reject(self, call_id: str, status: int, reason: str, now: float) -> None:
        """Refuse an offered call (503 when no RTP port is free, say). A call the caller
        cancelled meanwhile already has its final answer (487): nothing more is sent."""
        call = self._calls.get(call_id)
        if call is None or call.ended or call.invite_tx.status >= 200:
            return
        call.ended = True
        self._respond_invite(call, status, reason, now)

    def hang_up(self, call_id: str, now: float) -> None:
        """The bridge ends the call (the agent said goodbye, the model failed, a timeout):
        BYE, resent until answered."""
        call = self._calls.get(call_id)
        if call is None or call.ended:
            return
        call.ended = True
        self._send_bye(call, now)
        self._forget_if_done(call)

    # -- requests -------------------------------------------------------------------------

    def _receive_request(self, request: SipRequest, source: Address, now: float) -> None:
        via = request.top_via
        method = request.method
        # An ACK for a refused INVITE belongs to the INVITE's transaction (same branch).
        key = tx_key(request, "INVITE" if method == "ACK" else method)
        tx = self._server_tx.get(key)
        if tx is not None:
            if method == "ACK":
                if isinstance(tx, InviteReply):
                    tx.receive_ack(now)
                    self._server_tx.reschedule(key)
            else:
                for data in tx.receive_retransmission(now):
                    self._out.append((data, source))
            return
        call = self._calls.get(request.call_id)
        if call is not None and method == "INVITE" and via.branch == call.invite.top_via.branch:
            for data in call.invite_tx.receive_retransmission(now):
                self._out.append((data, source))
            return
        if method == "ACK":
            self._receive_ack(request, call, now)
        elif method == "INVITE":
            if request.to.tag is None:
                self._receive_invite(request, source, now)
            else:
                self._receive_reinvite(request, call, source, now)
        elif method == "CANCEL":
            self._receive_cancel(request, source, now)
        elif method == "OPTIONS":
            self._reply(request, source, 200, "OK", now, ("Accept", "application/sdp"))
        elif method in ("BYE", "INFO", "UPDATE", "NOTIFY"):
            self._receive_in_dialog(request, call, source, now)
        else:
            self._reply(request, source, 405, "Method Not Allowed", now)

    def _receive_invite(self, request: SipRequest, source: Address, now: float) -> None:
        # The Contact is where every request the bridge sends in this dialog goes (its BYE
        # above all), read long after the INVITE: a malformed one is refused now with 400
        # (the SipParseError), not found out when the call is to be hung up.
        _ = request.contact
        if request.call_id in self._calls:
            # Same Call-ID, another branch and no To tag: a forked or looped copy.
            self._reply(request, source, 482, "Loop Detected", now)
            return
        if (admitted := self._authorised(request, source, now)) is None:
            return
        if unsupported := session_timer.unsupported_requirements(request):
            unsupported_tags = ("Unsupported", ", ".join(unsupported))
            self._reply(request, source, 420, "Bad Extension", now, unsupported_tags)
            return
        timer = session_timer.negotiate(request)
        if isinstance(timer, int):
            self._reply(
                request, source, 422, "Session Interval Too Small", now, ("Min-SE", str(timer))
            )
            return
        full = self.active_calls + self._others_active() >= self.config.max_calls
        if full or not self.accepting or self._overloaded():
            self._reply(
                request,
                source,
                503,
                "Service Unavailable",
                now,
                ("Retry-After", str(RETRY_AFTER_S)),
            )
            return
        if request.content_type != "application/sdp" or not request.body:
            # A late offer (none in the INVITE) is not supported yet.
            self._reply(request, source, 488, "Not Acceptable Here", now)
            return
        try:
            offer = sdp.parse(request.body)
            sdp.answer(offer, address=self.config.advertise_host, port=9, session_id=1, version=1)
        except sdp.SdpError as exc:
            reason = "Not Acceptable Here" if exc.status == 488 else "Bad Request"
            self._reply(request, source, exc.status, reason, now)
            return
        tx = InviteServerTransaction(now, reliable=self._reliable, timers=self.config.timers)
        call = _Call(request.call_id, source, request, tx, secrets.token_hex(8), offer)
        call.remote_cseq = request.cseq.number
        call.timer = timer
        self._calls[request.call_id] = call
        if admitted.spent is not None:
            self._spend(admitted.spent, now)
        self._respond_invite(call, 100, "Trying", now)
        self._events.append(
            CallOffered(
                call.call_id,
                source,
                _user_of(request.from_.uri),
                _user_of(request.to.uri),
                offer,
            )
        )

    def _authorised(self, request: SipRequest, source: Address, now: float) -> _Admitted | None:
        """Whether the INVITE may go on; if not (None), the refusal (401 or 403) is sent."""
        if self.allows(source[0]):
            return _Admitted(None)
        config = self.config
        if config.username is None or config.password is None:
            self._reply(request, source, 403, "Forbidden", now)
            return None
        self._forget_spent(now)
        header = request.get("Authorization")
        credentials = digest.parse_authorization(header) if header else None
        result = digest.DigestResult.INVALID
        if credentials is not None:
            result = digest.verify(
                credentials,
                method=request.method,
                username=config.username,
                password=config.password,
                realm=config.realm,
                secret=config.nonce_secret,
                now=now,
            )
        if result is digest.DigestResult.OK:
            assert credentials is not None
            spent = (credentials.nonce, credentials.response.lower())
            if spent not in self._spent:
                return _Admitted(spent)
            result = digest.DigestResult.INVALID  # a copy of a call already taken
        challenge = digest.challenge_headers(
            config.realm, config.nonce_secret, now, stale=result is digest.DigestResult.STALE
        )
        self._reply(request, source, 401, "Unauthorized", now, *challenge)
        return None

    def _spend(self, spent: tuple[str, str], now: float) -> None:
        """Remember a digest response a call was taken with until its nonce is too old to
        pass anyway. The response covers neither the Call-ID nor the SDP, so whoever saw the
        INVITE could otherwise place calls with it, on the bridge's account, for as long as
        the nonce is fresh. A client's own next call counts ``nc`` up or takes a new nonce:
        another response."""
        self._spent[spent] = now + digest.NONCE_MAX_AGE_S + digest.CLOCK_SKEW_S
        if len(self._spent) > MAX_SPENT_RESPONSES:
            del self._spent[next(iter(self._spent))]

    def _forget_spent(self, now: float) -> None:
        # Entries go in as time goes on, so the oldest are first.
        while self._spent and next(iter(self._spent.values())) <= now:
            del self._spent[next(iter(self._spent))]

    def _receive_ack(self, request: SipRequest, call: _Call | None, now: float) -> None:
        if call is None:
            return  # an ACK is never answered
        if call.reinvite is not None and request.cseq.number == call.reinvite[0]:
            tx = call.reinvite[1]
            if isinstance(tx, InviteReply):
                # Its deadline only moves later: the timers find that out themselves.
                tx.receive_ack(now)
            return
        if call.invite_tx.status >= 300 or request.to.tag == call.local_tag:
            call.invite_tx.receive_ack(now)
        if call.invite_tx.outcome is InviteOutcome.ACKED and not call.established:
            call.established = True
            self._events.append(CallEstablished(call.call_id))

    def _receive_cancel(self, request: SipRequest, source: Address, now: float) -> None:
        call = self._calls.get(request.call_id)
        branch = request.top_via.branch
        if call is None or call.invite.top_via.branch != branch:
            self._reply(request, source, 481, "Call/Transaction Does Not Exist", now)
            return
        # The same To tag as the INVITE's answer (RFC 3261 section 9.2): a caller builds
        # its ACK from the latest response, and an ACK with another tag matches nothing.
        self._reply(request, source, 200, "OK", now, to_tag=call.local_tag)
        if call.invite_tx.status < 200:
            call.ended = True
            self._respond_invite(call, 487, "Request Terminated", now)
            self._events.append(CallEnded(call.call_id, "cancelled"))

    def _receive_reinvite(
        self, request: SipRequest, call: _Call | None, source: Address, now: float
    ) -> None:
        if call is None or call.ended or request.to.tag != call.local_tag:
            self._reply(request, source, 481, "Call/Transaction Does Not Exist", now)
            return
        if call.answer is None or not request.body:
            self._reply(request, source, 488, "Not Acceptable Here", now)
            return
        if not self._renegotiate_timer(request, call, source, now):
            return
        try:
            answer = sdp.reanswer(
                request.body, call.answer, address=self.config.advertise_host, port=call.rtp_port
            )
        except sdp.SdpError as exc:
            self._reply(request, source, exc.status, "Not Acceptable Here", now)
            return
        call.answer = answer
        call.reinvite = (
            request.cseq.number,
            self._reply(
                request,
                source,
                200,
                "OK",
                now,
                ("Contact", self._contact()),
                ("Content-Type", "application/sdp"),
                *self._refreshed(call, now),
                body=answer.sdp.encode(),
            ),
        )
        self._events.append(MediaChanged(call.call_id, answer))

    def _renegotiate_timer(
        self, request: SipRequest, call: _Call, source: Address, now: float
    ) -> bool:
        """A refresh may change the interval, or drop the timer (no Session-Expires)."""
        timer = session_timer.negotiate(request)
        if isinstance(timer, int):
            min_se = ("Min-SE", str(timer))
            self._reply(request, source, 422, "Session Interval Too Small", now, min_se)
            return False
        call.timer = timer
        return True

    def _refreshed(self, call: _Call, now: float) -> list[tuple[str, str]]:
        """The session is refreshed by this 2xx: restart its clock; the timer's headers."""
        if call.timer is None:
            call.expires_at = None
            return []
        after = session_timer.expires_after(call.timer)
        call.expires_at = None if after is None else now + after
        return session_timer.response_headers(call.timer)

    def _receive_in_dialog(
        self, request: SipRequest, call: _Call | None, source: Address, now: float
    ) -> None:
        if call is None or request.to.tag != call.local_tag:
            self._reply(request, source, 481, "Call/Transaction Does Not Exist", now)
            return
        if request.cseq.number < call.remote_cseq:
            self._reply(request, source, 500, "Server Internal Error", now)
            return
        call.remote_cseq = request.cseq.number
        refresh: list[tuple[str, str]] = []
        if request.method == "UPDATE" and not call.ended:
            if not self._renegotiate_timer(request, call, source, now):
                return
            refresh = self._refreshed(call, now)
        self._reply(request, source, 200, "OK", now, *refresh)
        if request.method == "BYE" and not call.ended:
            call.ended = True
            self._events.append(CallEnded(call.call_id, "caller_hangup"))
            self._forget_if_done(call)
        elif request.method == "INFO" and request.content_type == "application/dtmf-relay":
            digit = _dtmf_relay_digit(request.body)
            if digit is not None and not call.ended:
                self._events.append(DtmfInfo(call.call_id, digit))

    # -- responses to our BYE ---------------------------------------------------------------

    def _receive_response(self, response: SipResponse, now: float) -> None:
        try:
            branch = response.top_via.branch
        except SipParseError:
            return
        for request in self._requests:
            if request.branch == branch and response.status >= 200:
                request.done = True
                if (call_id := self._refers.pop(branch or "", None)) is not None:
                    self._events.append(TransferAnswered(call_id, response.status))

    # -- building -------------------------------------------------------------------------

    @property
    def _reliable(self) -> bool:
        return self.config.transport.upper() != "UDP"

    def _contact(self) -> str:
        host = self.config.advertise_host
        host = f"[{host}]" if ":" in host else host
        tail = "" if not self._reliable else ";transport=tcp"
        return f"<sip:bridge@{host}:{self.config.port}{tail}>"

    def _respond_invite(
        self,
        call: _Call,
        status: int,
        reason: str,
        now: float,
        *,
        body: bytes = b"",
        sdp_body: bool = False,
    ) -> None:
        extra: list[tuple[str, str]] = [("User-Agent", USER_AGENT)]
        if 200 <= status < 300:
            extra += [("Contact", self._contact()), ("Allow", ALLOW), ("Supported", "timer")]
            extra += self._refreshed(call, now)
        if sdp_body:
            extra.append(("Content-Type", "application/sdp"))
        response = response_for(
            call.invite,
            status,
            reason,
            extra,
            body,
            to_tag=None if status == 100 else call.local_tag,
        )
        for data in call.invite_tx.respond(status, serialize(response), now):
            self._out.append((data, call.source))

    def _reply(
        self,
        request: SipRequest,
        source: Address,
        status: int,
        reason: str,
        now: float,
        *extra: tuple[str, str],
        body: bytes = b"",
        to_tag: str | None = None,
    ) -> ServerTx:
        """A final response through a transaction of its own, so a retransmitted request
        gets the same answer (a BYE resent after its 200 gets the 200, not 481)."""
        headers = [("User-Agent", USER_AGENT), *extra]
        if status == 405 or request.method == "OPTIONS":
            headers.append(("Allow", ALLOW))
        response = response_for(request, status, reason, headers, body, to_tag=to_tag or _new_tag())
        data = serialize(response)
        method = request.method
        if method == "INVITE":
            # A refused INVITE waits for its ACK like any other (Timer G/H).
            tx: ServerTx = InviteReply(now, self._reliable, self.config.timers, source)
        else:
            tx = NonInviteReply(now, self._reliable, self.config.timers, source)
        for out in tx.respond(status, data, now):
            self._out.append((out, source))
        if self._keeps_replies_for(request, source):
            self._server_tx.add(tx_key(request, method), tx)
        return tx

    def _keeps_replies_for(self, request: SipRequest, source: Address) -> bool:
        """Whether a reply is kept, to answer the request's retransmissions (and resent
        until the ACK, for an INVITE). Only for the bridge's own peers and calls: replies
        kept for anyone would let any host fill memory, and make the bridge send each
        refused INVITE's answer up to eleven times to whatever address the datagram claimed
        as its source. A peer refused statelessly just gets the same answer again when it
        retransmits."""
        if len(self._server_tx) >= MAX_KEPT_REPLIES:
            return False
        if request.call_id in self._calls or self.allows(source[0]):
            return True
        return self.has_call_from(source)

    def _reply_or_drop(
        self, request: SipRequest, source: Address, status: int, reason: str
    ) -> None:
        if request.method == "ACK":  # an ACK is never answered
            self.dropped += 1
            return
        try:
            response = response_for(request, status, reason, [("User-Agent", USER_AGENT)])
            self._out.append((serialize(response), source))
        except (SipParseError, LocalProtocolError):
            self.dropped += 1

    def _send_bye(self, call: _Call, now: float) -> None:
        self._send_in_dialog(call, "BYE", [], now)

    def refer(self, call_id: str, target: str, now: float) -> None:
        """Blind transfer (RFC 3515): ask the caller's side to call ``target`` (an E.164
        number, sent as a SIP URI at the caller's host, or a SIP URI). Expect
        :class:`TransferAnswered`; on 2xx, hang up (the caller's side places the new call)."""
        call = self._calls.get(call_id)
        if call is None or call.ended:
            self._events.append(TransferAnswered(call_id, 481))
            return
        uri = target
        if not target.startswith(("sip:", "sips:")):
            host = call.source[0]
            uri = f"sip:{target}@{f'[{host}]' if ':' in host else host}"
        extra = [("Refer-To", f"<{uri}>"), ("Referred-By", self._contact())]
        extra.append(("Contact", self._contact()))
        branch = self._send_in_dialog(call, "REFER", extra, now)
        self._refers[branch] = call_id

    def _send_in_dialog(
        self, call: _Call, method: str, extra: list[tuple[str, str]], now: float
    ) -> str:
        call.local_cseq += 1
        branch = "z9hG4bK" + secrets.token_hex(10)
        host = self.config.advertise_host
        host = f"[{host}]" if ":" in host else host
        target = call.invite.contact
        uri = call.invite.get_all("Contact")[0] if target is not None else call.invite.uri
        uri = uri.strip()
        if uri.startswith("<") or ">" in uri:
            uri = uri[uri.find("<") + 1 : uri.find(">")]
        local_from = f"{call.invite.get('To')};tag={call.local_tag}"
        via = f"SIP/2.0/{self.config.transport.upper()} {host}:{self.config.port}"
        headers = [
            ("Via", f"{via};branch={branch}"),
            ("Max-Forwards", "70"),
            ("From", local_from),
            ("To", call.invite.get("From") or ""),
            ("Call-ID", call.call_id),
            ("CSeq", f"{call.local_cseq} {method}"),
            ("User-Agent", USER_AGENT),
            *extra,
        ]
        headers += [("Route", route) for route in call.invite.get_all("Record-Route")]
        data = serialize(SipRequest(method, uri, tuple(headers)))
        self._requests.append(
            NonInviteClientTransaction(
                branch, data, call.source, now, self._reliable, self.config.timers
            )
        )
        self._out.append((data, call.source))
        return branch

    def _forget_if_done(self, call: _Call) -> None:
        # Otherwise the timers forget it once its INVITE transaction has ended.
        if call.invite_tx.terminated:
            self._calls.pop(call.call_id, None)

    def _require(self, call_id: str) -> _Call:
        call = self._calls.get(call_id)
        if call is None or call.ended or call.invite_tx.status >= 200:
            raise LocalProtocolError(f"no offered call {call_id!r} to answer")
        return call


# -- small pieces ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Admitted:
    """An INVITE may go on; with digest, the (nonce, response) to spend if a call is taken."""

    spent: tuple[str, str] | None


def _new_tag() -> str:
    return secrets.token_hex(8)


def _user_of(uri_text: str) -> str:
    """The user part of a From/To URI: the caller's number (``+`` kept), or empty."""
    try:
        return parse_uri(uri_text).user or ""
    except SipParseError:
        return ""


def _dtmf_relay_digit(body: bytes) -> str | None:
    """``Signal=5`` from an ``application/dtmf-relay`` body."""
    for line in body.decode("utf-8", "replace").splitlines():
        name, _, value = line.partition("=")
        if name.strip().lower() == "signal":
            digit = value.strip().upper()
            return digit if len(digit) == 1 and digit in _DIGITS else None
    return None


__all__ = [
    "CallEnded",
    "CallEstablished",
    "CallOffered",
    "DtmfInfo",
    "MediaChanged",
    "SipEvent",
    "SipServer",
    "TransferAnswered",
    "UasConfig",
]
