"""Starting and finding the servers ``bridge loadtest`` loads: a fresh ``bridge serve``, a
bridge already running (its process found from its port), and the naive floor.

Each is a :class:`Target`; whatever is started here is stopped here, by its PID, even when the
run is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

# The load benchmark's bridge settings and process handling, so both measure the same bridge.
from bridge.devtools.bench_load import (
    _AUTH_TOKEN,
    _MODEL_KEY,
    _bridge_env,
    _start_bridge,
    _stop,
    _tail,
    _wait_ready,
)
from bridge.devtools.loadtest_report import PassReport
from bridge.devtools.ports import free_port
from bridge.devtools.proc_tree import listening_pid

__all__ = [
    "Target",
    "running_bridge",
    "start_floor",
    "wait_listening",
    "with_bridge",
    "with_floor",
]

_READY_S = 20.0


@dataclass(frozen=True, slots=True)
class Target:
    """A server to load: where it answers, its process, and what it takes part in."""

    name: str
    url: str
    pid: int
    auth_token: str | None
    public_url: str
    records: bool  # keeps call records (and answers Twilio's status callback)
    review_token: str | None = None


def start_floor(port: int, realtime_url: str, log: Path) -> subprocess.Popen[bytes]:
    """The naive pass-through (:mod:`bridge.devtools.naive_bridge`) as a child process."""
    with open(log, "wb") as log_file:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bridge.devtools.naive_bridge",
                "--port",
                str(port),
                "--realtime-url",
                realtime_url,
                "--api-key",
                _MODEL_KEY,
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=log.parent,
        )


async def wait_listening(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Until something accepts on 127.0.0.1:``port`` (bounded); fails if ``proc`` exits."""
    deadline = time.monotonic() + _READY_S
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early:\n{_tail(log)}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if time.monotonic() > deadline:
                message = f"server not listening in {_READY_S:g} s:\n{_tail(log)}"
                raise RuntimeError(message) from None
            await asyncio.sleep(0.1)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return


def running_bridge(
    url: str,
    *,
    pid: int | None,
    auth_token: str | None,
    public_url: str | None,
    review_token: str | None,
) -> Target:
    """The bridge already serving at ``url``: its process is ``pid``, or the one listening
    on the URL's port."""
    url = url.rstrip("/")
    port = httpx.URL(url).port or (443 if url.startswith("https") else 80)
    found = pid if pid is not None else listening_pid(port)
    if found is None:
        raise RuntimeError(
            f"no process of this user listens on port {port}: pass --pid of the bridge"
        )
    public = (public_url or url).rstrip("/")
    return Target("bridge", url, found, auth_token, public, True, review_token)


async def with_bridge(
    existing: Target | None,
    model_url: str,
    tmp: Path,
    run: Callable[[Target], Awaitable[PassReport]],
    extra_env: Callable[[dict[str, str]], dict[str, str]] | None = None,
    workers: int = 1,
) -> PassReport:
    """``run`` against the ``existing`` bridge, or else against a fresh ``bridge serve`` on a
    free port (``workers`` processes), pointed at the fake model at ``model_url``
    (``extra_env`` adjusts its environment), stopped after."""
    if existing is not None:
        return await run(existing)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = _bridge_env(url, model_url, tmp / "calls.db")
    if extra_env is not None:
        env = extra_env(env)
    log = tmp / "bridge.log"
    proc = _start_bridge(port, env, log, ("--workers", str(workers)) if workers > 1 else ())
    try:
        await _wait_ready(url, proc, log)
        return await run(Target("bridge", url, proc.pid, _AUTH_TOKEN, url, records=True))
    finally:
        _stop(proc)  # blocking, but bounded, and immune to a cancelled run


async def with_floor(
    model_url: str, tmp: Path, run: Callable[[Target], Awaitable[PassReport]]
) -> PassReport:
    """``run`` against a fresh naive pass-through pointed at the fake model at ``model_url``,
    stopped after."""
    port = free_port()
    log = tmp / "floor.log"
    proc = start_floor(port, model_url, log)
    try:
        await wait_listening(port, proc, log)
        url = f"http://127.0.0.1:{port}"
        return await run(Target("floor", url, proc.pid, None, url, records=False))
    finally:
        _stop(proc)
