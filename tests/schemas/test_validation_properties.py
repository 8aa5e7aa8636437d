"""Properties of ``validate_message`` over generated input (hypothesis).

The example-based tests in ``test_validation.py`` pin one message per reason;
these generate thousands: any bytes at all, contract-valid events with unusual
unicode, offsets and limits, and valid events with exactly one field broken.
They go through the public function only, so they hold whatever parser or
model sits behind it. The expectations come from the contract
(``shared/contract.md``) and the reason codes documented in
``tracewatch.schemas.validation``, not from the implementation.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tracewatch.errors import InvalidEvent
from tracewatch.schemas.event import EVENT_KINDS, MAX_TS, TraceEvent
from tracewatch.schemas.validation import (
    DEFAULT_MAX_MESSAGE_BYTES,
    REASONS,
    decode_records,
    validate_message,
)

# No example database (nothing written into the tree) and no deadline (CI machines are
# shared and slow); few examples per property so the whole file runs in a few seconds.
QUICK = settings(
    max_examples=20,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
THOROUGH = settings(QUICK, max_examples=80)

REQUIRED = ("event_id", "trace_id", "ts", "kind", "route")
IDS = {"event_id": 128, "trace_id": 128}
LABELS = ("span_id", "parent_span_id", "app", "model", "provider", "prompt_version", "cohort",
          "session_id", "error_type", "tool_name", "tool_args_hash", "guardrail_name")  # fmt: skip
STRING_LIMITS = {**IDS, "route": 256, **dict.fromkeys(LABELS, 256)}
FLOATS = ("latency_ms", "cost_usd")
INTS = ("input_tokens", "output_tokens", "retry_count", "loop_depth")
ENUMS = {"kind": EVENT_KINDS, "status": ("ok", "error", "timeout"),
         "guardrail_action": ("allow", "block", "redact")}  # fmt: skip
FIELDS = frozenset({*REQUIRED, *LABELS, *FLOATS, *INTS, *ENUMS, "scores", "attributes"})
SCORE_NAME_MAX, MAX_SCORES = 64, 32
ATTRIBUTE_KEY_MAX, ATTRIBUTE_VALUE_MAX, MAX_ATTRIBUTES = 128, 1024, 64
MAX_INT = 2**31 - 1
MAX_NUMBER = 1e12

# Characters that break naive length checks and naive renderers: astral plane (two
# UTF-16 units, four UTF-8 bytes), combining marks, right-to-left text and overrides,
# zero-width and control characters, JSON's own metacharacters.
UNUSUAL = ["\U0001f600", "\U0010fffd", "\U00020000", "e", "\u0301", "\u0308", "\u20dd", "\u202e",
           "\u202d", "\u200f", "\u05e9", "\u0627", "\u0644", "\u200b", "\ufeff", "\x00", "\x1f",
           '"', "\\", "\n", "/", "\u2028"]  # fmt: skip
CHAR = st.one_of(st.characters(codec="utf-8"), st.sampled_from(UNUSUAL))
NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
INVALID_UTF8 = [b"\xff", b"\xfe", b"\x80", b"\xc3", b"\xc0\xaf", b"\xed\xa0\x80",
                b"\xf4\x90\x80\x80", b"\xf0\x9f\x98", b"\xf8\x88\x80\x80\x80"]  # fmt: skip


def texts(min_size: int = 0, max_size: int = 40) -> st.SearchStrategy[str]:
    return st.text(CHAR, min_size=min_size, max_size=max_size)


def longer_than(limit: int, alphabet: st.SearchStrategy[str] = CHAR) -> st.SearchStrategy[str]:
    """A string of ``limit + 1`` or more code points, built by repeating a short unit
    (hypothesis draws the unit, so the string stays cheap to generate and shrink)."""
    units = st.text(alphabet, min_size=1, max_size=6)
    return st.builds(lambda u, extra: u * (limit // len(u) + 1 + extra), units, st.integers(0, 4))


def exactly(limit: int) -> st.SearchStrategy[str]:
    """A string of exactly ``limit`` code points (the largest the contract allows)."""
    return longer_than(limit).map(lambda s: s[:limit])


@dataclass(frozen=True)
class Generated:
    """A contract-valid event and the Unix seconds its ``ts`` stands for."""

    event: dict[str, Any]
    seconds: float


@st.composite
def rfc3339(draw: st.DrawFn) -> tuple[str, float]:
    """An RFC 3339 date-time with an offset (``Z`` or ``±hh:mm``), 0-9 fraction digits."""
    whole = draw(st.integers(86_400, int(MAX_TS) - 86_400))
    offset = draw(st.integers(-(23 * 60 + 59), 23 * 60 + 59))
    fraction = draw(st.text("0123456789", max_size=9))
    local = datetime.fromtimestamp(whole, UTC) + timedelta(minutes=offset)
    if offset == 0 and draw(st.booleans()):
        zone = "Z"
    else:
        sign = "+" if offset >= 0 else "-"
        zone = f"{sign}{abs(offset) // 60:02d}:{abs(offset) % 60:02d}"
    text = local.strftime("%Y-%m-%dT%H:%M:%S") + (f".{fraction}" if fraction else "") + zone
    micros = int(fraction[:6].ljust(6, "0")) if fraction else 0
    return text, whole + micros / 1e6


json_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**63),
    st.floats(allow_nan=False, allow_infinity=False), texts(max_size=20),
)  # fmt: skip
json_values = st.recursive(
    json_leaf,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(texts(max_size=8), inner, max_size=4)),
    max_leaves=12,
)  # fmt: skip
unknown_keys = st.one_of(
    st.sampled_from(["prompt", "completion", "messages", "input", "output", "x-extra"]),
    texts(1, 20),
).filter(lambda k: k not in FIELDS)
non_negative = st.one_of(st.floats(0, MAX_NUMBER, allow_nan=False), st.integers(0, int(MAX_NUMBER)))
attribute_values = st.one_of(
    texts(max_size=60), exactly(ATTRIBUTE_VALUE_MAX), st.booleans(),
    st.integers(-(2**63), 2**63), st.floats(allow_nan=False, allow_infinity=False),
)  # fmt: skip


OPTIONAL: dict[str, st.SearchStrategy[Any]] = {
    **{name: st.one_of(texts(0, 30), exactly(256)) for name in LABELS},
    **dict.fromkeys(FLOATS, non_negative),
    **dict.fromkeys(INTS, st.integers(0, MAX_INT)),
    "status": st.sampled_from(ENUMS["status"]),
    "guardrail_action": st.sampled_from(ENUMS["guardrail_action"]),
    "scores": st.dictionaries(
        st.one_of(texts(1, 20), exactly(SCORE_NAME_MAX)),
        st.one_of(st.floats(0, 1), st.sampled_from([0, 1])),
        max_size=MAX_SCORES,
    ),
    "attributes": st.dictionaries(
        st.one_of(texts(1, 20), exactly(ATTRIBUTE_KEY_MAX)),
        attribute_values,
        max_size=MAX_ATTRIBUTES,
    ),
}
REQUIRED_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "event_id": st.one_of(texts(1, 40), exactly(IDS["event_id"])),
    "trace_id": texts(1, IDS["trace_id"]),
    "kind": st.sampled_from(EVENT_KINDS),
    "route": st.one_of(texts(1, 60), exactly(256)),
}
numeric_ts = st.one_of(st.floats(0, MAX_TS, exclude_max=True), st.integers(0, int(MAX_TS) - 1))
unknown_fields = st.dictionaries(unknown_keys, json_values, max_size=3)


@st.composite
def valid_events(draw: st.DrawFn, most_optional: int = len(OPTIONAL)) -> Generated:
    """Any event the contract accepts, with a few unknown fields it must ignore.

    ``most_optional`` caps the optional fields drawn: the single-fault tests only need
    a valid background for the field they break, and a smaller one is faster to draw.
    """
    if draw(st.booleans()):
        ts, seconds = draw(rfc3339())
    else:
        ts = draw(numeric_ts)
        seconds = float(ts)
    event: dict[str, Any] = {name: draw(values) for name, values in REQUIRED_VALUES.items()}
    event["ts"] = ts
    chosen = draw(st.sets(st.sampled_from(sorted(OPTIONAL)), max_size=most_optional))
    event.update({name: draw(OPTIONAL[name]) for name in sorted(chosen)})
    event.update(draw(unknown_fields))
    return Generated(event, seconds)


small_events = valid_events(most_optional=4)


def encode(event: dict[str, Any], ascii_only: bool = True) -> bytes:
    return json.dumps(event, ensure_ascii=ascii_only, allow_nan=True).encode()


def reject(raw: bytes, max_bytes: int | None = None) -> InvalidEvent:
    """The rejection ``raw`` must get; no other exception may escape the validator."""
    limit = max(DEFAULT_MAX_MESSAGE_BYTES, len(raw)) if max_bytes is None else max_bytes
    with pytest.raises(InvalidEvent) as info:
        validate_message(raw, limit)
    error = info.value
    assert error.reason in REASONS and error.reason != "duplicate_event_id"
    assert error.detail
    fast = worker_verdict(raw, limit)  # the worker's batch decoder must agree
    assert isinstance(fast, InvalidEvent), f"the worker accepts what the validator refuses: {error}"
    assert (fast.reason, fast.field) == (error.reason, error.field)
    return error


def accept(raw: bytes) -> TraceEvent:
    return validate_message(raw, max(DEFAULT_MAX_MESSAGE_BYTES, len(raw)))


def assert_contract(event: TraceEvent) -> None:
    """Whatever the validator accepts obeys the contract, field by field."""
    for name, limit in STRING_LIMITS.items():
        value = getattr(event, name)
        if name in REQUIRED:
            assert isinstance(value, str) and 1 <= len(value) <= limit, name
        else:
            assert value is None or (isinstance(value, str) and len(value) <= limit), name
    assert math.isfinite(event.ts) and 0 <= event.ts < MAX_TS
    for name, allowed in ENUMS.items():
        assert getattr(event, name) in (*allowed, None), name
    assert event.kind is not None and event.status is not None
    for name in FLOATS:
        value = getattr(event, name)
        assert value is None or (not isinstance(value, bool) and 0 <= value <= MAX_NUMBER), name
    for name in INTS:
        value = getattr(event, name)
        assert value is None or (type(value) is int and 0 <= value <= MAX_INT), name
    assert len(event.scores) <= MAX_SCORES
    for score, value in event.scores.items():
        assert 1 <= len(score) <= SCORE_NAME_MAX and not isinstance(value, bool)
        assert math.isfinite(value) and 0 <= value <= 1
    assert len(event.attributes) <= MAX_ATTRIBUTES
    for key, value in event.attributes.items():
        assert 1 <= len(key) <= ATTRIBUTE_KEY_MAX
        if isinstance(value, str):
            assert len(value) <= ATTRIBUTE_VALUE_MAX
        else:
            assert isinstance(value, bool | int) or math.isfinite(value)


def worker_verdict(raw: bytes, max_bytes: int) -> Any:
    """What the worker's batch decoder (``decode_records``) makes of ``raw``: a record
    with the event's fields, or the ``InvalidEvent``. Nothing else may escape it."""
    records, index, rejected = decode_records([raw], max_bytes)
    if rejected:
        assert not records and [i for i, _ in rejected] == [0]
        return rejected[0][1]
    assert index == [0]
    return records[0]


