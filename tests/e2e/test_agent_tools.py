"""Agents that act, over real sockets: an agents file routes the dialed number to an agent
whose tools the fake model calls; HTTP tools get a signed POST from the bridge and their
answers (or their failures) reach the model; ``end_call`` hangs up after the goodbye; a
transfer dials the agent's named target (Twilio) or sends a REFER (SIP)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bridge.codecs.clips import load_clip
from bridge.devtools.fake_script import FakeScript, Reply, ToolCall
from bridge.devtools.ports import free_port
from bridge.devtools.simulator import SimulationResult, sign, simulate_call
from bridge.protocols.sip.message import SipRequest, parse_message

from .conftest import (
    AUTH_TOKEN,
    REVIEW_TOKEN,
    RunningBridge,
    fake_server,
    provider_env,
    sample,
    scrape,
)
from .raw_sip import SILENCE, RawPhone, finished_record, sip_env

StartBridge = Callable[[dict[str, str]], RunningBridge]
SECRET = "availability-secret"


class ToolService:
    """The business's own HTTP endpoints the agent's tools call."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, Any], bool]] = []  # body, signature valid
        self.url = ""

    async def availability(self, request: Request) -> Response:
        body = await request.body()
        expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        valid = hmac.compare_digest(request.headers.get("x-bridge-signature", ""), expected)
        self.requests.append((json.loads(body), valid))
        if not valid:
            return JSONResponse({"error": "bad signature"}, status_code=401)
        return JSONResponse({"tables": [{"time": "20:00", "seats": 4}]})

    async def slow(self, request: Request) -> Response:
        await asyncio.sleep(3.0)
        return JSONResponse({"late": True})

    async def broken(self, request: Request) -> Response:
        return JSONResponse({"oops": True}, status_code=500)

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/availability", self.availability, methods=["POST"]),
                Route("/slow", self.slow, methods=["POST"]),
                Route("/broken", self.broken, methods=["POST"]),
            ]
        )


@asynccontextmanager
async def tool_service() -> AsyncIterator[ToolService]:
    service = ToolService()
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(service.app(), host="127.0.0.1", port=port, log_level="warning")
    )
    task = asyncio.create_task(server.serve())
    try:
        for _ in range(100):
            if server.started:
                break
            await asyncio.sleep(0.05)
        service.url = f"http://127.0.0.1:{port}"
        yield service
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


def agents_file(tmp_path: Path, tools_url: str) -> Path:
    path = tmp_path / "agents.toml"
    path.write_text(
        f"""
[agents.front-desk]
numbers = ["+15557650000"]
instructions = "You are the front desk of Bella Cucina."
tools = ["check_availability", "slow_lookup", "broken_lookup", "end_call", "transfer_call"]
transfer_targets = {{ reception = "+15550001111" }}

[agents.default]
instructions = "You answer numbers no one else does."

[tools.check_availability]
description = "Free tables for a date."
parameters = {{ type = "object", properties = {{ date = {{ type = "string" }} }} }}
url = "{tools_url}/availability"
secret = "{SECRET}"

[tools.slow_lookup]
description = "A lookup that takes too long."
url = "{tools_url}/slow"
timeout_s = 0.5

[tools.broken_lookup]
description = "A lookup that fails."
url = "{tools_url}/broken"
"""
    )
    return path


