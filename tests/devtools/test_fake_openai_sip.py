"""The fake OpenAI SIP connector speaks the way the real one does: every sideband event is
checked against the ``openai`` package's pydantic models; REST requests are recorded."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
import websockets
from websockets.asyncio.client import connect

from bridge.devtools.fake_openai_sip import AgentSays, CallerHangsUp, CallerSays, FakeOpenAiSip
from bridge.devtools.fake_script import ToolCall

KEY = "sk-fake-sip"
CALL = "rtc_0123456789abcdef"


async def _post(fake: FakeOpenAiSip, call_id: str, action: str, body: Any = None) -> int:
    async with httpx.AsyncClient(timeout=5) as client:
        response = await client.post(
            f"{fake.url}/v1/realtime/calls/{call_id}/{action}",
            json=body,
            headers={"Authorization": f"Bearer {KEY}"},
        )
    return response.status_code


async def test_every_sideband_event_is_a_valid_ga_server_event() -> None:
    pydantic = pytest.importorskip("pydantic")
    models = pytest.importorskip("openai.types.realtime")
    adapter = pydantic.TypeAdapter(models.RealtimeServerEvent)
    script = [
        AgentSays("Hello, Bella Cucina.", when_asked=True),
        CallerSays("A table for four, please."),
        AgentSays("Let me check.", tool_calls=(ToolCall("check_availability", {"people": 4}),)),
        AgentSays("We have one at eight.", when_asked=True),
        CallerHangsUp(),
    ]
    async with FakeOpenAiSip(api_key=KEY, script=script) as fake:
        assert await _post(fake, CALL, "accept", {"type": "realtime"}) == 200
        url = fake.url.replace("http://", "ws://") + f"/v1/realtime?call_id={CALL}"
        seen: list[dict[str, Any]] = []
        async with connect(url, additional_headers={"Authorization": f"Bearer {KEY}"}) as ws:
            await ws.send(json.dumps({"type": "response.create"}))
            async with asyncio.timeout(15):
                async for text in ws:
                    event = json.loads(text)
                    seen.append(event)
                    if event["type"] == "response.function_call_arguments.done":
                        item = {
                            "type": "function_call_output",
                            "call_id": event["call_id"],
                            "output": '{"free": true}',
                        }
                        await ws.send(
                            json.dumps({"type": "conversation.item.create", "item": item})
                        )
                        await ws.send(json.dumps({"type": "response.create"}))
    for event in seen:
        adapter.validate_python(event)
    kinds = [e["type"] for e in seen]
    assert kinds[0] == "session.created"
    assert kinds.count("response.done") == 3
    assert kinds.count("output_audio_buffer.started") == 3
    assert kinds.count("output_audio_buffer.stopped") == 3
    assert "response.output_audio.delta" not in kinds  # a sideband carries no audio
    # stopped comes after its response is done, as on a real SIP call
    assert kinds.index("output_audio_buffer.stopped") > kinds.index("response.done")
    [side] = fake.sidebands
    assert side.function_outputs and all(
        output == '{"free": true}' for output in side.function_outputs.values()
    )


async def test_rest_requests_are_recorded_and_an_ended_call_is_gone() -> None:
    async with FakeOpenAiSip(api_key=KEY) as fake:
        assert await _post(fake, CALL, "accept", {"type": "realtime"}) == 200
        assert await _post(fake, CALL, "refer", {"target_uri": "tel:+15550001111"}) == 200
        assert await _post(fake, CALL, "hangup") == 404  # transferred: no longer there
        async with httpx.AsyncClient(timeout=5) as client:
            forged = await client.post(f"{fake.url}/v1/realtime/calls/rtc_x/hangup")
        assert forged.status_code == 401
    assert fake.actions(CALL) == ["accept", "refer", "hangup"]
    assert fake.request(CALL, "refer").body == {"target_uri": "tel:+15550001111"}
    assert [r.authorized for r in fake.requests] == [True, True, True, False]


async def test_the_sideband_opens_only_for_an_accepted_call_with_the_key() -> None:
    async with FakeOpenAiSip(api_key=KEY) as fake:
        base = fake.url.replace("http://", "ws://")
        with pytest.raises(websockets.InvalidStatus):
            await connect(f"{base}/v1/realtime?call_id=rtc_never", open_timeout=5)
        await _post(fake, CALL, "accept", {"type": "realtime"})
        with pytest.raises(websockets.InvalidStatus):
            await connect(f"{base}/v1/realtime?call_id={CALL}", open_timeout=5)