def assert_same_fields(record: Any, event: TraceEvent) -> None:
    for name in FIELDS:
        assert getattr(record, name) == getattr(event, name), name


def outcome_is_clean(raw: bytes, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
    """The validator and the worker's decoder give the same, well-formed verdict."""
    fast = worker_verdict(raw, max_bytes)
    try:
        event = validate_message(raw, max_bytes)
    except InvalidEvent as error:
        assert error.reason in REASONS and error.reason != "duplicate_event_id"
        assert error.field is None or isinstance(error.field, str)
        assert isinstance(fast, InvalidEvent), raw[:300]
        assert (fast.reason, fast.field) == (error.reason, error.field)
        return
    assert_contract(event)
    assert not isinstance(fast, InvalidEvent), fast
    assert_same_fields(fast, event)


# --- any input ------------------------------------------------------------------------------


@THOROUGH
@given(st.binary(max_size=2048))
def test_any_bytes_give_an_event_or_a_known_reason(raw: bytes) -> None:
    outcome_is_clean(raw)


@THOROUGH
@given(small_events, st.data())
def test_valid_events_with_random_byte_damage_never_escape(
    generated: Generated, data: st.DataObject
) -> None:
    """Flip, drop and insert bytes (NaN, brackets, quotes, bad UTF-8) anywhere in a real event."""
    raw = bytearray(encode(generated.event, data.draw(st.booleans())))
    tokens = [b"NaN", b"-Infinity", b"1e999", b"-1", b"null", b"[", b"{", b"}", b'"', b"\\u",
              b"\\ud800", b"9" * 30, *INVALID_UTF8]  # fmt: skip
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(raw)))
        action = data.draw(st.sampled_from(["flip", "drop", "insert"]))
        if action == "flip" and at < len(raw):
            raw[at] = data.draw(st.integers(0, 255))
        elif action == "drop":
            del raw[at : at + data.draw(st.integers(1, 8))]
        else:
            raw[at:at] = data.draw(
                st.one_of(st.sampled_from(tokens), st.binary(min_size=1, max_size=4))
            )
    outcome_is_clean(bytes(raw))


