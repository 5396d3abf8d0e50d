"""The call-log pages over HTTP against a real SQLite store: search, paging, one call, the
recording, and who gets in."""

from __future__ import annotations

import re
import wave
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from html import unescape
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from bridge.call.records import CallEvent, CallStatus, EndReason, Role, Turn
from bridge.storage import CallStore, NewCall
from tests.review.page_samples import LOOPBACK, bearer, client, make_app


def listed(html: str) -> list[str]:
    """The call SIDs in a list page, in order."""
    return re.findall(r'<a class="row-link" href="/calls/([^"]+)"', html)


def link(html: str, text: str) -> str | None:
    match = re.search(r'<a (?:class="[^"]*" )?href="([^"]+)">' + re.escape(text), html)
    return None if match is None else unescape(match.group(1))


@pytest.fixture
async def reader(page_store: CallStore, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """Someone on this machine with no token configured: no sign-in needed."""
    async with client(make_app(page_store, tmp_path, token=None), LOOPBACK) as http:
        yield http


# -- the list and its search --------------------------------------------------------------


async def test_list_is_newest_first_with_the_summary(reader: httpx.AsyncClient) -> None:
    response = await reader.get("/calls")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert listed(response.text) == [
        "CAextra2", "CAextra1", "CAextra0", "CAlive", "CAfailed", "CAbooking",
    ]  # fmt: skip
    row = response.text[response.text.index('href="/calls/CAbooking"') :].split("</tr>")[0]
    for cell in ("2026-11-20 19:00:00", "+14155550123", "+14155550199", "completed",
                 "caller hung up", "1:14", ">4<"):  # fmt: skip
        assert cell in row
    assert '<span class="badge failed">failed</span>' in response.text
    assert '<span class="badge in_progress">in progress</span>' in response.text
    assert "UTC" in response.text
    assert "Older calls" not in response.text


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"number": "(415) 555-0123"}, ["CAbooking"]),
        ({"number": "+1312"}, ["CAfailed"]),
        # The called number matches too.
        (
            {"number": "4155550199"},
            ["CAextra2", "CAextra1", "CAextra0", "CAlive", "CAfailed", "CAbooking"],
        ),
        ({"text": "GLUTEN free"}, ["CAbooking"]),
        # Words the caller never heard are searched as well.
        ({"text": "would you like to come in"}, ["CAbooking"]),
        ({"date_from": "2026-11-20", "date_to": "2026-11-20"}, ["CAbooking"]),
        ({"date_from": "2026-11-21"}, ["CAextra2", "CAextra1", "CAextra0", "CAlive", "CAfailed"]),
        ({"date_to": "2026-11-20"}, ["CAbooking"]),
        ({"status": "failed"}, ["CAfailed"]),
        ({"status": "completed", "text": "table"}, ["CAbooking"]),
        ({"status": "failed", "text": "table"}, []),
        (
            {"number": "", "text": " ", "status": ""},
            ["CAextra2", "CAextra1", "CAextra0", "CAlive", "CAfailed", "CAbooking"],
        ),
    ],
)
async def test_search(
    reader: httpx.AsyncClient, params: dict[str, str], expected: list[str]
) -> None:
    response = await reader.get("/calls", params=params)
    assert response.status_code == 200
    assert listed(response.text) == expected
    if not expected:
        assert "No calls match this search." in response.text


async def test_search_form_keeps_what_was_typed(reader: httpx.AsyncClient) -> None:
    response = await reader.get(
        "/calls", params={"number": "415", "text": 'a "table"', "status": "completed"}
    )
    assert 'name="number" type="search" inputmode="tel" autocomplete="off"' in response.text
    assert 'value="415"' in response.text
    assert 'value="a &#34;table&#34;"' in response.text
    assert '<option value="completed" selected>' in response.text


