"""Reloading the agents file while the bridge runs: a change reaches ``on_change``; a broken
file keeps the agents in force and says why in one warning; live calls keep their agent."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from structlog.testing import capture_logs

from bridge.adapters.agents_watch import AgentsWatcher
from bridge.agents import Agents, load_agents
from bridge.settings import Provider, Settings, load_settings

WAIT_S = 5.0
FIRST = '[agents.front-desk]\nnumbers = ["+15557650000"]\ninstructions = "First version."\n'
SECOND = (
    '[agents.front-desk]\nnumbers = ["+15557650000"]\ninstructions = "Second version."\n'
    '[agents.sales]\nnumbers = ["+15557651111"]\n'
)
BROKEN = '[agents.front-desk]\nnumbers = ["5551234"]\n'


@pytest.fixture
def settings() -> Settings:
    return load_settings(provider=Provider.LOCAL, instructions="Settings instructions.")


class Holder:
    """What the application does in ``on_change``: swap the reference new calls read."""

    def __init__(self, agents: Agents) -> None:
        self.agents = agents
        self.changes: list[Agents] = []
        self.changed = asyncio.Event()

    def __call__(self, agents: Agents) -> None:
        self.agents = agents
        self.changes.append(agents)
        self.changed.set()

    async def next_change(self) -> Agents:
        async with asyncio.timeout(WAIT_S):
            await self.changed.wait()
        self.changed.clear()
        return self.agents


def _rewrite(path: Path, text: str) -> None:
    """Replace the file and move its mtime clearly forward: coarse file-system clocks must
    not hide a change from the poller."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text, encoding="utf-8")
    os.utime(path, ns=(before + 2_000_000_000, before + 2_000_000_000))


@asynccontextmanager
async def _running(watcher: AgentsWatcher) -> AsyncIterator[None]:
    task = asyncio.create_task(watcher.run())
    try:
        yield
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            async with asyncio.timeout(WAIT_S):
                await task


