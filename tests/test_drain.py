"""Draining without sockets or processes: the Drain itself, and what a draining app answers
(readiness, Twilio's voice webhook, the outbound API, the metrics). The whole thing, with a
real server, a live call and SIGTERM, is tests/e2e/test_drain.py."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr
from starlette.testclient import TestClient

from bridge.app import create_app
from bridge.devtools.simulator import sign
from bridge.drain import Drain
from bridge.metrics import BridgeMetrics
from bridge.settings import load_settings

TOKEN = "drain-auth-token"
API_TOKEN = "drain-api-token"
PUBLIC = "https://bridge.example.com"
CALL_SID = "CA" + "5" * 32


class FakeCall:
    """A live call that ends, with its record written, some time after being asked to."""

    def __init__(self, drain: Drain, ends_after_s: float | None) -> None:
        self.drain = drain
        self.asked = False
        self.ends_after_s = ends_after_s
        drain.add(self)

    def end_for_shutdown(self) -> None:
        self.asked = True
        asyncio.get_running_loop().call_later(0.05, self.drain.discard, self)

    def hang_up_later(self) -> None:
        if self.ends_after_s is not None:
            asyncio.get_running_loop().call_later(self.ends_after_s, self.drain.discard, self)


async def test_calls_that_end_within_the_drain_are_left_alone() -> None:
    metrics = BridgeMetrics()
    drain = Drain(metrics)
    calls = [FakeCall(drain, ends_after_s=0.1 * n) for n in (1, 2)]
    for call in calls:
        call.hang_up_later()
    assert await drain.run(limit_s=5.0) == 0
    assert drain.draining and not any(call.asked for call in calls)
    assert b"bridge_draining 1.0" in metrics.render()


async def test_calls_still_live_at_the_limit_are_asked_to_end() -> None:
    drain = Drain()
    quick, stubborn = FakeCall(drain, ends_after_s=0.05), FakeCall(drain, ends_after_s=None)
    quick.hang_up_later()
    assert await drain.run(limit_s=0.3, goodbye_wait_s=2.0) == 0
    assert (quick.asked, stubborn.asked) == (False, True)
    assert drain.live_calls == 0


async def test_the_drain_gives_up_on_a_call_that_never_ends() -> None:
    drain = Drain()

    class Deaf:
        def end_for_shutdown(self) -> None:
            pass

    drain.add(Deaf())
    assert await drain.run(limit_s=0.05, goodbye_wait_s=0.1) == 1


async def test_listeners_hear_when_the_drain_begins() -> None:
    drain = Drain()
    heard: list[str] = []
    drain.on_begin(lambda: heard.append("first"))
    drain.begin()
    drain.begin()
    drain.on_begin(lambda: heard.append("late"))  # registered after: told at once
    assert heard == ["first", "late"]


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    app_settings = load_settings(
        database_url=f"sqlite:///{tmp_path / 'calls.db'}",
        public_url=PUBLIC,
        twilio_auth_token=SecretStr(TOKEN),
        twilio_account_sid="AC" + "0" * 32,
        api_token=SecretStr(API_TOKEN),
    )
    with TestClient(create_app(app_settings), base_url=PUBLIC) as test_client:
        yield test_client


def _voice(client: TestClient, query: str = "") -> ET.Element:
    form = {"CallSid": CALL_SID, "From": "+15551230000", "To": "+15557650000"}
    url = PUBLIC + "/twilio/voice" + query
    answer = client.post(
        "/twilio/voice" + query, data=form, headers={"X-Twilio-Signature": sign(TOKEN, url, form)}
    )
    assert answer.status_code == 200, answer.text
    return ET.fromstring(answer.content)


def test_a_draining_bridge_is_not_ready_and_sends_new_callers_elsewhere(
    client: TestClient,
) -> None:
    assert client.get("/readyz").status_code == 200
    assert _voice(client).find("Connect/Stream") is not None

    client.app.state.drain.begin()  # type: ignore[attr-defined]
    assert client.get("/readyz").status_code == 503
    assert client.get("/healthz").status_code == 200  # alive: not to be restarted
    # First, back through the public URL, where the load balancer picks a ready bridge.
    first = _voice(client, "?agent=sales")
    assert first.find("Connect") is None
    redirect = first.find("Redirect")
    assert redirect is not None and redirect.get("method") == "POST"
    assert redirect.text == PUBLIC + "/twilio/voice?agent=sales&drained=1"
    # Landing on a draining bridge again: a short sentence and a hang-up, never dead air.
    second = _voice(client, "?agent=sales&drained=1")
    assert second.find("Connect") is None and second.find("Redirect") is None
    say = second.find("Say")
    assert say is not None and "call again" in (say.text or "")
    assert second.find("Hangup") is not None
    metrics = client.get("/metrics").text
    assert "bridge_draining 1.0" in metrics


def test_a_draining_bridge_places_no_outbound_calls(client: TestClient) -> None:
    client.app.state.drain.begin()  # type: ignore[attr-defined]
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    answer = client.post("/api/calls", json={"to": "+15557650000"}, headers=headers)
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "5"
    # Still authenticated first: without the token it reveals nothing.
    assert client.post("/api/calls", json={"to": "+15557650000"}).status_code == 401
