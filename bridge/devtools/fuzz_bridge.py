"""The bridge under test for ``bridge fuzz``, and the good calls that run beside the
hostile sessions.

:class:`BridgeProcess` is a real ``bridge serve`` child on a free 127.0.0.1 port, with its
own working directory, SQLite file and JSON log at info level, pointed at the in-process
fake model; it is stopped by its PID. :func:`good_calls` keeps one simulated call in flight
at a time and checks each call's record through the review API.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import httpx

from bridge.codecs.clips import load_clip
from bridge.devtools.fuzz_report import GoodCalls
from bridge.devtools.fuzz_wire import Target
from bridge.devtools.ports import free_port
from bridge.devtools.simulator import simulate_call

__all__ = ["GREETING", "BridgeProcess", "good_calls"]

GREETING = "Hello, this is the fuzz run's agent."
GOOD_CALL_LIMIT_S = 45.0
_READY_TIMEOUT_S = 20.0
_STOP_TIMEOUT_S = 15.0


class BridgeProcess:
    """``bridge serve`` in a child process, pointed at the fake model; stopped by its PID."""

    def __init__(self, workdir: Path, model_url: str, model_key: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "bridge.log"
        self.target = Target(
            base_url=self.url,
            auth_token="fuzz-auth-" + secrets.token_hex(12),
            review_token="fuzz-review-" + secrets.token_hex(12),
            stream_secret=secrets.token_hex(16).encode(),
        )
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("BRIDGE_", "TWILIO_", "OPENAI_", "INWORLD_", "AZURE_", "XAI_"))
        }
        env.update(
            BRIDGE_PUBLIC_URL=self.url,
            BRIDGE_PROVIDER="openai",
            OPENAI_API_KEY=model_key,
            BRIDGE_REALTIME_URL=model_url,
            TWILIO_AUTH_TOKEN=self.target.auth_token,
            TWILIO_ACCOUNT_SID="AC" + "0" * 32,
            BRIDGE_REVIEW_TOKEN=self.target.review_token,
            BRIDGE_STREAM_SECRET=self.target.stream_secret.decode(),
            BRIDGE_DATABASE_URL=f"sqlite:///{workdir / 'calls.db'}",
            BRIDGE_GREETING=GREETING,
            BRIDGE_LOG_FORMAT="json",
            BRIDGE_LOG_LEVEL="info",
            BRIDGE_DRAIN_S="5",
        )
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bridge",
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=workdir,
            )

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    async def wait_ready(self, http: httpx.AsyncClient) -> None:
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while True:
            if not self.running:
                raise RuntimeError(f"bridge exited early:\n{self.tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(f"{self.url}/readyz", timeout=1.0)).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"bridge not ready in {_READY_TIMEOUT_S:g} s:\n{self.tail()}")
            await asyncio.sleep(0.1)

    def rss_kib(self) -> int:
        """``VmRSS`` of the bridge process, 0 once it is gone."""
        try:
            status = Path(f"/proc/{self.proc.pid}/status").read_text()
        except OSError:
            return 0
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def stop(self) -> None:
        if not self.running:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


async def good_calls(
    target: Target, http: httpx.AsyncClient, stop: asyncio.Event, good: GoodCalls
) -> None:
    """One good call after another until ``stop``; the one in flight then finishes."""
    utterances = [load_clip("caller_1"), load_clip("caller_2")]
    while not stop.is_set():
        good.run += 1
        problem = await _good_call(target, http, utterances)
        if problem is None:
            good.complete += 1
        else:
            good.failures.append(problem)
            await asyncio.sleep(0.5)  # a dead bridge must not turn this into a busy loop


async def _good_call(
    target: Target, http: httpx.AsyncClient, utterances: list[bytes]
) -> str | None:
    call_sid = "CA" + secrets.token_hex(16)
    try:
        result = await simulate_call(
            target.base_url,
            auth_token=target.auth_token,
            review_token=target.review_token,
            caller_utterances=utterances,
            call_sid=call_sid,
            max_duration_s=GOOD_CALL_LIMIT_S,
        )
    except Exception as exc:  # the bridge refused or dropped a good call: that is the finding
        return f"{call_sid}: {type(exc).__name__}: {exc}"[:200]
    if result.timed_out:
        return f"{call_sid}: timed out after {GOOD_CALL_LIMIT_S:g} s"
    return await _record_problem(target, http, call_sid)


async def _record_problem(target: Target, http: httpx.AsyncClient, call_sid: str) -> str | None:
    """Fetch the call's record with the review token; what is missing from it, if anything."""
    url = f"{target.base_url}/api/calls/{call_sid}"
    headers = {"Authorization": f"Bearer {target.review_token}"}
    record: object = None
    for _ in range(25):  # the last turn may be written just after the socket closed
        try:
            response = await http.get(url, headers=headers)
        except httpx.HTTPError as exc:
            return f"{call_sid}: record fetch failed: {exc!r}"
        if response.status_code != 200:
            return f"{call_sid}: GET /api/calls/{{sid}} answered {response.status_code}"
        try:
            record = response.json()
        except ValueError:
            return f"{call_sid}: the call record is not JSON"
        if isinstance(record, dict) and record.get("status") != "in_progress":
            break
        await asyncio.sleep(0.2)
    if not isinstance(record, dict):
        return f"{call_sid}: record is not an object"
    turns = record.get("turns") or []
    roles = {t.get("role") for t in turns if isinstance(t, dict) and t.get("text")}
    if record.get("status") != "completed" or not {"caller", "agent"} <= roles:
        status = record.get("status")
        return f"{call_sid}: status {status!r}, turns with text by {sorted(map(str, roles))}"
    return None
