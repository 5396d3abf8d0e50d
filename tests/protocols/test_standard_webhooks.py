"""Standard Webhooks signatures as OpenAI sends them, checked the way its SDK checks them."""

from __future__ import annotations

import base64
import time

import pytest

from bridge.protocols.standard_webhooks import (
    TOLERANCE_S,
    ReplayGuard,
    Verdict,
    check_webhook,
    sign_webhook,
    webhook_key,
)

RAW_KEY = b"0123456789abcdef0123456789abcdef"
SECRET = "whsec_" + base64.b64encode(RAW_KEY).decode()
BODY = b'{"type":"realtime.call.incoming","data":{"call_id":"rtc_1"}}'
NOW = 1_750_287_078
MSG = "wh_685342e6c53c8190a1be43f081506c52"


def _check(signature: str, *, ts: int = NOW, now: float = NOW, body: bytes = BODY) -> Verdict:
    return check_webhook(webhook_key(SECRET), MSG, str(ts), signature, body, now)


def test_the_whsec_prefix_is_stripped_and_the_rest_decoded() -> None:
    assert webhook_key(SECRET) == RAW_KEY
    assert webhook_key(SECRET.removeprefix("whsec_")) == RAW_KEY
    with pytest.raises(ValueError, match="base64"):
        webhook_key("whsec_not base64!")


def test_a_genuine_delivery_passes() -> None:
    assert _check(sign_webhook(RAW_KEY, MSG, NOW, BODY)) is Verdict.OK


def test_any_of_several_signatures_may_match() -> None:
    good = sign_webhook(RAW_KEY, MSG, NOW, BODY)
    other = sign_webhook(b"another key during rotation", MSG, NOW, BODY)
    assert _check(f"{other} {good}") is Verdict.OK
    assert _check(f"{good} {other}") is Verdict.OK
    assert _check(f"v2,abc {good}") is Verdict.OK
    assert _check(other) is Verdict.FORGED


def test_a_changed_body_id_or_timestamp_fails() -> None:
    good = sign_webhook(RAW_KEY, MSG, NOW, BODY)
    assert _check(good, body=BODY + b" ") is Verdict.FORGED
    assert _check(good, ts=NOW - 1) is Verdict.FORGED
    assert check_webhook(RAW_KEY, MSG + "x", str(NOW), good, BODY, NOW) is Verdict.FORGED
    assert _check("v1," + good.split(",", 1)[1][:-4]) is Verdict.FORGED
    assert _check(good.split(",", 1)[1]) is Verdict.FORGED  # no version tag


@pytest.mark.parametrize("offset", [TOLERANCE_S + 1, -(TOLERANCE_S + 1), 10**6])
def test_a_timestamp_outside_the_tolerance_either_way_is_stale(offset: int) -> None:
    ts = NOW + offset
    assert _check(sign_webhook(RAW_KEY, MSG, ts, BODY), ts=ts) is Verdict.STALE


@pytest.mark.parametrize("offset", [TOLERANCE_S, -TOLERANCE_S, 0])
def test_a_timestamp_within_the_tolerance_either_way_passes(offset: int) -> None:
    ts = NOW + offset
    assert _check(sign_webhook(RAW_KEY, MSG, ts, BODY), ts=ts) is Verdict.OK


def test_missing_or_malformed_headers_are_refused() -> None:
    good = sign_webhook(RAW_KEY, MSG, NOW, BODY)
    assert check_webhook(RAW_KEY, None, str(NOW), good, BODY, NOW) is Verdict.MISSING
    assert check_webhook(RAW_KEY, MSG, None, good, BODY, NOW) is Verdict.MISSING
    assert check_webhook(RAW_KEY, MSG, str(NOW), None, BODY, NOW) is Verdict.MISSING
    assert check_webhook(RAW_KEY, MSG, "soon", good, BODY, NOW) is Verdict.STALE
    assert check_webhook(RAW_KEY, MSG, str(NOW), "v1," + "A" * 5000, BODY, NOW) is Verdict.FORGED


def test_the_openai_sdk_accepts_what_we_sign_and_we_accept_what_it_accepts() -> None:
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(api_key="sk-unused", webhook_secret=SECRET)
    now = int(time.time())  # the SDK checks the timestamp against its own clock
    headers = {
        "webhook-id": MSG,
        "webhook-timestamp": str(now),
        "webhook-signature": sign_webhook(RAW_KEY, MSG, now, BODY),
    }
    client.webhooks.verify_signature(BODY, headers)  # raises if it disagrees
    forged = {**headers, "webhook-signature": sign_webhook(b"wrong", MSG, now, BODY)}
    with pytest.raises(openai.InvalidWebhookSignatureError):
        client.webhooks.verify_signature(BODY, forged)
    assert check_webhook(RAW_KEY, MSG, str(now), forged["webhook-signature"], BODY, now) is (
        Verdict.FORGED
    )


def test_the_replay_guard_refuses_a_second_delivery_and_forgets_old_ones() -> None:
    guard = ReplayGuard(tolerance_s=300, limit=3)
    assert guard.take("a", NOW, NOW)
    assert not guard.take("a", NOW, NOW + 1)
    guard.release("a")  # the first could not be handled: its retry may come through
    assert guard.take("a", NOW, NOW + 2)
    # Once its timestamp is stale the id is forgotten: a replay fails the timestamp anyway.
    assert guard.take("b", NOW + 10, NOW + 10)
    assert guard.take("c", NOW + 400, NOW + 400)
    assert len(guard) == 1
    for n in range(10):  # a flood of fresh ids stays within the limit
        guard.take(f"f{n}", NOW + 400, NOW + 400)
    assert len(guard) == 3
