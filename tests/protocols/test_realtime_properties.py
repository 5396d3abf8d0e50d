"""RealtimeConnection under hostile input: property tests, then one regression test per defect.

The realtime server is a peer on the network. Whatever it sends, ``receive_text`` either hands
back events whose fields have their declared types and sane values (ids short and printable,
numbers that fit a 32-bit column, text that encodes as UTF-8) or raises
``RemoteProtocolError`` and leaves the connection as it was.
"""

from __future__ import annotations

import contextlib
import json
import types
from collections.abc import Sized
from dataclasses import fields
from typing import Any, Union, get_args, get_origin, get_type_hints

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.errors import RemoteProtocolError
from bridge.protocols.dialects import DIALECTS, Dialect
from bridge.protocols.realtime import RealtimeConnection, ResponseState
from bridge.protocols.realtime_events import (
    MAX_ID_LENGTH,
    MAX_WIRE_INT,
    AssistantItemStarted,
    AudioDelta,
    InputTranscriptCompleted,
    ItemTruncated,
    RealtimeError,
    RealtimeEvent,
    ResponseCreated,
    ResponseDone,
    SessionCreated,
    SpeechStarted,
    TranscriptDelta,
)

# Deterministic, and fast enough to run with every other protocol test.
PROPERTY = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
DIALECT_NAMES = ("openai", "openai-beta", "inworld")
ASST, RESP = "item_asst_001", "resp_001"

# Fields whose strings are identifiers (logged, stored as keys) and fields of free text.
ID_FIELDS = frozenset({"item_id", "response_id", "code", "param", "caused_by", "status", "reason"})
TEXT_FIELDS = frozenset({"message", "delta", "transcript"})
#: Epoch seconds may pass 2**31 in 2038; everything else is ms or an index.
INT_LIMITS = {"expires_at": 2**34}


# -- strategies ------------------------------------------------------------------------------

# Surrogates included: the default alphabet leaves them out, the wire does not.
any_char = st.characters(exclude_categories=())
nasty_strings = st.sampled_from(
    [
        "",
        "\ud800",
        "\udfff",
        "ok\ud83d",
        "\x00",
        "\x1b[31mred",
        "line\nbreak",
        "\u2028",
        "\u202eevil",
        "\ufeff",
        " ",
        "x" * 5000,
        "é😀",
    ]
)
strings = st.one_of(st.text(any_char, max_size=20), nasty_strings)
nasty_numbers = st.sampled_from(
    [
        -1,
        -(2**31),
        2**31 - 1,
        2**31,
        2**32,
        2**63 - 1,
        9223372036854775808,
        10**30,
        -(10**400),
        float("nan"),
        float("inf"),
        float("-inf"),
        1e308,
        -0.5,
        0.5,
    ]
)
numbers = st.one_of(nasty_numbers, st.integers(), st.floats())
scalars = st.one_of(st.none(), st.booleans(), numbers, strings)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(strings, inner, max_size=4)
    ),
    max_leaves=12,
)
# What goes in place of a field: mostly the values that break parsers, sometimes anything.
hostile_values = st.one_of(nasty_numbers, nasty_strings, st.booleans(), st.none(), json_values)


def frame(message: object, ascii_only: bool) -> str:
    # Both spellings of a lone surrogate: escaped ("\ud800") and raw in the str.
    return json.dumps(message, ensure_ascii=ascii_only)


