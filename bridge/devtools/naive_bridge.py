"""The floor for the load test: the simplest Twilio-to-realtime pass-through there can be.

It does what the public Twilio + OpenAI samples do and nothing more: answers the voice
webhook with TwiML, accepts the media stream, opens one realtime session per call and
forwards each message with one JSON parse and one write (caller ``media`` ->
``input_audio_buffer.append``; an audio delta -> one ``media``; ``speech_started`` ->
``clear``). No signatures, tokens, marks, transcripts, store, metrics or logging. It runs
under uvicorn with the settings ``bridge serve`` uses, so the two differ only in what they do
per message. ``bridge loadtest`` starts it as a child process::

    python -m bridge.devtools.naive_bridge --port P --realtime-url ws://…/v1/realtime --api-key K

Not for real calls: it trusts whoever connects.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
from collections.abc import Sequence
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

__all__ = ["create_naive_app", "main"]

# OpenAI GA: mu-law both ways, the server's voice detector, which interrupts the answer.
_SESSION_UPDATE = json.dumps(
    {
        "type": "session.update",
        "session": {
            "type": "realtime",
            "output_modalities": ["audio"],
            "audio": {
                "input": {
                    "format": {"type": "audio/pcmu"},
                    "turn_detection": {"type": "server_vad"},
                },
                "output": {"format": {"type": "audio/pcmu"}, "voice": "marin"},
            },
            "instructions": "You are a helpful assistant.",
        },
    }
)
_AUDIO_DELTAS = ("response.output_audio.delta", "response.audio.delta")


def create_naive_app(realtime_url: str, api_key: str) -> Starlette:
    """The pass-through as an ASGI app talking to the realtime server at ``realtime_url``."""

    async def voice(request: Request) -> Response:
        # Same host as the webhook: no public-URL configuration, as in the samples.
        twiml = (
            '<?xml version="1.0" encoding="UTF-8"?><Response><Connect>'
            f'<Stream url="ws://{request.url.netloc}/twilio/media"/></Connect></Response>'
        )
        return Response(twiml, media_type="application/xml")

    async def media(ws: WebSocket) -> None:
        await ws.accept()
        headers = {"Authorization": f"Bearer {api_key}"}
        async with connect(
            realtime_url, additional_headers=headers, compression=None, max_size=None
        ) as model:
            await model.send(_SESSION_UPDATE)
            sid: list[str] = []  # set by ``start``; the model's replies need it
            to_twilio = asyncio.create_task(_model_to_twilio(model, ws, sid))
            try:
                await _twilio_to_model(ws, model, sid)
            finally:
                to_twilio.cancel()
                await asyncio.gather(to_twilio, return_exceptions=True)
        with contextlib.suppress(RuntimeError):
            await ws.close()

    return Starlette(
        routes=[
            Route("/twilio/voice", voice, methods=["POST"]),
            WebSocketRoute("/twilio/media", media),
        ]
    )


async def _twilio_to_model(ws: WebSocket, model: ClientConnection, sid: list[str]) -> None:
    try:
        while True:
            msg: dict[str, Any] = json.loads(await ws.receive_text())
            event = msg.get("event")
            if event == "media":
                append = {"type": "input_audio_buffer.append", "audio": msg["media"]["payload"]}
                await model.send(json.dumps(append))
            elif event == "start":
                sid.append(msg["start"]["streamSid"])
            elif event == "stop":
                return
    except (WebSocketDisconnect, ConnectionClosed):
        return


async def _model_to_twilio(model: ClientConnection, ws: WebSocket, sid: list[str]) -> None:
    try:
        async for text in model:
            event: dict[str, Any] = json.loads(text)
            kind = event.get("type")
            if kind in _AUDIO_DELTAS and sid:
                media = {
                    "event": "media",
                    "streamSid": sid[0],
                    "media": {"payload": event["delta"]},
                }
                await ws.send_text(json.dumps(media))
            elif kind == "input_audio_buffer.speech_started" and sid:
                await ws.send_text(json.dumps({"event": "clear", "streamSid": sid[0]}))
    except (ConnectionClosed, WebSocketDisconnect, RuntimeError):
        return  # either side went away: the call is over


def main(argv: Sequence[str] | None = None) -> None:
    """Serve the pass-through until terminated."""
    parser = argparse.ArgumentParser(prog="naive_bridge", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--realtime-url", required=True)
    parser.add_argument("--api-key", default="sk-naive")
    args = parser.parse_args(argv)
    # As ``bridge serve`` runs uvicorn (its own HTTP protocol class aside, which only adds
    # guards against slow clients): same loop and WebSocket implementation, no access log.
    uvicorn.run(
        create_naive_app(args.realtime_url, args.api_key),
        host=args.host,
        port=args.port,
        log_config=None,
        access_log=False,
        ws_max_size=256 * 1024,
        ws_ping_interval=None,
        ws_per_message_deflate=False,
        lifespan="off",
    )


if __name__ == "__main__":
    main()