class Watcher(AgentsWatcher):
    """The watcher, telling the test each time it has tried a reload."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reloads: asyncio.Queue[bool] = asyncio.Queue()

    def reload(self) -> bool:
        applied = super().reload()
        self.reloads.put_nowait(applied)
        return applied

    async def next_reload(self) -> bool:
        async with asyncio.timeout(WAIT_S):
            return await self.reloads.get()


def _start(tmp_path: Path, settings: Settings) -> tuple[Path, Holder, Watcher]:
    path = tmp_path / "agents.toml"
    path.write_text(FIRST, encoding="utf-8")
    holder = Holder(load_agents(path, settings))
    return path, holder, Watcher(path, settings, holder, poll_s=0.01)


async def test_a_changed_file_reaches_on_change(tmp_path: Path, settings: Settings) -> None:
    path, holder, watcher = _start(tmp_path, settings)
    with capture_logs() as logs:
        async with _running(watcher):
            await asyncio.sleep(0.1)  # several polls of an unchanged file: nothing happens
            assert holder.changes == [] and watcher.reloads.empty()
            _rewrite(path, SECOND)
            agents = await holder.next_change()
    assert agents.names == ("front-desk", "sales", "default")
    assert agents.for_number("+15557650000").instructions == "Second version."
    assert agents.for_number("+15557651111").name == "sales"
    assert len(holder.changes) == 1
    reloaded = [e for e in logs if e["event"] == "agents.reloaded"]
    assert reloaded == [
        {"event": "agents.reloaded", "log_level": "info", "path": str(path), "agents": 3}
    ]


async def test_a_broken_file_keeps_the_old_agents_and_logs_one_warning(
    tmp_path: Path, settings: Settings
) -> None:
    path, holder, watcher = _start(tmp_path, settings)
    old = holder.agents
    with capture_logs() as logs:
        async with _running(watcher):
            _rewrite(path, BROKEN)
            assert await watcher.next_reload() is False
            await asyncio.sleep(0.1)  # more polls of the same broken file: no more attempts
            assert watcher.reloads.empty()
            assert holder.agents is old and holder.changes == []

            _rewrite(path, SECOND)  # fixed: the next version applies
            agents = await holder.next_change()
    failed = [e for e in logs if e["event"] == "agents.reload_failed"]
    assert len(failed) == 1
    assert failed[0]["log_level"] == "warning" and "exc_info" not in failed[0]
    assert failed[0]["error"] == (
        f"{path}: agents.front-desk.numbers[0]: '5551234' is not an E.164 number "
        "(+ and 7-15 digits)"
    )
    assert agents.get("sales") is not None


async def test_a_deleted_file_keeps_the_old_agents(tmp_path: Path, settings: Settings) -> None:
    path, holder, watcher = _start(tmp_path, settings)
    old = holder.agents
    with capture_logs() as logs:
        async with _running(watcher):
            path.unlink()
            assert await watcher.next_reload() is False
            await asyncio.sleep(0.1)
            assert watcher.reloads.empty()
    assert holder.agents is old
    assert [e["event"] for e in logs] == ["agents.reload_failed"]
    assert "cannot read the agents file" in logs[0]["error"]


async def test_a_live_call_keeps_the_agent_it_started_with(
    tmp_path: Path, settings: Settings
) -> None:
    path, holder, watcher = _start(tmp_path, settings)
    live_call_agent = holder.agents.for_number("+15557650000")
    before = live_call_agent.model_dump()
    async with _running(watcher):
        _rewrite(path, SECOND)
        agents = await holder.next_change()
    assert live_call_agent.model_dump() == before
    assert live_call_agent.instructions == "First version."
    with pytest.raises(ValidationError):
        live_call_agent.instructions = "Second version."
    # The next call to the same number gets the new version.
    assert agents.for_number("+15557650000").instructions == "Second version."


def test_reload_called_directly_reports_whether_it_applied(
    tmp_path: Path, settings: Settings
) -> None:
    path, holder, watcher = _start(tmp_path, settings)
    _rewrite(path, SECOND)
    assert watcher.reload() is True and holder.agents.get("sales") is not None
    _rewrite(path, BROKEN)
    with capture_logs():
        assert watcher.reload() is False
    assert holder.agents.get("sales") is not None


async def test_a_failing_on_change_does_not_stop_the_watcher(
    tmp_path: Path, settings: Settings
) -> None:
    path = tmp_path / "agents.toml"
    path.write_text(FIRST, encoding="utf-8")
    seen: list[Agents] = []

    def on_change(agents: Agents) -> None:
        seen.append(agents)
        if len(seen) == 1:
            raise RuntimeError("the application's hook failed")

    watcher = Watcher(path, settings, on_change, poll_s=0.01)
    with capture_logs() as logs:
        async with _running(watcher):
            _rewrite(path, SECOND)
            assert await watcher.next_reload() is False
            _rewrite(path, FIRST)
            assert await watcher.next_reload() is True
    assert len(seen) == 2
    assert [e["event"] for e in logs] == ["agents.apply_failed", "agents.reloaded"]


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="no SIGHUP on this platform")
async def test_sighup_reloads_and_the_previous_handler_comes_back(
    tmp_path: Path, settings: Settings
) -> None:
    path, holder, watcher = _start(tmp_path, settings)
    # A long poll: only the signal can cause the reload within the test's time.
    watcher.poll_s = 3600
    previous = signal.getsignal(signal.SIGHUP)
    if not watcher.install_sighup(asyncio.get_running_loop()):
        pytest.skip("this event loop cannot handle signals")
    try:
        path.write_text(SECOND, encoding="utf-8")
        with capture_logs() as logs:
            os.kill(os.getpid(), signal.SIGHUP)
            agents = await holder.next_change()
    finally:
        watcher.remove_sighup()
    assert agents.get("sales") is not None
    assert [e["event"] for e in logs] == ["agents.sighup", "agents.reloaded"]
    assert signal.getsignal(signal.SIGHUP) == previous


def test_install_sighup_is_harmless_where_signals_cannot_be_handled(
    tmp_path: Path, settings: Settings
) -> None:
    class NoSignals(asyncio.SelectorEventLoop):
        def add_signal_handler(self, *_args: object) -> None:
            raise NotImplementedError

    _path, _holder, watcher = _start(tmp_path, settings)
    loop = NoSignals()
    try:
        with capture_logs():
            assert watcher.install_sighup(loop) is False
        watcher.remove_sighup()  # nothing installed: nothing to undo
    finally:
        loop.close()
