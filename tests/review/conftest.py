"""Fixtures for the call-log page tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge.storage import CallStore, open_store
from tests.review.page_samples import seed


@pytest.fixture
async def page_store(tmp_path: Path) -> AsyncIterator[CallStore]:
    store = open_store("sqlite:///" + str(tmp_path / "calls.db"))
    await store.open()
    await seed(store)
    try:
        yield store
    finally:
        await store.close()