async def test_http_tools_are_called_signed_and_their_answers_and_failures_reach_the_model(
    bridge_factory: StartBridge, tmp_path: Path
) -> None:
    script = FakeScript(
        replies=[
            Reply(
                tool_calls=(
                    ToolCall("check_availability", {"date": "2026-12-24"}),
                    ToolCall("slow_lookup", {}),
                    ToolCall("broken_lookup", {}),
                )
            ),
            Reply("We have a table for four at eight.", duration_ms=1500),
        ],
        caller_transcripts=["A table for four on Christmas Eve?"],
    )
    async with tool_service() as service, fake_server("openai", script=script) as fake:
        env = provider_env(fake, "openai", BRIDGE_AGENTS=str(agents_file(tmp_path, service.url)))
        bridge = bridge_factory(env)
        result = await simulate_call(
            bridge.url,
            auth_token=AUTH_TOKEN,
            review_token=REVIEW_TOKEN,
            caller_utterances=[load_clip("caller_1")],
            max_duration_s=20,
        )
    session = fake.sessions[0]
    # The agent for the dialed number, with its tools declared in the session.
    declared = {tool["name"] for tool in session.tools}
    assert declared == {
        "check_availability", "slow_lookup", "broken_lookup", "end_call", "transfer_call",
    }  # fmt: skip
    assert session.client_events[0]["session"]["instructions"].startswith("You are the front desk")
    # The HTTP tool got one correctly signed request about this call.
    [(body, valid)] = service.requests
    assert valid
    assert body == {
        "call_sid": result.call_sid,
        "agent": "front-desk",
        "tool": "check_availability",
        "arguments": {"date": "2026-12-24"},
    }
    # Each call answered with its own call id: the reply, a timeout, a failure.
    outputs = {o.name: json.loads(o.output) for o in session.tool_outputs}
    assert outputs["check_availability"] == {"tables": [{"time": "20:00", "seats": 4}]}
    assert "within 0.5 s" in outputs["slow_lookup"]["error"]
    assert "HTTP 500" in outputs["broken_lookup"]["error"]
    assert {o.call_id for o in session.tool_outputs} == {c.call_id for c in session.tool_calls}
    # One response once all three were answered; the caller heard it.
    assert len(session.responses_after_tools) == 1
    record = result.call_record
    assert record is not None and record["agent"] == "front-desk"
    assert [t["text"] for t in record["turns"]][-1] == "We have a table for four at eight."
    tool_events = {e["name"]: e for e in record["events"] if e["type"] == "tool_call"}
    assert tool_events["check_availability"]["ok"] is True
    assert tool_events["check_availability"]["arguments"] == {"date": "2026-12-24"}
    assert tool_events["slow_lookup"]["ok"] is False and tool_events["broken_lookup"]["ok"] is False
    assert 400 <= tool_events["slow_lookup"]["ms"] < 3000
    assert "Traceback" not in bridge.log()
    metrics = await scrape(bridge)
    outcomes = {
        name: (
            sample(metrics, "bridge_tool_calls_total", tool=name, outcome="ok"),
            sample(metrics, "bridge_tool_calls_total", tool=name, outcome="error"),
        )
        for name in ("check_availability", "slow_lookup", "broken_lookup")
    }
    assert outcomes == {
        "check_availability": (1, 0), "slow_lookup": (0, 1), "broken_lookup": (0, 1),
    }  # fmt: skip
    slow_s = sample(metrics, "bridge_tool_call_seconds_sum", tool="slow_lookup")
    assert 0.4 <= slow_s < 3.0
    assert sample(metrics, "bridge_tool_call_seconds_count", tool="check_availability") == 1


async def _twilio_call(
    bridge_factory: StartBridge, tmp_path: Path, reply: Reply
) -> tuple[SimulationResult, str, int, RunningBridge]:
    """One simulated Twilio call whose agent answers with ``reply``; then what the bridge
    answers Twilio's ``<Connect>`` action request, and the status of a forged one."""
    script = FakeScript(replies=[reply], caller_transcripts=["Hello?"])
    async with tool_service() as service, fake_server("openai", script=script) as fake:
        env = provider_env(fake, "openai", BRIDGE_AGENTS=str(agents_file(tmp_path, service.url)))
        bridge = bridge_factory(env)
        result = await simulate_call(
            bridge.url,
            auth_token=AUTH_TOKEN,
            review_token=REVIEW_TOKEN,
            caller_utterances=[load_clip("caller_1")],
            max_duration_s=20,
        )
        after = f"{bridge.url}/twilio/after-stream"
        form = {"CallSid": result.call_sid, "AccountSid": "AC" + "0" * 32}
        async with httpx.AsyncClient() as http:
            forged = await http.post(after, data=form)
            answer = await http.post(
                after, data=form, headers={"X-Twilio-Signature": sign(AUTH_TOKEN, after, form)}
            )
    return result, answer.text, forged.status_code, bridge


async def test_end_call_on_twilio_hangs_up_once_the_goodbye_was_heard(
    bridge_factory: StartBridge, tmp_path: Path
) -> None:
    goodbye = Reply(
        "Thanks for calling, goodbye!", duration_ms=1200, tool_calls=(ToolCall("end_call"),)
    )
    bye, answer, forged, bridge = await _twilio_call(bridge_factory, tmp_path, goodbye)
    # The goodbye was heard in full (every mark echoed), then the bridge closed the stream.
    assert bye.closed_by_bridge and not bye.timed_out
    heard = bye.heard_audio
    voiced = sum(1 for n in range(0, len(heard), 160) if heard[n : n + 160] != SILENCE)
    assert voiced >= 1200 // 20 - 2
    assert bye.call_record is not None and bye.call_record["end_reason"] == "agent_hangup"
    assert bye.last_mark_at is not None and bye.closed_at is not None
    assert 0 <= bye.closed_at - bye.last_mark_at < 2.0  # hung up after the last mark came back
    # Twilio then asks the <Connect> action what next: hang up.
    assert "<Hangup/>" in answer and forged == 403
    assert "Traceback" not in bridge.log()


