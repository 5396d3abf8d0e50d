"""The OpenAI SIP connector's data: the incoming-call webhook read leniently, the accept
body (checked against the ``openai`` package's own request type), refer targets, URLs."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bridge.protocols.dialects import SessionConfig
from bridge.protocols.openai_sip import (
    IncomingCall,
    accept_session,
    calls_url,
    parse_incoming,
    refer_uri,
    sideband_url,
    sip_user,
)


def _event(headers: Any, call_id: Any = "rtc_479a275623b54bdb9b6fbae2f7cbd408") -> bytes:
    return json.dumps(
        {"type": "realtime.call.incoming", "data": {"call_id": call_id, "sip_headers": headers}}
    ).encode()


def test_the_reference_example_is_read() -> None:
    headers = [
        {"name": "From", "value": "sip:+14155550123@sip.example.com"},
        {"name": "To", "value": "sip:+18005550100@sip.example.com"},
        {"name": "Call-ID", "value": "call-123@example.com"},
    ]
    assert parse_incoming(_event(headers)) == IncomingCall(
        "rtc_479a275623b54bdb9b6fbae2f7cbd408", "+14155550123", "+18005550100",
        "call-123@example.com",
    )  # fmt: skip


@pytest.mark.parametrize(
    "headers",
    [None, [], "From: x", [None, 7, {"name": 1, "value": "x"}], [{"name": "To"}]],
)
def test_missing_or_odd_headers_leave_the_fields_empty(headers: Any) -> None:
    call = parse_incoming(_event(headers))
    assert isinstance(call, IncomingCall)
    assert (call.from_user, call.to_user, call.sip_call_id) == ("", "", None)


def test_header_names_are_case_blind_and_the_first_of_a_repeat_counts() -> None:
    headers = [
        {"name": "to", "value": '"Desk" <sip:+15557650000@pbx;user=phone>;tag=1'},
        {"name": "TO", "value": "sip:+19999999999@evil"},
        {"name": "from", "value": "<tel:+14155550123;phone-context=x>"},
        {"name": "call-id", "value": "a\x00b" + "c" * 400},
    ]
    call = parse_incoming(_event(headers))
    assert isinstance(call, IncomingCall)
    assert call.to_user == "+15557650000" and call.from_user == "+14155550123"
    assert call.sip_call_id is not None and len(call.sip_call_id) == 255
    assert "\x00" not in call.sip_call_id


@pytest.mark.parametrize(
    ("value", "user"),
    [
        ("sip:+15557650000@pbx.example.com", "+15557650000"),
        ("sips:alice@example.com:5061;transport=tls", "alice"),
        ("sip:%2B15557650000@pbx", "+15557650000"),
        ("sip:pbx.example.com", ""),
        ("not a uri", ""),
        ("sip:" + "1" * 200 + "@pbx", ""),
        ("sip:caf\u00e9@pbx", ""),
    ],
)
def test_sip_user(value: str, user: str) -> None:
    assert sip_user(value) == user


@pytest.mark.parametrize(
    "body",
    [b"", b"[]", b'{"type": 1}', _event([], call_id="call_1"), _event([], call_id="rtc_a/b"),
     b'{"type": "realtime.call.incoming", "data": []}'],
)  # fmt: skip
def test_a_malformed_offer_is_refused(body: bytes) -> None:
    assert parse_incoming(body) is None


def test_other_events_are_named_to_be_ignored() -> None:
    assert parse_incoming(b'{"type": "live.transport.incoming", "data": {}}') == (
        "live.transport.incoming"
    )


def test_the_accept_body_is_the_ga_session_without_audio_formats() -> None:
    config = SessionConfig(
        instructions="Be brief.",
        voice="cedar",
        audio_format="pcmu",
        tools=({"type": "function", "name": "end_call", "description": "Hang up.",
                "parameters": {"type": "object", "properties": {}}},),
    )  # fmt: skip
    body = accept_session(config, "gpt-realtime")
    assert body["type"] == "realtime" and body["model"] == "gpt-realtime"
    assert body["instructions"] == "Be brief."
    assert body["audio"]["output"]["voice"] == "cedar"
    assert "format" not in body["audio"]["input"] and "format" not in body["audio"]["output"]
    assert body["audio"]["input"]["turn_detection"]["type"] == "server_vad"
    assert body["tools"][0]["name"] == "end_call" and body["tool_choice"] == "auto"
    pydantic = pytest.importorskip("pydantic")
    params = pytest.importorskip("openai.types.realtime.call_accept_params")
    strict = pydantic.TypeAdapter(
        pydantic.with_config(pydantic.ConfigDict(extra="forbid"))(params.CallAcceptParams)
    )
    strict.validate_python(body)


def test_refer_targets_and_urls() -> None:
    assert refer_uri("+15550001111") == "tel:+15550001111"
    assert refer_uri("sip:desk@pbx.example.com") == "sip:desk@pbx.example.com"
    assert sideband_url("https://api.openai.com", "rtc_1") == (
        "wss://api.openai.com/v1/realtime?call_id=rtc_1"
    )
    assert sideband_url("http://127.0.0.1:9/base/", "rtc_1") == (
        "ws://127.0.0.1:9/base/v1/realtime?call_id=rtc_1"
    )
    assert calls_url("https://api.openai.com/", "rtc_1", "refer") == (
        "https://api.openai.com/v1/realtime/calls/rtc_1/refer"
    )
