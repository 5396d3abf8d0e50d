"""The JSON call log over HTTP: who may read it, and what they get."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.testclient import TestClient

from bridge.call.records import CallEvent, CallStatus, EndReason, Role, Turn
from bridge.review import review_access_allowed, review_api_routes
from bridge.settings import load_settings
from bridge.storage import CallStore, NewCall, sqlite_store

T0 = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
TOKEN = "s3cret-review-token"
LOOPBACK = ("127.0.0.1", 50123)
REMOTE = ("203.0.113.9", 50123)


async def _seed(store: CallStore) -> None:
    await store.open()
    for n in range(1, 6):
        sid = f"CA000{n}"
        await store.create_call(
            NewCall(sid, f"MZ000{n}", "+15551230000", "+15557650000", "openai", "gpt-realtime",
                    T0 + timedelta(minutes=n))
        )  # fmt: skip
    await store.append_turn("CA0001", Turn(1, Role.CALLER, "Hi, a table please.", 1020, 2700))
    await store.append_turn(
        "CA0001",
        Turn(2, Role.AGENT, "Sure! For how", 3100, 4900, True, "Sure! For how many people?"),
    )
    await store.append_event("CA0001", CallEvent("barge_in", 4900))
    await store.finish_call(
        "CA0001", CallStatus.COMPLETED, EndReason.CALLER_HANGUP, T0 + timedelta(minutes=3)
    )


def _app(store: CallStore, token: str | None) -> Starlette:
    app = Starlette(routes=review_api_routes())
    app.state.store = store
    app.state.settings = load_settings(review_token=None if token is None else SecretStr(token))
    return app


@pytest.fixture
def store() -> Iterator[CallStore]:
    # The store is not tied to a loop: seed it here, let the test client's loop read it.
    store = sqlite_store(":memory:")
    asyncio.run(_seed(store))
    try:
        yield store
    finally:
        asyncio.run(store.close())


def client(store: CallStore, token: str | None, address: tuple[str, int] = REMOTE) -> TestClient:
    return TestClient(_app(store, token), client=address)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- access -------------------------------------------------------------------------------


def test_right_bearer_token_reads_from_anywhere(store: CallStore) -> None:
    with client(store, TOKEN, REMOTE) as http:
        response = http.get("/api/calls", headers=bearer(TOKEN))
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    assert len(response.json()["calls"]) == 5


@pytest.mark.parametrize(
    "headers",
    [
        {},
        bearer("wrong"),
        bearer(TOKEN + "x"),
        bearer(TOKEN[:-1]),
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
        {"Authorization": "Bearer "},
        {"Authorization": "Bearer s3crét".encode()},
    ],
)
@pytest.mark.parametrize("path", ["/api/calls", "/api/calls/CA0001", "/api/calls/CA9999"])
def test_without_the_right_token_nothing_is_revealed(
    store: CallStore, headers: dict[str, str | bytes], path: str
) -> None:
    # Loopback does not help once a token is configured.
    with client(store, TOKEN, LOOPBACK) as http:
        response = http.get(path, headers=headers)
    assert response.status_code == 401
    assert response.json() == {"error": "unauthorized"}
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.headers["cache-control"] == "no-store"


def test_bearer_scheme_is_case_insensitive(store: CallStore) -> None:
    with client(store, TOKEN) as http:
        response = http.get("/api/calls", headers={"Authorization": f"bearer {TOKEN}"})
    assert response.status_code == 200


@pytest.mark.parametrize("address", [LOOPBACK, ("127.8.9.10", 1), ("::1", 1)])
def test_without_token_loopback_may_read(store: CallStore, address: tuple[str, int]) -> None:
    with client(store, None, address) as http:
        assert http.get("/api/calls").status_code == 200
        assert http.get("/api/calls/CA0001").status_code == 200


@pytest.mark.parametrize(
    "address", [REMOTE, ("10.0.0.5", 1), ("2001:db8::1", 1), ("testclient", 50000)]
)
def test_without_token_others_may_not(store: CallStore, address: tuple[str, int]) -> None:
    with client(store, None, address) as http:
        listing = http.get("/api/calls")
        one = http.get("/api/calls/CA0001")
    assert listing.status_code == one.status_code == 401
    assert one.json() == {"error": "unauthorized"}


def _request(client_addr: tuple[str, int] | None, headers: dict[str, str]) -> Request:
    return Request(
        {
            "type": "http",
            "method": "GET",
            "path": "/api/calls",
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
            "client": client_addr,
        }
    )


def test_access_rule_directly() -> None:
    token = SecretStr(TOKEN)
    assert review_access_allowed(_request(REMOTE, bearer(TOKEN)), token)
    assert not review_access_allowed(_request(LOOPBACK, {}), token)
    assert review_access_allowed(_request(LOOPBACK, {}), None)
    assert review_access_allowed(_request(("::ffff:127.0.0.1", 1), {}), None)
    assert not review_access_allowed(_request(None, {}), None)
    assert not review_access_allowed(_request(("::ffff:192.0.2.1", 1), {}), None)
    # An empty token is no token: it must not let an empty bearer in from afar.
    assert not review_access_allowed(_request(REMOTE, {"Authorization": "Bearer "}), SecretStr(""))
    assert review_access_allowed(_request(LOOPBACK, {}), SecretStr(""))


# -- what is read -------------------------------------------------------------------------


def test_list_is_newest_first_in_summary_shape(store: CallStore) -> None:
    with client(store, None, LOOPBACK) as http:
        calls = http.get("/api/calls").json()["calls"]
    assert [c["call_sid"] for c in calls] == ["CA0005", "CA0004", "CA0003", "CA0002", "CA0001"]
    oldest = calls[-1]
    assert oldest == {
        "call_sid": "CA0001",
        "stream_sid": "MZ0001",
        "from": "+15551230000",
        "to": "+15557650000",
        "provider": "openai",
        "model": "gpt-realtime",
        "started_at": "2026-11-21T10:01:00.000Z",
        "ended_at": "2026-11-21T10:03:00.000Z",
        "status": "completed",
        "end_reason": "caller_hangup",
        "channel": "twilio",
        "agent": "default",
        "duration_ms": 120_000,
        "turn_count": 2,
    }
    assert "turns" not in calls[0] and "events" not in calls[0]


def test_limit_and_before_page_through(store: CallStore) -> None:
    with client(store, None, LOOPBACK) as http:
        first = http.get("/api/calls", params={"limit": 2}).json()["calls"]
        assert [c["call_sid"] for c in first] == ["CA0005", "CA0004"]
        second = http.get(
            "/api/calls", params={"limit": 2, "before": first[-1]["started_at"]}
        ).json()["calls"]
        assert [c["call_sid"] for c in second] == ["CA0003", "CA0002"]
        # An offset in the timestamp is honoured; a bare one is read as UTC.
        offset = http.get("/api/calls", params={"before": "2026-11-21T11:02:30+01:00"})
        assert [c["call_sid"] for c in offset.json()["calls"]] == ["CA0002", "CA0001"]
        bare = http.get("/api/calls", params={"before": "2026-11-21T10:02:30"})
        assert [c["call_sid"] for c in bare.json()["calls"]] == ["CA0002", "CA0001"]
        assert http.get("/api/calls", params={"limit": 200}).status_code == 200


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "0"},
        {"limit": "201"},
        {"limit": "-1"},
        {"limit": "ten"},
        {"limit": ""},
        {"limit": "2.5"},
        {"before": "yesterday"},
        {"before": ""},
        {"before": "2026-13-01T00:00:00Z"},
    ],
)
def test_bad_parameters_are_400(store: CallStore, params: dict[str, str]) -> None:
    with client(store, None, LOOPBACK) as http:
        response = http.get("/api/calls", params=params)
    assert response.status_code == 400
    body = response.json()
    assert list(body) == ["error"] and body["error"]
    assert response.headers["cache-control"] == "no-store"


def test_one_call_in_record_shape(store: CallStore) -> None:
    with client(store, TOKEN) as http:
        response = http.get("/api/calls/CA0001", headers=bearer(TOKEN))
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert list(body) == [
        "call_sid", "stream_sid", "from", "to", "provider", "model", "started_at",
        "ended_at", "status", "end_reason", "channel", "agent", "providers", "turns", "events",
    ]  # fmt: skip
    assert body["turns"] == [
        {"seq": 1, "role": "caller", "text": "Hi, a table please.", "start_ms": 1020,
         "end_ms": 2700},
        {"seq": 2, "role": "agent", "text": "Sure! For how", "start_ms": 3100, "end_ms": 4900,
         "interrupted": True, "full_text": "Sure! For how many people?"},
    ]  # fmt: skip
    assert body["events"] == [{"type": "barge_in", "at_ms": 4900}]


def test_live_call_has_null_end(store: CallStore) -> None:
    with client(store, None, LOOPBACK) as http:
        body = http.get("/api/calls/CA0004").json()
    assert body["status"] == "in_progress"
    assert body["ended_at"] is None and body["end_reason"] is None
    assert body["turns"] == [] and body["events"] == []


def test_missing_call_is_404(store: CallStore) -> None:
    with client(store, TOKEN) as http:
        response = http.get("/api/calls/CA9999", headers=bearer(TOKEN))
    assert response.status_code == 404
    assert response.json() == {"error": "not found"}
    assert response.headers["cache-control"] == "no-store"


def test_only_get(store: CallStore) -> None:
    with client(store, None, LOOPBACK) as http:
        assert http.post("/api/calls").status_code == 405
        assert http.delete("/api/calls/CA0001").status_code == 405


def test_list_takes_the_search_of_the_pages(store: CallStore) -> None:
    with client(store, TOKEN) as http:
        found = http.get("/api/calls", params={"text": "TABLE please"}, headers=bearer(TOKEN))
        assert [c["call_sid"] for c in found.json()["calls"]] == ["CA0001"]
        live = http.get("/api/calls", params={"status": "in_progress", "limit": "2"},
                        headers=bearer(TOKEN))  # fmt: skip
        assert [c["call_sid"] for c in live.json()["calls"]] == ["CA0005", "CA0004"]
        day = http.get("/api/calls", params={"date_from": "2026-11-22"}, headers=bearer(TOKEN))
        assert day.json()["calls"] == []
        nobody = http.get("/api/calls", params={"number": "999"}, headers=bearer(TOKEN))
        assert nobody.json()["calls"] == []
        bad = http.get("/api/calls", params={"date_to": "soon", "status": "x"},
                       headers=bearer(TOKEN))  # fmt: skip
        assert bad.status_code == 400
        assert "YYYY-MM-DD" in bad.json()["error"] and "status" in bad.json()["error"]
