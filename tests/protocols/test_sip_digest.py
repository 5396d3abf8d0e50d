"""Digest authentication for SIP: the RFC formula computed here with hashlib for both
algorithms, the challenge, the nonce's signature and age, and hostile Authorization values."""

from __future__ import annotations

import hashlib
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.errors import LocalProtocolError
from bridge.protocols.sip.digest import (
    NONCE_MAX_AGE_S,
    DigestCredentials,
    DigestResult,
    challenge_headers,
    make_nonce,
    nonce_status,
    parse_authorization,
    verify,
)
from bridge.protocols.sip.message import SipParseError

PROPERTY = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)

SECRET = b"cluster-wide nonce secret"
REALM = "bridge.example.com"
USER, PASSWORD = "trunk", "s3cret pa$$"
NOW = 1_750_000_000
URI = "sip:service@bridge.example.com"
CNONCE, NC = "0a4f113b", "00000001"


def h(algorithm: str, text: str) -> str:
    return hashlib.new({"MD5": "md5", "SHA-256": "sha256"}[algorithm], text.encode()).hexdigest()


def rfc_response(algorithm: str, nonce: str, *, qop: bool = True, password: str = PASSWORD) -> str:
    """RFC 2617 §3.2.2.1 / RFC 8760 §3.4.1, written out independently of the module."""
    ha1 = h(algorithm, f"{USER}:{REALM}:{password}")
    ha2 = h(algorithm, f"INVITE:{URI}")
    if qop:
        return h(algorithm, f"{ha1}:{nonce}:{NC}:{CNONCE}:auth:{ha2}")
    return h(algorithm, f"{ha1}:{nonce}:{ha2}")


def authorization(algorithm: str, nonce: str, response: str, *, qop: bool = True) -> str:
    value = (
        f'Digest username="{USER}", realm="{REALM}", nonce="{nonce}", uri="{URI}", '
        f"response={response!r}, algorithm={algorithm}".replace("'", '"')
    )
    if qop:
        value += f', qop=auth, nc={NC}, cnonce="{CNONCE}"'
    return value


def param(value: str, pattern: str) -> str:
    match = re.search(pattern, value)
    assert match is not None, value
    return match[1]


def check(
    credentials: DigestCredentials,
    *,
    now: float = NOW + 10,
    method: str = "INVITE",
    username: str = USER,
    realm: str = REALM,
) -> DigestResult:
    return verify(
        credentials,
        method=method,
        username=username,
        password=PASSWORD,
        realm=realm,
        secret=SECRET,
        now=now,
    )


def test_the_known_md5_vector_from_rfc_2617() -> None:
    # RFC 2617 §3.5, the "Mufasa" example: the module's formula must give its printed value.
    credentials = parse_authorization(
        'Digest username="Mufasa", realm="testrealm@host.com", '
        'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="/dir/index.html", qop=auth, '
        'nc=00000001, cnonce="0a4f113b", response="6629fae49393a05397450978507c4ef1", '
        'opaque="5ccc069c403ebaf9f0171e9517f40e41"'
    )
    assert credentials is not None
    ha1 = hashlib.md5(b"Mufasa:testrealm@host.com:Circle Of Life").hexdigest()
    ha2 = hashlib.md5(b"GET:/dir/index.html").hexdigest()
    expected = hashlib.md5(
        f"{ha1}:dcd98b7102dd2f0e8b11d0f600bfb0c093:00000001:0a4f113b:auth:{ha2}".encode()
    ).hexdigest()
    assert expected == credentials.response == "6629fae49393a05397450978507c4ef1"
    assert credentials.opaque == "5ccc069c403ebaf9f0171e9517f40e41"


@pytest.mark.parametrize("algorithm", ["SHA-256", "MD5"])
@pytest.mark.parametrize("qop", [True, False])
def test_a_correct_response_verifies(algorithm: str, qop: bool) -> None:
    nonce = make_nonce(SECRET, REALM, NOW)
    value = authorization(algorithm, nonce, rfc_response(algorithm, nonce, qop=qop), qop=qop)
    credentials = parse_authorization(value)
    assert credentials is not None
    assert credentials.algorithm == algorithm and credentials.uri == URI
    assert check(credentials) is DigestResult.OK


@pytest.mark.parametrize("algorithm", ["SHA-256", "MD5"])
def test_failures(algorithm: str) -> None:
    nonce = make_nonce(SECRET, REALM, NOW)
    good = parse_authorization(authorization(algorithm, nonce, rfc_response(algorithm, nonce)))
    assert good is not None
    wrong_password = parse_authorization(
        authorization(algorithm, nonce, rfc_response(algorithm, nonce, password="guess"))
    )
    assert wrong_password is not None
    assert check(wrong_password) is DigestResult.INVALID
    assert check(good, realm="other.example.com") is DigestResult.INVALID
    assert check(good, username="someone-else") is DigestResult.INVALID
    assert check(good, method="BYE") is DigestResult.INVALID
    # Old nonce, right password: the client may retry at once with a fresh one.
    assert check(good, now=NOW + NONCE_MAX_AGE_S + 1) is DigestResult.STALE
    # Old nonce, wrong password: never STALE, or a guesser would get silent retries.
    assert check(wrong_password, now=NOW + NONCE_MAX_AGE_S + 1) is DigestResult.INVALID
    # A nonce from the future (beyond clock skew) is not ours.
    assert check(good, now=NOW - 60) is DigestResult.INVALID


