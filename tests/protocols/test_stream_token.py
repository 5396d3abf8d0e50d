from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.protocols.stream_token import (
    StreamedCalls,
    StreamToken,
    check_stream_token,
    mint_stream_token,
    parse_stream_token,
)

SECRET = b"k" * 32
CALL = "CA" + "1" * 32


def test_a_token_checks_out_for_its_call_until_it_expires() -> None:
    token = mint_stream_token(SECRET, CALL, now=1000.0, ttl_s=60)
    assert check_stream_token(SECRET, CALL, token, now=1059.0)
    assert not check_stream_token(SECRET, CALL, token, now=1061.0)


def test_a_token_is_bound_to_its_call_and_its_secret() -> None:
    token = mint_stream_token(SECRET, CALL, now=1000.0)
    assert not check_stream_token(SECRET, "CA" + "2" * 32, token, now=1000.0)
    assert not check_stream_token(b"other", CALL, token, now=1000.0)


def test_tampered_or_malformed_tokens_fail() -> None:
    token = mint_stream_token(SECRET, CALL, now=1000.0)
    expiry, mac = token.split(".")
    later = f"{int(expiry) + 3600}.{mac}"  # pushing the expiry breaks the MAC
    for bad in (later, "", ".", "abc.def", f"{expiry}.", "x" * 500, token[:-2]):
        assert not check_stream_token(SECRET, CALL, bad, now=1000.0), bad


def _other_digits(text: str, zero: str) -> str:
    return "".join(chr(ord(zero) + int(ch)) for ch in text)


@pytest.mark.parametrize(
    "respell",
    [
        lambda e: "0" + e,
        lambda e: "00" + e,
        lambda e: _other_digits(e, "\u0660"),  # Arabic-Indic digits
        lambda e: _other_digits(e, "\uff10"),  # fullwidth digits
        lambda e: "+" + e,
        lambda e: " " + e,
        lambda e: e[:2] + "_" + e[2:],
    ],
)
def test_a_token_has_one_spelling_only(respell: object) -> None:
    # Before: int() and isdigit() took these, and the spent set keyed on the raw text, so a
    # spent token came back as a "new" one.
    token = mint_stream_token(SECRET, CALL, now=1000.0)
    expiry, mac = token.split(".")
    other = f"{respell(expiry)}.{mac}"  # type: ignore[operator]
    assert other != token
    assert parse_stream_token(other) is None
    assert not check_stream_token(SECRET, CALL, other, now=1000.0)


def test_a_non_ascii_mac_is_a_bad_token_not_an_exception() -> None:
    # Before: hmac.compare_digest raised TypeError on a non-ASCII string.
    token = mint_stream_token(SECRET, CALL, now=1000.0)
    for bad in (token[:-1] + "\u00e9", token[:-1] + "\ud800", token + "\u00e9"):
        assert not check_stream_token(SECRET, CALL, bad, now=1000.0)


def test_a_lone_surrogate_call_sid_is_a_bad_token_not_an_exception() -> None:
    token = mint_stream_token(SECRET, CALL, now=1000.0)
    assert not check_stream_token(SECRET, "\ud800", token, now=1000.0)


def test_parse_gives_the_canonical_parts() -> None:
    token = mint_stream_token(SECRET, CALL, now=1000.0, ttl_s=60)
    parsed = parse_stream_token(token)
    assert parsed == StreamToken(1060, token.split(".")[1])
    assert f"{parsed.expiry}.{parsed.mac}" == token


@settings(max_examples=500, deadline=None, derandomize=True)
@given(st.text(max_size=60), st.text(max_size=80) | st.integers() | st.none())
def test_any_call_sid_and_token_give_a_verdict_never_an_exception(
    call_sid: str, token: object
) -> None:
    assert check_stream_token(SECRET, call_sid, token, now=1000.0) in (True, False)
    parsed = parse_stream_token(token)
    if parsed is not None:
        assert 0 < parsed.expiry < 10**12 and len(parsed.mac) == 24 and parsed.mac.isascii()


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.text(max_size=40), st.integers(min_value=0, max_value=10**10))
def test_every_minted_token_parses_and_checks_out(call_sid: str, now: int) -> None:
    token = mint_stream_token(SECRET, call_sid, now=float(now))
    assert parse_stream_token(token) is not None
    assert check_stream_token(SECRET, call_sid, token, now=float(now))


def test_a_call_streams_once_per_instance() -> None:
    streamed = StreamedCalls()
    assert streamed.claim(CALL, until=1120.0, now=1000.0)
    # A replayed webhook mints a fresh token for the same call: still the same call.
    assert not streamed.claim(CALL, until=1200.0, now=1080.0)
    assert streamed.claim("CA" + "3" * 32, until=1120.0, now=1001.0)


def test_streamed_calls_are_forgotten_once_their_time_is_up() -> None:
    streamed = StreamedCalls()
    for minute in range(20):
        now = minute * 60.0
        for n in range(100):
            assert streamed.claim(f"CA{minute}-{n}", until=now + 30, now=now)
        assert len(streamed) <= 201  # what is kept stays near what is live
    assert streamed.claim("CA0-0", until=2000.0, now=1500.0)
