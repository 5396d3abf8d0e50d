"""Real headless Chromium against a real ``bridge serve`` holding a pre-filled call log.

Chromium must be installed at /usr/bin/chromium (``make test`` installs it); without it
these tests fail with a message saying so rather than skip, so a missing browser is seen.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Playwright, sync_playwright

from tests.browser.sample_calls import BOOKING_SID, fill, write_recording
from tests.e2e.conftest import RunningBridge, run_bridge

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.fixture(scope="module")
def review_bridge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBridge]:
    """``bridge serve`` on a free port with ``REVIEW_TOKEN`` set and the sample calls."""
    tmp = tmp_path_factory.mktemp("review")
    db = tmp / "calls.db"
    # In a thread of its own: Playwright's sync API may already run a loop in this one.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, fill(db)).result(timeout=60)
    recordings = tmp / "recordings"
    write_recording(recordings, BOOKING_SID)
    env = {"BRIDGE_DATABASE_URL": f"sqlite:///{db}", "BRIDGE_RECORDINGS_DIR": str(recordings)}
    with run_bridge(tmp, env) as bridge:
        yield bridge


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Playwright, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"Chromium is not installed at {CHROMIUM}: the call-log page tests need it. "
            "Run `make browser` (or `apt-get install chromium`) and try again.",
            pytrace=False,
        )
    # Each launch gets a fresh, throw-away profile directory.
    browser = playwright.chromium.launch(
        executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
    )
    try:
        yield browser
    finally:
        browser.close()


def screenshot_path(name: str) -> Path | None:
    """Where to save a README screenshot, or ``None`` unless BRIDGE_WRITE_SCREENSHOTS=1."""
    if os.environ.get("BRIDGE_WRITE_SCREENSHOTS") != "1":
        return None
    DOCS.mkdir(exist_ok=True)
    return DOCS / name
