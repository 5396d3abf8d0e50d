"""Reloading the agents file while the bridge runs: when it changes on disk, or on SIGHUP.

A file that fails to load changes nothing: the agents in force stay, and one warning line
says why. Calls already running are never touched; they hold the ``Agent`` they started with.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from bridge.agents import Agents, load_agents
from bridge.errors import ConfigurationError
from bridge.settings import Settings

log = structlog.get_logger("bridge.agents")

# What identifies one version of the file: modification time, size and inode (an editor or
# a config-management tool that replaces the file by rename gives it a new inode).
_Signature = tuple[int, int, int] | None


def _signature(path: Path) -> _Signature:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class AgentsWatcher:
    """Polls ``path`` every ``poll_s`` seconds and calls ``on_change`` with each new version
    that loads. Build it right after the initial ``load_agents`` of the same file, so the
    version already in force is not loaded a second time.

    ``on_change`` runs on the event loop and should only swap a reference.
    """

    def __init__(
        self,
        path: Path,
        settings: Settings,
        on_change: Callable[[Agents], None],
        *,
        poll_s: float = 1.0,
    ) -> None:
        self.path = Path(path)
        self.poll_s = poll_s
        self._settings = settings
        self._on_change = on_change
        self._seen = _signature(self.path)
        self._sighup: tuple[asyncio.AbstractEventLoop, Any] | None = None

    async def run(self) -> None:
        """Poll until cancelled."""
        while True:
            await asyncio.sleep(self.poll_s)
            if _signature(self.path) != self._seen:
                self.reload()

    def reload(self) -> bool:
        """Load the file now; ``True`` when the new agents were handed to ``on_change``."""
        # Taken before reading: a write that lands during the read is seen at the next poll.
        self._seen = _signature(self.path)
        try:
            agents = load_agents(self.path, self._settings)
        except ConfigurationError as exc:
            log.warning("agents.reload_failed", path=str(self.path), error=str(exc))
            return False
        try:
            self._on_change(agents)
        except Exception:
            # A fault in the application's hook; keep watching so the next fix still applies.
            log.exception("agents.apply_failed", path=str(self.path))
            return False
        log.info("agents.reloaded", path=str(self.path), agents=len(agents))
        return True

    def install_sighup(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Reload on SIGHUP. ``False`` (and nothing changed) where signals cannot be handled:
        no SIGHUP on the platform, a loop without signal support, not the main thread."""
        sighup = getattr(signal, "SIGHUP", None)
        if sighup is None or self._sighup is not None:
            return False
        try:
            previous = signal.getsignal(sighup)
            loop.add_signal_handler(sighup, self._on_sighup)
        except (NotImplementedError, RuntimeError, ValueError) as exc:
            log.info("agents.sighup_unavailable", reason=str(exc))
            return False
        self._sighup = (loop, previous)
        return True

    def remove_sighup(self) -> None:
        """Undo ``install_sighup``, putting back the handler that was there before."""
        if self._sighup is None:
            return
        loop, previous = self._sighup
        self._sighup = None
        loop.remove_signal_handler(signal.SIGHUP)
        if previous is not None:
            signal.signal(signal.SIGHUP, previous)

    def _on_sighup(self) -> None:
        log.info("agents.sighup", path=str(self.path))
        self.reload()
