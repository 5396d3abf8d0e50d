"""A hand-driven Twilio media socket, for tests that send what no well-behaved Twilio sends."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

from bridge.devtools.simulator import parse_twiml, sign

from .conftest import AUTH_TOKEN


async def answer_call(
    base_url: str, call_sid: str | None = None
) -> tuple[str, str, dict[str, str]]:
    """POST a signed voice webhook; returns (call_sid, stream_url, parameters)."""
    call_sid = call_sid or "CA" + uuid.uuid4().hex
    params = {
        "AccountSid": "AC" + "0" * 32,
        "CallSid": call_sid,
        "From": "+15551230000",
        "To": "+15557650000",
        "CallStatus": "ringing",
        "Direction": "inbound",
    }
    url = f"{base_url}/twilio/voice"
    async with httpx.AsyncClient() as http:
        response = await http.post(
            url, data=params, headers={"X-Twilio-Signature": sign(AUTH_TOKEN, url, params)}
        )
    response.raise_for_status()
    stream_url, parameters = parse_twiml(response.text)
    return call_sid, stream_url, parameters


async def open_media(stream_url: str, signature: str | None = "valid") -> ClientConnection:
    headers = {}
    if signature == "valid":
        headers["X-Twilio-Signature"] = sign(AUTH_TOKEN, stream_url, {})
    elif signature is not None:
        headers["X-Twilio-Signature"] = signature
    return await connect(stream_url, additional_headers=headers, open_timeout=5, max_size=2**20)


def start_message(call_sid: str, parameters: dict[str, str]) -> str:
    stream_sid = "MZ" + uuid.uuid4().hex
    return json.dumps(
        {
            "event": "start",
            "sequenceNumber": "1",
            "streamSid": stream_sid,
            "start": {
                "accountSid": "AC" + "0" * 32,
                "streamSid": stream_sid,
                "callSid": call_sid,
                "tracks": ["inbound"],
                "customParameters": parameters,
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
        }
    )


def media_message(stream_sid: str, payload: str, n: int = 1) -> str:
    return json.dumps(
        {
            "event": "media",
            "sequenceNumber": str(n + 1),
            "streamSid": stream_sid,
            "media": {
                "track": "inbound",
                "chunk": str(n),
                "timestamp": str(20 * n),
                "payload": payload,
            },
        }
    )


def stream_sid_of(start: str) -> str:
    data: dict[str, Any] = json.loads(start)
    return str(data["streamSid"])
