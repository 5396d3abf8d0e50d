"""Overload without sockets or processes: when the bridge counts as too far behind to take
a call, and what an overloaded app answers (Twilio's voice webhook, the outbound API, the
metrics, readiness). With a real server whose loop really runs late:
tests/e2e/test_overload.py."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr
from starlette.testclient import TestClient

from bridge.app import create_app
from bridge.devtools.simulator import sign
from bridge.overload import LATE_S, Overload
from bridge.settings import load_settings

TOKEN = "overload-auth-token"
API_TOKEN = "overload-api-token"
PUBLIC = "https://bridge.example.com"
CALL_SID = "CA" + "6" * 32
LATE = LATE_S + 0.05
ON_TIME = 0.002


def test_one_pause_is_not_overload_but_most_recent_readings_late_are() -> None:
    overload = Overload()
    for lag in (ON_TIME, 2.5, ON_TIME, ON_TIME, LATE, ON_TIME):
        overload.observe(lag)
        assert not overload.busy  # a pause now and then, however long, is no load
    overload.observe(LATE)
    assert not overload.busy  # two of the last four
    overload.observe(LATE)
    assert overload.busy  # three of the last four


def test_it_takes_calls_again_only_once_the_loop_has_mostly_caught_up() -> None:
    overload = Overload()
    for _ in range(4):
        overload.observe(LATE)
    assert overload.busy
    overload.observe(ON_TIME)
    overload.observe(ON_TIME)
    assert overload.busy  # two of four still late: not yet
    overload.observe(ON_TIME)
    assert not overload.busy  # one of four
    overload.observe(LATE)
    overload.observe(LATE)
    assert not overload.busy  # no flapping on the edge: three late are needed again
    overload.observe(LATE)
    assert overload.busy


def test_a_reading_at_the_threshold_is_on_time() -> None:
    overload = Overload()
    for _ in range(4):
        overload.observe(LATE_S)
    assert not overload.busy


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


def _overload(client: TestClient, late: bool) -> None:
    # One the app's own loop-lag reader does not feed: its on-time readings would otherwise
    # end the overload within a second and a half, on a slow machine mid-test.
    state = client.app.state  # type: ignore[attr-defined]
    if not hasattr(state, "test_overload"):
        state.test_overload = state.overload = Overload()
    overload: Overload = state.overload
    for _ in range(4):
        overload.observe(LATE if late else ON_TIME)


def _refused(client: TestClient) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith('bridge_requests_rejected_total{reason="overloaded"}'):
            return float(line.split()[-1])
    return 0.0


def test_an_overloaded_bridge_sends_new_callers_elsewhere_then_says_the_lines_are_busy(
    client: TestClient,
) -> None:
    _overload(client, late=True)
    # Still ready: overload is not a deploy; the load balancer keeps it for calls it carries.
    assert client.get("/readyz").status_code == 200
    first = _voice(client, "?agent=sales")
    redirect = first.find("Redirect")
    assert first.find("Connect") is None
    assert redirect is not None and redirect.get("method") == "POST"
    assert redirect.text == PUBLIC + "/twilio/voice?agent=sales&busy=1"
    # Landing on an overloaded bridge again: a short sentence and a hang-up.
    second = _voice(client, "?agent=sales&busy=1")
    assert second.find("Connect") is None and second.find("Redirect") is None
    say = second.find("Say")
    assert say is not None and "busy" in (say.text or "")
    assert second.find("Hangup") is not None
    assert _refused(client) == 2
    # Caught up: the next caller is connected as usual.
    _overload(client, late=False)
    stream = _voice(client).find("Connect/Stream")
    assert stream is not None and stream.get("url", "").endswith("/twilio/media")
    assert _refused(client) == 2


def test_a_forged_webhook_learns_nothing_of_the_overload(client: TestClient) -> None:
    _overload(client, late=True)
    form = {"CallSid": CALL_SID, "From": "+15551230000", "To": "+15557650000"}
    answer = client.post("/twilio/voice", data=form, headers={"X-Twilio-Signature": "forged"})
    assert answer.status_code == 403
    assert _refused(client) == 0


def test_an_overloaded_bridge_places_no_outbound_calls(client: TestClient) -> None:
    _overload(client, late=True)
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    answer = client.post("/api/calls", json={"to": "+15557650000"}, headers=headers)
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "5"
    assert "overloaded" in answer.json()["error"]
    # Authenticated first: without the token it reveals nothing.
    assert client.post("/api/calls", json={"to": "+15557650000"}).status_code == 401
    assert _refused(client) == 1
