"""The fast frame parser reads what ``json.loads`` reads, for any text a peer sends; integers
beyond 64 bits, which it reads as floats, are refused by every field that could carry them."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.errors import RemoteProtocolError
from bridge.protocols.json_text import parse_json
from bridge.protocols.realtime_events import int_in_range
from bridge.protocols.twilio import TwilioMediaStream
from tests.protocols.test_twilio import START

_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()  # NaN and the infinities too, likewise
    | st.text(),  # lone surrogates too, likewise
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


@given(_values, st.booleans())
def test_any_json_the_standard_library_reads_is_read_the_same(value: Any, ascii: bool) -> None:
    text = json.dumps(value, ensure_ascii=ascii)
    assert _same(parse_json(text), json.loads(text))


@pytest.mark.parametrize(
    "text",
    [
        '{"event": "media", "media": {"payload": "AAAA"}, "event": "mark"}',  # last key wins
        '"\\ud800"',
        "[NaN, Infinity, -Infinity]",
        " \n{} \t",
    ],
)
def test_edge_cases_read_as_the_standard_library_reads_them(text: str) -> None:
    assert _same(parse_json(text), json.loads(text))


@pytest.mark.parametrize("text", ["", "{", "{'a': 1}", "[1,]", "nul", "{} {}", "\ufeff{}"])
def test_what_is_not_json_is_refused_as_the_standard_library_refuses_it(text: str) -> None:
    with pytest.raises(ValueError):
        json.loads(text)
    with pytest.raises(ValueError):
        parse_json(text)


def test_nesting_deeper_than_the_stack_is_refused_as_before() -> None:
    with pytest.raises((ValueError, RecursionError)):
        parse_json("[" * 100_000 + "]" * 100_000)


@pytest.mark.parametrize("digits", ["18446744073709551616", "123456789012345678901234567890"])
def test_an_integer_beyond_64_bits_is_refused_by_the_fields_that_read_numbers(digits: str) -> None:
    # orjson makes it a float; json.loads an int. Every numeric field refuses both.
    value = parse_json(digits)
    assert value == float(digits)
    assert int_in_range(value) is None and int_in_range(json.loads(digits)) is None
    stream = TwilioMediaStream()
    stream.receive_text(START)
    stream.events_received()
    media = '"payload":"AAAA","timestamp":' + digits + ',"chunk":"1"'
    frame = '{"event":"media","media":{' + media + "}}"
    with pytest.raises(RemoteProtocolError, match="timestamp"):
        stream.receive_text(frame)
