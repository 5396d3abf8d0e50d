"""The call log as JSON: ``GET /api/calls``, ``GET /api/calls/{call_sid}`` and the call's
recording, ``GET /api/calls/{call_sid}/recording``.

Mount ``review_api_routes()`` in the app and set ``app.state.store`` (an opened
``CallStore``) and ``app.state.settings`` before serving. Answers are never cached, and an
unauthorized request learns nothing but ``401``. Besides the bearer token, the pages' sign-in
cookie is accepted, so the "JSON" link on a call page opens in the same browser.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from bridge.review.auth import review_access_allowed
from bridge.review.page_auth import signed_in_by_cookie
from bridge.review.search import FIELDS as SEARCH_FIELDS
from bridge.review.search import parse_search
from bridge.settings import Settings
from bridge.storage.base import CallStore
from bridge.storage.recordings import RecordingFiles

DEFAULT_LIMIT = 50
MAX_LIMIT = 200

_NO_STORE = {"Cache-Control": "no-store"}


def review_api_routes() -> list[Route]:
    """The API routes, ready for ``Starlette(routes=[...])``."""
    return [
        Route("/api/calls", list_calls, methods=["GET"], name="api_calls"),
        Route("/api/calls/{call_sid}", show_call, methods=["GET"], name="api_call"),
        Route(
            "/api/calls/{call_sid}/recording",
            download_recording,
            methods=["GET"],
            name="api_recording",
        ),
    ]


async def list_calls(request: Request) -> JSONResponse:
    """``{"calls": [...]}``, newest first; ``?limit=1..200`` and ``?before=ISO-8601``, and
    the search of the list page: ``number``, ``text``, ``date_from``/``date_to`` (whole UTC
    days, YYYY-MM-DD) and ``status``."""
    if not _allowed(request):
        return _unauthorized()
    try:
        limit = _parse_limit(request.query_params.get("limit"))
        before = _parse_before(request.query_params.get("before"))
    except ValueError as exc:
        return _json({"error": str(exc)}, 400)
    params = request.query_params
    search = parse_search({name: params[name] for name in SEARCH_FIELDS if name in params})
    if search.errors:
        return _json({"error": " ".join(search.errors)}, 400)
    calls = await _store(request).list_calls(limit=limit, before=before, filters=search.filters)
    return _json({"calls": [call.to_json() for call in calls]})


async def show_call(request: Request) -> JSONResponse:
    """The whole call record in the CONTRACT.md shape, or 404."""
    if not _allowed(request):
        return _unauthorized()
    record = await _store(request).get_call(request.path_params["call_sid"])
    if record is None:
        return _json({"error": "not found"}, 404)
    return _json(record.to_json())


async def download_recording(request: Request) -> Response:
    """The call's stereo WAV as a download (caller left, agent right), or 404."""
    if not _allowed(request):
        return _unauthorized()
    call_sid = request.path_params["call_sid"]
    settings: Settings = request.app.state.settings
    # RecordingFiles refuses any SID that is not a plain file name, so this cannot leave
    # the recordings folder; such a SID simply has no recording.
    path = RecordingFiles(settings.resolved_recordings_dir).existing(call_sid)
    if path is None:
        return _json({"error": "not found"}, 404)
    return FileResponse(
        path,
        media_type="audio/wav",
        filename=f"{call_sid}.wav",
        content_disposition_type="attachment",
        headers=_NO_STORE,
    )


def _parse_limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_LIMIT
    message = f"limit must be a whole number from 1 to {MAX_LIMIT}"
    try:
        limit = int(raw)
    except ValueError:
        raise ValueError(message) from None
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(message)
    return limit


def _parse_before(raw: str | None) -> datetime | None:
    if raw is None:
        return None
    try:
        before = datetime.fromisoformat(raw.strip())
    except ValueError:
        raise ValueError(
            "before must be an ISO-8601 timestamp, e.g. 2026-11-21T10:00:00.000Z"
        ) from None
    if before.tzinfo is None:
        # Every timestamp the API hands out is UTC, so a bare one is read as UTC too.
        before = before.replace(tzinfo=UTC)
    return before


def _allowed(request: Request) -> bool:
    settings: Settings = request.app.state.settings
    return review_access_allowed(request, settings.review_token) or signed_in_by_cookie(
        request, settings
    )


def _store(request: Request) -> CallStore:
    store: CallStore = request.app.state.store
    return store


def _unauthorized() -> JSONResponse:
    return _json({"error": "unauthorized"}, 401, extra_headers={"WWW-Authenticate": "Bearer"})


def _json(
    body: dict[str, Any], status_code: int = 200, extra_headers: dict[str, str] | None = None
) -> JSONResponse:
    headers = {**_NO_STORE, **(extra_headers or {})}
    return JSONResponse(body, status_code=status_code, headers=headers)
