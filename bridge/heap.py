"""The process heap, settled once the bridge has started.

CPython's cycle collector holds up the whole process while it walks its oldest generation,
and a bridge that has just started already holds over a hundred thousand tracked objects
(the modules, SQLAlchemy's tables, the settings, the agents) that live as long as the
process. Walking them took about 60 ms on a 2-core machine: every live call's audio, both
ways, waits that long each time a full collection runs, and under steady traffic they keep
coming. None of those objects ever becomes garbage, so once the server is up they
are moved where the collector no longer looks (:func:`gc.freeze`); a full collection then
walks only what the live calls hold.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass

__all__ = ["SettledHeap", "settle_heap"]


@dataclass(frozen=True, slots=True)
class SettledHeap:
    """What settling did, for the start-up log line."""

    frozen: int  # objects the collector no longer walks
    full_ms: float  # the full collection on the heap as start-up left it
    settled_full_ms: float  # one full collection afterwards, with no call yet


def settle_heap() -> SettledHeap:
    """Collect what starting up left behind, then freeze everything still alive. Call it once
    the server is ready, before calls arrive.

    Collecting first matters: a frozen cycle is never freed, so garbage must go before.
    A frozen object dropped later is still freed by reference counting unless it is part of
    a cycle; what start-up builds lives as long as the process, so that costs nothing.
    """
    began = time.perf_counter()
    gc.collect()
    collected = time.perf_counter()
    gc.freeze()
    # Walks nothing start-up built, so it is quick; timed so the log shows what was saved.
    gc.collect()
    done = time.perf_counter()
    return SettledHeap(
        frozen=gc.get_freeze_count(),
        full_ms=(collected - began) * 1000,
        settled_full_ms=(done - collected) * 1000,
    )
