"""Who gets to see the call-log pages: sign-in, the signed cookie, and loopback-only."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from bridge.review.page_auth import SESSION_MAX_AGE_S, SessionCookie, safe_next
from bridge.storage import CallStore
from tests.review.page_samples import LOOPBACK, REMOTE, TOKEN, bearer, client, make_app

COOKIE = "bridge_review"


@pytest.fixture
async def remote(page_store: CallStore, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """Someone on another machine, with a review token configured on the bridge."""
    async with client(make_app(page_store, tmp_path), REMOTE) as http:
        yield http


def set_cookie(response: httpx.Response) -> dict[str, str]:
    """The one Set-Cookie of ``response`` as ``{name: value, attribute: value, ...}``."""
    (header,) = response.headers.get_list("set-cookie")
    parts = [part.strip() for part in header.split(";")]
    name, _, value = parts[0].partition("=")
    out = {"name": name, "value": value}
    for part in parts[1:]:
        key, _, attr = part.partition("=")
        out[key.lower()] = attr
    return out


async def sign_in(http: httpx.AsyncClient, token: str, next_path: str = "/calls") -> httpx.Response:
    return await http.post(
        "/calls/sign-in",
        data={"token": token, "next": next_path},
        headers={"Origin": "http://127.0.0.1:8000"},
    )


async def test_a_page_sends_a_stranger_to_sign_in(remote: httpx.AsyncClient) -> None:
    response = await remote.get("/calls", params={"text": "table", "status": "completed"})
    assert response.status_code == 303
    assert response.headers["location"] == (
        "/calls/sign-in?next=%2Fcalls%3Ftext%3Dtable%26status%3Dcompleted"
    )
    assert response.headers["cache-control"] == "no-store"
    for path in ("/calls/CAbooking", "/calls/CAnope", "/calls/CAbooking/recording.wav"):
        assert (await remote.get(path)).status_code == 303
    # The API keeps answering 401, with no redirect.
    assert (await remote.get("/api/calls")).status_code == 401


async def test_sign_in_form(remote: httpx.AsyncClient) -> None:
    response = await remote.get("/calls/sign-in", params={"next": "/calls/CAbooking"})
    assert response.status_code == 200
    html = response.text
    assert '<form class="sign-in" method="post" action="/calls/sign-in">' in html
    assert 'type="password"' in html and 'name="token"' in html and "Review token" in html
    assert '<input type="hidden" name="next" value="/calls/CAbooking">' in html
    assert response.headers["x-frame-options"] == "DENY"
    assert "Sign out" not in html


async def test_signing_in_sets_a_safe_cookie_and_goes_on(remote: httpx.AsyncClient) -> None:
    response = await sign_in(remote, TOKEN, "/calls/CAbooking")
    assert response.status_code == 303
    assert response.headers["location"] == "/calls/CAbooking"
    cookie = set_cookie(response)
    assert cookie["name"] == COOKIE
    assert cookie["path"] == "/"
    assert cookie["max-age"] == str(12 * 3600)
    assert cookie["samesite"] == "Lax"
    assert "httponly" in cookie
    assert "secure" not in cookie  # BRIDGE_PUBLIC_URL is http here
    assert TOKEN not in cookie["value"]

    jar = {"Cookie": f"{COOKIE}={cookie['value']}"}
    page = await remote.get("/calls/CAbooking", headers=jar)
    assert page.status_code == 200 and "Bella Cucina" in page.text
    assert "Sign out" in page.text
    # The page's JSON link works in the same browser.
    assert (await remote.get("/api/calls/CAbooking", headers=jar)).status_code == 200

    out = await remote.post("/calls/sign-out", headers={**jar, "Origin": "http://127.0.0.1:8000"})
    assert out.status_code == 303 and out.headers["location"] == "/calls/sign-in"
    cleared = set_cookie(out)
    assert cleared["name"] == COOKIE and cleared["value"] == "" and cleared["max-age"] == "0"


async def test_https_makes_the_cookie_secure(page_store: CallStore, tmp_path: Path) -> None:
    app = make_app(page_store, tmp_path, public_url="https://bridge.example.com")
    async with client(app) as http:
        cookie = set_cookie(await sign_in(http, TOKEN))
    assert cookie["name"] == "__Host-bridge_review"
    assert "secure" in cookie and cookie["path"] == "/" and "domain" not in cookie


@pytest.mark.parametrize("typed", ["wrong", TOKEN + "x", TOKEN[:-1], "", " ", "tablé"])
async def test_a_wrong_token_shows_the_form_again(remote: httpx.AsyncClient, typed: str) -> None:
    response = await sign_in(remote, typed, "/calls/CAbooking")
    assert response.status_code == 401
    assert "That token is not right" in response.text
    assert 'name="token"' in response.text
    assert '<input type="hidden" name="next" value="/calls/CAbooking">' in response.text
    assert "set-cookie" not in response.headers


async def test_the_typed_token_may_carry_spaces(remote: httpx.AsyncClient) -> None:
    # Pasting often brings a trailing newline or space along.
    assert (await sign_in(remote, f" {TOKEN}\n")).status_code == 303


def forged_cookies() -> dict[str, str]:
    """Cookies that must not open the pages, by what is wrong with them. Made when a test
    runs, not when tests are collected: they hold the time, and parallel workers must
    collect the same test names."""
    good = SessionCookie(TOKEN, secure=False).issue()
    value, _, signature = good.rpartition(".")
    # The first character: the last one of base64 carries spare bits a decoder ignores.
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    return {
        "no signature": "reviewer",
        "empty": "",
        "signature with a character more": good + "x",
        "signature changed": f"{value}.{flipped}",
        # Signed with another token: rotating the token signs everyone out.
        "another token": SessionCookie("the-old-token", secure=False).issue(),
        # Issued 12 hours and a minute ago.
        "expired": SessionCookie(
            TOKEN, secure=False, clock=lambda: time.time() - SESSION_MAX_AGE_S - 60
        ).issue(),
        # Issued "in the future" by a tampered timestamp is still a bad signature.
        "timestamp changed": good.replace(good.split(".")[1], "AAAAAA", 1),
        "not ascii": "ünïcode",
    }


@pytest.mark.parametrize("kind", list(forged_cookies()))
async def test_forged_or_stale_cookies_are_refused(remote: httpx.AsyncClient, kind: str) -> None:
    value = forged_cookies()[kind]
    response = await remote.get("/calls", headers={"Cookie": f"{COOKIE}={value}".encode()})
    assert response.status_code == 303
    assert response.headers["location"].startswith("/calls/sign-in")
    api = await remote.get("/api/calls", headers={"Cookie": f"{COOKIE}={value}".encode()})
    assert api.status_code == 401


async def test_a_fresh_cookie_is_accepted(remote: httpx.AsyncClient) -> None:
    almost_stale = SessionCookie(
        TOKEN, secure=False, clock=lambda: time.time() - SESSION_MAX_AGE_S + 60
    ).issue()
    response = await remote.get("/calls", headers={"Cookie": f"{COOKIE}={almost_stale}"})
    assert response.status_code == 200


async def test_the_bearer_header_opens_pages(remote: httpx.AsyncClient) -> None:
    assert (await remote.get("/calls", headers=bearer())).status_code == 200
    assert (await remote.get("/calls", headers=bearer("nope"))).status_code == 303


@pytest.mark.parametrize(
    "target",
    ["//evil.example/calls", "https://evil.example/", "/\\evil.example", "evil.example",
     "javascript:alert(1)", "/calls\r\nSet-Cookie: x=y", "", "\\\\evil.example", "/%0d%0a"],
)  # fmt: skip
async def test_no_open_redirect_after_sign_in(remote: httpx.AsyncClient, target: str) -> None:
    response = await sign_in(remote, TOKEN, target)
    assert response.status_code == 303
    location = response.headers["location"]
    assert location in {"/calls", "/%0d%0a"}


def test_safe_next() -> None:
    assert safe_next("/calls/CA1?x=1") == "/calls/CA1?x=1"
    assert safe_next("/calls?text=a%20b") == "/calls?text=a%20b"
    for bad in (None, "", "//x", "/\\x", "http://x/", "x", "/a b", "/\x7f", "/calls\\x"):
        assert safe_next(bad) == "/calls"


async def test_signing_in_when_already_in_goes_straight_on(remote: httpx.AsyncClient) -> None:
    response = await remote.get(
        "/calls/sign-in", params={"next": "/calls/CAlive"}, headers=bearer()
    )
    assert response.status_code == 303 and response.headers["location"] == "/calls/CAlive"


async def test_forms_posted_from_another_site_are_refused(remote: httpx.AsyncClient) -> None:
    response = await remote.post(
        "/calls/sign-in",
        data={"token": TOKEN, "next": "/calls"},
        headers={"Origin": "https://evil.example"},
    )
    assert response.status_code == 403
    assert "set-cookie" not in response.headers
    out = await remote.post("/calls/sign-out", headers={"Origin": "https://evil.example"})
    assert out.status_code == 403


async def test_browsers_say_where_a_form_came_from(remote: httpx.AsyncClient) -> None:
    # Under Referrer-Policy: no-referrer a browser sends "Origin: null" even from our own
    # form, so Sec-Fetch-Site decides.
    ours = {"Origin": "null", "Sec-Fetch-Site": "same-origin"}
    theirs = {"Origin": "null", "Sec-Fetch-Site": "cross-site"}
    form = {"token": TOKEN, "next": "/calls"}
    assert (await remote.post("/calls/sign-in", data=form, headers=ours)).status_code == 303
    refused = await remote.post("/calls/sign-in", data=form, headers=theirs)
    assert refused.status_code == 403 and "set-cookie" not in refused.headers
    sibling = {"Origin": "http://127.0.0.1:8000", "Sec-Fetch-Site": "same-site"}
    assert (await remote.post("/calls/sign-out", headers=sibling)).status_code == 403


async def test_a_huge_or_odd_form_is_refused(remote: httpx.AsyncClient) -> None:
    huge = await remote.post("/calls/sign-in", data={"token": "x" * 20_000})
    assert huge.status_code == 400
    as_json = await remote.post("/calls/sign-in", json={"token": TOKEN})
    assert as_json.status_code == 400
    assert "set-cookie" not in as_json.headers


# -- no token configured ------------------------------------------------------------------


@pytest.mark.parametrize("address", [LOOPBACK, ("::1", 1)])
async def test_without_a_token_loopback_needs_no_sign_in(
    page_store: CallStore, tmp_path: Path, address: tuple[str, int]
) -> None:
    async with client(make_app(page_store, tmp_path, token=None), address) as http:
        assert (await http.get("/calls")).status_code == 200
        assert (await http.get("/calls/CAbooking")).status_code == 200
        form = await http.get("/calls/sign-in", params={"next": "/calls/CAlive"})
        assert form.status_code == 303 and form.headers["location"] == "/calls/CAlive"
        assert "Sign out" not in (await http.get("/calls")).text


@pytest.mark.parametrize("token", [None, "", "   "])
async def test_without_a_token_others_are_told_to_set_one(
    page_store: CallStore, tmp_path: Path, token: str | None
) -> None:
    async with client(make_app(page_store, tmp_path, token=token), REMOTE) as http:
        for path in ("/calls", "/calls/CAbooking", "/calls/sign-in"):
            response = await http.get(path)
            assert response.status_code == 403
            assert "BRIDGE_REVIEW_TOKEN" in response.text
            assert "Bella Cucina" not in response.text
        # An empty token cannot be "typed" to get in either.
        signed = await sign_in(http, "")
        assert signed.status_code == 403 and "set-cookie" not in signed.headers
        assert (await http.get("/calls", headers={"Authorization": "Bearer "})).status_code == 403


async def test_guessing_the_token_is_cut_off_even_for_the_right_guess(
    page_store: CallStore, tmp_path: Path
) -> None:
    app = make_app(page_store, tmp_path)
    async with client(app, REMOTE) as guesser, client(app, LOOPBACK) as other:
        for _ in range(10):
            assert (await sign_in(guesser, "guess")).status_code == 401
        refused = await sign_in(guesser, "guess")
        assert refused.status_code == 429
        assert 0 < int(refused.headers["retry-after"]) <= 300
        # The right token is refused too while the address is cut off: no way to keep going.
        assert (await sign_in(guesser, TOKEN)).status_code == 429
        # Another address is not held back by someone else's guessing.
        assert (await sign_in(other, TOKEN)).status_code == 303


def test_throttle_window_and_memory_bound() -> None:
    from bridge.review.throttle import SignInThrottle

    throttle = SignInThrottle(limit=3, window_s=60, max_clients=2)
    for t in (0.0, 1.0, 2.0):
        assert throttle.retry_after("a", t) == 0
        throttle.failed("a", t)
    assert throttle.retry_after("a", 3.0) == 57.0
    assert throttle.retry_after("a", 60.5) == 0  # the first failure left the window
    throttle.failed("b", 61.0)
    throttle.failed("c", 61.0)  # a third address: the least recent one is forgotten
    assert throttle.retry_after("a", 61.0) == 0
