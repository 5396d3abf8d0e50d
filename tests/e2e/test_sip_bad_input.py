"""Hostile input on the SIP port and a call's RTP port while a good SIP call runs: junk
datagrams, requests cut short or too large, offers with broken SDP, foreign and malformed
RTP. The good call is served to the end; what can be answered gets its 4xx/5xx; nothing
crashes or logs a traceback."""

from __future__ import annotations

import asyncio
import json
import random
import re
import secrets
import time
from collections.abc import Callable
from typing import Any

import httpx

from bridge.codecs.clips import load_clip
from bridge.devtools.fake_script import FakeScript, Reply
from bridge.devtools.ports import free_port
from bridge.protocols.rtp import build_packet, parse_packet
from bridge.protocols.sip.message import SipResponse, parse_message

from .conftest import REVIEW_TOKEN, RunningBridge, fake_server, provider_env
from .test_sip_call import _Inbox, _offer, _request, _response

StartBridge = Callable[[dict[str, str]], RunningBridge]


def _hostile_sip(sip_port: int, my_port: int) -> list[tuple[bytes, int | None]]:
    """(datagram, the status it must get or None for silence)."""
    rng = random.Random(7)
    good_offer = _offer(40000)
    invite = _request("INVITE", sip_port, my_port, "cut@evil", 1, body=good_offer)
    huge = _request("INVITE", sip_port, my_port, "huge@evil", 1, body=good_offer).replace(
        b"Max-Forwards", b"X-Pad: " + b"y" * 9000 + b"\r\nMax-Forwards"
    )
    broken_sdp = _request(
        "INVITE", sip_port, my_port, "sdp@evil", 1, body="v=0\r\nm=audio banana RTP/AVP 0\r\n"
    )
    no_g711 = _request(
        "INVITE", sip_port, my_port, "g729@evil", 1, body=good_offer.replace("AVP 0 101", "AVP 18")
    )
    cases: list[tuple[bytes, int | None]] = [
        (invite[:-30], 400),  # the datagram ends inside its body
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
    sip_port = free_port()
    rtp_low = free_port() & ~1
    async with fake_server("openai", script=script) as fake:
        bridge = bridge_factory(
            provider_env(
                fake,
                "openai",
                BRIDGE_SIP_LISTEN=f"udp:127.0.0.1:{sip_port}",
                BRIDGE_RTP_PORTS=f"{rtp_low}-{rtp_low + 40}",
            )
        )
        loop = asyncio.get_running_loop()
        sip_t, sip = await loop.create_datagram_endpoint(_Inbox, local_addr=("127.0.0.1", 0))
        rtp_t, rtp = await loop.create_datagram_endpoint(_Inbox, local_addr=("127.0.0.1", 0))
        evil_t, evil = await loop.create_datagram_endpoint(_Inbox, local_addr=("127.0.0.1", 0))
        my_sip = sip_t.get_extra_info("sockname")[1]
        my_rtp = rtp_t.get_extra_info("sockname")[1]
        evil_port = evil_t.get_extra_info("sockname")[1]
        target = ("127.0.0.1", sip_port)
        call_id = secrets.token_hex(8) + "@phone"
        hostile = _hostile_sip(sip_port, evil_port)
        try:
            sip_t.sendto(
                _request("INVITE", sip_port, my_sip, call_id, 1, body=_offer(my_rtp)), target
            )
            ok = await _response(sip, 200)
            port = re.search(rb"m=audio (\d+) ", ok.body)
            assert port is not None
            bridge_rtp = ("127.0.0.1", int(port[1]))
            tag = ok.to.tag or ""
            sip_t.sendto(_request("ACK", sip_port, my_sip, call_id, 1, to_tag=tag), target)

            speech = load_clip("caller_1") + b"\xff" * 8000 * 4
            heard: list[bytes] = []
            rng = random.Random(11)
            start = time.monotonic()
            for n in range(len(speech) // 160):
                frame = speech[n * 160 : (n + 1) * 160]
                rtp_t.sendto(build_packet(0, n, n * 160, 0xCAFE, frame), bridge_rtp)
                if n % 5 == 0 and hostile:  # junk on the SIP port, spread over the call
                    evil_t.sendto(hostile.pop(0)[0], target)
                if n % 3 == 0:  # someone else's RTP, and bytes that are not RTP at all
                    evil_t.sendto(build_packet(0, n, n * 160, 0xBAD, b"\x00" * 160), bridge_rtp)
                    rtp_t.sendto(rng.randbytes(rng.randrange(0, 40)), bridge_rtp)
                await asyncio.sleep(max(0.0, start + (n + 1) * 0.02 - time.monotonic()))
                while not rtp.queue.empty():
                    packet = parse_packet(rtp.queue.get_nowait())
                    if packet is not None:
                        heard.append(bytes(packet.payload))
            assert not hostile, "the call was too short to send every hostile message"
            sip_t.sendto(_request("BYE", sip_port, my_sip, call_id, 2, to_tag=tag), target)
            await _response(sip, 200)
            await asyncio.sleep(0.3)
            answers: dict[str, int] = {}
            while not evil.queue.empty():
                message = parse_message(evil.queue.get_nowait())
                if isinstance(message, SipResponse) and message.status >= 200:
                    answers[message.call_id] = message.status
        finally:
            for transport in (sip_t, rtp_t, evil_t):
                transport.close()

        headers = {"Authorization": f"Bearer {REVIEW_TOKEN}"}
        record: dict[str, Any] | None = None
        async with httpx.AsyncClient(headers=headers) as http:
            for _ in range(100):
                calls = (await http.get(f"{bridge.url}/api/calls")).json()["calls"]
                if calls and calls[0]["status"] != "in_progress":
                    record = (
                        await http.get(f"{bridge.url}/api/calls/{calls[0]['call_sid']}")
                    ).json()
                    break
                await asyncio.sleep(0.1)

    # Every answerable request got its error; the rest got silence, not a guess.
    expected = {"cut@evil": 400, "huge@evil": 513, "sdp@evil": 400, "g729@evil": 488}
    assert answers == expected
    # The good call: heard the agent, transcribed both sides, ended by its own BYE.
    assert sum(1 for p in heard if p != b"\xff" * 160) >= 50
    assert record is not None, bridge.log()[-3000:]
    assert (record["status"], record["end_reason"]) == ("completed", "caller_hangup")
    assert [t["text"] for t in record["turns"]] == ["Can you hear me?", "Still here for you."]
    log = bridge.log()
    stats = [json.loads(line) for line in log.splitlines() if '"sip.rtp_stats"' in line]
    assert len(stats) == 1
    assert stats[0]["received_foreign"] > 50 and stats[0]["received_malformed"] > 50
    assert stats[0]["received_lost"] == 0
    assert "Traceback" not in log and '"level": "error"' not in log