@QUICK
@given(json_values.filter(lambda v: not (isinstance(v, dict) and FIELDS & set(v))))
def test_json_that_is_not_an_event_is_refused(value: Any) -> None:
    error = reject(json.dumps(value).encode())
    if isinstance(value, dict):
        assert error.reason == "missing_field" and error.field in REQUIRED
    else:
        assert (error.reason, error.field) == ("not_object", None)


# --- valid events ---------------------------------------------------------------------------


@THOROUGH
@given(valid_events(), st.booleans())
def test_every_valid_event_is_accepted_and_round_trips(generated: Generated, ascii: bool) -> None:
    raw = encode(generated.event, ascii)
    event = accept(raw)
    sent = generated.event
    assert event.ts == pytest.approx(generated.seconds, abs=2e-6)
    defaults = {"status": "ok", "retry_count": 0, "scores": {}, "attributes": {}}
    for name in FIELDS - {"ts", "attributes"}:
        assert getattr(event, name) == sent.get(name, defaults.get(name)), name
    assert event.attributes == sent.get("attributes", {})
    for key, value in event.attributes.items():  # true stays a boolean, 3 an int, 3.0 a float
        assert type(value) is type(sent["attributes"][key]), key
    kept = event.model_dump()
    assert not {name for name in sent if name not in FIELDS} & set(kept)
    assert_contract(event)
    assert_same_fields(worker_verdict(raw, len(raw)), event)


