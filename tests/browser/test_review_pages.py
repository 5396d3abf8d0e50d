"""A support lead reads the call log in a real browser: sign in, search, open a call.

Run once with BRIDGE_WRITE_SCREENSHOTS=1 to refresh the README's screenshots in docs/.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.browser.conftest import screenshot_path
from tests.browser.sample_calls import BOOKING_SID, CALLS, GLUTEN, HEARD, UNHEARD
from tests.e2e.conftest import REVIEW_TOKEN, RunningBridge

DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}


def new_context(browser: Browser, **options: object) -> BrowserContext:
    context = browser.new_context(**options)  # type: ignore[arg-type]
    context.set_default_timeout(15_000)
    return context


def sign_in(page: Page, bridge: RunningBridge) -> None:
    """Open the call list, get sent to the sign-in form, sign in, land on the list."""
    page.goto(f"{bridge.url}/calls")
    assert urlsplit(page.url).path == "/calls/sign-in"
    assert "next=%2Fcalls" in page.url
    page.get_by_label("Review token").fill("not the token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text("That token is not right.")
    page.get_by_label("Review token").fill(REVIEW_TOKEN)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{bridge.url}/calls")
    expect(page.get_by_role("heading", name="Calls")).to_be_visible()


def search_and_open_booking(page: Page) -> None:
    page.get_by_label("Transcript text").fill("GLUTEN")
    page.get_by_role("button", name="Search").click()
    page.wait_for_url("**/calls?*text=GLUTEN*")
    rows = page.locator("table.calls tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("+14155550123")
    rows.first.get_by_role("link").click()
    page.wait_for_url(f"**/calls/{BOOKING_SID}")


def assert_booking_call_reads_right(page: Page) -> None:
    turn = page.locator("li.turn.interrupted")
    expect(turn).to_have_count(1)
    said = turn.locator("p.said")
    expect(said).to_contain_text(HEARD)
    unheard = turn.locator(".unheard")
    expect(unheard).to_have_text(UNHEARD)
    expect(turn.get_by_text("not heard — caller interrupted")).to_be_visible()
    expect(page.get_by_text("↳ 420 ms")).to_be_visible()
    expect(page.locator("li.event.dtmf")).to_contain_text("pressed 1 (DTMF)")
    expect(page.locator("li.event.barge_in")).to_be_visible()
    expect(page.locator("li.event.end")).to_have_text("Call ended: caller hung up · after 0:37")
    expect(page.get_by_text(f"Sorry, quick question: {GLUTEN}, is that okay?")).to_be_visible()


def test_sign_in_search_and_read_a_call(browser: Browser, review_bridge: RunningBridge) -> None:
    context = new_context(browser, viewport=DESKTOP)
    try:
        page = context.new_page()
        sign_in(page, review_bridge)
        expect(page.locator("table.calls tbody tr")).to_have_count(len(CALLS))
        if (path := screenshot_path("review-list.png")) is not None:
            page.screenshot(path=str(path), full_page=True)

        search_and_open_booking(page)
        assert_booking_call_reads_right(page)

        # The unheard words are visibly set apart from the heard ones.
        heard_style = page.locator("li.turn.interrupted p.said").evaluate(
            "el => [getComputedStyle(el).color, getComputedStyle(el).opacity]"
        )
        unheard_style = page.locator("li.turn.interrupted .unheard").evaluate(
            "el => [getComputedStyle(el).color, getComputedStyle(el).opacity,"
            " getComputedStyle(el).textDecorationLine]"
        )
        assert unheard_style[:2] != heard_style
        assert unheard_style[2] == "line-through"
        # Caller on one side, agent on the other.
        caller_box = page.locator("li.turn.caller").first.bounding_box()
        agent_box = page.locator("li.turn.agent").first.bounding_box()
        assert caller_box is not None and agent_box is not None
        assert caller_box["x"] < agent_box["x"]

        audio = page.locator("audio")
        expect(audio).to_have_attribute("preload", "none")
        expect(audio).to_have_attribute("src", f"/calls/{BOOKING_SID}/recording.wav")
        if (path := screenshot_path("review-call.png")) is not None:
            page.screenshot(path=str(path), full_page=True)

        page.get_by_role("link", name="← All calls").click()
        page.get_by_role("button", name="Sign out").click()
        page.wait_for_url("**/calls/sign-in")
        page.goto(f"{review_bridge.url}/calls/{BOOKING_SID}")
        assert urlsplit(page.url).path == "/calls/sign-in"
    finally:
        context.close()


def test_everything_works_without_javascript(
    browser: Browser, review_bridge: RunningBridge
) -> None:
    context = new_context(browser, viewport=DESKTOP, java_script_enabled=False)
    try:
        page = context.new_page()
        sign_in(page, review_bridge)
        search_and_open_booking(page)
        assert_booking_call_reads_right(page)
        # Paging is plain links too.
        page.goto(f"{review_bridge.url}/calls?limit=4")
        page.get_by_role("link", name="Older calls →").click()
        expect(page.locator("table.calls tbody tr")).to_have_count(len(CALLS) - 4)
        expect(page.get_by_role("link", name="← Newest")).to_be_visible()
        # A bad date is explained, not a crash.
        response = page.goto(f"{review_bridge.url}/calls?date_from=2026-02-30")
        assert response is not None and response.status == 400
        expect(page.get_by_role("alert")).to_contain_text("is not a date")
    finally:
        context.close()


def test_phone_screen_needs_no_sideways_scrolling(
    browser: Browser, review_bridge: RunningBridge
) -> None:
    context = new_context(
        browser, viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True
    )
    overflow = "document.documentElement.scrollWidth <= window.innerWidth"
    try:
        page = context.new_page()
        sign_in(page, review_bridge)
        assert page.evaluate(overflow), "the call list is wider than the phone screen"
        # Cards, not a table squeezed sideways.
        assert (
            page.locator("table.calls tbody tr").first.evaluate(
                "el => getComputedStyle(el).display"
            )
            == "grid"
        )

        search_and_open_booking(page)
        assert_booking_call_reads_right(page)
        assert page.evaluate(overflow), "the call page is wider than the phone screen"
        if (path := screenshot_path("review-call-phone.png")) is not None:
            page.screenshot(path=str(path), full_page=True)
    finally:
        context.close()
