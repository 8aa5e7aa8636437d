"""Column arrays for a batch of validated events.

Statistics are computed over numpy arrays, one per field, so a batch of
thousands of events costs a handful of vectorised operations rather than a
Python round trip per event per statistic. Missing optional numbers are NaN.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

__all__ = [
    "GUARDRAIL_CODES",
    "STATUS_CODES",
    "EventColumns",
    "EventFields",
    "KeyTuple",
    "key_of",
    "keys_of",
]

#: status → small integer, so error and timeout counts are array sums.
STATUS_CODES: dict[str, int] = {"ok": 0, "error": 1, "timeout": 2}
#: guardrail_action → small integer (0: not a guardrail decision).
GUARDRAIL_CODES: dict[str | None, int] = {None: 0, "allow": 1, "block": 2, "redact": 3}

KeyTuple = tuple[str, str, str]
FloatArray = npt.NDArray[np.float64]


class EventFields(Protocol):
    """What statistics read of an event: both ``TraceEvent`` and ``EventRecord`` fit."""

    @property
    def ts(self) -> float: ...
    @property
    def route(self) -> str: ...
    @property
    def model(self) -> str | None: ...
    @property
    def prompt_version(self) -> str | None: ...
    @property
    def status(self) -> str: ...
    @property
    def latency_ms(self) -> float | None: ...
    @property
    def cost_usd(self) -> float | None: ...
    @property
    def input_tokens(self) -> int | None: ...
    @property
    def output_tokens(self) -> int | None: ...
    @property
    def loop_depth(self) -> int | None: ...
    @property
    def scores(self) -> dict[str, float]: ...
    @property
    def retry_count(self) -> int: ...
    @property
    def guardrail_action(self) -> str | None: ...
    @property
    def guardrail_name(self) -> str | None: ...


def key_of(event: EventFields) -> KeyTuple:
    """The statistics key: route, model, prompt version ("" when absent)."""
    return (event.route, event.model or "", event.prompt_version or "")


def keys_of(events: Sequence[EventFields]) -> list[KeyTuple]:
    """``key_of`` over a batch, as one comprehension (no call per event)."""
    return [(e.route, e.model or "", e.prompt_version or "") for e in events]


@dataclass(frozen=True)
class EventColumns:
    """Parallel arrays over one batch; ``scores`` stays a list since it is sparse.

    ``retry_count``, ``guardrail_action`` (``GUARDRAIL_CODES``) and
    ``guardrail_name`` ("" when none) may be None: a batch without them.
    """

    ts: FloatArray
    status: npt.NDArray[np.int8]
    latency_ms: FloatArray
    cost_usd: FloatArray
    input_tokens: FloatArray
    output_tokens: FloatArray
    loop_depth: FloatArray
    scores: list[dict[str, float]]
    retry_count: FloatArray | None = None
    guardrail_action: npt.NDArray[np.int8] | None = None
    guardrail_name: list[str] | None = None

    @classmethod
    def from_events(cls, events: Sequence[EventFields]) -> EventColumns:
        codes = STATUS_CODES
        return cls(
            ts=np.array([e.ts for e in events], dtype=np.float64),
            status=np.array([codes[e.status] for e in events], dtype=np.int8),
            latency_ms=_floats([e.latency_ms for e in events]),
            cost_usd=_floats([e.cost_usd for e in events]),
            input_tokens=_floats([e.input_tokens for e in events]),
            output_tokens=_floats([e.output_tokens for e in events]),
            loop_depth=_floats([e.loop_depth for e in events]),
            scores=[e.scores for e in events],
            retry_count=np.fromiter((e.retry_count for e in events), np.float64, len(events)),
            guardrail_action=np.fromiter(
                (GUARDRAIL_CODES[e.guardrail_action] for e in events), np.int8, len(events)
            ),
            guardrail_name=[e.guardrail_name or "" for e in events],
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
            retry_count=None if self.retry_count is None else self.retry_count[index],
            guardrail_action=None
            if self.guardrail_action is None
            else self.guardrail_action[index],
            guardrail_name=None
            if self.guardrail_name is None
            else [self.guardrail_name[i] for i in index.tolist()],
        )


def _floats(values: Sequence[float | int | None]) -> FloatArray:
    """None → NaN: numpy converts None to NaN itself when the dtype is float."""
    return np.array(values, dtype=np.float64)