def templates(dialect: Dialect) -> list[dict[str, Any]]:
    """One well-formed instance of every server event the connection decodes, in
    ``dialect``'s names, plus events it must ignore."""
    item = {
        "id": ASST,
        "object": "realtime.item",
        "type": "message",
        "status": "in_progress",
        "role": "assistant",
        "content": [],
    }
    audio = dialect.assistant_audio_content
    text = dialect.assistant_text_content
    done_item = {
        **item,
        "status": "completed",
        "content": [{"type": audio, "transcript": "Sure."}, {"type": text, "text": "Sure."}],
    }
    part = {"response_id": RESP, "item_id": ASST, "output_index": 0, "content_index": 0}
    user = {"item_id": "item_user_001", "content_index": 0}
    result: list[dict[str, Any]] = [
        {"type": "session.created", "session": {"id": "sess_1", "expires_at": 1767229200}},
        {"type": "session.updated", "session": {"id": "sess_1", "instructions": "Hi."}},
        {
            "type": "input_audio_buffer.speech_started",
            "audio_start_ms": 1000,
            "item_id": "item_user_001",
        },
        {
            "type": "input_audio_buffer.speech_stopped",
            "audio_end_ms": 2700,
            "item_id": "item_user_001",
        },
        {
            "type": "input_audio_buffer.committed",
            "previous_item_id": None,
            "item_id": "item_user_001",
        },
        {"type": "response.created", "response": {"id": RESP, "status": "in_progress"}},
        {
            "type": "response.output_item.added",
            "response_id": RESP,
            "output_index": 0,
            "item": item,
        },
        {"type": dialect.audio_delta, **part, "delta": "//////////8="},
        {"type": dialect.audio_done, **part},
        {"type": dialect.transcript_delta, **part, "delta": "Sure, "},
        {"type": dialect.transcript_done, **part, "transcript": "Sure, I can help."},
        {
            "type": "conversation.item.input_audio_transcription.completed",
            **user,
            "transcript": "Hello.",
        },
        {
            "type": "conversation.item.input_audio_transcription.failed",
            **user,
            "error": {"type": "transcription_error", "message": "Audio unintelligible"},
        },
        {
            "type": "conversation.item.truncated",
            "item_id": ASST,
            "content_index": 0,
            "audio_end_ms": 800,
        },
        {
            "type": "response.done",
            "response": {
                "id": RESP,
                "status": "cancelled",
                "status_details": {"type": "cancelled", "reason": "turn_detected"},
                "output": [done_item],
            },
        },
        {
            "type": "response.done",
            "response": {
                "id": RESP,
                "status": "failed",
                "status_details": {
                    "type": "failed",
                    "error": {"type": "server_error", "code": "x"},
                },
                "output": [],
            },
        },
        {
            "type": "error",
            "error": {
                "type": "invalid_request_error",
                "code": "response_cancel_not_active",
                "message": "Cancellation failed: no active response found",
                "param": None,
                "event_id": "evt_1",
            },
        },
        {"type": "rate_limits.updated", "rate_limits": [{"name": "requests", "limit": 1000}]},
        {"type": "response.something_new", "data": {"x": 1}},
    ]
    result += [
        {"type": name, "previous_item_id": None, "item": item} for name in dialect.item_created
    ]
    if dialect.name == "inworld":
        result += [
            {"type": "ping", "timestamp": 1767225600000},
            {"type": "response.backchannel.skipped"},
        ]
    for number, message in enumerate(result):
        message["event_id"] = f"event_{number:04d}"
    return result