async def test_transfer_on_twilio_dials_the_agents_named_target(
    bridge_factory: StartBridge, tmp_path: Path
) -> None:
    transfer = Reply(
        "Let me put you through to reception.",
        duration_ms=1000,
        tool_calls=(ToolCall("transfer_call", {"target": "reception"}),),
    )
    moved, answer, forged, bridge = await _twilio_call(bridge_factory, tmp_path, transfer)
    assert moved.call_record is not None and moved.call_record["end_reason"] == "transferred"
    events = [e for e in moved.call_record["events"] if e["type"] in ("tool_call", "transfer")]
    assert events[-1] == {**events[-1], "type": "transfer", "target": "reception"}
    assert "<Dial><Number>+15550001111</Number></Dial>" in answer and forged == 403
    assert "Traceback" not in bridge.log()


@dataclass
class SipOutcome:
    arrivals: list[tuple[float, bytes]]  # every frame the phone got: (when, payload)
    bye_at: float | None
    refer: SipRequest | None
    record: dict[str, Any] | None
    log: str


def _answer(request: SipRequest, status: str) -> bytes:
    copied = "".join(f"{h}: {request.get(h)}\r\n" for h in ("Via", "From", "To", "Call-ID", "CSeq"))
    return f"SIP/2.0 {status}\r\n{copied}Content-Length: 0\r\n\r\n".encode()


