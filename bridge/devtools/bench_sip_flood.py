"""What a flood of SIP requests costs per datagram as it goes on, as printed figures.

One :class:`~bridge.protocols.sip.uas.SipServer` is fed OPTIONS requests with a new branch
each, as a scanner or a forged flood sends them, first from a host outside the allow-list,
then from an allowed peer. Each datagram gets what a listener gives it: parsing, matching,
the reply, the timer re-armed (and run when due). The clock moves at ``rate`` datagrams a
second, so a flood longer than 32 s sees its first replies expire. After each block: CPU µs
per datagram and the replies held. The floor, measured in the same run, is parsing alone.

A cost per datagram that grows as the flood goes on is a flood that stalls every call on
the event loop: the listener runs on the same loop as the calls.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from bridge.protocols.sip.message import parse_message
from bridge.protocols.sip.uas import SipServer, UasConfig

__all__ = ["FloodReport", "format_sip_flood", "run_sip_flood"]

ALLOWED = ("127.0.0.1", 5060)
OUTSIDER = ("198.51.100.7", 5060)


@dataclass(frozen=True, slots=True)
class FloodRun:
    who: str
    us_per_datagram: list[float]  # one per block
    held: list[int]  # replies held after each block


@dataclass(frozen=True, slots=True)
class FloodReport:
    datagrams: int
    blocks: int
    rate: float
    runs: list[FloodRun]  # the outsider, the allowed peer, parsing alone


def _options(n: int, host: str) -> bytes:
    return (
        "OPTIONS sip:agent@127.0.0.1:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {host}:5060;branch=z9hG4bK-flood-{n}\r\n"
        f"From: <sip:scan@{host}>;tag=f{n}\r\nTo: <sip:agent@127.0.0.1>\r\n"
        f"Call-ID: flood-{n}@{host}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def _flood(
    who: str, source: tuple[str, int] | None, datagrams: int, blocks: int, rate: float
) -> FloodRun:
    server = SipServer(UasConfig(advertise_host="127.0.0.1", port=5060))
    per_block = datagrams // blocks
    host = (source or OUTSIDER)[0]
    messages = [_options(n, host) for n in range(per_block * blocks)]
    costs: list[float] = []
    held: list[int] = []
    now = 1000.0
    step = 1.0 / rate
    for block in range(blocks):
        chunk = messages[block * per_block : (block + 1) * per_block]
        began = time.process_time()
        for data in chunk:
            if source is None:
                parse_message(data)
            else:
                server.receive_datagram(data, source, now)
                server.datagrams_to_send()
                server.events_received()
                deadline = server.next_deadline()
                if deadline is not None and deadline <= now:
                    server.handle_timeout(now)
            now += step
        costs.append((time.process_time() - began) / len(chunk) * 1e6)
        held.append(server.kept_replies)
    return FloodRun(who, costs, held)


def run_sip_flood(datagrams: int = 60_000, blocks: int = 6, rate: float = 2000.0) -> FloodReport:
    runs = [
        _flood("from outside BRIDGE_SIP_ALLOW", OUTSIDER, datagrams, blocks, rate),
        _flood("from an allowed peer", ALLOWED, datagrams, blocks, rate),
        _flood("parsing alone (floor)", None, datagrams, blocks, rate),
    ]
    return FloodReport(datagrams, blocks, rate, runs)


def format_sip_flood(report: FloodReport) -> str:
    per_block = report.datagrams // report.blocks
    lines = [
        f"SIP flood: {per_block * report.blocks:,} OPTIONS with a new branch each, "
        f"{report.rate:,.0f} a simulated second, in {report.blocks} blocks of {per_block:,}",
        "CPU µs per datagram by block, then replies held after the last block",
    ]
    floor = report.runs[-1].us_per_datagram
    for run in report.runs:
        costs = " ".join(f"{c:7.1f}" for c in run.us_per_datagram)
        lines.append(f"  {run.who:<30} {costs}   held {run.held[-1]:,}")
    for run in report.runs[:-1]:
        first, last = run.us_per_datagram[0], run.us_per_datagram[-1]
        lines.append(
            f"  {run.who}: last block / first {last / first:.2f}x, "
            f"last block / floor {last / floor[-1]:.1f}x"
        )
    return "\n".join(lines)
