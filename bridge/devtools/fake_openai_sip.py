"""A stand-in for OpenAI's SIP connector, for tests: the call-control REST routes and the
sideband WebSocket, on a real socket on 127.0.0.1.

``POST /v1/realtime/calls/{call_id}/accept|reject|refer|hangup`` records every request (and
whether its bearer token was right) and answers 200, or 404 for a call that has ended.
``WS /v1/realtime?call_id=…`` opens only for an accepted call and speaks GA events with no
audio, as the real sideband does: ``session.created``, then a scripted conversation of
:class:`CallerSays` (speech, commit, input transcription), :class:`AgentSays` (a response
with its transcript, function calls as in ``bridge.devtools.fake_script.ToolCall``, and
``output_audio_buffer.started``/``stopped`` around the playout) and :class:`CallerHangsUp`
(the socket closes). A ``hangup`` or a ``refer`` ends the call and closes its sideband.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from bridge.devtools.fake_script import ToolCall
from bridge.devtools.ports import free_port

__all__ = [
    "AgentSays",
    "CallerHangsUp",
    "CallerSays",
    "FakeOpenAiSip",
    "RestRequest",
    "Sideband",
]

# Bounds on every wait, so a test whose client misbehaves fails instead of hanging.
CLIENT_WAIT_S = 10.0
CALL_WAIT_S = 60.0
STEP_GAP_S = 0.05


@dataclass(frozen=True, slots=True)
class CallerSays:
    """The caller speaks; the input transcription follows."""

    text: str


@dataclass(frozen=True, slots=True)
class AgentSays:
    """One response: ``text`` spoken (may be empty), then ``tool_calls``. ``when_asked``:
    wait for the client's ``response.create`` first (a greeting, the turn after tool
    outputs); else the server's VAD starts it. ``playout_s``: from ``response.done`` to
    ``output_audio_buffer.stopped``; ``None`` sends no ``output_audio_buffer`` events."""

    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    when_asked: bool = False
    playout_s: float | None = 0.2


@dataclass(frozen=True, slots=True)
class CallerHangsUp:
    """The caller hangs up: OpenAI closes the sideband."""


Step = CallerSays | AgentSays | CallerHangsUp


@dataclass(frozen=True, slots=True)
class RestRequest:
    action: str
    call_id: str
    body: Any
    authorized: bool


@dataclass
class Sideband:
    """One sideband connection: what each side sent."""

    call_id: str
    client_events: list[dict[str, Any]] = field(default_factory=list)
    server_events: list[dict[str, Any]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    closed: bool = False
    asks: int = 0  # the client's response.create events a scripted response has answered

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.client_events if e.get("type") == kind]

    @property
    def function_outputs(self) -> dict[str, str]:
        return {
            e["item"]["call_id"]: e["item"]["output"]
            for e in self.of_type("conversation.item.create")
            if e.get("item", {}).get("type") == "function_call_output"
        }


class FakeOpenAiSip:
    """Start with ``await start()``; ``url`` is then the OPENAI_API_BASE to give the bridge.
    ``script`` is played on every sideband; ``await stop()`` ends everything."""

    def __init__(self, api_key: str | None = None, script: Sequence[Step] = ()) -> None:
        self.api_key = api_key
        self.script: list[Step] = list(script)
        self.requests: list[RestRequest] = []
        self.sidebands: list[Sideband] = []
        #: (call id, what) in the order it happened: REST actions as ``rest:<action>``, the
        #: sideband's events as their type.
        self.timeline: list[tuple[str, str]] = []
        self._accepted: set[str] = set()
        self._ended: dict[str, asyncio.Event] = {}
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._seq = 0
        self.port = 0

    # -- running ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.port = free_port()
        app = Starlette(
            routes=[
                Route("/v1/realtime/calls/{call_id}/{action}", self._rest, methods=["POST"]),
                WebSocketRoute("/v1/realtime", self._sideband),
            ]
        )
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve())
        for _ in range(200):
            if self._server.started:
                return
            await asyncio.sleep(0.025)
        raise RuntimeError("the fake OpenAI server did not start")

    async def stop(self) -> None:
        for ended in self._ended.values():
            ended.set()
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._task, 10)

    async def __aenter__(self) -> FakeOpenAiSip:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- what tests ask --------------------------------------------------------------------

    def actions(self, call_id: str | None = None) -> list[str]:
        return [r.action for r in self.requests if call_id is None or r.call_id == call_id]

    def request(self, call_id: str, action: str) -> RestRequest:
        return next(r for r in self.requests if r.call_id == call_id and r.action == action)

    async def until(self, check: Callable[[], bool], timeout_s: float = 15.0) -> None:
        """Wait (bounded) until ``check()`` holds; ``TimeoutError`` otherwise."""
        for _ in range(max(1, round(timeout_s / 0.05))):
            if check():
                return
            await asyncio.sleep(0.05)
        if not check():
            raise TimeoutError("the fake OpenAI server did not see what was expected")

    # -- REST ------------------------------------------------------------------------------

    async def _rest(self, request: Request) -> Response:
        call_id = request.path_params["call_id"]
        action = request.path_params["action"]
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        expected = f"Bearer {self.api_key}" if self.api_key else None
        authorized = expected is None or request.headers.get("authorization") == expected
        self.requests.append(RestRequest(action, call_id, body, authorized))
        self.timeline.append((call_id, f"rest:{action}"))
        if action not in ("accept", "reject", "refer", "hangup"):
            return JSONResponse({"error": {"message": "unknown action"}}, status_code=404)
        if not authorized:
            return JSONResponse({"error": {"code": "invalid_api_key"}}, status_code=401)
        ended = self._ended.setdefault(call_id, asyncio.Event())
        if ended.is_set():
            return JSONResponse({"error": {"message": "call not found"}}, status_code=404)
        if action == "accept":
            self._accepted.add(call_id)
        else:  # a reject, a transfer or a hang-up: the call is over at OpenAI
            ended.set()
        return Response(status_code=200)

    # -- the sideband ----------------------------------------------------------------------

    async def _sideband(self, ws: WebSocket) -> None:
        call_id = ws.query_params.get("call_id", "")
        expected = f"Bearer {self.api_key}" if self.api_key else None
        if call_id not in self._accepted or (
            expected is not None and ws.headers.get("authorization") != expected
        ):
            await ws.close(1008)  # before accept: the handshake is refused
            return
        await ws.accept()
        side = Sideband(call_id)
        self.sidebands.append(side)
        ended = self._ended.setdefault(call_id, asyncio.Event())
        reader = asyncio.create_task(self._read(ws, side))
        try:
            await self._send(ws, side, {"type": "session.created", "session": _session()})
            for step in self.script:
                if ended.is_set() or side.closed:
                    break
                if isinstance(step, CallerHangsUp):
                    break
                if isinstance(step, CallerSays):
                    await self._caller(ws, side, step)
                else:
                    await self._agent(ws, side, step)
            else:
                # The script is over: the call goes on until the bridge ends it.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ended.wait(), CALL_WAIT_S)
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass
        finally:
            reader.cancel()
            with contextlib.suppress(Exception):
                await ws.close(1000)
            side.closed = True

    async def _read(self, ws: WebSocket, side: Sideband) -> None:
        try:
            while True:
                event = json.loads(await ws.receive_text())
                side.client_events.append(event)
                side.changed.set()
                if event.get("type") == "session.update":
                    session = {**_session(), **event.get("session", {})}
                    await self._send(ws, side, {"type": "session.updated", "session": session})
        except (WebSocketDisconnect, RuntimeError, ValueError, OSError):
            side.closed = True
            side.changed.set()

    async def _wait_client(self, side: Sideband, done: Callable[[], bool]) -> None:
        async with asyncio.timeout(CLIENT_WAIT_S):
            while not done():
                side.changed.clear()
                if side.closed:
                    raise WebSocketDisconnect(1000)
                await side.changed.wait()

    async def _send(self, ws: WebSocket, side: Sideband, event: dict[str, Any]) -> None:
        self._seq += 1
        event = {"event_id": f"event_{self._seq:04d}", **event}
        side.server_events.append(event)
        self.timeline.append((side.call_id, event["type"]))
        await ws.send_text(json.dumps(event))

    async def _caller(self, ws: WebSocket, side: Sideband, step: CallerSays) -> None:
        item_id = "item_" + secrets.token_hex(8)
        start = 200 * len(side.server_events)
        for event in (
            {"type": "input_audio_buffer.speech_started", "audio_start_ms": start,
             "item_id": item_id},
            {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": start + 1200,
             "item_id": item_id},
            {"type": "input_audio_buffer.committed", "item_id": item_id,
             "previous_item_id": None},
            {"type": "conversation.item.added", "previous_item_id": None,
             "item": _user_item(item_id)},
            {"type": "conversation.item.input_audio_transcription.completed",
             "item_id": item_id, "content_index": 0, "transcript": step.text,
             "usage": {"type": "duration", "seconds": 1.2}},
        ):  # fmt: skip
            await self._send(ws, side, event)
            await asyncio.sleep(STEP_GAP_S)

    async def _agent(self, ws: WebSocket, side: Sideband, step: AgentSays) -> None:
        if step.when_asked:
            await self._wait_client(side, lambda: len(side.of_type("response.create")) > side.asks)
            side.asks += 1
        response_id = "resp_" + secrets.token_hex(8)
        output: list[dict[str, Any]] = []
        send = self._send
        await send(ws, side, {"type": "response.created", "response": _response(response_id)})
        if step.text:
            await self._message(ws, side, response_id, step, output)
        calls = []
        for call in step.tool_calls:
            calls.append(await self._call(ws, side, response_id, len(output), call, output))
        await send(
            ws, side,
            {"type": "response.done", "response": _response(response_id, "completed", output)},
        )  # fmt: skip
        if step.text and step.playout_s is not None:
            await asyncio.sleep(step.playout_s)
            await send(ws, side, {"type": "output_audio_buffer.stopped",
                                  "response_id": response_id})  # fmt: skip
        if calls:
            await self._wait_client(side, lambda: all(c in side.function_outputs for c in calls))

    async def _message(
        self, ws: WebSocket, side: Sideband, rid: str, step: AgentSays, output: list[Any]
    ) -> None:
        item_id = "item_" + secrets.token_hex(8)
        where = {"response_id": rid, "item_id": item_id, "output_index": 0, "content_index": 0}
        pending = _assistant_item(item_id, "in_progress", None)
        send = self._send
        await send(ws, side, {"type": "response.output_item.added", "response_id": rid,
                              "output_index": 0, "item": pending})  # fmt: skip
        await send(ws, side, {"type": "conversation.item.added", "previous_item_id": None,
                              "item": pending})  # fmt: skip
        await send(ws, side, {"type": "response.content_part.added", **where,
                              "part": {"type": "audio", "transcript": ""}})  # fmt: skip
        if step.playout_s is not None:
            await send(ws, side, {"type": "output_audio_buffer.started", "response_id": rid})
        words = step.text.split(" ")
        for n, word in enumerate(words):
            delta = word if n == 0 else " " + word
            await send(ws, side, {"type": "response.output_audio_transcript.delta", **where,
                                  "delta": delta})  # fmt: skip
            await asyncio.sleep(0.01)
        await send(ws, side, {"type": "response.output_audio.done", **where})
        await send(ws, side, {"type": "response.output_audio_transcript.done", **where,
                              "transcript": step.text})  # fmt: skip
        await send(ws, side, {"type": "response.content_part.done", **where,
                              "part": {"type": "audio", "transcript": step.text}})  # fmt: skip
        done = _assistant_item(item_id, "completed", step.text)
        await send(ws, side, {"type": "response.output_item.done", "response_id": rid,
                              "output_index": 0, "item": done})  # fmt: skip
        await send(ws, side, {"type": "conversation.item.done", "previous_item_id": None,
                              "item": done})  # fmt: skip
        output.append(done)

    async def _call(
        self, ws: WebSocket, side: Sideband, rid: str, index: int, call: ToolCall,
        output: list[Any],
    ) -> str:  # fmt: skip
        item_id = "item_" + secrets.token_hex(8)
        call_id = "call_" + secrets.token_hex(8)
        send = self._send

        def item(status: str, arguments: str) -> dict[str, Any]:
            return {"id": item_id, "object": "realtime.item", "type": "function_call",
                    "status": status, "call_id": call_id, "name": call.name,
                    "arguments": arguments}  # fmt: skip

        await send(ws, side, {"type": "response.output_item.added", "response_id": rid,
                              "output_index": index, "item": item("in_progress", "")})  # fmt: skip
        await send(ws, side, {"type": "conversation.item.added", "previous_item_id": None,
                              "item": item("in_progress", "")})  # fmt: skip
        arguments = call.arguments_json
        await send(ws, side, {"type": "response.function_call_arguments.delta",
                              "response_id": rid, "item_id": item_id, "output_index": index,
                              "call_id": call_id, "delta": arguments})  # fmt: skip
        await send(ws, side, {"type": "response.function_call_arguments.done",
                              "response_id": rid, "item_id": item_id, "output_index": index,
                              "call_id": call_id, "name": call.name,
                              "arguments": arguments})  # fmt: skip
        done = item("completed", arguments)
        await send(ws, side, {"type": "conversation.item.done", "previous_item_id": None,
                              "item": done})  # fmt: skip
        await send(ws, side, {"type": "response.output_item.done", "response_id": rid,
                              "output_index": index, "item": done})  # fmt: skip
        output.append(done)
        return call_id


def _session() -> dict[str, Any]:
    return {
        "type": "realtime",
        "object": "realtime.session",
        "id": "sess_" + secrets.token_hex(8),
        "model": "gpt-realtime",
        "output_modalities": ["audio"],
        "instructions": "",
        "tools": [],
        "tool_choice": "auto",
        "max_output_tokens": "inf",
        "tracing": None,
        "prompt": None,
        "expires_at": 0,
        "audio": {
            "input": {"format": {"type": "audio/pcmu"}, "transcription": None,
                      "noise_reduction": None, "turn_detection": None},
            "output": {"format": {"type": "audio/pcmu"}, "voice": "marin", "speed": 1.0},
        },
        "include": None,
    }  # fmt: skip


def _user_item(item_id: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "message",
        "role": "user",
        "status": "completed",
        "content": [{"type": "input_audio", "transcript": None}],
    }


def _assistant_item(item_id: str, status: str, transcript: str | None) -> dict[str, Any]:
    content = [] if transcript is None else [{"type": "output_audio", "transcript": transcript}]
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": content,
    }


def _response(rid: str, status: str = "in_progress", output: list[Any] | None = None) -> Any:
    return {
        "id": rid,
        "object": "realtime.response",
        "status": status,
        "status_details": None,
        "output": output or [],
        "conversation_id": "conv_fake",
        "output_modalities": ["audio"],
        "max_output_tokens": "inf",
        "audio": {"output": {"format": {"type": "audio/pcmu"}, "voice": "marin"}},
        "usage": None,
        "metadata": None,
    }