@QUICK
@given(valid_events())
def test_the_size_limit_is_inclusive_and_anything_over_it_is_oversized(
    generated: Generated,
) -> None:
    raw = encode(generated.event)
    assert validate_message(raw, len(raw)).event_id == generated.event["event_id"]
    error = reject(raw, max_bytes=len(raw) - 1)
    assert error.reason == "oversized" and str(len(raw)) in error.detail


@QUICK
@given(st.integers(1, 512), st.data())
def test_any_message_over_the_limit_is_oversized_whatever_it_holds(
    limit: int, data: st.DataObject
) -> None:
    raw = data.draw(st.binary(min_size=limit + 1, max_size=limit + 64))
    assert reject(raw, max_bytes=limit).reason == "oversized"


# --- exactly one field broken -----------------------------------------------------------------

_LITERAL = "\u0000tracewatch-literal\u0000"


def with_literal(event: dict[str, Any], path: tuple[str, ...], literal: bytes) -> bytes:
    """``event`` with the value at ``path`` written as raw JSON text (NaN, 1e999, nesting)."""
    changed = json.loads(json.dumps(event))
    if len(path) == 2:  # one score or attribute: keep a few valid siblings, stay under the cap
        siblings = list(dict(changed.get(path[0]) or {}).items())[:4]
        changed[path[0]] = {k: v for k, v in siblings if k != path[1]}
        changed[path[0]][path[1]] = _LITERAL
    else:
        changed[path[0]] = _LITERAL
    raw = encode(changed)
    marker = json.dumps(_LITERAL).encode()
    assert raw.count(marker) == 1
    return raw.replace(marker, literal)


def broken(event: dict[str, Any], path: tuple[str, ...], value: Any) -> bytes:
    return with_literal(event, path, json.dumps(value, allow_nan=True).encode())


