"""The TwiML answer parses as XML whatever the webhook's fields hold, and carries them back."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.protocols.twiml import connect_stream

URL = "wss://bridge.example.com/twilio/media"
STATUS = "https://bridge.example.com/twilio/stream-status"


def _parameters(twiml: str) -> dict[str, str]:
    root = ET.fromstring(twiml.encode())
    return {p.attrib["name"]: p.attrib["value"] for p in root.iter("Parameter")}


@pytest.mark.parametrize("bad", ["\x00", "\x0b", "\ufffe", "\uffff", "\ud800", "\x1f"])
def test_characters_xml_cannot_carry_are_left_out(bad: str) -> None:
    # Before: written raw, so no XML parser (and so not Twilio) accepted the answer.
    twiml = connect_stream(URL, STATUS, {"from": f"+1555{bad}0000", "to": "+1666"})
    assert _parameters(twiml) == {"from": "+15550000", "to": "+1666"}


def test_markup_and_whitespace_survive_the_round_trip() -> None:
    value = '<a href="x">&amp;</a>\t\n\r é 😀'
    assert _parameters(connect_stream(URL, STATUS, {"v": value})) == {"v": value}


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.dictionaries(st.text(max_size=20), st.text(max_size=40), max_size=4))
def test_any_parameters_give_xml_that_parses(params: dict[str, str]) -> None:
    twiml = connect_stream(URL, STATUS, params)
    root = ET.fromstring(twiml.encode("utf-8", "surrogatepass"))
    stream = root.find("./Connect/Stream")
    assert stream is not None and stream.attrib["url"] == URL
    assert len(root.findall("./Connect/Stream/Parameter")) == len(params)
