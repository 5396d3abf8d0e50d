"""``bridge serve --workers 2``: two processes on one port, and nothing that breaks across
them: stream tokens minted by one are good at the other, both hold a lease in the store,
and /metrics from either counts every call."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sqlite3
from pathlib import Path

import httpx

from bridge.codecs.clips import load_clip
from bridge.devtools.fake_script import FakeScript, Reply
from bridge.devtools.simulator import simulate_call
from bridge.settings import load_settings
from bridge.workers import shared_token_key, worker_settings

from .conftest import AUTH_TOKEN, REVIEW_TOKEN, fake_server, provider_env, run_bridge

CALLS = 12
SCRIPT = FakeScript(
    replies=[Reply("We open at nine.", duration_ms=800)], caller_transcripts=["When?"]
)


def _log_entries(log: str) -> list[dict[str, object]]:
    out = []
    for line in log.splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
    return out


async def test_two_workers_serve_calls_on_one_port(tmp_path: Path) -> None:
    async with fake_server("openai", script=SCRIPT) as fake:
        with run_bridge(tmp_path, provider_env(fake, "openai"), args=("--workers", "2")) as bridge:
            results = await asyncio.gather(
                *(
                    simulate_call(
                        bridge.url,
                        auth_token=AUTH_TOKEN,
                        review_token=REVIEW_TOKEN,
                        caller_utterances=[load_clip("caller_1")],
                        max_duration_s=30,
                    )
                    for _ in range(CALLS)
                )
            )
            scrapes = []
            async with httpx.AsyncClient(base_url=bridge.url) as http:
                for _ in range(6):  # new connections: the kernel spreads them over workers
                    scrapes.append(
                        (await http.get("/metrics", headers={"Connection": "close"})).text
                    )
            with sqlite3.connect(bridge.db_path) as db:
                leases = db.execute("SELECT instance_id, pid FROM instances").fetchall()
            log = bridge.log()

    # Every call was served to its end, whichever worker took its webhook and its stream.
    for result in results:
        record = result.call_record
        assert record is not None
        assert (record["status"], record["end_reason"]) == ("completed", "caller_hangup")
        assert [t["role"] for t in record["turns"]] == ["caller", "agent"]
    entries = _log_entries(log)
    workers = {e.get("worker") for e in entries if e.get("event") == "call.started"}
    assert workers == {0, 1}, "the kernel gave every call to one worker"
    # One lease per worker, each with its own process.
    assert len(leases) == 2 and len({pid for _, pid in leases}) == 2
    # Each scrape, whichever worker answered it, counts the calls of both.
    for text in scrapes:
        started = re.search(
            r'^bridge_calls_started_total\{channel="twilio"\} (\S+)$', text, re.MULTILINE
        )
        assert started is not None and float(started.group(1)) == CALLS
    # SIGTERM to the parent reached both workers; it exited cleanly once they had.
    assert bridge.process.returncode == 0


def test_every_worker_gets_the_same_token_key_and_only_the_first_serves_sip() -> None:
    settings = load_settings(sip_listen="udp:127.0.0.1:5080", twilio_auth_token=None)
    key = shared_token_key(settings)
    assert key is not None
    first, second = (worker_settings(settings, n, key) for n in (0, 1))
    assert first.stream_secret == second.stream_secret
    assert first.stream_secret is not None and first.stream_secret.get_secret_value() == key
    assert (first.sip_listen, second.sip_listen) == ("udp:127.0.0.1:5080", None)
    # With a Twilio token, every worker derives the same key from it already.
    assert shared_token_key(load_settings(twilio_auth_token="t" * 32)) is None