async def test_paging_keeps_the_filters(reader: httpx.AsyncClient) -> None:
    first = await reader.get("/calls", params={"date_from": "2026-11-21", "limit": "2"})
    assert listed(first.text) == ["CAextra2", "CAextra1"]
    assert link(first.text, "← Newest") is None
    older = link(first.text, "Older calls →")
    assert older is not None
    query = parse_qs(urlsplit(older).query)
    assert query["date_from"] == ["2026-11-21"] and query["limit"] == ["2"]

    second = await reader.get(older)
    assert listed(second.text) == ["CAextra0", "CAlive"]
    newest = link(second.text, "← Newest")
    assert newest == "/calls?date_from=2026-11-21&limit=2"
    third = await reader.get(link(second.text, "Older calls →") or "")
    # The 20th is filtered out, so the last page holds only the failed call.
    assert listed(third.text) == ["CAfailed"]
    assert link(third.text, "Older calls →") is None
    assert listed((await reader.get(newest)).text) == ["CAextra2", "CAextra1"]


async def test_exactly_one_page_has_no_older_link(reader: httpx.AsyncClient) -> None:
    response = await reader.get("/calls", params={"limit": "6"})
    assert len(listed(response.text)) == 6
    assert "Older calls" not in response.text


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"date_from": "2026-13-01"}, "is not a date"),
        ({"date_to": "yesterday"}, "is not a date"),
        ({"date_from": "2026-11-22", "date_to": "2026-11-21"}, "From date is after the To date"),
        ({"status": "lost"}, "Pick a status"),
        ({"before": "not-a-time"}, "page link is broken"),
        ({"limit": "0"}, "page size"),
        ({"text": "x" * 500}, "too long"),
    ],
)
async def test_bad_search_is_explained(
    reader: httpx.AsyncClient, params: dict[str, str], message: str
) -> None:
    response = await reader.get("/calls", params=params)
    assert response.status_code == 400
    assert message in unescape(response.text)
    assert 'role="alert"' in response.text
    assert "Traceback" not in response.text
    assert listed(response.text) == []


# -- one call -----------------------------------------------------------------------------


async def test_call_page_shows_the_conversation(reader: httpx.AsyncClient) -> None:
    response = await reader.get("/calls/CAbooking")
    assert response.status_code == 200
    html = response.text
    for fact in ("+14155550123", "+14155550199", "2026-11-20 19:00:00", "1:14", "completed",
                 "caller hung up", "openai", "gpt-realtime"):  # fmt: skip
        assert fact in html
    assert '<a href="/api/calls/CAbooking">JSON</a>' in html
    # Heard words in plain text, the rest struck and labelled.
    assert (
        '<p class="said">Of course! At what time <s class="unheard">would you like to come '
        "in?</s></p>" in html
    )
    assert "not heard — caller interrupted" in html
    # The agent answered 400 ms after the caller stopped.
    assert "↳ 400 ms" in html
    assert '<li class="event dtmf"><span>pressed 1 (DTMF)</span> <time>0:09.5</time></li>' in html
    assert '<li class="event barge_in">' in html
    assert "Call ended: caller hung up" in html
    # Caller and agent sides, in time order.
    order = [html.index(text) for text in ("Bella Cucina", "table for four", "At what time",
                                           "caller talked over", "gluten free", "pressed 1")]  # fmt: skip
    assert order == sorted(order)
    assert '<li class="turn caller">' in html and '<li class="turn agent interrupted">' in html
    assert "<audio" not in html


async def test_transcripts_are_escaped(reader: httpx.AsyncClient) -> None:
    html = (await reader.get("/calls/CAfailed")).text
    assert "<script>" not in html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; hello?" in html
    assert "Call ended: model provider error" in html
    listing = (await reader.get("/calls", params={"text": "<script>"})).text
    assert "<script>" not in listing and "&lt;script&gt;" in listing


async def test_live_call(reader: httpx.AsyncClient) -> None:
    html = (await reader.get("/calls/CAlive")).text
    assert "in progress" in html and "Call still in progress" in html and "live" in html


