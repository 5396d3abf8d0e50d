from __future__ import annotations

from bridge.protocols.stream_token import SpentTokens, check_stream_token, mint_stream_token

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


def test_a_token_starts_one_stream_only() -> None:
    spent = SpentTokens()
    token = mint_stream_token(SECRET, CALL, now=1000.0)
    assert spent.spend(token, now=1000.0)
    assert not spent.spend(token, now=1001.0)
    other = mint_stream_token(SECRET, "CA" + "3" * 32, now=1000.0)
    assert spent.spend(other, now=1001.0)


def test_spent_tokens_are_forgotten_once_expired() -> None:
    spent = SpentTokens()
    for n in range(100):
        spent.spend(mint_stream_token(SECRET, f"CA{n}", now=0.0, ttl_s=10), now=0.0)
    fresh = mint_stream_token(SECRET, CALL, now=1000.0)
    assert spent.spend(fresh, now=1000.0)
    assert len(spent._expiry) == 1
