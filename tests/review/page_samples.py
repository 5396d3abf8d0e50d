"""A small call log for the page tests (a table booking, a failed call, a live one, a
few more for paging) and the app and client to read it through."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from pydantic import SecretStr
from starlette.applications import Starlette

from bridge.call.records import CallEvent, CallStatus, EndReason, Role, Turn
from bridge.review.api import review_api_routes
from bridge.review.pages import review_page_routes
from bridge.settings import load_settings
from bridge.storage import CallStore, NewCall

TOKEN = "table-for-four-token"
LOOPBACK = ("127.0.0.1", 50123)
REMOTE = ("203.0.113.9", 50123)
NIGHT = datetime(2026, 11, 20, 19, 0, tzinfo=UTC)
MORNING = datetime(2026, 11, 21, 8, 0, tzinfo=UTC)
NOON = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


async def seed(store: CallStore) -> None:
    async def call(sid: str, caller: str, started: datetime) -> None:
        await store.create_call(
            NewCall(sid, "MZ" + sid[2:], caller, "+14155550199", "openai", "gpt-realtime", started)
        )

    await call("CAbooking", "+14155550123", NIGHT)
    for turn in (
        Turn(1, Role.AGENT, "Bella Cucina, how can I help?", 300, 1900),
        Turn(2, Role.CALLER, "Hi, I'd like a table for four tonight.", 2500, 4600),
        Turn(3, Role.AGENT, "Of course! At what time", 5000, 6400, True,
             "Of course! At what time would you like to come in?"),
        Turn(4, Role.CALLER, "Eight, and one of us is gluten free.", 6300, 8700),
    ):  # fmt: skip
        await store.append_turn("CAbooking", turn)
    await store.append_event("CAbooking", CallEvent("barge_in", 6300))
    await store.append_event("CAbooking", CallEvent("dtmf", 9500, {"digit": "1"}))
    await store.finish_call(
        "CAbooking", CallStatus.COMPLETED, EndReason.CALLER_HANGUP, NIGHT + timedelta(seconds=74)
    )

    await call("CAfailed", "+13125550144", MORNING)
    await store.append_turn(
        "CAfailed", Turn(1, Role.CALLER, "<script>alert('x')</script> hello?", 900, 2000)
    )
    await store.finish_call(
        "CAfailed", CallStatus.FAILED, EndReason.PROVIDER_ERROR, MORNING + timedelta(seconds=9)
    )

    await call("CAlive", "+12065550177", NOON)
    # Three more for paging, a minute apart, all on the 21st.
    for n in range(3):
        await call(f"CAextra{n}", "+16175550100", NOON + timedelta(minutes=n + 1))


def make_app(
    store: CallStore,
    tmp_path: Path,
    token: str | None = TOKEN,
    public_url: str = "http://127.0.0.1:8000",
) -> Starlette:
    app = Starlette(routes=[*review_api_routes(), *review_page_routes()])
    app.state.store = store
    app.state.settings = load_settings(
        review_token=None if token is None else SecretStr(token),
        public_url=public_url,
        recordings_dir=tmp_path / "recordings",
    )
    return app


def client(app: Starlette, address: tuple[str, int] = REMOTE) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=address)
    return httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000")


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