def assert_rejected(raw: bytes, reason: str, field: str | None) -> None:
    error = reject(raw)
    assert (error.reason, error.field) == (reason, field), error


not_a_string = st.one_of(
    st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.booleans(),
    st.lists(st.integers(), max_size=2), st.dictionaries(texts(1, 4), st.integers(), max_size=2),
)  # fmt: skip
not_a_number = st.one_of(
    texts(max_size=8), st.sampled_from(["12", "0.5", "1e3"]), st.booleans(),
    st.lists(st.integers(), max_size=2), st.dictionaries(texts(1, 4), st.integers(), max_size=2),
)  # fmt: skip
not_an_object = st.one_of(
    texts(max_size=8), st.integers(), st.booleans(), st.lists(st.integers(), max_size=3)
)
score_names = texts(1, SCORE_NAME_MAX)
attribute_keys = texts(1, ATTRIBUTE_KEY_MAX)


@QUICK
@given(small_events, st.data())
def test_a_value_of_the_wrong_json_type_is_wrong_type(
    generated: Generated, data: st.DataObject
) -> None:
    event = generated.event
    choice = data.draw(st.sampled_from(
        [*STRING_LIMITS, *FLOATS, *INTS, "scores", "attributes", "a score", "an attribute"]
    ))  # fmt: skip
    if choice in STRING_LIMITS:
        path, value = (choice,), data.draw(not_a_string)
    elif choice in (*FLOATS, *INTS):
        path, value = (choice,), data.draw(not_a_number)
    elif choice in ("scores", "attributes"):
        path, value = (choice,), data.draw(not_an_object)
    elif choice == "a score":
        path, value = ("scores", data.draw(score_names)), data.draw(not_a_number)
    else:
        bad = st.one_of(st.none(), st.lists(st.integers(), max_size=2), st.just({"a": 1}))
        path, value = ("attributes", data.draw(attribute_keys)), data.draw(bad)
    assert_rejected(broken(event, path, value), "wrong_type", ".".join(path))


@QUICK
@given(small_events, st.data())
def test_a_negative_number_is_negative_number(generated: Generated, data: st.DataObject) -> None:
    field = data.draw(st.sampled_from([*FLOATS, *INTS, "a score"]))
    if field in INTS:
        path, value = (field,), data.draw(st.integers(-(2**31), -1))
    else:
        value = data.draw(st.floats(-MAX_NUMBER, -1e-12))
        path = ("scores", data.draw(score_names)) if field == "a score" else (field,)
    assert_rejected(broken(generated.event, path, value), "negative_number", ".".join(path))


@QUICK
@given(small_events, st.data())
def test_nan_and_infinity_in_a_float_field_are_not_finite(
    generated: Generated, data: st.DataObject
) -> None:
    """NaN and Infinity are not JSON, but parsers accept them: they must still be refused."""
    field = data.draw(st.sampled_from([*FLOATS, "ts", "a score"]))
    path = ("scores", data.draw(score_names)) if field == "a score" else (field,)
    literal = data.draw(st.sampled_from([*NON_FINITE, "1e999", "-1e999"]))
    raw = with_literal(generated.event, path, literal.encode())
    assert_rejected(raw, "not_finite", ".".join(path))


@pytest.mark.parametrize("path", [*[(f,) for f in INTS], ("attributes", "weight")], ids=str)
def test_nan_and_infinity_anywhere_a_number_goes_are_not_finite(path: tuple[str, ...]) -> None:
    """The reason is ``not_finite`` wherever the number sits (the validator's own list
    says so), including integer fields and attribute values."""
    event = {"event_id": "e", "trace_id": "t", "ts": 1.7e9, "kind": "llm", "route": "r"}
    for literal in (*NON_FINITE, "1e999"):
        assert_rejected(with_literal(event, path, literal.encode()), "not_finite", ".".join(path))


@QUICK
@given(small_events, st.data())
def test_a_score_outside_zero_to_one_is_out_of_range(
    generated: Generated, data: st.DataObject
) -> None:
    name = data.draw(score_names)
    value = data.draw(st.one_of(st.floats(1.0000001, 1e300), st.integers(2, 2**40)))
    assert_rejected(broken(generated.event, ("scores", name), value), "out_of_range",
                    f"scores.{name}")  # fmt: skip


