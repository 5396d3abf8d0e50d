"""A probe that ``bench heap --calls N`` loads into the ``bridge serve`` it starts (this
folder on ``PYTHONPATH``): what a full garbage collection costs a bridge with live calls.

It does nothing unless ``HEAP_PROBE_OUT`` is set. Then, ``HEAP_PROBE_AT_S`` seconds after the
process starts (with the calls up), a thread forces ``HEAP_PROBE_ROUNDS`` full collections a
few seconds apart, each holding the GIL, so the event loop waits exactly as it does for one
CPython starts by itself, and after each writes what they walked and how long they took to
``HEAP_PROBE_OUT`` as JSON. With ``HEAP_PROBE_UNSETTLED=1`` the bridge's ``gc.freeze()`` does
nothing: the same bridge as it was before it settled its heap, for the comparison. Never load
it into a bridge that serves real calls.
"""

from __future__ import annotations

import gc
import json
import os
import threading
import time

_OUT = os.environ.get("HEAP_PROBE_OUT")
_GAP_S = 3.0


def _unsettled_freeze() -> None:
    """``gc.freeze`` that freezes nothing."""


def _probe(out: str, at_s: float, rounds: int) -> None:
    time.sleep(at_s)
    readings = []
    for n in range(rounds):
        if n:
            time.sleep(_GAP_S)
        walked = len(gc.get_objects())
        began = time.perf_counter()
        gc.collect()
        readings.append({"walked": walked, "pause_ms": (time.perf_counter() - began) * 1000})
        # After each one: a bridge stopped before the last still leaves what it measured.
        with open(out + ".part", "w") as file:
            json.dump({"frozen": gc.get_freeze_count(), "collections": readings}, file)
        os.replace(out + ".part", out)


if _OUT:
    if os.environ.get("HEAP_PROBE_UNSETTLED") == "1":
        gc.freeze = _unsettled_freeze
    threading.Thread(
        target=_probe,
        args=(
            _OUT,
            float(os.environ.get("HEAP_PROBE_AT_S", "20")),
            int(os.environ.get("HEAP_PROBE_ROUNDS", "3")),
        ),
        name="heap-probe",
        daemon=True,
    ).start()
