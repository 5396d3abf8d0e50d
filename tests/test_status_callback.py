"""``POST /twilio/status``: Twilio's word that a call is over finalizes its record, once,
unless a live session serves the call: that session knows best why the call ended.

This is what ends a call whose bridge lost it before Twilio hung up: the callback may land on
any instance. The app runs in process with its real lifespan and a SQLite file.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import SecretStr
from starlette.testclient import TestClient

from bridge.app import create_app
from bridge.devtools.simulator import sign
from bridge.settings import load_settings
from bridge.storage import CallRecord, Instance, NewCall, sqlite_store

TOKEN = "status-callback-auth-token"
PUBLIC = "https://bridge.example.com"
URL = PUBLIC + "/twilio/status"


async def _create(db: Path, *sids: str, lease: bool = False) -> None:
    # With ``lease``, the calls live on another instance with a fresh lease: its sessions
    # decide how they end. Without, they belong to an instance that holds no lease (gone).
    name = "elsewhere" if lease else "gone"
    store = sqlite_store(str(db), instance=Instance(name, "other-host", 4242))
    await store.open()
    if lease:
        await store.renew_lease(datetime.now(UTC))
    for sid in sids:
        await store.create_call(
            NewCall(
                sid,
                "MZ" + sid[2:],
                "+1555",
                "+1666",
                "openai",
                "gpt-realtime",
                datetime(2026, 11, 21, 10, tzinfo=UTC),
            )
        )
    await store.close()


async def _read(db: Path, sid: str) -> CallRecord | None:
    store = sqlite_store(str(db))
    await store.open()
    try:
        return await store.get_call(sid)
    finally:
        await store.close()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "calls.db"
    asyncio.run(_create(path, "CAlive", lease=True))
    return path


@pytest.fixture
def client(db: Path) -> Iterator[TestClient]:
    settings = load_settings(
        database_url=f"sqlite:///{db}",
        public_url=PUBLIC,
        twilio_auth_token=SecretStr(TOKEN),
        twilio_account_sid="AC" + "0" * 32,
    )
    with TestClient(create_app(settings), base_url=PUBLIC) as test_client:
        yield test_client


def _post(client: TestClient, params: dict[str, str], token: str = TOKEN) -> int:
    headers = {"X-Twilio-Signature": sign(token, URL, params)}
    return client.post("/twilio/status", data=params, headers=headers).status_code


def _create_here(client: TestClient, sid: str) -> None:
    """A call of the app's own instance, with no live session: its bridge lost it."""
    call = NewCall(
        sid, "MZ" + sid[2:], "+1555", "+1666", "openai", "gpt-realtime", datetime.now(UTC)
    )
    assert client.portal is not None
    client.portal.call(client.app.state.store.create_call, call)  # type: ignore[attr-defined]


def test_signed_callback_finalizes_once_however_often_it_comes(
    client: TestClient, db: Path
) -> None:
    _create_here(client, "CAgone")
    params = {"CallSid": "CAgone", "CallStatus": "completed", "AccountSid": "AC" + "0" * 32}
    assert _post(client, params) == 204
    first = asyncio.run(_read(db, "CAgone"))
    assert first is not None
    assert (first.status.value, first.end_reason) == ("completed", "caller_hangup")
    for _ in range(3):  # Twilio retries, a second instance gets the same callback
        assert _post(client, params) == 204
    assert _post(client, {**params, "CallStatus": "failed"}) == 204
    again = asyncio.run(_read(db, "CAgone"))
    assert again == first  # same status, reason and end time: one finish


def test_a_call_with_a_live_session_here_is_left_to_that_session(
    client: TestClient, db: Path
) -> None:
    # The callback can land before the session has written why the call ended (a provider
    # failure, say): the session's reason must win.
    _create_here(client, "CAhere")
    client.app.state.session_deps.live_calls.add("CAhere")  # type: ignore[attr-defined]
    assert _post(client, {"CallSid": "CAhere", "CallStatus": "completed"}) == 204
    record = asyncio.run(_read(db, "CAhere"))
    assert record is not None and record.status.value == "in_progress"


def test_a_call_live_on_another_instance_is_finished_only_after_a_grace_period(
    client: TestClient, db: Path
) -> None:
    client.app.state.owner_grace_s = 0.5  # type: ignore[attr-defined]
    assert _post(client, {"CallSid": "CAlive", "CallStatus": "completed"}) == 204
    record = asyncio.run(_read(db, "CAlive"))
    assert record is not None and record.status.value == "in_progress"
    deadline = time.monotonic() + 10
    while record.status.value == "in_progress" and time.monotonic() < deadline:
        time.sleep(0.1)
        record = asyncio.run(_read(db, "CAlive"))
        assert record is not None
    # Its session never wrote an end (it died with its writes): Twilio's word stands.
    assert (record.status.value, record.end_reason) == ("completed", "caller_hangup")


def test_a_call_that_never_connected_is_failed(client: TestClient, db: Path) -> None:
    _create_here(client, "CAbusy")
    assert _post(client, {"CallSid": "CAbusy", "CallStatus": "busy"}) == 204
    record = asyncio.run(_read(db, "CAbusy"))
    assert record is not None and record.status.value == "failed"


def test_interim_statuses_and_unknown_calls_change_nothing(client: TestClient, db: Path) -> None:
    assert _post(client, {"CallSid": "CAlive", "CallStatus": "in-progress"}) == 204
    record = asyncio.run(_read(db, "CAlive"))
    assert record is not None and record.status.value == "in_progress"
    assert _post(client, {"CallSid": "CAnever", "CallStatus": "completed"}) == 204
    assert asyncio.run(_read(db, "CAnever")) is None


def test_unsigned_or_forged_callbacks_finalize_nothing(client: TestClient, db: Path) -> None:
    params = {"CallSid": "CAlive", "CallStatus": "completed"}
    assert client.post("/twilio/status", data=params).status_code == 403
    assert _post(client, params, token="not-the-auth-token") == 403
    record = asyncio.run(_read(db, "CAlive"))
    assert record is not None and record.status.value == "in_progress"
