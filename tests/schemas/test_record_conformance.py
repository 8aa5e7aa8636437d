"""The hot path's msgspec decoder accepts exactly what the pydantic model accepts.

``decode_records`` lets msgspec accept the common case and pydantic decide the
rest; these tests compare it with ``validate_message`` message by message: the
same verdict, the same reason, the same field values.
"""

from __future__ import annotations

import json
import math
from typing import Any

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tracewatch.demo.traffic import DemoTraffic, invalid_events
from tracewatch.errors import InvalidEvent
from tracewatch.schemas.event import TraceEvent
from tracewatch.schemas.record import EventRecord
from tracewatch.schemas.validation import _RECORD_DECODER, decode_records, validate_message

T0 = 1_795_341_600.0
BASE: dict[str, Any] = {
    "event_id": "e1",
    "trace_id": "t1",
    "ts": T0,
    "kind": "llm",
    "route": "support/chat",
}


def pydantic_verdict(value: bytes) -> tuple[str, Any]:
    try:
        event = validate_message(value)
    except InvalidEvent as exc:
        return "rejected", (exc.reason, exc.field)
    return "accepted", dict(event)


def fast_verdict(value: bytes) -> tuple[str, Any]:
    records, index, rejected = decode_records([value])
    if rejected:
        assert not records and rejected[0][0] == 0
        return "rejected", (rejected[0][1].reason, rejected[0][1].field)
    assert index == [0]
    return "accepted", msgspec.structs.asdict(records[0])


def assert_same(value: bytes) -> None:
    fast, slow = fast_verdict(value), pydantic_verdict(value)
    assert fast[0] == slow[0], value[:300]
    if fast[0] == "accepted":
        assert _comparable(fast[1]) == _comparable(slow[1]), value[:300]
    else:
        assert fast[1] == slow[1], value[:300]


def _comparable(fields: dict[str, Any]) -> dict[str, Any]:
    """NaN never equals itself; nothing accepted is NaN, but be exact about it."""
    return {k: ("nan" if isinstance(v, float) and math.isnan(v) else v) for k, v in fields.items()}


def test_the_record_has_the_models_fields_and_defaults() -> None:
    assert EventRecord.__struct_fields__ == tuple(TraceEvent.model_fields)
    record = msgspec.json.decode(json.dumps(BASE).encode(), type=EventRecord)
    model = TraceEvent.model_validate_json(json.dumps(BASE))
    assert msgspec.structs.asdict(record) == dict(model)


def test_demo_traffic_takes_the_fast_path_and_reads_the_same() -> None:
    for event in DemoTraffic(seed=4).take(T0, 3000):
        value = json.dumps(event).encode()
        record = _RECORD_DECODER.decode(value)  # no pydantic fallback involved
        assert msgspec.structs.asdict(record) == dict(validate_message(value))


def test_the_demo_invalid_classes_get_the_same_reasons() -> None:
    for _, value in invalid_events(np.random.default_rng(11), 500):
        assert_same(value)


