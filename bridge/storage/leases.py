"""Instance leases: how a call whose process died is found and ended.

Each running bridge renews a lease row every third of ``lease_s``. Any instance that sees a
lease older than ``lease_s`` ends that instance's live calls as ``failed``/``unknown``. An
instance on the same host whose process is gone (its PID no longer exists, or is this very
process under an older instance id, as after a container restart) is known dead at once, so
a restarted bridge cleans up after its previous life without waiting for the lease to lapse.
Live calls of other instances, anywhere, are never touched while their lease is fresh.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta

import structlog

from bridge.storage.base import CallStore, Instance, InstanceLease, StoreUnavailableError

log = structlog.get_logger("bridge.leases")


def this_instance() -> Instance:
    """A fresh identity for this process: a random id, the host name and the PID."""
    return Instance(instance_id=uuid.uuid4().hex, host=socket.gethostname(), pid=os.getpid())


def pid_exists(pid: int) -> bool:
    """Whether a process with ``pid`` exists on this host (signal 0 checks, sends nothing)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by someone else
    return True


def dead_instances(
    leases: Iterable[InstanceLease], me: Instance, exists: Callable[[int], bool] = pid_exists
) -> frozenset[str]:
    """The ids of instances on this host whose process is certainly gone."""
    dead = set()
    for lease in leases:
        other = lease.instance
        if other.instance_id == me.instance_id or other.host != me.host:
            continue
        # Our own PID under another id is an earlier life of this process's slot (PID 1 in
        # a restarted container); any other PID is dead when it no longer exists.
        if other.pid == me.pid or not exists(other.pid):
            dead.add(other.instance_id)
    return frozenset(dead)


class LeaseKeeper:
    """Renews this instance's lease and ends calls of instances that died.

    ``await start()`` once before serving (renews and sweeps), run ``keep()`` as a task while
    serving, and ``await stop()`` at shutdown after the calls have finished.
    """

    def __init__(
        self,
        store: CallStore,
        instance: Instance,
        lease_s: float,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.instance = instance
        self.lease = timedelta(seconds=lease_s)
        self._now = now

    async def start(self) -> list[str]:
        """Take the lease and end what earlier lives left behind. Returns the SIDs ended."""
        await self.store.renew_lease(self._now())
        return await self.sweep()

    async def sweep(self) -> list[str]:
        now = self._now()
        leases = await self.store.list_leases()
        dead = dead_instances(leases, self.instance)
        ended = await self.store.end_orphaned_calls(now, now - self.lease, dead)
        if ended:
            log.warning("calls.orphans_ended", count=len(ended), end_reason="unknown")
        return ended

    async def keep(self) -> None:
        """Renew and sweep every third of the lease, forever; store errors are logged."""
        interval = self.lease.total_seconds() / 3
        while True:
            await asyncio.sleep(interval)
            try:
                await self.store.renew_lease(self._now())
                await self.sweep()
            except StoreUnavailableError as exc:
                log.error("lease.renew_failed", error=str(exc))

    async def stop(self) -> None:
        """Give up the lease (a clean shutdown leaves no orphans to find)."""
        try:
            await self.store.release_lease()
        except StoreUnavailableError as exc:
            log.error("lease.release_failed", error=str(exc))