@pytest.mark.parametrize("sid", ["CAnope", "sign-out", "CA%3Cb%3E"])
async def test_unknown_call_is_a_friendly_404(reader: httpx.AsyncClient, sid: str) -> None:
    response = await reader.get(f"/calls/{sid}")
    assert response.status_code == 404
    assert "No such call" in response.text
    assert "<b>" not in response.text
    assert '<a href="/calls">' in response.text


async def test_pages_carry_protective_headers(reader: httpx.AsyncClient) -> None:
    for path in ("/calls", "/calls/CAbooking", "/calls/CAnope", "/calls?status=x"):
        headers = (await reader.get(path)).headers
        assert headers["cache-control"] == "no-store"
        assert headers["x-frame-options"] == "DENY"
        assert headers["referrer-policy"] == "no-referrer"
        csp = headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp
        assert "script-src" not in csp and "unsafe-inline" not in csp


async def test_stylesheet_is_served(reader: httpx.AsyncClient) -> None:
    html = (await reader.get("/calls")).text
    href = re.search(r'<link rel="stylesheet" href="([^"]+)">', html)
    assert href is not None and href.group(1).startswith("/calls/static/review.css?v=")
    css = await reader.get(href.group(1))
    assert css.status_code == 200
    assert css.headers["content-type"].startswith("text/css")
    assert ".unheard" in css.text
    # No inline styles or scripts anywhere on the pages.
    assert "<style" not in html and "<script" not in html and "style=" not in html


# -- the recording ------------------------------------------------------------------------


def write_wav(path: Path) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(8000)
        wav.writeframes(b"\x01\x00\xff\xff" * 800)
    return path.read_bytes()


async def test_recording_on_the_page_and_through_the_api(
    page_store: CallStore, tmp_path: Path
) -> None:
    data = write_wav(tmp_path / "recordings" / "CAbooking.wav")
    async with client(make_app(page_store, tmp_path)) as http:
        page = await http.get("/calls/CAbooking", headers=bearer())
        assert (
            '<audio controls preload="none" src="/calls/CAbooking/recording.wav"></audio>'
            in page.text
        )
        wav = await http.get("/calls/CAbooking/recording.wav", headers=bearer())
        assert wav.status_code == 200
        assert wav.headers["content-type"] == "audio/wav"
        assert wav.content == data

        api = await http.get("/api/calls/CAbooking/recording", headers=bearer())
        assert api.status_code == 200
        assert api.headers["content-type"] == "audio/wav"
        assert api.headers["content-disposition"] == 'attachment; filename="CAbooking.wav"'
        assert api.content == data

        assert (await http.get("/api/calls/CAbooking/recording")).status_code == 401
        refused = await http.get("/calls/CAbooking/recording.wav")
        assert refused.status_code == 303
        for path in ("/api/calls/CAfailed/recording", "/api/calls/..%2F..%2Fetc/recording",
                     "/api/calls/CA.booking/recording"):  # fmt: skip
            assert (await http.get(path, headers=bearer())).status_code == 404
        assert (
            await http.get("/calls/CAfailed/recording.wav", headers=bearer())
        ).status_code == 404
        assert "<audio" not in (await http.get("/calls/CAfailed", headers=bearer())).text


