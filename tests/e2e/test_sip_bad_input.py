"""Hostile input on the SIP port and a call's RTP port while a good SIP call runs: junk
datagrams, requests cut short or too large, offers with broken SDP, foreign and malformed
RTP. The good call is served to the end; what can be answered gets its 4xx/5xx; nothing
crashes or logs a traceback."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable

from bridge.codecs.clips import load_clip
from bridge.devtools.fake_script import FakeScript, Reply
from bridge.protocols.rtp import build_packet
from bridge.protocols.sip.message import SipResponse, parse_message

from .conftest import RunningBridge, fake_server
from .raw_sip import SILENCE, Inbox, RawPhone, finished_record, offer, request, sip_env

StartBridge = Callable[[dict[str, str]], RunningBridge]


def _hostile_sip(sip_port: int, my_port: int) -> list[tuple[bytes, int | None]]:
    """(datagram, the status it must get or None for silence)."""
    rng = random.Random(7)
    good_offer = offer(40000)
    invite = request("INVITE", sip_port, my_port, "cut@evil", 1, body=good_offer)
    huge = request("INVITE", sip_port, my_port, "huge@evil", 1, body=good_offer).replace(
        b"Max-Forwards", b"X-Pad: " + b"y" * 9000 + b"\r\nMax-Forwards"
    )
    broken_sdp = request(
        "INVITE", sip_port, my_port, "sdp@evil", 1, body="v=0\r\nm=audio banana RTP/AVP 0\r\n"
    )
    no_g711 = request(
        "INVITE", sip_port, my_port, "g729@evil", 1, body=good_offer.replace("AVP 0 101", "AVP 18")
    )
    # Every request the bridge would send in the dialog (its BYE) goes to the Contact.
    unreachable = request("INVITE", sip_port, my_port, "contact@evil", 1, body=good_offer)
    unreachable = unreachable.replace(b"Contact: <sip:phone@127.0.0.1:", b"Contact: <tel:")
    # Media on IPv6 for a bridge whose RTP is on IPv4: its RTP could never leave.
    ipv6_offer = good_offer.replace("IN IP4 127.0.0.1", "IN IP6 ::1")
    ipv6 = request("INVITE", sip_port, my_port, "ipv6@evil", 1, body=ipv6_offer)
    cases: list[tuple[bytes, int | None]] = [
        (invite[:-30], 400),  # the datagram ends inside its body
        (ipv6, 488),
        (unreachable, 400),
        (huge, 513),
        (broken_sdp, 400),
        (no_g711, 488),
        (invite[:70], None),  # cut inside the headers: nothing to answer
        (b"\x00" * 1200, None),
        (b"SIP/2.0 200 OK\r\n\r\n", None),  # a response to nothing
    ]
    cases += [(rng.randbytes(rng.randrange(1, 1400)), None) for _ in range(40)]
    return cases


async def test_a_good_call_is_served_while_junk_arrives_on_every_port(
    bridge_factory: StartBridge,
) -> None:
    script = FakeScript(
        replies=[Reply("Still here for you.", duration_ms=1500)],
        caller_transcripts=["Can you hear me?"],
    )
    async with fake_server("openai", script=script) as fake:
        env, sip_port = sip_env(fake)
        bridge = bridge_factory(env)
        phone, evil = RawPhone(sip_port), Inbox()
        await phone.open()
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: evil, local_addr=("127.0.0.1", 0))
        assert evil.transport is not None and phone.rtp.transport is not None
        evil_t, rtp_t = evil.transport, phone.rtp.transport
        target = ("127.0.0.1", sip_port)
        hostile = _hostile_sip(sip_port, evil_t.get_extra_info("sockname")[1])
        rng = random.Random(11)

        def junk(n: int) -> None:
            if n % 5 == 0 and hostile:  # junk on the SIP port, spread over the call
                evil_t.sendto(hostile.pop(0)[0], target)
            if n % 3 == 0:  # someone else's RTP, and bytes that are not RTP at all
                evil_t.sendto(build_packet(0, n, n * 160, 0xBAD, SILENCE), phone.bridge_rtp)
                rtp_t.sendto(rng.randbytes(rng.randrange(0, 40)), phone.bridge_rtp)

        try:
            await phone.dial()
            heard: list[bytes] = []
            await phone.talk(load_clip("caller_1") + SILENCE * 200, heard, junk)
            assert not hostile, "the call was too short to send every hostile message"
            await phone.hang_up()
            await asyncio.sleep(0.3)
            answers: dict[str, int] = {}
            while not evil.queue.empty():
                message = parse_message(evil.queue.get_nowait())
                if isinstance(message, SipResponse) and message.status >= 200:
                    answers[message.call_id] = message.status
        finally:
            phone.close()
            evil_t.close()
        record = await finished_record(bridge)

    # Refused offers cost nothing: the good call is the only model session opened.
    assert len(fake.sessions) == 1
    # Every answerable request got its error; the rest got silence, not a guess.
    expected = {
        "cut@evil": 400,
        "contact@evil": 400,
        "huge@evil": 513,
        "sdp@evil": 400,
        "g729@evil": 488,
        "ipv6@evil": 488,
    }
    assert answers == expected
    # The good call: heard the agent, transcribed both sides, ended by its own BYE.
    assert sum(1 for p in heard if p != SILENCE) >= 50
    assert record is not None, bridge.log()[-3000:]
    assert (record["status"], record["end_reason"]) == ("completed", "caller_hangup")
    assert [t["text"] for t in record["turns"]] == ["Can you hear me?", "Still here for you."]
    log = bridge.log()
    stats = [json.loads(line) for line in log.splitlines() if '"sip.rtp_stats"' in line]
    assert len(stats) == 1
    assert stats[0]["received_foreign"] > 50 and stats[0]["received_malformed"] > 50
    assert stats[0]["received_lost"] == 0
    assert "Traceback" not in log and '"level": "error"' not in log