def test_a_tampered_or_foreign_nonce_is_invalid() -> None:
    nonce = make_nonce(SECRET, REALM, NOW)
    flipped = nonce[:5] + ("A" if nonce[5] != "A" else "B") + nonce[6:]
    for bad in (flipped, make_nonce(b"another secret", REALM, NOW), "", "x" * 48, nonce + "=="):
        assert nonce_status(bad, SECRET, REALM, NOW) is DigestResult.INVALID
        credentials = parse_authorization(authorization("MD5", bad, rfc_response("MD5", bad)))
        assert credentials is not None
        assert check(credentials) is DigestResult.INVALID
    assert nonce_status(nonce, SECRET, "other.realm", NOW) is DigestResult.INVALID
    assert nonce_status(nonce, SECRET, REALM, NOW) is DigestResult.OK


def test_unsupported_algorithms_and_qops_are_invalid() -> None:
    nonce = make_nonce(SECRET, REALM, NOW)
    for algorithm in ("MD5-sess", "SHA-512-256", "SHA-256-sess"):
        value = authorization(algorithm, nonce, rfc_response("MD5", nonce))
        credentials = parse_authorization(value)
        assert credentials is not None and check(credentials) is DigestResult.INVALID
    auth_int = parse_authorization(
        authorization("MD5", nonce, rfc_response("MD5", nonce)).replace("qop=auth", "qop=auth-int")
    )
    assert auth_int is not None and check(auth_int) is DigestResult.INVALID


def test_the_challenge_offers_sha256_then_md5_with_one_nonce() -> None:
    headers = challenge_headers(REALM, SECRET, NOW, random=bytes(12))
    assert [name for name, _ in headers] == ["WWW-Authenticate"] * 2
    algorithms = [param(value, r"algorithm=([\w-]+)") for _, value in headers]
    assert algorithms == ["SHA-256", "MD5"]
    nonces = {param(value, r'nonce="([^"]+)"') for _, value in headers}
    assert nonces == {make_nonce(SECRET, REALM, NOW, bytes(12))}
    assert all('qop="auth"' in value and f'realm="{REALM}"' in value for _, value in headers)
    stale = challenge_headers(REALM, SECRET, NOW, stale=True, header="Proxy-Authenticate")
    assert all(n == "Proxy-Authenticate" and "stale=true" in v for n, v in stale)


def test_a_challenge_round_trips_through_a_client() -> None:
    # What a phone does: read the first challenge it supports, answer it.
    _, value = challenge_headers(REALM, SECRET, NOW)[0]
    nonce = param(value, r'nonce="([^"]+)"')
    credentials = parse_authorization(
        authorization("SHA-256", nonce, rfc_response("SHA-256", nonce))
    )
    assert credentials is not None and check(credentials) is DigestResult.OK


def test_authorization_parsing_is_robust() -> None:
    credentials = parse_authorization(
        'Digest  username="a\\"b", realm="r, with comma", nonce=abc,uri="sip:x@y",'
        'response="00", future-param="x,y=z", ALGORITHM=SHA-256 , cnonce="", nc=00000001'
    )
    assert credentials is not None
    assert credentials.username == 'a"b' and credentials.realm == "r, with comma"
    assert credentials.nonce == "abc" and credentials.algorithm == "SHA-256"
    assert credentials.params["future-param"] == "x,y=z" and credentials.cnonce == ""
    assert parse_authorization("Basic dXNlcjpwYXNz") is None
    assert parse_authorization("") is None
    tabbed = parse_authorization(
        'digest\tusername="u", realm="r", nonce="n", uri="u", response="0"'
    )
    assert tabbed is not None and tabbed.username == "u"
    with pytest.raises(LocalProtocolError):
        make_nonce(SECRET, REALM, NOW, random=b"short")


@pytest.mark.parametrize(
    "value",
    [
        'Digest username="a", realm="r", nonce="n", uri="u"',  # no response
        'Digest username="a, realm="r", nonce="n", uri="u", response="0"',  # unterminated
        'Digest username="a" realm="r", nonce="n", uri="u", response="0"',  # missing comma
        'Digest username="a", username="b", realm="r", nonce="n", uri="u", response="0"',
        'Digest username, realm="r", nonce="n", uri="u", response="0"',
        'Digest =x, username="a", realm="r", nonce="n", uri="u", response="0"',
        'Digest username=a b, realm="r", nonce="n", uri="u", response="0"',
        "Digest " + ", ".join(f"p{i}=1" for i in range(40)),
        "Digest " + "x" * 5000,
    ],
)
def test_malformed_authorization_is_refused(value: str) -> None:
    with pytest.raises(SipParseError):
        parse_authorization(value)


@PROPERTY
@given(st.text(max_size=300))
def test_authorization_parsing_never_raises_anything_else(text: str) -> None:
    for value in (text, "Digest " + text):
        try:
            credentials = parse_authorization(value)
        except SipParseError:
            continue
        if credentials is not None:
            assert check(credentials) is DigestResult.INVALID


_piece = st.sampled_from(
    ['"', "\\", ",", "=", " ", "username", "realm", "nonce", "uri", "response", '""', "\x00", "é"]
)


@PROPERTY
@given(st.lists(st.one_of(_piece, st.text(max_size=5)), max_size=30))
def test_structured_authorization_junk_raises_only_sip_parse_error(pieces: list[str]) -> None:
    try:
        credentials = parse_authorization("Digest " + "".join(pieces))
    except SipParseError:
        return
    assert credentials is not None
    assert check(credentials) is DigestResult.INVALID