EDGE_CASES: list[bytes] = [
    b'{"event_id":"e","trace_id":"t","kind":"llm","route":"r","ts":1' + b"0" * 400 + b"}",
    b'{"event_id":"e","trace_id":"t","kind":"llm","route":"r","ts":1e400}',
    b'{"event_id":"e","trace_id":"t","kind":"llm","route":"r","ts":5,"x":'
    + b"[" * 230
    + b"]" * 230
    + b"}",
    b'{"event_id":"e","trace_id":"t","kind":"llm","route":"r","ts":5,"route":"s"}',
    b'{"event_id":"e","trace_id":"t","kind":"llm","route":5,"ts":5,"route":"s"}',
    b'{"event_id":"e","trace_id":"t","kind":"llm","route":"r\\ud800","ts":5}',
    b'{"event_id":"e","trace_id":"t","kind":"llm","route":"r\xff","ts":5}',
    b'{"event_id":"e","trace_id":"t","kind":"llm","route":"r","ts":"2026-11-22T10:00:00.1234567Z"}',
    b'{"event_id":"e","trace_id":"t","kind":"llm","route":"r","ts":"20261122T100000Z"}',
    b'{"event_id":"e","trace_id":"t","kind":"llm","route":"r","ts":"2026-11-22 10:00:00+01:00"}',
    b'{"event_id":"e","trace_id":"t","kind":"llm","route":"r","ts":"2026-11-22T10:00:00"}',
    b'{"event_id":"e","trace_id":"t","kind":"llm","route":"r","ts":true}',
    b'{"event_id":"e","trace_id":"t","kind":"llm","route":"r","ts":-0.0}',
    b'{"event_id":"e","trace_id":"t","kind":"llm","route":"r","ts":5,"latency_ms":-0.0}',
    b'{"event_id":"e","trace_id":"t","kind":"llm","route":"r","ts":5,"input_tokens":2.0}',
    b'{"event_id":"e","trace_id":"t","kind":"llm","route":"r","ts":5,"input_tokens":true}',
    b'{"event_id":"e","trace_id":"t","kind":"llm","route":"r","ts":5,"attributes":{"k":'
    + b"9" * 30
    + b"}}",
    b'{"event_id":"e","trace_id":"t","kind":"llm","route":"r","ts":5,"scores":{"g":1}}',
    b'{"event_id":"e","trace_id":"t","kind":"llm","route":"r","ts":5,"scores":{"":0.5}}',
    b'{"event_id":"e","trace_id":"t","kind":"llm","route":"r","ts":5,"scores":{"g":true}}',
    b'{"event_id":"e","trace_id":"t","kind":"llm","route":"r","ts":5,"status":null}',
    b'{"event_id":"e","trace_id":"t","kind":"llm","route":"r","ts":5,"retry_count":null}',
    b'{"event_id":"e","trace_id":"t","kind":"llm","route":"r","ts":5,"scores":null}',
    b'{"event_id":"e","trace_id":"t","kind":"llm","route":"r","ts":5} trailing',
    b' {"event_id":"e","trace_id":"t","kind":"llm","route":"r","ts":5} ',
    b'\xef\xbb\xbf{"event_id":"e","trace_id":"t","kind":"llm","route":"r","ts":5}',
    b"[]",
    b"null",
    b'"text"',
]


@pytest.mark.parametrize("value", EDGE_CASES, ids=range(len(EDGE_CASES)))
def test_edge_cases_get_the_same_verdict(value: bytes) -> None:
    assert_same(value)


# ----------------------------------------------------------------- property-based

_LENGTHS = [0, 1, 63, 64, 65, 127, 128, 129, 255, 256, 257, 1023, 1024, 1025]
_CHARS = ["a", "é", "\U0001f600", "e\u0301", "\u202e", "\x00", '"', "\\"]

_strings = st.builds(lambda n, c: c * n, st.sampled_from(_LENGTHS), st.sampled_from(_CHARS))
_numbers = st.one_of(
    st.sampled_from([-1, 0, 1, 2, 2**31 - 1, 2**31, 10**20, -0.0, 0.5, 1.0, 1.5, 1e12]),
    st.sampled_from([1e12 * 1.0000001, 1e300, float("nan"), float("inf"), -float("inf")]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(2**70), max_value=2**70),
)
_scalars = st.one_of(
    st.none(), st.booleans(), _numbers, _strings, st.sampled_from(["ok", "error", "llm"])
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(_strings, inner, max_size=3)
    ),
    max_leaves=8,
)
_FIELDS = [*TraceEvent.model_fields, "unknown", "ts"]


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    """A valid base event with a few fields replaced, removed or added."""
    event: dict[str, Any] = dict(BASE)
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.sampled_from(_FIELDS))
        action = draw(st.sampled_from(["set", "set", "drop"]))
        if action == "drop":
            event.pop(name, None)
        else:
            event[name] = draw(_values)
    if draw(st.booleans()):
        event["scores"] = draw(st.dictionaries(_strings, _numbers, max_size=3))
    if draw(st.booleans()):
        event["attributes"] = draw(st.dictionaries(_strings, _scalars, max_size=3))
    return json.dumps(event, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")


@settings(max_examples=400, deadline=None)
@given(messages())
def test_any_mutated_event_gets_the_same_verdict(value: bytes) -> None:
    assert_same(value)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_get_the_same_verdict(value: bytes) -> None:
    assert_same(value)
