"""The bridge settles its heap once it is listening: what start-up built is moved out of the
collector's sight (so a full collection stops walking it), garbage left by start-up is freed
first, and the calls' own objects are still collected as before.

The heap is settled in a child process: freezing the test runner's heap would change every
later test in it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from bridge import serving
from bridge.drain import Drain
from bridge.heap import SettledHeap
from bridge.serving import DrainingServer

_CHILD = """
import gc, json, weakref
from bridge.heap import settle_heap

class Node:
    pass

built_at_start = [Node() for _ in range(5000)]
left_by_start = Node()
left_by_start.loop = Node()
left_by_start.loop.back = left_by_start  # a cycle: only the collector can free it
left_gone = weakref.ref(left_by_start)
del left_by_start

frozen = settle_heap().frozen
walked = gc.get_objects()
still_walked = sum(1 for o in walked if type(o) is Node)

call_object = Node()
call_object.me = call_object  # a cycle made by a call, after start-up
call_gone = weakref.ref(call_object)
del call_object
gc.collect()

print(json.dumps({
    "frozen": frozen,
    "walked": len(walked),
    "still_walked": still_walked,
    "start_garbage_freed": left_gone() is None,
    "call_garbage_freed": call_gone() is None,
    "kept": len(built_at_start),
}))
"""


def test_settling_hides_start_up_objects_from_full_collections_and_frees_its_garbage() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD], capture_output=True, text=True, timeout=60, check=True
    )
    result = json.loads(out.stdout)
    assert result["frozen"] >= 5000
    # Nothing alive at start-up is walked by the collector any more...
    assert result["still_walked"] == 0
    assert result["walked"] < 100
    # ...but the cycle start-up dropped was freed before freezing, not kept forever,
    assert result["start_garbage_freed"] is True
    # and the cycles calls make later are still collected.
    assert result["call_garbage_freed"] is True
    assert result["kept"] == 5000


async def test_the_server_settles_its_heap_once_started_and_listening(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events: list[str] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        events.append("lifespan started")
        yield

    async def hello(request: object) -> PlainTextResponse:
        return PlainTextResponse("hi")

    app = Starlette(routes=[Route("/", hello)], lifespan=lifespan)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, log_config=None, lifespan="on", loop="none"
    )
    server = DrainingServer(config, Drain(), drain_s=1.0)

    def settle() -> SettledHeap:
        events.append("listening" if server.started else "not listening")
        server.should_exit = True
        return SettledHeap(frozen=0, full_ms=0.0, settled_full_ms=0.0)

    monkeypatch.setattr(serving, "settle_heap", settle)
    await asyncio.wait_for(server.serve(), timeout=20)
    assert events == ["lifespan started", "listening"]