def paths(value: object, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in ``value`` a hostile value can be put, the top-level type tag aside."""
    found: list[tuple[Any, ...]] = []
    children: list[tuple[Any, object]] = []
    if isinstance(value, dict):
        children = list(value.items())
    elif isinstance(value, list):
        children = list(enumerate(value))
    for key, child in children:
        if prefix or key != "type":
            found.append((*prefix, key))
        found += paths(child, (*prefix, key))
    return found


def put(message: dict[str, Any], path: tuple[Any, ...], value: object) -> None:
    target: Any = message
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value


@st.composite
def hostile_events(
    draw: st.DrawFn, dialect: Dialect, template: dict[str, Any] | None = None
) -> str:
    """A plausible server event of ``dialect`` with some fields replaced by hostile values."""
    if template is None:
        template = draw(st.sampled_from(templates(dialect)))
    message = json.loads(json.dumps(template))
    places = paths(message)
    for path in draw(st.lists(st.sampled_from(places), max_size=3, unique=True)):
        # An earlier replacement may have removed the container.
        with contextlib.suppress(KeyError, IndexError, TypeError):
            put(message, path, draw(hostile_values))
    if draw(st.booleans()):
        message[draw(strings)] = draw(json_values)
    return frame(message, draw(st.booleans()))


def deep(depth: int, kind: str) -> str:
    inner = "[" * depth + "]" * depth
    return '{"type":"%s","response":{"output":%s}}' % (kind, inner)  # noqa: UP031


any_frames = st.one_of(
    st.text(any_char, max_size=40),
    st.builds(frame, json_values, st.booleans()),
    st.builds(deep, st.integers(1, 200_000), st.sampled_from(["response.done", "x"])),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "[]", "null", '"\\ud800"']),
)


def frames_for(dialect: Dialect) -> st.SearchStrategy[str]:
    valid = st.sampled_from(templates(dialect)).map(lambda m: frame(m, True))
    return st.one_of(valid, hostile_events(dialect), any_frames)


# -- invariants ----------------------------------------------------------------------------


def conforms(value: object, hint: Any) -> bool:
    """``value`` has exactly the declared type (``True`` is not an ``int`` here)."""
    origin = get_origin(hint)
    if origin is Union or origin is types.UnionType:
        return any(conforms(value, option) for option in get_args(hint))
    if hint is type(None):
        return value is None
    if origin is dict:
        key_hint, value_hint = get_args(hint)
        return type(value) is dict and all(
            conforms(k, key_hint) and conforms(v, value_hint) for k, v in value.items()
        )
    return type(value) is hint


def is_clean_id(value: str) -> bool:
    # Empty only as ResponseCreated's stand-in for a response without an id.
    return len(value) <= MAX_ID_LENGTH and value.isprintable()


def encodes(value: str) -> bool:
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return "\x00" not in value  # PostgreSQL text refuses NUL


HINTS: dict[type, dict[str, Any]] = {}


def check_event(event: RealtimeEvent) -> None:
    kind = type(event)
    hints = HINTS.get(kind) or HINTS.setdefault(kind, get_type_hints(kind))
    for spec in fields(event):
        value = getattr(event, spec.name)
        assert conforms(value, hints[spec.name]), (spec.name, value)
        if type(value) is str:
            if spec.name in ID_FIELDS:
                assert is_clean_id(value), (spec.name, value)
            else:
                assert spec.name in TEXT_FIELDS, spec.name
                assert encodes(value), (spec.name, value)
        elif type(value) is int:
            assert 0 <= value <= INT_LIMITS.get(spec.name, MAX_WIRE_INT), (spec.name, value)
        elif type(value) is dict:
            for key, text in value.items():
                assert is_clean_id(key) and encodes(text), (key, text)


def state(conn: RealtimeConnection) -> tuple[object, ...]:
    return (conn.response_state, conn.active_response_id, conn.has_data_to_send)


def feed_checked(conn: RealtimeConnection, text: str) -> list[RealtimeEvent]:
    """Feed one frame and check every invariant; the events decoded, or [] if refused."""
    before = state(conn)
    try:
        conn.receive_text(text)
    except RemoteProtocolError as exc:
        assert exc.close_code == 1007
        # A refused frame changes nothing: no half-decoded events, no state change.
        assert conn.events_received() == []
        assert state(conn) == before
        return []
    events = conn.events_received()
    for event in events:
        check_event(event)
    assert isinstance(conn.response_state, ResponseState)
    active = conn.active_response_id
    assert active is None or is_clean_id(active)
    for out in conn.data_to_send():
        json.loads(out)
    return events


def still_usable(conn: RealtimeConnection) -> None:
    delta = {"type": "response.audio.delta", "item_id": "item_fresh", "delta": "/w=="}
    events = feed_checked(conn, json.dumps(delta))
    assert events[-1] == AudioDelta(None, "item_fresh", b"\xff")


def bounded(conn: RealtimeConnection, limit: int) -> None:
    for name, value in vars(conn).items():
        if isinstance(value, Sized) and not isinstance(value, str | bytes):
            assert len(value) <= limit, (name, len(value))


# -- properties ------------------------------------------------------------------------------


@PROPERTY
@given(st.sampled_from(DIALECT_NAMES), any_frames)
def test_any_text_is_events_or_a_remote_protocol_error(name: str, text: str) -> None:
    conn = RealtimeConnection(DIALECTS[name], "pcmu")
    feed_checked(conn, text)
    still_usable(conn)


EVENT_CASES = [
    pytest.param(name, number, id=f"{name}-{template['type']}-{number}")
    for name in DIALECT_NAMES
    for number, template in enumerate(templates(DIALECTS[name]))
]


@pytest.mark.parametrize(("name", "number"), EVENT_CASES)
@settings(PROPERTY, max_examples=25)
@given(data=st.data())
def test_hostile_fields_in_every_known_event(data: st.DataObject, name: str, number: int) -> None:
    dialect = DIALECTS[name]
    conn = RealtimeConnection(dialect, "pcmu")
    feed_checked(conn, data.draw(hostile_events(dialect, templates(dialect)[number])))
    still_usable(conn)


HOSTILE = [
    None,
    True,
    False,
    0,
    -1,
    2**31,
    9223372036854775808,
    -(2**63),
    10**30,
    1.5,
    float("nan"),
    float("inf"),
    float("-inf"),
    "",
    "\ud800",
    "ok\udfff",
    "\x00",
    "\x1b[2J",
    "\u202e",
    "x" * 10_000,
    [],
    ["text"],
    {},
    {"type": ["text"]},
]


@pytest.mark.parametrize("name", DIALECT_NAMES)
def test_every_field_of_every_event_with_every_hostile_value(name: str) -> None:
    # The exhaustive sweep behind the random one: one field at a time, both JSON spellings.
    dialect = DIALECTS[name]
    for template in templates(dialect):
        for path in paths(template):
            for value in HOSTILE:
                message = json.loads(json.dumps(template))
                put(message, path, value)
                for ascii_only in (True, False):
                    conn = RealtimeConnection(dialect, "pcmu")
                    feed_checked(conn, frame(message, ascii_only))
                    still_usable(conn)


@settings(PROPERTY, max_examples=150)
@given(st.data(), st.sampled_from(DIALECT_NAMES))
def test_sequences_keep_the_connection_sound(data: st.DataObject, name: str) -> None:
    dialect = DIALECTS[name]
    conn = RealtimeConnection(dialect, data.draw(st.sampled_from(["pcmu", "pcm24k"])))
    for text in data.draw(st.lists(frames_for(dialect), max_size=25)):
        if data.draw(st.booleans()):
            conn.create_response(data.draw(st.none() | strings))
        feed_checked(conn, text)
    still_usable(conn)
    bounded(conn, 64)


# -- regressions: one per defect the properties found ---------------------------------------


def openai() -> RealtimeConnection:
    return RealtimeConnection(DIALECTS["openai"], "pcmu")


def event(kind: str, **body: object) -> str:
    return json.dumps({"type": kind, "event_id": "event_x", **body})


def test_deeply_nested_json_is_a_protocol_error_not_a_recursion_error() -> None:
    conn = openai()
    with pytest.raises(RemoteProtocolError) as caught:
        conn.receive_text(deep(100_000, "response.done"))
    assert caught.value.close_code == 1007
    still_usable(conn)


@pytest.mark.parametrize("spelling", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_nan_and_infinite_times_count_as_absent_instead_of_raising_value_error(
    spelling: str,
) -> None:
    conn = openai()
    conn.receive_text('{"type":"session.created","session":{"expires_at":%s}}' % spelling)  # noqa: UP031
    conn.receive_text(
        '{"type":"input_audio_buffer.speech_started","item_id":"u","audio_start_ms":%s}'  # noqa: UP031
        % spelling
    )
    assert conn.events_received() == [SessionCreated(None), SpeechStarted("u", None)]
    with pytest.raises(RemoteProtocolError):
        conn.receive_text(
            '{"type":"conversation.item.truncated","item_id":"a","audio_end_ms":%s}' % spelling  # noqa: UP031
        )


@pytest.mark.parametrize("value", [-1, 2**31, 9223372036854775808, True, -0.5])
def test_times_outside_a_32_bit_column_are_refused(value: object) -> None:
    conn = openai()
    conn.receive_text(event("input_audio_buffer.speech_started", item_id="u", audio_start_ms=value))
    assert conn.events_received() == [SpeechStarted("u", None)]
    with pytest.raises(RemoteProtocolError):
        conn.receive_text(event("conversation.item.truncated", item_id=ASST, audio_end_ms=value))


def test_times_at_the_edges_of_the_range_are_kept() -> None:
    conn = openai()
    conn.receive_text(event("conversation.item.truncated", item_id=ASST, audio_end_ms=0))
    conn.receive_text(event("conversation.item.truncated", item_id=ASST, audio_end_ms=MAX_WIRE_INT))
    conn.receive_text(event("conversation.item.truncated", item_id=ASST, audio_end_ms=800.0))
    assert conn.events_received() == [
        ItemTruncated(ASST, 0),
        ItemTruncated(ASST, MAX_WIRE_INT),
        ItemTruncated(ASST, 800),
    ]


@pytest.mark.parametrize("kind", [["text"], {"a": 1}])
def test_a_content_part_type_that_is_not_a_string_is_skipped_not_a_type_error(
    kind: object,
) -> None:
    conn = openai()
    output = [
        {
            "id": ASST,
            "role": "assistant",
            "content": [{"type": kind, "text": "x"}, {"type": "output_text", "text": "Hi."}],
        }
    ]
    conn.receive_text(event("response.done", response={"id": RESP, "output": output}))
    assert conn.events_received() == [ResponseDone(RESP, "unknown", None, {ASST: "Hi."})]


@pytest.mark.parametrize(
    "item_id", ["", "\ud800", "item\x1b[2J", "item\n", "\u202eitem", "x" * (MAX_ID_LENGTH + 1)]
)
def test_malformed_item_ids_are_refused_where_required_and_dropped_where_optional(
    item_id: str,
) -> None:
    conn = openai()
    required: list[tuple[str, dict[str, object]]] = [
        ("response.output_audio.delta", {"delta": "/w=="}),
        ("response.output_audio.done", {}),
        ("response.output_audio_transcript.delta", {"delta": "Hi"}),
        ("response.output_audio_transcript.done", {"transcript": "Hi"}),
        ("conversation.item.truncated", {"audio_end_ms": 1}),
    ]
    for kind, body in required:
        with pytest.raises(RemoteProtocolError):
            conn.receive_text(event(kind, item_id=item_id, response_id=RESP, **body))
    item = {"id": item_id, "type": "message", "role": "assistant"}
    conn.receive_text(event("response.output_item.added", response_id=item_id, item=item))
    conn.receive_text(event("input_audio_buffer.speech_started", item_id=item_id))
    conn.receive_text(event("response.created", response={"id": item_id}))
    assert conn.events_received() == [SpeechStarted(None, None), ResponseCreated("")]
    assert conn.active_response_id is None


def test_a_malformed_response_id_on_audio_is_dropped() -> None:
    conn = openai()
    conn.receive_text(event("response.created", response={"id": RESP}))
    conn.receive_text(
        event("response.output_audio.delta", response_id=RESP, item_id=ASST, delta="/w==")
    )
    conn.receive_text(
        event("response.output_audio.delta", response_id="r\x00", item_id=ASST, delta="/w==")
    )
    assert conn.events_received()[-2:] == [
        AudioDelta(RESP, ASST, b"\xff"),
        AudioDelta(None, ASST, b"\xff"),
    ]


def test_text_with_lone_surrogates_or_nul_is_made_storable() -> None:
    conn = openai()
    bad, fixed = "Hi\ud800 there\x00!", "Hi\ufffd there\ufffd!"
    output = [{"id": ASST, "role": "assistant", "content": [{"type": "audio", "transcript": bad}]}]
    conn.receive_text(event("response.output_audio_transcript.delta", item_id=ASST, delta=bad))
    conn.receive_text(event("response.output_audio_transcript.done", item_id=ASST, transcript=bad))
    conn.receive_text(
        event("conversation.item.input_audio_transcription.completed", transcript=bad)
    )
    conn.receive_text(event("response.done", response={"id": RESP, "output": output}))
    conn.receive_text(event("error", error={"code": None, "message": bad}))
    events = conn.events_received()
    assert events == [
        TranscriptDelta(None, ASST, fixed),
        events[1],
        InputTranscriptCompleted(None, fixed),
        ResponseDone(RESP, "unknown", None, {ASST: fixed}),
        RealtimeError(None, fixed, None, None, False, False),
    ]
    for text in ("Hi\ud800 there", "\udcff", "😀\ud83d"):
        raw = '{"type":"response.output_audio_transcript.delta","item_id":"a","delta":"%s"}' % text  # noqa: UP031
        conn.receive_text(raw)  # the surrogate raw in the str, not escaped
        [delta] = conn.events_received()
        assert isinstance(delta, TranscriptDelta)
        delta.delta.encode()


def test_malformed_codes_statuses_and_reasons_count_as_absent() -> None:
    conn = openai()
    details = {"type": "cancelled", "reason": "turn\x00detected"}
    conn.receive_text(
        event("response.done", response={"id": RESP, "status": "\ud800", "status_details": details})
    )
    conn.receive_text(
        event(
            "error", error={"code": "x" * 1000, "message": "m", "param": "p\ud800", "event_id": []}
        )
    )
    assert conn.events_received() == [
        ResponseDone(RESP, "unknown", None, {}),
        RealtimeError(None, "m", None, None, False, False),
    ]


def test_invented_item_ids_do_not_grow_the_connection() -> None:
    conn = openai()
    for number in range(5000):
        item = {"id": f"item_{number}", "type": "message", "role": "assistant"}
        conn.receive_text(event("response.output_item.added", response_id=RESP, item=item))
        conn.receive_text(event("conversation.item.added", item=item))
        conn.receive_text(event("response.output_audio.delta", item_id=f"x_{number}", delta="/w=="))
        conn.receive_text(event(f"unknown.kind_{number}", item=item))
        conn.events_received()
    bounded(conn, 64)
    # The latest items are still known: their audio does not start them again.
    conn.receive_text(event("response.output_audio.delta", item_id="x_4999", delta="/w=="))
    assert conn.events_received() == [AudioDelta(None, "x_4999", b"\xff")]
    conn.receive_text(event("response.output_audio.delta", item_id="item_0", delta="/w=="))
    assert conn.events_received()[0] == AssistantItemStarted(None, "item_0")
