"""Every invalid-input class of the contract maps to a clear, machine-readable reason."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tracewatch.errors import InvalidEvent
from tracewatch.schemas.event import TraceEvent
from tracewatch.schemas.validation import REASONS, validate_message

BASE: dict[str, Any] = {
    "event_id": "e-1",
    "trace_id": "t-1",
    "ts": "2026-11-22T10:00:00.125Z",
    "kind": "llm",
    "route": "support/chat",
}


def encode(**changes: Any) -> bytes:
    event = {**BASE, **changes}
    return json.dumps({k: v for k, v in event.items() if v is not _DROP}).encode()


_DROP = object()


def reject(raw: bytes, max_bytes: int = 256 * 1024) -> InvalidEvent:
    with pytest.raises(InvalidEvent) as info:
        validate_message(raw, max_bytes)
    assert info.value.reason in REASONS
    return info.value


def test_minimal_event_is_valid_and_ts_is_parsed_to_unix_seconds() -> None:
    event = validate_message(encode())
    assert event.ts == pytest.approx(1795341600.125)
    assert event.status == "ok" and event.scores == {} and event.retry_count == 0


def test_full_event_round_trips() -> None:
    full = {
        **BASE, "ts": 1795341600.5, "span_id": "s", "parent_span_id": "p", "app": "a",
        "model": "m", "provider": "openai", "prompt_version": "v3", "cohort": "pro",
        "session_id": "sess", "latency_ms": 812.5, "input_tokens": 1200, "output_tokens": 80,
        "cost_usd": 0.0012, "status": "error", "error_type": "RateLimitError", "retry_count": 2,
        "loop_depth": 4, "tool_name": "search", "tool_args_hash": "ab12",
        "scores": {"groundedness": 1, "hallucination": 0.0}, "guardrail_action": "redact",
        "guardrail_name": "pii", "attributes": {"region": "eu", "n": 3, "ok": True, "x": 1.5},
    }  # fmt: skip
    event = validate_message(json.dumps(full).encode())
    assert event.model_dump(exclude_none=True) == full


def test_unknown_fields_are_ignored_and_not_kept() -> None:
    event = validate_message(encode(prompt="secret text", completion="more"))
    assert "prompt" not in event.model_dump() and "completion" not in event.model_dump()


@pytest.mark.parametrize(
    ("raw", "reason", "field"),
    [
        (b"", "empty", None),
        (b"\xff\xfe\x00garbage", "not_json", None),
        (b'{"event_id": "e", "trace_id"', "not_json", None),
        (b"[" * 3000 + b"]" * 3000, "not_json", None),
        (b"[1, 2]", "not_object", None),
        (b"42", "not_object", None),
        (encode(event_id=_DROP), "missing_field", "event_id"),
        (encode(trace_id=_DROP), "missing_field", "trace_id"),
        (encode(ts=_DROP), "missing_field", "ts"),
        (encode(kind=_DROP), "missing_field", "kind"),
        (encode(route=_DROP), "missing_field", "route"),
        (encode(latency_ms="812"), "wrong_type", "latency_ms"),
        (encode(input_tokens="12"), "wrong_type", "input_tokens"),
        (encode(input_tokens=1.5), "wrong_type", "input_tokens"),
        (encode(route=["a"]), "wrong_type", "route"),
        (encode(scores=[0.5]), "wrong_type", "scores"),
        (encode(attributes={"a": [1]}), "wrong_type", "attributes.a"),
        (encode(latency_ms=-1), "negative_number", "latency_ms"),
        (encode(cost_usd=-0.01), "negative_number", "cost_usd"),
        (encode(input_tokens=-3), "negative_number", "input_tokens"),
        (encode(output_tokens=-3), "negative_number", "output_tokens"),
        (encode(retry_count=-1), "negative_number", "retry_count"),
        (encode(loop_depth=-2), "negative_number", "loop_depth"),
        (encode(latency_ms=float("nan")), "not_finite", "latency_ms"),
        (encode(cost_usd=float("inf")), "not_finite", "cost_usd"),
        (encode(ts=float("-inf")), "not_finite", "ts"),
        (b'{"event_id":"e","trace_id":"t","ts":1e9,"kind":"llm","route":"r","latency_ms":1e999}',
         "not_finite", "latency_ms"),
        (encode(scores={"groundedness": 1.5}), "out_of_range", "scores.groundedness"),
        (encode(scores={"groundedness": -0.1}), "negative_number", "scores.groundedness"),
        (encode(kind="banana"), "invalid_value", "kind"),
        (encode(status="meh"), "invalid_value", "status"),
        (encode(guardrail_action="maybe"), "invalid_value", "guardrail_action"),
        (encode(ts="2026-11-22T10:00:00"), "invalid_value", "ts"),
        (encode(ts="yesterday"), "invalid_value", "ts"),
        (encode(ts=1795341600125), "invalid_value", "ts"),
        (encode(ts=True), "invalid_value", "ts"),
        (encode(event_id=""), "too_short", "event_id"),
        (encode(route=""), "too_short", "route"),
        (encode(event_id="x" * 129), "too_long", "event_id"),
        (encode(model="m" * 257), "too_long", "model"),
        (encode(scores={f"s{i}": 0.5 for i in range(33)}), "too_long", "scores"),
    ],
)  # fmt: skip
def test_invalid_inputs_get_their_reason(raw: bytes, reason: str, field: str | None) -> None:
    error = reject(raw)
    assert (error.reason, error.field) == (reason, field)
    assert error.detail


def test_oversized_is_rejected_before_parsing() -> None:
    raw = encode(attributes={"blob": "x" * 1000})
    assert validate_message(raw, max_bytes=len(raw)).event_id == "e-1"
    error = reject(raw, max_bytes=len(raw) - 1)
    assert error.reason == "oversized" and str(len(raw)) in error.detail


def test_numbers_as_unix_seconds_and_offsets_agree() -> None:
    by_number = validate_message(encode(ts=1795341600.125))
    by_offset = validate_message(encode(ts="2026-11-22T11:00:00.125+01:00"))
    assert by_number.ts == by_offset.ts


def test_trace_event_is_immutable() -> None:
    event = validate_message(encode())
    with pytest.raises(ValueError):
        event.route = "other"  # type: ignore[misc]
    assert isinstance(event, TraceEvent)
