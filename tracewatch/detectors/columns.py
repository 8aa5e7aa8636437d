"""Column arrays for a batch of validated events.

Statistics are computed over numpy arrays, one per field, so a batch of
thousands of events costs a handful of vectorised operations rather than a
Python round trip per event per statistic. Missing optional numbers are NaN.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tracewatch.schemas.event import TraceEvent

__all__ = ["STATUS_CODES", "EventColumns", "KeyTuple", "key_of"]

#: status → small integer, so error and timeout counts are array sums.
STATUS_CODES: dict[str, int] = {"ok": 0, "error": 1, "timeout": 2}

KeyTuple = tuple[str, str, str]
FloatArray = npt.NDArray[np.float64]


def key_of(event: TraceEvent) -> KeyTuple:
    """The statistics key: route, model, prompt version ("" when absent)."""
    return (event.route, event.model or "", event.prompt_version or "")


@dataclass(frozen=True)
class EventColumns:
    """Parallel arrays over one batch; ``scores`` stays a list since it is sparse."""

    ts: FloatArray
    status: npt.NDArray[np.int8]
    latency_ms: FloatArray
    cost_usd: FloatArray
    input_tokens: FloatArray
    output_tokens: FloatArray
    loop_depth: FloatArray
    scores: list[dict[str, float]]

    @classmethod
    def from_events(cls, events: Sequence[TraceEvent]) -> EventColumns:
        nan = float("nan")
        return cls(
            ts=np.fromiter((e.ts for e in events), np.float64, len(events)),
            status=np.fromiter((STATUS_CODES[e.status] for e in events), np.int8, len(events)),
            latency_ms=_floats([e.latency_ms for e in events], nan),
            cost_usd=_floats([e.cost_usd for e in events], nan),
            input_tokens=_floats([e.input_tokens for e in events], nan),
            output_tokens=_floats([e.output_tokens for e in events], nan),
            loop_depth=_floats([e.loop_depth for e in events], nan),
            scores=[e.scores for e in events],
        )

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    def take(self, index: npt.NDArray[np.intp]) -> EventColumns:
        """The rows at ``index``, as a new set of columns."""
        return EventColumns(
            ts=self.ts[index],
            status=self.status[index],
            latency_ms=self.latency_ms[index],
            cost_usd=self.cost_usd[index],
            input_tokens=self.input_tokens[index],
            output_tokens=self.output_tokens[index],
            loop_depth=self.loop_depth[index],
            scores=[self.scores[i] for i in index.tolist()],
        )


def _floats(values: list[float | int | None], missing: float) -> FloatArray:
    return np.array([missing if v is None else v for v in values], dtype=np.float64)
