"""OpenAI's SIP connector over real sockets: ``bridge serve`` in a child process, a fake
OpenAI (call-control REST and the sideband WebSocket) in the test's loop, and signed
``realtime.call.incoming`` webhooks posted as OpenAI would post them."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from bridge.devtools.fake_openai_sip import AgentSays, CallerHangsUp, CallerSays, FakeOpenAiSip
from bridge.devtools.fake_script import ToolCall
from bridge.protocols.standard_webhooks import sign_webhook

from .conftest import REVIEW_TOKEN, RunningBridge

StartBridge = Callable[[dict[str, str]], RunningBridge]
API_KEY = "sk-test-openai-sip"
RAW_KEY = b"openai-sip-webhook-test-key-0123"
SECRET = "whsec_" + base64.b64encode(RAW_KEY).decode()
FRONT_DESK = "+15557650000"
SALES = "+15557651111"
CALLER = "+14155550123"
GREETING = "Thanks for calling Bella Cucina, how can I help?"


def agents_file(tmp_path: Path) -> Path:
    path = tmp_path / "agents.toml"
    path.write_text(
        f"""
[agents.front-desk]
numbers = ["{FRONT_DESK}"]
instructions = "You are the front desk of Bella Cucina."
voice = "cedar"
greeting = "{GREETING}"
tools = ["end_call", "transfer_call"]
transfer_targets = {{ reception = "+15550001111", kitchen = "sip:kitchen@pbx.example.com" }}

[agents.sales]
numbers = ["{SALES}"]
instructions = "You sell catering packages."

[agents.default]
instructions = "You answer numbers no one else does."
"""
    )
    return path


def env(fake: FakeOpenAiSip, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "OPENAI_WEBHOOK_SECRET": SECRET,
        "OPENAI_API_BASE": fake.url,
        "OPENAI_API_KEY": API_KEY,
        "BRIDGE_AGENTS": str(agents_file(tmp_path)),
        **extra,
    }


def new_call_id() -> str:
    return "rtc_" + secrets.token_hex(16)


def incoming(call_id: str, to: str, *, sip_call_id: str = "call-123@example.com") -> bytes:
    event = {
        "object": "event",
        "id": "evt_" + secrets.token_hex(12),
        "type": "realtime.call.incoming",
        "created_at": int(time.time()),
        "data": {
            "call_id": call_id,
            "sip_headers": [
                {"name": "From", "value": f'"Ann" <sip:{CALLER}@sip.example.com>;tag=a1'},
                {"name": "To", "value": f"sip:{to}@sip.example.com"},
                {"name": "Call-ID", "value": sip_call_id},
                {"name": "X-Odd", "value": "\u0000 untrusted"},
            ],
            "sip_media_security": "srtp",
        },
    }
    return json.dumps(event).encode()


async def post_webhook(
    bridge: RunningBridge,
    body: bytes,
    *,
    msg_id: str | None = None,
    timestamp: int | None = None,
    key: bytes = RAW_KEY,
    signature: str | None = None,
) -> httpx.Response:
    msg_id = msg_id or "wh_" + secrets.token_hex(16)
    ts = int(time.time()) if timestamp is None else timestamp
    headers = {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": signature or sign_webhook(key, msg_id, ts, body),
    }
    async with httpx.AsyncClient(timeout=5) as client:
        return await client.post(f"{bridge.url}/openai/webhook", content=body, headers=headers)


async def finished_record(bridge: RunningBridge, call_id: str) -> dict[str, Any]:
    """The call's record once it has ended (bounded wait)."""
    headers = {"Authorization": f"Bearer {REVIEW_TOKEN}"}
    async with httpx.AsyncClient(timeout=5) as client:
        for _ in range(200):
            response = await client.get(f"{bridge.url}/api/calls/{call_id}", headers=headers)
            if response.status_code == 200 and response.json()["status"] != "in_progress":
                record: dict[str, Any] = response.json()
                return record
            await asyncio.sleep(0.1)
    raise AssertionError(f"call {call_id} did not finish:\n{bridge.log()}")


