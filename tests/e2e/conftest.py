"""Real sockets: the bridge under uvicorn in a child process on a free port, the fake realtime
server in the test's own loop, and the Twilio simulator. Everything started is stopped."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bridge.devtools.fake_realtime import FakeRealtimeServer
from bridge.devtools.ports import free_port

AUTH_TOKEN = "test-auth-token-0123456789"
REVIEW_TOKEN = "test-review-token"
MODEL_KEY = "sk-test-model-key"


@dataclass
class RunningBridge:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    db_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _limit_fds(soft: int, hard: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    return apply


@contextmanager
def run_bridge(
    tmp_path: Path,
    env: dict[str, str],
    fd_limits: tuple[int, int] | None = None,
    args: tuple[str, ...] = (),
) -> Iterator[RunningBridge]:
    """``bridge serve`` on a free port, ready when /readyz says so; stopped by its PID.
    ``fd_limits`` (soft, hard) sets the child's RLIMIT_NOFILE."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    db = tmp_path / f"calls-{port}.db"
    log_path = tmp_path / f"bridge-{port}.log"
    full_env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("BRIDGE_", "TWILIO_", "OPENAI_", "INWORLD_", "AZURE_", "XAI_"))
    }
    full_env.update(
        {
            "BRIDGE_PUBLIC_URL": url,
            "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
            "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
            "BRIDGE_REVIEW_TOKEN": REVIEW_TOKEN,
            "BRIDGE_DATABASE_URL": f"sqlite:///{db}",
            "BRIDGE_LOG_FORMAT": "json",
            "BRIDGE_LOG_LEVEL": "debug",
            # A SIGTERM to a bridge with a call up is not a long wait.
            "BRIDGE_DRAIN_S": "2",
        }
    )
    full_env.update(env)
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "bridge", "serve", "--host", "127.0.0.1"),
                *("--port", str(port), *args),
            ],
            env=full_env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
            preexec_fn=None if fd_limits is None else _limit_fds(*fd_limits),
        )
    bridge = RunningBridge(url, proc, log_path, db)
    try:
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"bridge exited early:\n{bridge.log()}")
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"bridge not ready in time:\n{bridge.log()}")
            time.sleep(0.1)
        yield bridge
    finally:
        # SIGINT stops at once; SIGTERM would let calls still up drain first.
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


async def scrape(bridge: RunningBridge) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """``/metrics`` as {(sample name, labels): value}, parsed by prometheus_client."""
    async with httpx.AsyncClient(base_url=bridge.url, timeout=5) as client:
        text = (await client.get("/metrics")).text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def sample(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    """One sample's value (0 when the series does not exist yet)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


@asynccontextmanager
async def fake_server(
    dialect: str = "openai", **kwargs: object
) -> AsyncIterator[FakeRealtimeServer]:
    server = FakeRealtimeServer(dialect, api_key=MODEL_KEY, **kwargs)  # type: ignore[arg-type]
    await server.start("127.0.0.1", 0)
    try:
        yield server
    finally:
        await server.stop()


def provider_env(server: FakeRealtimeServer, dialect: str, **extra: str) -> dict[str, str]:
    """Settings that point the bridge at ``server`` as if it were the real provider."""
    env = {"BRIDGE_REALTIME_URL": server.url, **extra}
    if dialect == "inworld":
        env.update(BRIDGE_PROVIDER="inworld", INWORLD_API_KEY=MODEL_KEY)
    elif dialect == "openai-beta":
        env.update(BRIDGE_PROVIDER="openai-beta", OPENAI_API_KEY=MODEL_KEY)
    elif dialect == "xai":
        env.update(BRIDGE_PROVIDER="xai", XAI_API_KEY=MODEL_KEY)
    else:
        env.update(BRIDGE_PROVIDER="openai", OPENAI_API_KEY=MODEL_KEY)
    return env


@pytest.fixture
def bridge_factory(tmp_path: Path) -> Iterator[Callable[..., RunningBridge]]:
    stack: list[Iterator[RunningBridge]] = []

    def start(env: dict[str, str], args: tuple[str, ...] = ()) -> RunningBridge:
        ctx = run_bridge(tmp_path, env, args=args)
        bridge = ctx.__enter__()
        stack.append(ctx)  # type: ignore[arg-type]
        return bridge

    yield start
    for ctx in reversed(stack):
        ctx.__exit__(None, None, None)  # type: ignore[attr-defined]
