"""Twilio's form webhooks against any body at all (hypothesis): a signed form gets TwiML that
parses or a clear 4xx, an unsigned or malformed body a 4xx, and never a server error. The app
runs in process with its real lifespan and a SQLite file."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr
from starlette.testclient import TestClient

from bridge.app import create_app
from bridge.devtools.simulator import sign
from bridge.settings import load_settings

TOKEN = "form-webhook-auth-token"
PUBLIC = "https://bridge.example.com"
PROPERTY = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# What a browser or Twilio can put in a form: any text but lone surrogates, which no UTF-8
# encoder writes (raw bodies below cover bytes that are not UTF-8 at all).
_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=300)
_names = st.sampled_from(["CallSid", "From", "To", "CallStatus", "AccountSid", "StreamSid"])
_forms = st.dictionaries(_names | _text, _text, max_size=8)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    db: Path = tmp_path_factory.mktemp("forms") / "calls.db"
    app_settings = load_settings(
        database_url=f"sqlite:///{db}",
        public_url=PUBLIC,
        twilio_auth_token=SecretStr(TOKEN),
        twilio_account_sid="AC" + "0" * 32,
    )
    with TestClient(create_app(app_settings), base_url=PUBLIC) as test_client:
        yield test_client


@PROPERTY
@given(_forms)
def test_any_signed_voice_form_gets_twiml_that_parses_or_a_400(
    client: TestClient, form: dict[str, str]
) -> None:
    headers = {"X-Twilio-Signature": sign(TOKEN, PUBLIC + "/twilio/voice", form)}
    answer = client.post("/twilio/voice", data=form, headers=headers)
    assert answer.status_code in (200, 400, 413), answer.text
    if answer.status_code == 200:
        root = ET.fromstring(answer.content)
        values = {p.get("name"): p.get("value") or "" for p in root.iter("Parameter")}
        assert set(values) == {"from", "to", "token"}
        assert all(v.isprintable() and len(v) <= 128 for v in values.values())


@PROPERTY
@given(_forms, st.sampled_from(["/twilio/status", "/twilio/stream-status"]))
def test_any_signed_callback_form_is_answered_without_a_server_error(
    client: TestClient, form: dict[str, str], path: str
) -> None:
    headers = {"X-Twilio-Signature": sign(TOKEN, PUBLIC + path, form)}
    assert client.post(path, data=form, headers=headers).status_code in (204, 400, 413)


@PROPERTY
@given(
    st.binary(max_size=400),
    st.sampled_from(["/twilio/voice", "/twilio/status", "/twilio/stream-status"]),
    st.sampled_from(["application/x-www-form-urlencoded", "multipart/form-data", "text/plain"]),
)
def test_any_raw_body_is_refused_cleanly(
    client: TestClient, body: bytes, path: str, content_type: str
) -> None:
    answer = client.post(path, content=body, headers={"Content-Type": content_type})
    assert answer.status_code in (400, 403, 413)


def test_percent_escapes_that_are_not_utf8_are_replaced_not_passed_on(client: TestClient) -> None:
    body = "CallSid=CA1&From=%2B1555%FF%FE&To=%ED%A0%80"
    form = {"CallSid": "CA1", "From": "+1555\ufffd\ufffd", "To": "\ufffd\ufffd\ufffd"}
    headers = {
        "X-Twilio-Signature": sign(TOKEN, PUBLIC + "/twilio/voice", form),
        "Content-Type": "application/x-www-form-urlencoded",
    }
    answer = client.post("/twilio/voice", content=body, headers=headers)
    assert answer.status_code == 200
    values = {
        p.get("name"): p.get("value") for p in ET.fromstring(answer.content).iter("Parameter")
    }
    assert values["from"] == "+1555\ufffd\ufffd" and values["to"] == "\ufffd\ufffd\ufffd"