async def test_a_signed_offer_is_accepted_with_the_dialed_agent_and_the_transcript_is_kept(
    bridge_factory: StartBridge, tmp_path: Path
) -> None:
    script = [
        AgentSays(GREETING, when_asked=True),
        CallerSays("I would like to book a table."),
        AgentSays("Of course, for how many people?"),
        CallerHangsUp(),
    ]
    async with FakeOpenAiSip(api_key=API_KEY, script=script) as fake:
        bridge = bridge_factory(env(fake, tmp_path))
        call_id = new_call_id()
        answer = await post_webhook(bridge, incoming(call_id, FRONT_DESK, sip_call_id="abc@pbx"))
        assert answer.status_code == 200, answer.text
        record = await finished_record(bridge, call_id)
        # The sales line gets the sales agent: the To number picks the agent.
        other = new_call_id()
        assert (await post_webhook(bridge, incoming(other, SALES))).status_code == 200
        await fake.until(lambda: "accept" in fake.actions(other))
    accept = fake.request(call_id, "accept")
    assert accept.authorized
    session = accept.body
    assert session["type"] == "realtime" and session["model"] == "gpt-realtime"
    assert session["instructions"] == "You are the front desk of Bella Cucina."
    assert session["audio"]["output"]["voice"] == "cedar"
    assert "format" not in session["audio"]["input"] and "format" not in session["audio"]["output"]
    assert session["audio"]["input"]["turn_detection"]["type"] == "server_vad"
    assert session["audio"]["input"]["transcription"]["model"]
    assert {tool["name"] for tool in session["tools"]} == {"end_call", "transfer_call"}
    assert session["tool_choice"] == "auto"
    assert fake.request(other, "accept").body["instructions"] == "You sell catering packages."
    # The greeting was asked for over the sideband; no session.update (the accept set it).
    side = next(s for s in fake.sidebands if s.call_id == call_id)
    [greet] = side.of_type("response.create")
    assert GREETING in greet["response"]["instructions"]
    assert side.of_type("session.update") == []
    # The record: channel, ids, numbers, agent, and both sides' turns in order.
    assert record["channel"] == "openai-sip"
    assert record["call_sid"] == call_id
    assert record["sip_call_id"] == "abc@pbx"
    assert record["from"] == CALLER and record["to"] == FRONT_DESK
    assert record["agent"] == "front-desk"
    assert record["status"] == "completed" and record["end_reason"] == "caller_hangup"
    turns = [(t["role"], t["text"]) for t in record["turns"]]
    assert turns == [
        ("agent", GREETING),
        ("caller", "I would like to book a table."),
        ("agent", "Of course, for how many people?"),
    ]
    starts = [t["start_ms"] for t in record["turns"]]
    assert starts == sorted(starts)
    assert all(t["end_ms"] >= t["start_ms"] for t in record["turns"])
    # The caller hung up at OpenAI: nothing to hang up there.
    assert fake.actions(call_id) == ["accept"]
    log = bridge.log()
    assert API_KEY not in log and SECRET not in log
    assert "Traceback" not in log


async def test_end_call_hangs_up_once_the_goodbye_has_played(
    bridge_factory: StartBridge, tmp_path: Path
) -> None:
    script = [
        CallerSays("That is all, thank you."),
        AgentSays("You're welcome, goodbye!", tool_calls=(ToolCall("end_call"),), playout_s=0.8),
    ]
    async with FakeOpenAiSip(api_key=API_KEY, script=script) as fake:
        bridge = bridge_factory(env(fake, tmp_path))
        call_id = new_call_id()
        assert (await post_webhook(bridge, incoming(call_id, SALES))).status_code == 200
        # Sales offers no end_call: the bridge tells the model so, and the call goes on.
        await fake.until(lambda: any(s.function_outputs for s in fake.sidebands))
        assert "no tool named" in next(iter(fake.sidebands[0].function_outputs.values()))
        assert "hangup" not in fake.actions(call_id)

        call_id = new_call_id()
        assert (await post_webhook(bridge, incoming(call_id, FRONT_DESK))).status_code == 200
        await fake.until(lambda: "hangup" in fake.actions(call_id))
        record = await finished_record(bridge, call_id)
    mine = [what for cid, what in fake.timeline if cid == call_id]
    # Hung up after OpenAI said the goodbye had played out, not at response.done.
    assert mine.index("rest:hangup") > mine.index("output_audio_buffer.stopped")
    assert fake.actions(call_id) == ["accept", "hangup"]
    assert fake.request(call_id, "hangup").authorized
    assert record["end_reason"] == "agent_hangup"
    assert [t["text"] for t in record["turns"]][-1] == "You're welcome, goodbye!"
    [tool] = [e for e in record["events"] if e["type"] == "tool_call"]
    assert tool["name"] == "end_call" and tool["ok"] is True


async def test_end_call_hangs_up_after_a_bound_when_playout_is_never_reported(
    bridge_factory: StartBridge, tmp_path: Path
) -> None:
    script = [
        CallerSays("Bye."),
        AgentSays("Goodbye!", tool_calls=(ToolCall("end_call"),), playout_s=None),
    ]
    async with FakeOpenAiSip(api_key=API_KEY, script=script) as fake:
        bridge = bridge_factory(env(fake, tmp_path))
        call_id = new_call_id()
        assert (await post_webhook(bridge, incoming(call_id, FRONT_DESK))).status_code == 200
        await fake.until(lambda: "response.done" in [w for c, w in fake.timeline if c == call_id])
        done_at = time.monotonic()
        await fake.until(lambda: "hangup" in fake.actions(call_id), timeout_s=20)
        waited = time.monotonic() - done_at
    assert 3.0 < waited < 12.0  # the bound (5 s after response.done, checked each second)