async def test_a_sip_call_reads_like_any_other_and_says_it_came_over_sip(
    reader: httpx.AsyncClient, page_store: CallStore
) -> None:
    started = datetime(2026, 11, 22, 9, 30, tzinfo=UTC)
    await page_store.create_call(
        NewCall(
            "SI" + "ab" * 16, "", "+15551230000", "+15557650000", "openai", "gpt-realtime",
            started, channel="sip", sip_call_id="a84b4c76e66710@pbx.example.com",
        )
    )  # fmt: skip
    await page_store.append_turn(
        "SI" + "ab" * 16, Turn(1, Role.CALLER, "Is the shop open?", 0, 900)
    )
    await page_store.append_turn(
        "SI" + "ab" * 16, Turn(2, Role.AGENT, "Until six today.", 1300, 2600)
    )
    await page_store.append_event("SI" + "ab" * 16, CallEvent("dtmf", 3000, {"digit": "7"}))
    await page_store.finish_call(
        "SI" + "ab" * 16,
        CallStatus.COMPLETED,
        EndReason.CALLER_HANGUP,
        started + timedelta(seconds=5),
    )
    listing = (await reader.get("/calls")).text
    row = listing[listing.index('href="/calls/SI' + "ab" * 16) :].split("</tr>")[0]
    assert '<td data-label="Line">SIP</td>' in row and "+15551230000" in row
    twilio_row = listing[listing.index('href="/calls/CAbooking"') :].split("</tr>")[0]
    assert '<td data-label="Line">Twilio</td>' in twilio_row

    html = (await reader.get("/calls/SI" + "ab" * 16)).text
    assert "<dt>Line</dt><dd>SIP</dd>" in html
    assert "<code>a84b4c76e66710@pbx.example.com</code>" in html
    order = [html.index(text) for text in ("Is the shop open?", "Until six today.", "pressed 7")]
    assert order == sorted(order)
    assert "SIP Call-ID" not in (await reader.get("/calls/CAbooking")).text


async def test_tool_calls_and_a_transfer_on_the_call_page(
    reader: httpx.AsyncClient, page_store: CallStore
) -> None:
    started = datetime(2026, 12, 20, 18, 0, tzinfo=UTC)
    sid = "CAtransfer"
    await page_store.create_call(
        NewCall(sid, "MZtransfer", "+14155550123", "+14155550199", "openai", "gpt-realtime",
                started, agent="front-desk")
    )  # fmt: skip
    for turn in (
        Turn(1, Role.CALLER, "A table for four on Christmas Eve?", 1000, 3000),
        Turn(2, Role.AGENT, "Let me check.", 3400, 4200),
        Turn(3, Role.AGENT, "Putting you through to reception.", 11_000, 12_500),
    ):
        await page_store.append_turn(sid, turn)
    for event in (
        CallEvent("tool_call", 4300, {"name": "check_availability",
                                      "arguments": {"date": "2026-12-24", "people": 4},
                                      "ok": True, "ms": 120}),
        CallEvent("tool_call", 9500, {"name": "note",
                                      "arguments": {"html": "<b>x</b>", "long": "y" * 200},
                                      "ok": False, "ms": 5003}),
        CallEvent("tool_call", 13_000, {"name": "transfer_call",
                                        "arguments": {"target": "reception"},
                                        "ok": True, "ms": 850}),
        CallEvent("transfer", 13_000, {"target": "reception"}),
    ):  # fmt: skip
        await page_store.append_event(sid, event)
    await page_store.finish_call(
        sid, CallStatus.COMPLETED, EndReason.TRANSFERRED, started + timedelta(seconds=14)
    )

    html = (await reader.get(f"/calls/{sid}")).text
    assert "<dt>Agent</dt><dd>front-desk</dd>" in html
    assert "<dt>End reason</dt><dd>transferred to a person</dd>" in html
    assert "Call ended: transferred to a person" in html
    assert (
        '<li class="event tool_call"><span>called check_availability (date: 2026-12-24, '
        "people: 4) — ok, 120 ms</span> <time>0:04.3</time></li>"
    ) in html
    # The model's arguments are text: escaped, and a long one cut short.
    assert "<b>x</b>" not in html
    assert (
        '<li class="event tool_call failed"><span>called note (html: &lt;b&gt;x&lt;/b&gt;, '
        f"long: {'y' * 59}…) — failed, 5003 ms</span> <time>0:09.5</time></li>"
    ) in html
    assert (
        '<li class="event transfer"><span>transferred to reception</span> <time>0:13.0</time></li>'
    ) in html
    order = [html.index(text) for text in (
        "Christmas Eve", "Let me check.", "called check_availability", "called note",
        "Putting you through", "called transfer_call", "transferred to reception",
        "Call ended: transferred",
    )]  # fmt: skip
    assert order == sorted(order)
    # Calls from before agents had names read as the default agent.
    assert "<dt>Agent</dt><dd>default</dd>" in (await reader.get("/calls/CAbooking")).text