@QUICK
@given(small_events, st.data())
def test_a_number_over_its_bound_is_out_of_range(generated: Generated, data: st.DataObject) -> None:
    field = data.draw(st.sampled_from([*FLOATS, *INTS]))
    top = MAX_INT if field in INTS else MAX_NUMBER
    value = data.draw(
        st.integers(int(top) + 1, 2**62) if field in INTS else st.floats(top * 1.01, 1e300)
    )
    assert_rejected(broken(generated.event, (field,), value), "out_of_range", field)


@QUICK
@given(small_events, st.data())
def test_a_string_over_its_limit_is_too_long(generated: Generated, data: st.DataObject) -> None:
    """Limits count characters (code points), whatever their UTF-8 or UTF-16 size."""
    alphabet = data.draw(st.sampled_from([CHAR, st.sampled_from(UNUSUAL)]))
    choice = data.draw(st.sampled_from([*STRING_LIMITS, "an attribute value"]))
    if choice in STRING_LIMITS:
        path: tuple[str, ...] = (choice,)
        value = data.draw(longer_than(STRING_LIMITS[choice], alphabet))
    else:
        path = ("attributes", data.draw(attribute_keys))
        value = data.draw(longer_than(ATTRIBUTE_VALUE_MAX, alphabet))
    assert_rejected(broken(generated.event, path, value), "too_long", ".".join(path))


@QUICK
@given(small_events, st.data())
def test_an_over_long_score_name_or_attribute_key_is_too_long(
    generated: Generated, data: st.DataObject
) -> None:
    container = data.draw(st.sampled_from(["scores", "attributes"]))
    key = data.draw(longer_than(SCORE_NAME_MAX if container == "scores" else ATTRIBUTE_KEY_MAX))
    error = reject(broken(generated.event, (container, key), 0.5))
    assert error.reason == "too_long"
    assert error.field is not None and error.field.startswith(f"{container}.")


@QUICK
@given(small_events, st.sampled_from(["scores", "attributes"]))
def test_too_many_scores_or_attributes_is_too_long(generated: Generated, container: str) -> None:
    n = (MAX_SCORES if container == "scores" else MAX_ATTRIBUTES) + 1
    assert_rejected(broken(generated.event, (container,), {f"k{i}": 0.5 for i in range(n)}),
                    "too_long", container)  # fmt: skip


@QUICK
@given(small_events, st.sampled_from(["event_id", "trace_id", "route", "scores", "attributes"]))
def test_an_empty_required_string_is_too_short(generated: Generated, field: str) -> None:
    if field in ("scores", "attributes"):  # an empty score name or attribute key
        error = reject(broken(generated.event, (field,), {"": 0.5}))
        assert error.reason == "too_short"
        assert error.field is not None and error.field.startswith(f"{field}.")
    else:
        assert_rejected(broken(generated.event, (field,), ""), "too_short", field)


@QUICK
@given(small_events, st.data())
def test_a_value_outside_its_set_is_invalid_value(
    generated: Generated, data: st.DataObject
) -> None:
    field = data.draw(st.sampled_from(sorted(ENUMS)))
    value = data.draw(st.one_of(texts(max_size=12), st.sampled_from(["LLM", " ok", "OK", "Block"]),
                                st.integers(), st.booleans(), st.lists(st.just("llm"), max_size=1))
                      .filter(lambda v: v not in ENUMS[field]))  # fmt: skip
    assert_rejected(broken(generated.event, (field,), value), "invalid_value", field)


@QUICK
@given(small_events, st.data())
def test_a_timestamp_that_is_not_rfc3339_or_in_range_is_invalid_value(
    generated: Generated, data: st.DataObject
) -> None:
    value = data.draw(st.one_of(
        st.sampled_from(["yesterday", "2026-11-22T10:00:00", "2026-11-22", "2026-13-01T00:00:00Z",
                         "2026-11-22T25:00:00Z", "2026-11-22T10:00:00+24:00", "1795341600", ""]),
        st.integers(int(MAX_TS), 2**62), st.integers(-(2**62), -1),
        st.floats(MAX_TS, 1e300), st.floats(-1e300, -1e-9),
        st.booleans(), st.none(), st.lists(st.integers(), max_size=2),
    ))  # fmt: skip
    assert_rejected(broken(generated.event, ("ts",), value), "invalid_value", "ts")


