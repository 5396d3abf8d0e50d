"""Who keeps a TCP connection to the SIP listener when many arrive: real sockets on loopback,
outsiders connecting from other 127/8 addresses than the one ``BRIDGE_SIP_ALLOW`` names."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest

from bridge.adapters import sip_transport
from bridge.adapters.sip_transport import TcpSipListener
from bridge.devtools.ports import free_port
from bridge.protocols.sip.uas import SipServer, UasConfig

PBX = "127.0.0.1"


class Client(asyncio.Protocol):
    def __init__(self) -> None:
        self.closed = asyncio.Event()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()


async def _connect(port: int, source: str) -> tuple[asyncio.Transport, Client]:
    loop = asyncio.get_running_loop()
    client = Client()
    transport, _ = await loop.create_connection(
        lambda: client, "127.0.0.1", port, local_addr=(source, 0)
    )
    return transport, client


async def _closed_by_the_bridge(client: Client, wait_s: float = 5.0) -> bool:
    try:
        await asyncio.wait_for(client.closed.wait(), wait_s)
    except TimeoutError:
        return False
    return True


async def _kept(client: Client) -> bool:
    # A refusal comes at once (the connection is aborted as it is accepted).
    return not await _closed_by_the_bridge(client, 0.3)


async def test_no_outsider_takes_every_slot_and_the_pbx_always_gets_in(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sip_transport, "MAX_TCP_CONNECTIONS", 6)
    monkeypatch.setattr(sip_transport, "MAX_TCP_PER_OUTSIDER", 4)
    config = UasConfig(
        advertise_host=PBX, port=5060, transport="TCP", allow=(ipaddress.ip_network(PBX),)
    )
    listener = TcpSipListener(SipServer(config), lambda listener, event: None)
    port = free_port()
    await listener.start("127.0.0.1", port)
    opened: list[asyncio.Transport] = []
    try:
        # One outsider host: four connections, then no more.
        scanner = [await _connect(port, "127.0.0.2") for _ in range(5)]
        opened += [t for t, _ in scanner]
        assert [await _kept(c) for _, c in scanner[:4]] == [True] * 4
        assert await _closed_by_the_bridge(scanner[4][1])
        # Other outsiders fill the listener; past the limit they are turned away.
        others = [await _connect(port, f"127.0.0.{n}") for n in (3, 4, 5)]
        opened += [t for t, _ in others]
        assert [await _kept(c) for _, c in others[:2]] == [True, True]
        assert await _closed_by_the_bridge(others[2][1])
        assert len(listener.connections) == 6
        # The PBX still gets in: the outsider idle longest makes room.
        pbx, pbx_client = await _connect(port, PBX)
        opened.append(pbx)
        assert await _kept(pbx_client)
        assert await _closed_by_the_bridge(scanner[0][1])
        assert sorted(host for host, _ in listener.connections) == [
            "127.0.0.1",
            *["127.0.0.2"] * 3,
            "127.0.0.3",
            "127.0.0.4",
        ]
    finally:
        for transport in opened:
            transport.close()
        listener.close()
