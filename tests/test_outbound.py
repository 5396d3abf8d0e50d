"""Outbound calls: ``POST /api/calls`` and ``bridge call`` against a fake Twilio REST API.

The API runs in process (``httpx.ASGITransport``) with the fake behind an
``httpx.MockTransport``; ``bridge call`` runs in a child process against the fake served on
a real 127.0.0.1 port. Every refusal is checked to have sent nothing to Twilio: placing a
call costs money.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog.testing
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.testclient import TestClient

from bridge.adapters.twilio_rest import TwilioRestError, create_call, last_digits
from bridge.app import create_app
from bridge.outbound import MAX_BODY_BYTES, TokenBucket
from bridge.settings import load_settings
from tests.fake_twilio_rest import ACCOUNT_SID, AUTH_TOKEN, FakeTwilioRest, serving

API_TOKEN = "outbound-api-token-7c1d"
REVIEW_TOKEN = "review-token-9a2b"
PUBLIC = "https://bridge.example.com"
TO = "+15557650000"
FROM = "+15551230000"
CALLS_PATH = f"/2010-04-01/Accounts/{ACCOUNT_SID}/Calls.json"
EVENTS = [
    ("StatusCallbackEvent", "initiated"),
    ("StatusCallbackEvent", "ringing"),
    ("StatusCallbackEvent", "answered"),
    ("StatusCallbackEvent", "completed"),
]


def _app(fake: FakeTwilioRest, **overrides: Any) -> Starlette:
    values: dict[str, Any] = {
        "public_url": PUBLIC,
        "twilio_account_sid": ACCOUNT_SID,
        "twilio_auth_token": SecretStr(AUTH_TOKEN),
        "twilio_api_base": "https://api.twilio.test",
        "api_token": SecretStr(API_TOKEN),
        "review_token": SecretStr(REVIEW_TOKEN),
        "outbound_from": None,
        "database_url": "sqlite:///:memory:",
    }
    values.update(overrides)
    app = create_app(load_settings(**values))
    app.state.outbound_http = httpx.AsyncClient(transport=fake.transport())
    return app


@pytest.fixture
def fake() -> FakeTwilioRest:
    return FakeTwilioRest()


@pytest.fixture
async def app(fake: FakeTwilioRest) -> AsyncIterator[Starlette]:
    app = _app(fake)
    yield app
    await app.state.outbound_http.aclose()


@pytest.fixture
async def api(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with _client(app) as client:
        yield client


def _client(app: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=PUBLIC)


def _auth(token: str = API_TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class Agents:
    """An agent registry as the app may carry it: ``get(name)`` is the agent or ``None``."""

    def __init__(self, *names: str) -> None:
        self.names = set(names)

    def get(self, name: str) -> object | None:
        return object() if name in self.names else None


# (a) a call is placed, with exactly the fields Twilio needs


async def test_a_call_is_placed_with_the_exact_fields(fake: FakeTwilioRest) -> None:
    app = _app(fake)
    app.state.agents = Agents("default", "front-desk")
    async with _client(app) as client:
        response = await client.post(
            "/api/calls",
            headers=_auth(),
            json={
                "to": TO,
                "from": FROM,
                "agent": "front-desk",
                "machine_detection": "DetectMessageEnd",
            },
        )
    assert response.status_code == 201, response.text
    assert response.json() == {"call_sid": fake.created[0]}
    assert response.json()["call_sid"].startswith("CA")
    assert len(fake.requests) == 1
    seen = fake.requests[0]
    assert (seen.method, seen.path, seen.authorized) == ("POST", CALLS_PATH, True)
    assert seen.content_type.startswith("application/x-www-form-urlencoded")
    assert sorted(seen.form) == sorted(
        [
            ("To", TO),
            ("From", FROM),
            ("Url", f"{PUBLIC}/twilio/voice?agent=front-desk"),
            ("Method", "POST"),
            ("StatusCallback", f"{PUBLIC}/twilio/status"),
            ("StatusCallbackMethod", "POST"),
            *EVENTS,
            ("MachineDetection", "DetectMessageEnd"),
        ]
    )
    await app.state.outbound_http.aclose()


async def test_without_agent_or_detection_the_plain_webhook_is_used(
    fake: FakeTwilioRest, api: httpx.AsyncClient
) -> None:
    response = await api.post("/api/calls", headers=_auth(), json={"to": TO, "from": FROM})
    assert response.status_code == 201, response.text
    [seen] = fake.requests
    assert seen.field("Url") == [f"{PUBLIC}/twilio/voice"]
    assert seen.field("MachineDetection") == []
    assert seen.field("StatusCallbackEvent") == [value for _, value in EVENTS]


async def test_the_agent_name_is_url_encoded(fake: FakeTwilioRest) -> None:
    app = _app(fake)
    app.state.agents = Agents("front desk&co")
    async with _client(app) as client:
        response = await client.post(
            "/api/calls", headers=_auth(), json={"to": TO, "from": FROM, "agent": "front desk&co"}
        )
    assert response.status_code == 201, response.text
    assert fake.requests[0].field("Url") == [f"{PUBLIC}/twilio/voice?agent=front+desk%26co"]
    await app.state.outbound_http.aclose()


async def test_an_unknown_agent_is_refused(fake: FakeTwilioRest) -> None:
    app = _app(fake)
    app.state.agents = Agents("default")
    async with _client(app) as client:
        response = await client.post(
            "/api/calls", headers=_auth(), json={"to": TO, "from": FROM, "agent": "nobody"}
        )
    assert response.status_code == 422
    assert "nobody" in response.json()["error"]
    assert fake.requests == []
    await app.state.outbound_http.aclose()


async def test_without_a_registry_only_the_default_agent_exists(
    fake: FakeTwilioRest, api: httpx.AsyncClient
) -> None:
    refused = await api.post(
        "/api/calls", headers=_auth(), json={"to": TO, "from": FROM, "agent": "sales"}
    )
    assert refused.status_code == 422
    assert fake.requests == []
    placed = await api.post(
        "/api/calls", headers=_auth(), json={"to": TO, "from": FROM, "agent": "default"}
    )
    assert placed.status_code == 201
    assert fake.requests[0].field("Url") == [f"{PUBLIC}/twilio/voice?agent=default"]


async def test_from_defaults_to_bridge_outbound_from(fake: FakeTwilioRest) -> None:
    app = _app(fake, outbound_from=FROM)
    async with _client(app) as client:
        response = await client.post("/api/calls", headers=_auth(), json={"to": TO})
    assert response.status_code == 201, response.text
    assert fake.requests[0].field("From") == [FROM]
    await app.state.outbound_http.aclose()


async def test_from_is_required_without_a_default(
    fake: FakeTwilioRest, api: httpx.AsyncClient
) -> None:
    response = await api.post("/api/calls", headers=_auth(), json={"to": TO})
    assert response.status_code == 422
    assert "BRIDGE_OUTBOUND_FROM" in response.json()["error"]
    assert fake.requests == []


# (b) no call without the API token


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Bearer {REVIEW_TOKEN}"},
        {"Authorization": f"Bearer {API_TOKEN}x"},
        {"Authorization": f"Bearer {API_TOKEN[:-1]}"},
        {"Authorization": f"Basic {API_TOKEN}"},
        {"Authorization": API_TOKEN},
        {"Authorization": "Bearer "},
    ],
    ids=["missing", "wrong", "review", "longer", "shorter", "basic", "bare", "empty"],
)
async def test_without_the_api_token_nothing_is_placed(
    fake: FakeTwilioRest, api: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    response = await api.post("/api/calls", headers=headers, json={"to": TO, "from": FROM})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert fake.requests == []


async def test_the_token_is_checked_before_the_body(
    fake: FakeTwilioRest, api: httpx.AsyncClient
) -> None:
    response = await api.post(
        "/api/calls", headers={"Authorization": "Bearer nope"}, content=b"x" * 10_000
    )
    assert response.status_code == 401
    assert fake.requests == []


async def test_an_api_token_equal_to_the_review_token_never_works(fake: FakeTwilioRest) -> None:
    app = _app(fake, review_token=SecretStr(API_TOKEN))
    async with _client(app) as client:
        response = await client.post("/api/calls", headers=_auth(), json={"to": TO, "from": FROM})
    assert response.status_code == 401
    assert fake.requests == []
    await app.state.outbound_http.aclose()


# (c) bad bodies are refused before Twilio hears of them


@pytest.mark.parametrize(
    "to",
    [
        "5557650000",
        "+1 555 765 0000",
        "+1555765000a",
        "+123456",
        "+1234567890123456",
        "+05557650000",
        "+١٥٥٥٧٦٥٠٠٠٠",
        15557650000,
        None,
        "",
    ],
)
async def test_a_number_that_is_not_e164_is_refused(
    fake: FakeTwilioRest, api: httpx.AsyncClient, to: object
) -> None:
    response = await api.post("/api/calls", headers=_auth(), json={"to": to, "from": FROM})
    assert response.status_code == 422
    assert "to" in response.json()["error"]
    assert fake.requests == []


async def test_a_bad_from_is_refused(fake: FakeTwilioRest, api: httpx.AsyncClient) -> None:
    response = await api.post("/api/calls", headers=_auth(), json={"to": TO, "from": "12345"})
    assert response.status_code == 422
    assert "from must be an E.164 number" in response.json()["error"]
    assert fake.requests == []


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"not json", 422),
        (b"[1, 2]", 422),
        (b'{"to": "+15557650000", "from": "+15551230000", "To": "+1"}', 422),
        (b'{"to": "+15557650000", "from": "+15551230000", "machine_detection": "yes"}', 422),
        (b'{"to": "+15557650000", "from": "+15551230000", "agent": 7}', 422),
        (b'{"to": "+15557650000", "from": "+15551230000", "pad": "' + b"x" * 5000 + b'"}', 413),
    ],
    ids=["not-json", "not-object", "unknown-field", "bad-detection", "bad-agent", "too-large"],
)
async def test_bad_bodies_are_refused(
    fake: FakeTwilioRest, api: httpx.AsyncClient, body: bytes, status: int
) -> None:
    response = await api.post(
        "/api/calls", headers={**_auth(), "Content-Type": "application/json"}, content=body
    )
    assert response.status_code == status, response.text
    assert response.json()["error"]
    assert fake.requests == []


async def test_a_body_without_content_length_is_still_capped(
    fake: FakeTwilioRest, api: httpx.AsyncClient
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b" " * (MAX_BODY_BYTES // 4)

    response = await api.post("/api/calls", headers=_auth(), content=chunks())
    assert response.status_code == 413
    assert fake.requests == []


# (d) the rate limit


async def test_the_rate_limit_answers_429_with_retry_after(
    fake: FakeTwilioRest, app: Starlette, api: httpx.AsyncClient
) -> None:
    app.state.outbound_bucket = TokenBucket(burst=2, per_second=0.1)
    body = {"to": TO, "from": FROM}
    statuses = [(await api.post("/api/calls", headers=_auth(), json=body)) for _ in range(3)]
    assert [r.status_code for r in statuses] == [201, 201, 429]
    assert 1 <= int(statuses[2].headers["retry-after"]) <= 10
    assert len(fake.requests) == 2


async def test_the_default_bucket_allows_a_burst_of_ten(
    fake: FakeTwilioRest, api: httpx.AsyncClient
) -> None:
    body = {"to": TO, "from": FROM}
    statuses = [(await api.post("/api/calls", headers=_auth(), json=body)).status_code]
    statuses += [
        (await api.post("/api/calls", headers=_auth(), json=body)).status_code for _ in range(10)
    ]
    assert statuses[:10] == [201] * 10
    assert statuses[10] == 429
    assert len(fake.requests) == 10


def test_the_token_bucket_refills_at_its_rate() -> None:
    now = [100.0]
    bucket = TokenBucket(burst=2, per_second=0.5, clock=lambda: now[0])
    assert bucket.take() == 0
    assert bucket.take() == 0
    assert bucket.take() == pytest.approx(2.0)
    now[0] += 1.0
    assert bucket.take() == pytest.approx(1.0)
    now[0] += 1.0
    assert bucket.take() == 0
    now[0] += 100.0
    assert [bucket.take() == 0 for _ in range(3)] == [True, True, False]


# (e) Twilio's refusals


async def test_a_twilio_refusal_is_a_502_with_its_message(
    fake: FakeTwilioRest, api: httpx.AsyncClient
) -> None:
    fake.error = (
        400,
        {
            "code": 21211,
            "message": "The 'To' number +15557650000 is not a valid phone number.",
            "more_info": "https://www.twilio.com/docs/errors/21211",
            "status": 400,
        },
    )
    with structlog.testing.capture_logs() as logs:
        response = await api.post("/api/calls", headers=_auth(), json={"to": TO, "from": FROM})
    assert response.status_code == 502
    [refused] = [entry for entry in logs if entry["event"] == "outbound.refused"]
    assert (refused["twilio_status"], refused["twilio_code"]) == (400, 21211)
    assert TO not in repr([entry for entry in logs if entry["log_level"] != "debug"])
    reply = response.json()
    assert reply["twilio_message"] == "The 'To' number +15557650000 is not a valid phone number."
    assert reply["twilio_code"] == 21211
    assert "not a valid phone number" in reply["error"]
    assert AUTH_TOKEN not in response.text
    assert len(fake.requests) == 1


async def test_wrong_twilio_credentials_are_a_502(fake: FakeTwilioRest) -> None:
    app = _app(fake, twilio_auth_token=SecretStr("not-the-token"))
    async with _client(app) as client:
        response = await client.post("/api/calls", headers=_auth(), json={"to": TO, "from": FROM})
    assert response.status_code == 502
    assert response.json()["twilio_message"] == "Authenticate"
    assert "not-the-token" not in response.text
    await app.state.outbound_http.aclose()


async def test_unreachable_twilio_is_a_502(fake: FakeTwilioRest) -> None:
    app = _app(fake)

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    app.state.outbound_http = httpx.AsyncClient(transport=httpx.MockTransport(refuse))
    async with _client(app) as client:
        response = await client.post("/api/calls", headers=_auth(), json={"to": TO, "from": FROM})
    assert response.status_code == 502
    assert "could not reach Twilio" in response.json()["error"]
    await app.state.outbound_http.aclose()


async def test_missing_twilio_credentials_are_a_503(fake: FakeTwilioRest) -> None:
    app = _app(fake, twilio_auth_token=None)
    async with _client(app) as client:
        response = await client.post("/api/calls", headers=_auth(), json={"to": TO, "from": FROM})
    assert response.status_code == 503
    assert "TWILIO_AUTH_TOKEN" in response.json()["error"]
    assert fake.requests == []
    await app.state.outbound_http.aclose()


# (g) off without BRIDGE_API_TOKEN


@pytest.mark.parametrize(
    "token", [None, SecretStr(""), SecretStr("  ")], ids=["unset", "empty", "blank"]
)
async def test_without_an_api_token_the_route_is_off(
    fake: FakeTwilioRest, token: SecretStr | None
) -> None:
    app = _app(fake, api_token=token)
    async with _client(app) as client:
        for headers in ({}, _auth(""), _auth(REVIEW_TOKEN)):
            response = await client.post(
                "/api/calls", headers=headers, json={"to": TO, "from": FROM}
            )
            assert response.status_code == 404
    assert fake.requests == []
    await app.state.outbound_http.aclose()


async def test_the_call_log_keeps_get_api_calls(api: httpx.AsyncClient) -> None:
    # Same path, other method: the review API still answers it (401 without its token).
    response = await api.get("/api/calls")
    assert response.status_code == 401
    response = await api.get("/api/calls", headers=_auth())
    assert response.status_code == 401


# the app's lifespan owns the shared client


def test_the_running_app_places_calls_and_closes_its_client(
    fake: FakeTwilioRest, tmp_path: Path
) -> None:
    app = _app(fake, database_url=f"sqlite:///{tmp_path / 'calls.db'}")
    shared = app.state.outbound_http
    with TestClient(app, base_url=PUBLIC) as client:
        response = client.post("/api/calls", headers=_auth(), json={"to": TO, "from": FROM})
        assert response.status_code == 201, response.text
    assert shared.is_closed
    assert len(fake.requests) == 1


# the adapter on its own


async def test_create_call_checks_the_sid_and_never_leaks_the_token() -> None:
    def reply(body: Any, status: int = 201) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=httpx.MockTransport(lambda request: httpx.Response(status, json=body))
        )

    kwargs: dict[str, Any] = {
        "to": TO,
        "from_": FROM,
        "url": f"{PUBLIC}/twilio/voice",
        "status_callback": f"{PUBLIC}/twilio/status",
    }
    for body in ({"sid": "CA123"}, {"sid": "XX" + "0" * 32}, [], {}):
        async with reply(body) as client:
            with pytest.raises(TwilioRestError, match="without a call SID"):
                await create_call(client, "https://t", ACCOUNT_SID, AUTH_TOKEN, **kwargs)
    async with reply({"message": f"echo {AUTH_TOKEN}", "code": 1}, 400) as client:
        with pytest.raises(TwilioRestError) as caught:
            await create_call(client, "https://t", ACCOUNT_SID, AUTH_TOKEN, **kwargs)
    assert AUTH_TOKEN not in str(caught.value)
    assert caught.value.status == 400 and caught.value.code == 1
    text_reply = httpx.AsyncClient(
        transport=httpx.MockTransport(lambda request: httpx.Response(500, text="oops"))
    )
    async with text_reply as client:
        with pytest.raises(TwilioRestError, match=r"HTTP 500"):
            await create_call(client, "https://t", ACCOUNT_SID, AUTH_TOKEN, **kwargs)


async def test_numbers_are_logged_by_their_last_digits_only(
    fake: FakeTwilioRest, api: httpx.AsyncClient
) -> None:
    assert last_digits("+15557650000") == "…0000"
    with structlog.testing.capture_logs() as logs:
        response = await api.post("/api/calls", headers=_auth(), json={"to": TO, "from": FROM})
    assert response.status_code == 201
    [placed] = [entry for entry in logs if entry["event"] == "outbound.placed"]
    assert placed["log_level"] == "info"
    assert placed["call_sid"] == fake.created[0]
    assert placed["agent"] == "default"
    assert placed["to"] == "…0000"
    above_debug = [entry for entry in logs if entry["log_level"] != "debug"]
    assert TO not in repr(above_debug) and FROM not in repr(above_debug)


# (f) bridge call, in its own process, against a real fake server


def _cli_env(base: str, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("BRIDGE_", "TWILIO_", "OPENAI_", "INWORLD_", "AZURE_"))
    }
    env.update(
        {
            "TWILIO_API_BASE": base,
            "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
            "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
            "BRIDGE_PUBLIC_URL": PUBLIC,
            "BRIDGE_LOG_FORMAT": "json",
        }
    )
    env.update(extra)
    return env


async def _bridge_call(env: dict[str, str], cwd: Path, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge",
        "call",
        *args,
        env=env,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_bridge_call_prints_the_call_sid(fake: FakeTwilioRest, tmp_path: Path) -> None:
    async with serving(fake) as base:
        code, out, err = await _bridge_call(
            _cli_env(base),
            tmp_path,
            TO,
            "--from",
            FROM,
            "--agent",
            "front-desk",
            "--machine-detection",
            "Enable",
        )
    assert code == 0, err
    assert out.strip() == fake.created[0]
    [seen] = fake.requests
    assert (seen.path, seen.authorized) == (CALLS_PATH, True)
    assert sorted(seen.form) == sorted(
        [
            ("To", TO),
            ("From", FROM),
            ("Url", f"{PUBLIC}/twilio/voice?agent=front-desk"),
            ("Method", "POST"),
            ("StatusCallback", f"{PUBLIC}/twilio/status"),
            ("StatusCallbackMethod", "POST"),
            *EVENTS,
            ("MachineDetection", "Enable"),
        ]
    )


async def test_bridge_call_uses_bridge_outbound_from(fake: FakeTwilioRest, tmp_path: Path) -> None:
    async with serving(fake) as base:
        code, out, err = await _bridge_call(_cli_env(base, BRIDGE_OUTBOUND_FROM=FROM), tmp_path, TO)
    assert code == 0, err
    assert out.strip() == fake.created[0]
    assert fake.requests[0].field("From") == [FROM]
    assert fake.requests[0].field("Url") == [f"{PUBLIC}/twilio/voice"]


async def test_bridge_call_reports_a_refusal(fake: FakeTwilioRest, tmp_path: Path) -> None:
    fake.error = (400, {"code": 21210, "message": "The source phone number is not verified."})
    async with serving(fake) as base:
        code, out, err = await _bridge_call(_cli_env(base), tmp_path, TO, "--from", FROM)
    assert code == 1
    assert out == ""
    assert "The source phone number is not verified." in err
    assert "21210" in err
    assert AUTH_TOKEN not in err


async def test_bridge_call_refuses_bad_input_without_calling(
    fake: FakeTwilioRest, tmp_path: Path
) -> None:
    async with serving(fake) as base:
        no_from = await _bridge_call(_cli_env(base), tmp_path, TO)
        bad_to = await _bridge_call(_cli_env(base), tmp_path, "5557650000", "--from", FROM)
    assert no_from[0] == 1 and "BRIDGE_OUTBOUND_FROM" in no_from[2]
    assert bad_to[0] == 1 and "E.164" in bad_to[2]
    assert fake.requests == []


async def test_bridge_call_reports_an_unreachable_twilio(tmp_path: Path) -> None:
    from bridge.devtools.ports import free_port

    env = _cli_env(f"http://127.0.0.1:{free_port()}")
    code, out, err = await _bridge_call(env, tmp_path, TO, "--from", FROM)
    assert (code, out) == (1, "")
    assert "could not reach Twilio" in err
    assert AUTH_TOKEN not in err