@pytest.mark.parametrize(
    "ts", ["2026-11-22t10:00:00z", "2026-11-22T10:00:00z", "2026-11-22t10:00:00.125+01:00"]
)
def test_rfc3339_lower_case_t_and_z_are_accepted(ts: str) -> None:
    """RFC 3339 section 5.6: "T" and "Z" may alternatively be lower case."""
    event = {"event_id": "e", "trace_id": "t", "ts": ts, "kind": "llm", "route": "r"}
    upper = accept(encode({**event, "ts": ts.upper()})).ts
    assert accept(encode(event)).ts == upper


@QUICK
@given(small_events, st.sampled_from(REQUIRED))
def test_a_missing_required_field_is_missing_field(generated: Generated, field: str) -> None:
    event = {k: v for k, v in generated.event.items() if k != field}
    assert_rejected(encode(event), "missing_field", field)


@QUICK
@given(small_events, st.integers(2, 60), st.data())
def test_nesting_within_parser_limits_is_ignored_in_unknown_fields_and_wrong_in_known_ones(
    generated: Generated, depth: int, data: st.DataObject
) -> None:
    nested = (b"[" * depth + b"1" + b"]" * depth, b'{"a":' * depth + b"1" + b"}" * depth)
    literal = data.draw(st.sampled_from(nested))
    event = generated.event
    assert accept(with_literal(event, ("x-nested",), literal)).event_id == event["event_id"]
    known = data.draw(st.sampled_from([("route",), ("latency_ms",), ("attributes", "a")]))
    assert_rejected(with_literal(event, known, literal), "wrong_type", ".".join(known))


@QUICK
@given(small_events, st.integers(20_000, 100_000), st.data())
def test_nesting_beyond_any_parser_limit_is_not_json(
    generated: Generated, depth: int, data: st.DataObject
) -> None:
    opener, closer = data.draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
    path = data.draw(st.sampled_from([("x-nested",), ("route",), ("attributes", "a")]))
    raw = with_literal(generated.event, path, opener * depth + b"0" + closer * depth)
    assert_rejected(raw, "not_json", None)


@QUICK
@given(small_events, st.data())
def test_truncated_json_is_not_json(generated: Generated, data: st.DataObject) -> None:
    raw = encode(generated.event, data.draw(st.booleans()))
    cut = data.draw(st.integers(1, len(raw) - 1))
    assert_rejected(raw[:cut], "not_json", None)
    assert reject(raw[:0]).reason == "empty"


@QUICK
@given(small_events, st.data())
def test_invalid_utf8_in_any_string_is_not_json(generated: Generated, data: st.DataObject) -> None:
    path = data.draw(
        st.sampled_from([("route",), ("event_id",), ("x-unknown",), ("attributes", "a")])
    )
    bad = data.draw(st.sampled_from(INVALID_UTF8))
    assert_rejected(with_literal(generated.event, path, b'"ok' + bad + b'"'), "not_json", None)


@pytest.mark.parametrize("name", ["str", "int", "float", "bool"])
def test_a_score_or_attribute_named_like_a_type_is_still_named(name: str) -> None:
    """Reason fields name the map entry, whatever its name (here, pydantic's union tags)."""
    event = {"event_id": "e", "trace_id": "t", "ts": 1.7e9, "kind": "llm", "route": "r"}
    assert_rejected(broken(event, ("scores", name), 2), "out_of_range", f"scores.{name}")
    assert_rejected(broken(event, ("attributes", name), [1]), "wrong_type", f"attributes.{name}")


@pytest.mark.parametrize("where", ["key", "value", "nested value"])
def test_the_worker_refuses_invalid_utf8_in_an_unknown_field_like_the_validator(
    where: str,
) -> None:
    """Not UTF-8 is ``not_json`` wherever it sits, also in a field tracewatch ignores."""
    base = b'{"event_id":"e","trace_id":"t","ts":1.7e9,"kind":"llm","route":"r",'
    extra = {"key": b'"\xffx":1}', "value": b'"x":"\xff"}', "nested value": b'"x":["\xc0\xaf"]}'}
    assert_rejected(base + extra[where], "not_json", None)
