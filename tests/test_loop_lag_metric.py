"""A running bridge reports how late its event loop runs, for an operator to see it short
of CPU before its callers hear it."""

from __future__ import annotations

import re
import time
from pathlib import Path

from pydantic import SecretStr
from starlette.testclient import TestClient

from bridge.app import create_app
from bridge.settings import load_settings

_COUNT = re.compile(r"^bridge_event_loop_lag_seconds_count (\S+)$", re.MULTILINE)


def test_metrics_carry_the_event_loop_lag(tmp_path: Path) -> None:
    settings = load_settings(
        database_url=f"sqlite:///{tmp_path / 'calls.db'}",
        public_url="https://bridge.example.com",
        twilio_auth_token=SecretStr("lag-auth-token"),
        twilio_account_sid="AC" + "0" * 32,
    )
    with TestClient(create_app(settings)) as client:
        deadline = time.monotonic() + 10
        while True:
            found = _COUNT.search(client.get("/metrics").text)
            if found is not None and float(found.group(1)) >= 2:
                break
            assert time.monotonic() < deadline, "no loop-lag readings in 10 s"
            time.sleep(0.2)