async def _sip_call(bridge_factory: StartBridge, tmp_path: Path, reply: Reply) -> SipOutcome:
    """A SIP phone calls the agent, speaks, and listens until the bridge hangs up; a REFER
    is accepted with 202, as a PBX that can transfer does."""
    script = FakeScript(replies=[reply], caller_transcripts=["Hello?"])
    async with tool_service() as service, fake_server("openai", script=script) as fake:
        env, sip_port = sip_env(fake, BRIDGE_AGENTS=str(agents_file(tmp_path, service.url)))
        bridge = bridge_factory(env)
        phone = RawPhone(sip_port)
        await phone.open()
        outcome = SipOutcome([], None, None, None, "")
        try:
            await phone.dial()
            speech = load_clip("caller_1") + SILENCE * 300
            start = time.monotonic()
            for n in range(len(speech) // 160):
                phone.send_rtp(speech[n * 160 : (n + 1) * 160])
                await asyncio.sleep(max(0.0, start + (n + 1) * 0.02 - time.monotonic()))
                outcome.arrivals += [(time.monotonic(), p) for p in phone.received()]
                while not phone.sip.queue.empty():
                    message = parse_message(phone.sip.queue.get_nowait())
                    if not isinstance(message, SipRequest):
                        continue
                    assert phone.sip.transport is not None
                    if message.method == "REFER":
                        outcome.refer = message
                        phone.sip.transport.sendto(
                            _answer(message, "202 Accepted"), ("127.0.0.1", sip_port)
                        )
                    elif message.method == "BYE":
                        outcome.bye_at = time.monotonic()
                        phone.sip.transport.sendto(
                            _answer(message, "200 OK"), ("127.0.0.1", sip_port)
                        )
                if outcome.bye_at is not None:
                    break
        finally:
            phone.close()
        outcome.record = await finished_record(bridge)
    outcome.log = bridge.log()
    return outcome


async def test_sip_end_call_sends_bye_after_the_goodbyes_last_frame(
    bridge_factory: StartBridge, tmp_path: Path
) -> None:
    goodbye = Reply("Goodbye now.", duration_ms=1000, tool_calls=(ToolCall("end_call"),))
    outcome = await _sip_call(bridge_factory, tmp_path, goodbye)
    assert outcome.bye_at is not None and outcome.refer is None, outcome.log[-3000:]
    voiced = [at for at, payload in outcome.arrivals if payload != SILENCE]
    assert len(voiced) >= 1000 // 20 - 2  # the whole goodbye went out ...
    assert 0 <= outcome.bye_at - voiced[-1] < 2.0  # ... and the BYE came after its last frame
    assert outcome.record is not None and outcome.record["end_reason"] == "agent_hangup"
    assert outcome.record["agent"] == "front-desk"
    assert "Traceback" not in outcome.log


async def test_sip_transfer_sends_a_refer_to_the_named_target_then_hangs_up(
    bridge_factory: StartBridge, tmp_path: Path
) -> None:
    transfer = Reply(
        "Transferring you.",
        duration_ms=800,
        tool_calls=(ToolCall("transfer_call", {"target": "reception"}),),
    )
    outcome = await _sip_call(bridge_factory, tmp_path, transfer)
    assert outcome.refer is not None, outcome.log[-3000:]
    assert outcome.refer.get("Refer-To") == "<sip:+15550001111@127.0.0.1>"
    assert outcome.bye_at is not None  # 202: the PBX places the new call; the bridge leaves
    assert outcome.record is not None and outcome.record["end_reason"] == "transferred"
    assert [e["target"] for e in outcome.record["events"] if e["type"] == "transfer"] == [
        "reception"
    ]
    assert "Traceback" not in outcome.log


async def test_a_reload_during_a_live_call_leaves_that_call_as_it_was(
    bridge_factory: StartBridge, tmp_path: Path
) -> None:
    script = FakeScript(
        replies=[Reply("One moment.", duration_ms=800), Reply("Here you are.", duration_ms=800)],
        caller_transcripts=["First question.", "Second question."],
    )
    async with tool_service() as service, fake_server("openai", script=script) as fake:
        path = agents_file(tmp_path, service.url)
        bridge = bridge_factory(provider_env(fake, "openai", BRIDGE_AGENTS=str(path)))
        live = asyncio.create_task(
            simulate_call(
                bridge.url,
                auth_token=AUTH_TOKEN,
                review_token=REVIEW_TOKEN,
                caller_utterances=[load_clip("caller_1"), load_clip("caller_2")],
                max_duration_s=25,
            )
        )
        for _ in range(100):  # the live call's session is configured
            if fake.sessions and fake.sessions[0].client_events:
                break
            await asyncio.sleep(0.1)
        text = path.read_text()
        path.write_text(
            text.replace(
                "You are the front desk of Bella Cucina.", "You are the night desk."
            ).replace('"slow_lookup", "broken_lookup", ', "")
        )
        for _ in range(50):
            if "agents.reloaded" in bridge.log():
                break
            await asyncio.sleep(0.1)
        first = await live
        second = await simulate_call(
            bridge.url,
            auth_token=AUTH_TOKEN,
            review_token=REVIEW_TOKEN,
            caller_utterances=[load_clip("caller_1")],
            max_duration_s=20,
        )
    assert "agents.reloaded" in bridge.log()
    updates = [[e for e in s.client_events if e["type"] == "session.update"] for s in fake.sessions]
    # The live call kept its agent: one configuration, the old instructions and tools,
    # and it was answered to the end.
    assert len(updates[0]) == 1
    assert updates[0][0]["session"]["instructions"].startswith("You are the front desk")
    assert len(updates[0][0]["session"]["tools"]) == 5
    assert first.call_record is not None and len(first.call_record["turns"]) == 4
    # The next call has the new agent.
    assert updates[1][0]["session"]["instructions"] == "You are the night desk."
    assert {t["name"] for t in updates[1][0]["session"]["tools"]} == {
        "check_availability", "end_call", "transfer_call",
    }  # fmt: skip
    assert second.call_record is not None and second.call_record["agent"] == "front-desk"


async def test_a_tool_from_an_mcp_server_is_offered_and_called_during_a_call(
    bridge_factory: StartBridge, tmp_path: Path
) -> None:
    from tests.adapters.test_mcp_tools import TOKEN, serve

    script = FakeScript(
        replies=[
            Reply(
                tool_calls=(ToolCall("check_availability", {"date": "2026-12-24", "people": 4}),)
            ),
            Reply("Eight o'clock is free.", duration_ms=1000),
        ],
        caller_transcripts=["Any table on Christmas Eve?"],
    )
    async with serve() as mcp, fake_server("openai", script=script) as fake:
        path = tmp_path / "agents.toml"
        path.write_text(
            f"""
[agents.default]
instructions = "You book tables."
tools = ["mcp:calendar"]

[mcp.calendar]
url = "{mcp.url}"
headers = {{ Authorization = "Bearer {TOKEN}" }}
"""
        )
        bridge = bridge_factory(provider_env(fake, "openai", BRIDGE_AGENTS=str(path)))
        result = await simulate_call(
            bridge.url,
            auth_token=AUTH_TOKEN,
            review_token=REVIEW_TOKEN,
            caller_utterances=[load_clip("caller_1")],
            max_duration_s=20,
        )
    session = fake.sessions[0]
    declared = {tool["name"]: tool for tool in session.tools}
    assert "check_availability" in declared  # the server's own tools, with their schemas
    assert "people" in declared["check_availability"]["parameters"]["properties"]
    [output] = session.tool_outputs
    assert output.name == "check_availability"
    assert "2026-12-24" in output.output and '"error"' not in output.output
    assert set(mcp.gate.authorizations) == {f"Bearer {TOKEN}"}  # the configured header, always
    assert result.call_record is not None
    assert [t["text"] for t in result.call_record["turns"]][-1] == "Eight o'clock is free."
    [event] = [e for e in result.call_record["events"] if e["type"] == "tool_call"]
    assert (event["name"], event["ok"]) == ("check_availability", True)
    assert TOKEN not in bridge.log()