async def test_transfer_call_refers_the_caller_to_the_named_target(
    bridge_factory: StartBridge, tmp_path: Path
) -> None:
    script = [
        CallerSays("Can I speak to the kitchen?"),
        AgentSays(
            "Putting you through now.",
            tool_calls=(ToolCall("transfer_call", {"target": "kitchen"}),),
        ),
    ]
    async with FakeOpenAiSip(api_key=API_KEY, script=script) as fake:
        bridge = bridge_factory(env(fake, tmp_path))
        call_id = new_call_id()
        assert (await post_webhook(bridge, incoming(call_id, FRONT_DESK))).status_code == 200
        await fake.until(lambda: "refer" in fake.actions(call_id))
        record = await finished_record(bridge, call_id)
    assert fake.request(call_id, "refer").body == {"target_uri": "sip:kitchen@pbx.example.com"}
    mine = [what for cid, what in fake.timeline if cid == call_id]
    assert mine.index("rest:refer") > mine.index("output_audio_buffer.stopped")
    assert fake.actions(call_id) == ["accept", "refer"]  # transferred: no hang-up after
    assert record["end_reason"] == "transferred"
    assert {"type": "transfer", "target": "kitchen"}.items() <= next(
        e for e in record["events"] if e["type"] == "transfer"
    ).items()


async def test_forged_stale_and_replayed_webhooks_are_refused_without_any_rest_call(
    bridge_factory: StartBridge, tmp_path: Path
) -> None:
    async with FakeOpenAiSip(api_key=API_KEY, script=[]) as fake:
        bridge = bridge_factory(env(fake, tmp_path))
        now = int(time.time())
        refused: list[str] = []

        async def refuse(expected: int, **kwargs: Any) -> None:
            call_id = new_call_id()
            refused.append(call_id)
            answer = await post_webhook(bridge, incoming(call_id, FRONT_DESK), **kwargs)
            assert answer.status_code == expected, answer.text

        await refuse(401, key=b"not the secret")
        # Read the clock for each: on a slow machine seconds pass between these requests.
        await refuse(401, timestamp=int(time.time()) - 330)
        await refuse(401, timestamp=int(time.time()) + 330)
        await refuse(401, signature="v1,AAAA")
        # Signed for another body: the signature covers the body, not only the headers.
        msg = "wh_tampered"
        sig = sign_webhook(RAW_KEY, msg, now, incoming(new_call_id(), FRONT_DESK))
        await refuse(401, msg_id=msg, timestamp=now, signature=sig)
        async with httpx.AsyncClient(timeout=5) as client:
            bare = await client.post(f"{bridge.url}/openai/webhook", content=b"{}")
        assert bare.status_code == 400

        # A genuine offer, then the same delivery again, and the same call under a new id.
        call_id = new_call_id()
        body = incoming(call_id, FRONT_DESK)
        first = await post_webhook(bridge, body, msg_id="wh_once", timestamp=now)
        assert first.status_code == 200
        replay = await post_webhook(bridge, body, msg_id="wh_once", timestamp=now)
        assert replay.status_code == 409
        await fake.until(lambda: "accept" in fake.actions(call_id))
        again = await post_webhook(bridge, body)
        assert again.status_code == 409
        await asyncio.sleep(0.5)  # time for any background work a refusal might have started
    assert all(fake.actions(c) == [] for c in refused)
    assert fake.actions(call_id) == ["accept"]
    assert len(fake.requests) == 1


async def test_over_capacity_the_call_is_rejected_and_never_accepted(
    bridge_factory: StartBridge, tmp_path: Path
) -> None:
    async with FakeOpenAiSip(api_key=API_KEY, script=[]) as fake:
        bridge = bridge_factory(env(fake, tmp_path, BRIDGE_OPENAI_SIP_MAX_CALLS="1"))
        held = new_call_id()
        assert (await post_webhook(bridge, incoming(held, FRONT_DESK))).status_code == 200
        await fake.until(lambda: any(s.call_id == held for s in fake.sidebands))
        busy = new_call_id()
        assert (await post_webhook(bridge, incoming(busy, FRONT_DESK))).status_code == 200
        await fake.until(lambda: "reject" in fake.actions(busy))
        await asyncio.sleep(0.3)
    assert fake.actions(busy) == ["reject"]
    assert fake.request(busy, "reject").body == {"status_code": 503}
    assert fake.actions(held) == ["accept"]


async def test_the_route_is_off_without_a_webhook_secret(
    bridge_factory: StartBridge, tmp_path: Path
) -> None:
    async with FakeOpenAiSip(api_key=API_KEY) as fake:
        settings = env(fake, tmp_path)
        del settings["OPENAI_WEBHOOK_SECRET"]
        bridge = bridge_factory(settings)
        answer = await post_webhook(bridge, incoming(new_call_id(), FRONT_DESK))
    assert answer.status_code == 404
    assert fake.requests == []
