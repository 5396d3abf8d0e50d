"""The call log as pages a person reads: ``GET /calls`` (search and list) and
``GET /calls/{call_sid}`` (one conversation), plus the sign-in form and the recording.

Mount ``review_page_routes()`` in the app next to the JSON API, with ``app.state.store`` and
``app.state.settings`` set. Every page is server-rendered HTML that works without JavaScript.
"""

from __future__ import annotations

from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from bridge.review import sign_in
from bridge.review.html import CSS_PATH, PAGE_HEADERS, page_text, render, see_other, stylesheet
from bridge.review.page_auth import (
    SIGN_IN_PATH,
    SIGN_OUT_PATH,
    Access,
    page_access,
    signed_in_by_cookie,
)
from bridge.review.search import Search, parse_search
from bridge.review.timeline import (
    CHANNEL_LABELS,
    END_REASON_LABELS,
    STATUS_LABELS,
    build_timeline,
    end_label,
    format_duration,
    format_started,
)
from bridge.settings import Settings
from bridge.storage.base import CallStore, CallSummary
from bridge.storage.recordings import RecordingFiles

LOOPBACK_ONLY_TEXT = (
    "The call log is only shown on this machine (loopback) while BRIDGE_REVIEW_TOKEN is "
    "unset. Set BRIDGE_REVIEW_TOKEN on the bridge to read it from elsewhere.\n"
)


def review_page_routes() -> list[Route]:
    """The page routes, in the order they must be tried: fixed paths before ``{call_sid}``."""
    return [
        Route(CSS_PATH, stylesheet, methods=["GET"], name="review_css"),
        Route(SIGN_IN_PATH, sign_in.sign_in_form, methods=["GET"], name="sign_in"),
        Route(SIGN_IN_PATH, sign_in.sign_in, methods=["POST"], name="sign_in_post"),
        Route(SIGN_OUT_PATH, sign_in.sign_out, methods=["POST"], name="sign_out"),
        Route("/calls", call_list, methods=["GET"], name="calls"),
        Route("/calls/{call_sid}", call_page, methods=["GET"], name="call"),
        Route("/calls/{call_sid}/recording.wav", recording, methods=["GET"], name="recording"),
    ]


async def call_list(request: Request) -> Response:
    """The search form and one page of matching calls, newest first."""
    refused = _gate(request)
    if refused is not None:
        return refused
    search = parse_search(request.query_params)
    context = _base_context(request) | {
        "search": search,
        "statuses": STATUS_LABELS,
        "calls": [],
        "older_url": None,
        "newest_url": None,
    }
    if search.errors:
        return render("list.html", context, status_code=400)
    # One row more than shown says whether an older page exists.
    rows = await _store(request).list_calls(
        limit=search.limit + 1,
        before=search.before,
        filters=search.filters,
    )
    calls = rows[: search.limit]
    context["calls"] = [_list_row(call) for call in calls]
    if len(rows) > search.limit:
        context["older_url"] = _list_url(search, calls[-1])
    if search.before is not None:
        context["newest_url"] = _query_url("/calls", search.query())
    return render("list.html", context)


async def call_page(request: Request) -> Response:
    """One call: its header, the conversation as a timeline, and its recording if any."""
    refused = _gate(request)
    if refused is not None:
        return refused
    call_sid = request.path_params["call_sid"]
    record = await _store(request).get_call(call_sid)
    if record is None:
        return render(
            "not_found.html", _base_context(request) | {"call_sid": call_sid}, status_code=404
        )
    has_recording = _recordings(request).existing(call_sid) is not None
    context = _base_context(request) | {
        "call": record,
        "started": format_started(record.started_at),
        "duration": format_duration(record.duration_ms),
        "status_label": STATUS_LABELS[record.status],
        "channel_label": CHANNEL_LABELS.get(record.channel, record.channel),
        "end_reason_label": (
            None if record.end_reason is None else END_REASON_LABELS[record.end_reason]
        ),
        "rows": build_timeline(record),
        "end_label": end_label(record),
        "has_recording": has_recording,
    }
    return render("call.html", context)


async def recording(request: Request) -> Response:
    """The call's WAV, for the page's player and download link; 404 when there is none."""
    refused = _gate(request)
    if refused is not None:
        return refused
    path = _recordings(request).existing(request.path_params["call_sid"])
    if path is None:
        return page_text("No recording for this call.\n", 404)
    return FileResponse(path, media_type="audio/wav", headers=PAGE_HEADERS)


def _gate(request: Request) -> Response | None:
    """``None`` when the request may see the page, else the answer to send instead."""
    access = page_access(request, _settings(request))
    if access is Access.ALLOWED:
        return None
    if access is Access.LOOPBACK_ONLY:
        return page_text(LOOPBACK_ONLY_TEXT, 403)
    target = request.url.path
    if request.url.query:
        target += "?" + request.url.query
    return see_other(_query_url(SIGN_IN_PATH, urlencode({"next": target})))


def _list_row(call: CallSummary) -> dict[str, object]:
    return {
        "call_sid": call.call_sid,
        "started": format_started(call.started_at),
        "started_iso": call.started_at.isoformat(),
        "from": call.from_number,
        "to": call.to_number,
        "status": call.status.value,
        "status_label": STATUS_LABELS[call.status],
        "channel": CHANNEL_LABELS.get(call.channel, call.channel),
        "end_reason": "" if call.end_reason is None else END_REASON_LABELS[call.end_reason],
        "duration": format_duration(call.duration_ms),
        "turns": call.turn_count,
    }


def _list_url(search: Search, last: CallSummary) -> str:
    return _query_url("/calls", search.query(before=last.started_at))


def _query_url(path: str, query: str) -> str:
    return f"{path}?{query}" if query else path


def _base_context(request: Request) -> dict[str, object]:
    return {"signed_in": signed_in_by_cookie(request, _settings(request))}


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _store(request: Request) -> CallStore:
    store: CallStore = request.app.state.store
    return store


def _recordings(request: Request) -> RecordingFiles:
    return RecordingFiles(_settings(request).resolved_recordings_dir)
