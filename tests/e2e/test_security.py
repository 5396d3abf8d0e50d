"""A forged request costs nothing: no call record, no model session."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable

import httpx
import pytest
import websockets

from bridge.devtools.fake_realtime import FakeRealtimeServer
from bridge.devtools.simulator import sign
from bridge.protocols.stream_token import mint_stream_token

from .conftest import AUTH_TOKEN, REVIEW_TOKEN, RunningBridge, fake_server, provider_env
from .twilio_client import answer_call, open_media, start_message

StartBridge = Callable[[dict[str, str]], RunningBridge]


async def _closed_with(ws: websockets.asyncio.client.ClientConnection) -> int | None:
    try:
        await asyncio.wait_for(ws.recv(), timeout=5)
        await asyncio.wait_for(ws.wait_closed(), timeout=5)
    except websockets.ConnectionClosed:
        pass
    return ws.close_code


async def _until_a_model_session(fake: FakeRealtimeServer) -> None:
    """Wait, up to 5 s, for the fake model to have accepted a session."""
    for _ in range(100):
        if fake.sessions:
            return
        await asyncio.sleep(0.05)


async def test_forged_webhooks_upgrades_and_tokens_open_no_model_session(
    bridge_factory: StartBridge,
) -> None:
    async with fake_server("openai") as fake:
        bridge = bridge_factory(provider_env(fake, "openai"))
        voice = f"{bridge.url}/twilio/voice"
        params = {"CallSid": "CA" + "9" * 32, "From": "+1555", "To": "+1666"}
        async with httpx.AsyncClient() as http:
            unsigned = await http.post(voice, data=params)
            forged = await http.post(voice, data=params, headers={"X-Twilio-Signature": "AAAA"})
            # A signature made for other parameters does not cover these.
            other = sign(AUTH_TOKEN, voice, {**params, "To": "+1777"})
            tampered = await http.post(voice, data=params, headers={"X-Twilio-Signature": other})
            status = await http.post(
                f"{bridge.url}/twilio/status", data={"CallSid": "CA1", "CallStatus": "completed"}
            )
        assert [r.status_code for r in (unsigned, forged, tampered, status)] == [403] * 4

        call_sid, stream_url, parameters = await answer_call(bridge.url)
        assert stream_url == bridge.url.replace("http://", "ws://") + "/twilio/media"
        assert set(parameters) >= {"from", "to", "token"}

        # The upgrade itself must be signed.
        for signature in (None, "bogus"):
            with pytest.raises(websockets.InvalidStatus) as refused:
                await open_media(stream_url, signature)
            assert refused.value.response.status_code == 403

        secret_key = AUTH_TOKEN.encode()
        import hashlib
        import hmac

        secret = hmac.new(secret_key, b"bridge stream token v1", hashlib.sha256).digest()
        bad_tokens = {
            "missing": {k: v for k, v in parameters.items() if k != "token"},
            "garbage": {**parameters, "token": "123.abc"},
            "other call": {
                **parameters,
                "token": mint_stream_token(secret, "CA" + "8" * 32, time.time()),
            },
            "expired": {
                **parameters,
                "token": mint_stream_token(secret, call_sid, time.time() - 3600),
            },
        }
        for why, params_ in bad_tokens.items():
            ws = await open_media(stream_url)
            await ws.send('{"event":"connected","protocol":"Call","version":"1.0.0"}')
            await ws.send(start_message(call_sid, params_))
            assert await _closed_with(ws) == 1008, why

        await asyncio.sleep(0.3)
        assert fake.sessions == []  # not one model session was opened
        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {REVIEW_TOKEN}"}) as http:
            assert (await http.get(f"{bridge.url}/api/calls")).json() == {"calls": []}

        # A genuine stream starts once; the same token replayed is refused before the model.
        ws = await open_media(stream_url)
        await ws.send(start_message(call_sid, parameters))
        await _until_a_model_session(fake)
        assert len(fake.sessions) == 1
        replay = await open_media(stream_url)
        await replay.send(start_message(call_sid, parameters))
        assert await _closed_with(replay) == 1008
        await ws.close()
        await asyncio.sleep(0.3)
        assert len(fake.sessions) == 1
        assert AUTH_TOKEN not in bridge.log()
        assert "bad or expired stream token" in bridge.log()


async def test_a_media_socket_is_never_compressed_whatever_the_client_offers(
    bridge_factory: StartBridge,
) -> None:
    async with fake_server("openai") as fake:
        bridge = bridge_factory(provider_env(fake, "openai"))
        call_sid, stream_url, parameters = await answer_call(bridge.url)
        ws = await open_media(stream_url)
        try:
            # The client asks for permessage-deflate (websockets does by default); a client
            # must not be able to make the bridge spend CPU compressing every audio frame.
            offered = ws.request.headers.get("Sec-WebSocket-Extensions", "")
            assert offered.startswith("permessage-deflate")
            assert ws.response.headers.get("Sec-WebSocket-Extensions") is None
            await ws.send(start_message(call_sid, parameters))
            await _until_a_model_session(fake)
            assert len(fake.sessions) == 1  # and the call goes on, uncompressed
        finally:
            await ws.close()


def test_serve_refuses_a_public_host_without_a_twilio_token() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "BRIDGE_"))}
    done = subprocess.run(
        [sys.executable, "-m", "bridge", "serve", "--host", "0.0.0.0", "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert "TWILIO_AUTH_TOKEN" in done.stderr
