"""CPU and memory of a server's whole process tree, and the server behind a port, from /proc.

A server may fork (uvicorn's workers, a helper process): what one call costs is what the
tree costs, so the load test reads the root and every live descendant. CPU of a descendant
that has already exited and been reaped is in its parent's ``cutime``/``cstime``, so adding
those as well counts every process exactly once. Linux only.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["listening_pid", "tree_cpu_seconds", "tree_pids", "tree_rss_kib"]

_PROC = Path("/proc")
_LISTEN = "0A"  # TCP state in /proc/net/tcp


def _stat_fields(pid: int) -> list[str]:
    stat = (_PROC / str(pid) / "stat").read_text()
    # The command name may hold spaces and parentheses: fields restart after the last ")".
    return stat[stat.rindex(")") + 2 :].split()


def tree_pids(root: int) -> list[int]:
    """``root`` and its live descendants (root first). Raises ``OSError`` if root is gone."""
    _stat_fields(root)  # fail loudly for a root that does not exist
    children: dict[int, list[int]] = {}
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int(_stat_fields(int(entry.name))[1])  # field 4: ppid
        except (OSError, ValueError, IndexError):
            continue  # exited while we looked
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def tree_cpu_seconds(root: int) -> float:
    """User plus system CPU seconds of the tree so far, reaped descendants included."""
    ticks = 0
    for pid in tree_pids(root):
        try:
            fields = _stat_fields(pid)
        except OSError:
            continue
        # utime, stime, cutime, cstime: fields 14 to 17 of stat(5).
        ticks += sum(int(value) for value in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def tree_rss_kib(root: int) -> int:
    """The tree's resident memory now, in KiB (shared pages counted once per process)."""
    page_kib = os.sysconf("SC_PAGE_SIZE") // 1024
    total = 0
    for pid in tree_pids(root):
        try:
            total += int((_PROC / str(pid) / "statm").read_text().split()[1]) * page_kib
        except (OSError, ValueError, IndexError):
            continue
    return total


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (_PROC / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # local_address is HEXIP:HEXPORT; field 4 the state; field 10 the inode.
            if (
                len(fields) > 9
                and fields[3] == _LISTEN
                and int(fields[1].split(":")[1], 16) == port
            ):
                inodes.add(fields[9])
    return inodes


def listening_pid(port: int) -> int | None:
    """The process listening on TCP ``port`` (of those this user may inspect), or None.
    When several share the socket (a parent and its forked workers), the topmost of them."""
    targets = {f"socket:[{inode}]" for inode in _listening_inodes(port)}
    if not targets:
        return None
    holders: set[int] = set()
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                if os.readlink(fd) in targets:
                    holders.add(int(entry.name))
                    break
        except OSError:
            continue  # not ours to read, or gone
    for pid in sorted(holders):
        try:
            parent = int(_stat_fields(pid)[1])
        except (OSError, ValueError, IndexError):
            continue
        if parent not in holders:
            return pid
    return None
