"""``bridge calls export`` and ``bridge calls purge``, run as a user runs them."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import structlog

from bridge.call.records import CallEvent, CallStatus, EndReason, Role, Turn
from bridge.cli import main
from bridge.review.export import parse_age, parse_since
from bridge.storage import NewCall, sqlite_store

NOW = datetime.now(UTC)


def _call(sid: str, age: timedelta) -> NewCall:
    return NewCall(sid, "MZ" + sid[2:], "+15551230000", "+15557650000", "openai",
                   "gpt-realtime", NOW - age)  # fmt: skip


async def _seed(db: Path) -> None:
    store = sqlite_store(str(db))
    await store.open()
    try:
        await store.create_call(_call("CAold", timedelta(days=40)))
        await store.append_turn("CAold", Turn(1, Role.CALLER, 'an old, "quoted" call', 0, 900))
        await store.append_event("CAold", CallEvent("dtmf", 950, {"digit": "3"}))
        await store.finish_call("CAold", CallStatus.COMPLETED, EndReason.CALLER_HANGUP,
                                NOW - timedelta(days=40) + timedelta(minutes=1))  # fmt: skip
        await store.create_call(_call("CAlive", timedelta(days=35)))  # still in progress
        await store.create_call(_call("CAnew", timedelta(days=2)))
        await store.append_turn("CAnew", Turn(1, Role.CALLER, "book a table", 0, 900))
        await store.append_turn(
            "CAnew", Turn(2, Role.AGENT, "Sure, for", 1200, 2000, True, "Sure, for how many?")
        )
        await store.finish_call("CAnew", CallStatus.COMPLETED, EndReason.AGENT_HANGUP,
                                NOW - timedelta(days=2) + timedelta(minutes=1))  # fmt: skip
    finally:
        await store.close()


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    db = tmp_path / "calls.db"
    monkeypatch.setenv("BRIDGE_DATABASE_URL", f"sqlite:///{db}")
    monkeypatch.setenv("BRIDGE_LOG_LEVEL", "warning")
    monkeypatch.chdir(tmp_path)
    asyncio.run(_seed(db))
    handlers = logging.getLogger().handlers[:]
    yield tmp_path
    # main() configures logging for the process; leave it as the other tests expect it.
    logging.getLogger().handlers[:] = handlers
    structlog.reset_defaults()


def test_export_jsonl_is_one_whole_call_record_per_line_oldest_first(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["calls", "export"]) == 0
    lines = capsys.readouterr().out.splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["call_sid"] for r in records] == ["CAold", "CAlive", "CAnew"]
    assert records[0]["events"] == [{"type": "dtmf", "at_ms": 950, "digit": "3"}]
    assert records[2]["turns"][1] == {
        "seq": 2, "role": "agent", "text": "Sure, for", "start_ms": 1200, "end_ms": 2000,
        "interrupted": True, "full_text": "Sure, for how many?",
    }  # fmt: skip


def test_export_since_an_age_or_a_date(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["calls", "export", "--since", "7d"]) == 0
    assert [json.loads(x)["call_sid"] for x in capsys.readouterr().out.splitlines()] == ["CAnew"]
    day = (NOW - timedelta(days=36)).date().isoformat()
    assert main(["calls", "export", "--since", day]) == 0
    sids = [json.loads(x)["call_sid"] for x in capsys.readouterr().out.splitlines()]
    assert sids == ["CAlive", "CAnew"]


def test_export_csv_has_a_row_per_turn_and_survives_quotes(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["calls", "export", "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["call_sid"], r["seq"]) for r in rows] == [
        ("CAold", "1"), ("CAlive", ""), ("CAnew", "1"), ("CAnew", "2"),
    ]  # fmt: skip
    assert rows[0]["text"] == 'an old, "quoted" call'
    assert rows[3]["interrupted"] == "true" and rows[3]["full_text"] == "Sure, for how many?"
    assert rows[2]["interrupted"] == ""  # caller turns are never interrupted
    assert rows[1]["status"] == "in_progress" and rows[1]["ended_at"] == ""


def test_bad_since_is_a_clear_error(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["calls", "export", "--since", "last tuesday"]) == 2
    err = capsys.readouterr().err
    assert "neither a date" in err and "Traceback" not in err


def test_purge_removes_old_finished_calls_and_their_recordings(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recordings = env / "recordings"
    recordings.mkdir()
    for sid in ("CAold", "CAnew"):
        (recordings / f"{sid}.wav").write_bytes(b"RIFF")
    assert main(["calls", "purge", "--older-than", "30d"]) == 0
    assert "removed 1 call(s)" in capsys.readouterr().out
    assert not (recordings / "CAold.wav").exists()
    assert (recordings / "CAnew.wav").exists()
    assert main(["calls", "export"]) == 0
    sids = [json.loads(x)["call_sid"] for x in capsys.readouterr().out.splitlines()]
    # The live call is kept however old it is; the old one is gone with its turns.
    assert sids == ["CAlive", "CAnew"]
    assert main(["calls", "show", "CAold"]) == 1


def test_purge_needs_a_real_age(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["calls", "purge", "--older-than", "0d"]) == 2
    assert main(["calls", "purge", "--older-than", "30"]) == 2
    assert "30d" in capsys.readouterr().err
    assert main(["calls", "export"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3


def test_ages_and_dates() -> None:
    assert parse_age("30d") == timedelta(days=30)
    assert parse_age(" 2W ") == timedelta(weeks=2)
    assert parse_age("90m") == timedelta(minutes=90)
    at = datetime(2026, 11, 21, 12, tzinfo=UTC)
    assert parse_since("12h", at) == datetime(2026, 11, 21, 0, tzinfo=UTC)
    assert parse_since("2026-11-01", at) == datetime(2026, 11, 1, tzinfo=UTC)
    assert parse_since("2026-11-01T09:30:00Z", at) == datetime(2026, 11, 1, 9, 30, tzinfo=UTC)
    for bad in ("", "-3d", "3y", "soon"):
        with pytest.raises(ValueError):
            parse_age(bad)
