"""Events as an Arrow table, the cheapest shape to hand ClickHouse a batch in.

clickhouse-connect's native insert converts every value in Python (about 5 µs an
event over the 31 columns, with the GIL held); ``insert_arrow`` hands ClickHouse
columns that pyarrow built in C from plain lists, and the engine converts them
itself (LowCardinality dictionaries, Nullable masks, maps) with the GIL released,
so the ingest thread's Python keeps running on the other core.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import chain

import numpy as np
import pyarrow as pa

from tracewatch.schemas.record import EventRecord

__all__ = ["events_table"]

_STRING = pa.string()
_SCORES = pa.map_(pa.string(), pa.float64())
_ATTRIBUTES = pa.map_(pa.string(), pa.string())
_TS = pa.timestamp("ms", tz="UTC")


def events_table(
    events: Sequence[EventRecord],
    partitions: Sequence[int],
    offsets: Sequence[int],
    topic: str = "",
    cost_computed: Sequence[bool] | None = None,
) -> pa.Table:
    """One row per event, columns named as in the ``events`` table.

    ``cost_computed[i]``: the pipeline priced event i (``cost_source`` "computed").
    """
    n = len(events)
    # as the insert of datetimes did: to the microsecond (datetime.fromtimestamp), then
    # down to the millisecond, so .999 stays .999 whatever its float rounding
    ts_us = np.rint(np.array([e.ts for e in events], dtype=np.float64) * 1e6).astype(np.int64)
    ts_ms = ts_us // 1000
    cost = [e.cost_usd for e in events]
    columns: dict[str, pa.Array] = {
        "event_id": _strings([e.event_id for e in events]),
        "trace_id": _strings([e.trace_id for e in events]),
        "span_id": _strings([e.span_id or "" for e in events]),
        "parent_span_id": _strings([e.parent_span_id or "" for e in events]),
        "ts": pa.array(ts_ms, type=_TS),
        "kind": _strings([e.kind for e in events]),
        "route": _strings([e.route for e in events]),
        "app": _strings([e.app or "" for e in events]),
        "model": _strings([e.model or "" for e in events]),
        "provider": _strings([e.provider or "" for e in events]),
        "prompt_version": _strings([e.prompt_version or "" for e in events]),
        "cohort": _strings([e.cohort or "" for e in events]),
        "session_id": _strings([e.session_id or "" for e in events]),
        "latency_ms": pa.array([e.latency_ms for e in events], type=pa.float64()),
        "input_tokens": pa.array([e.input_tokens for e in events], type=pa.uint32()),
        "output_tokens": pa.array([e.output_tokens for e in events], type=pa.uint32()),
        "cost_usd": pa.array(cost, type=pa.float64()),
        "cost_source": _strings(_cost_sources(cost, cost_computed)),
        "status": _strings([e.status for e in events]),
        "error_type": _strings([e.error_type or "" for e in events]),
        "retry_count": pa.array([e.retry_count for e in events], type=pa.uint32()),
        "loop_depth": pa.array([e.loop_depth for e in events], type=pa.uint32()),
        "tool_name": _strings([e.tool_name or "" for e in events]),
        "tool_args_hash": _strings([e.tool_args_hash or "" for e in events]),
        "scores": _scores([e.scores for e in events]),
        "guardrail_action": _strings([e.guardrail_action or "" for e in events]),
        "guardrail_name": _strings([e.guardrail_name or "" for e in events]),
        "attributes": _attributes([e.attributes for e in events]),
        "kafka_topic": pa.array([topic] * n, type=_STRING),
        "kafka_partition": pa.array(partitions, type=pa.int32()),
        "kafka_offset": pa.array(offsets, type=pa.int64()),
    }
    return pa.table(columns)


def _cost_sources(cost: list[float | None], computed: Sequence[bool] | None) -> list[str]:
    sources = ["missing" if c is None else "provided" for c in cost]
    for i, flag in enumerate(computed or ()):
        if flag:
            sources[i] = "computed"
    return sources


def _strings(values: list[str]) -> pa.Array:
    return pa.array(values, type=_STRING)


def _offsets(maps: Sequence[Mapping[str, object]]) -> pa.Array:
    sizes = np.fromiter((len(m) for m in maps), dtype=np.int32, count=len(maps))
    return pa.array(np.concatenate(([0], np.cumsum(sizes, dtype=np.int32))), type=pa.int32())


def _scores(maps: Sequence[dict[str, float]]) -> pa.Array:
    """A MapArray from flat keys and values: most events have no scores, so no row is built."""
    offsets = _offsets(maps)
    keys = pa.array(list(chain.from_iterable(maps)), type=_STRING)
    values = pa.array(list(chain.from_iterable(m.values() for m in maps)), type=pa.float64())
    return pa.MapArray.from_arrays(offsets, keys, values, type=_SCORES)


def _attributes(maps: Sequence[dict[str, str | bool | int | float]]) -> pa.Array:
    """Values stored as text: strings as they are, others as their JSON text."""
    offsets = _offsets(maps)
    keys = pa.array(list(chain.from_iterable(maps)), type=_STRING)
    values = [_text(v) for v in chain.from_iterable(m.values() for m in maps)]
    return pa.MapArray.from_arrays(offsets, keys, pa.array(values, type=_STRING), type=_ATTRIBUTES)


def _text(value: str | bool | int | float) -> str:
    """``json.dumps`` of a scalar without its per-call overhead (finite floats only here)."""
    if type(value) is str:
        return value
    if type(value) is bool:
        return "true" if value else "false"
    return repr(value)
