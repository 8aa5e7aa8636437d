"""A mergeable summary of the events of one key in one time bucket.

Everything in it merges exactly (counts, sums, maxima) or within the sketch's
relative-error bound (quantiles), so per-batch partials, per-worker partials and
rolling windows are all the same operation: ``merge``.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import struct
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from tracewatch.detectors.columns import GUARDRAIL_CODES, STATUS_CODES, EventColumns
from tracewatch.detectors.sketch import QuantileSketch

__all__ = ["QUANTILES", "RELATIVE_ACCURACY", "BucketStats", "decode_state", "encode_state"]

#: Relative-error bound of every quantile tracewatch reports (see ``QuantileSketch``).
RELATIVE_ACCURACY = 0.01
QUANTILES: tuple[float, float, float] = (0.5, 0.95, 0.99)

_ERROR = STATUS_CODES["error"]
_TIMEOUT = STATUS_CODES["timeout"]
_BLOCK = GUARDRAIL_CODES["block"]
_REDACT = GUARDRAIL_CODES["redact"]


def _sketch() -> QuantileSketch:
    return QuantileSketch(relative_accuracy=RELATIVE_ACCURACY)


@dataclass
class BucketStats:
    """Counts, sums and sketches for one (key, bucket)."""

    count: int = 0
    error_count: int = 0
    timeout_count: int = 0
    input_tokens_sum: int = 0
    input_tokens_count: int = 0
    output_tokens_sum: int = 0
    output_tokens_count: int = 0
    cost_sum: float = 0.0
    latency_sum: float = 0.0
    loop_depth_max: int | None = None
    max_ts: float = -math.inf
    cost: QuantileSketch = field(default_factory=_sketch)
    latency: QuantileSketch = field(default_factory=_sketch)
    loop_depth: QuantileSketch = field(default_factory=_sketch)
    score_sums: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    score_counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    #: events retried at least once, and their retries
    retried_count: int = 0
    retries_sum: int = 0
    #: per ``guardrail_name``: [decisions, blocks, redactions]
    guardrails: dict[str, list[int]] = field(default_factory=dict)

    def add(self, cols: EventColumns) -> None:
        """Fold a batch of columns (all of this key and bucket) in."""
        self.count += len(cols)
        self.error_count += int(np.count_nonzero(cols.status == _ERROR))
        self.timeout_count += int(np.count_nonzero(cols.status == _TIMEOUT))
        self.max_ts = max(self.max_ts, float(cols.ts.max(initial=-math.inf)))
        self.input_tokens_sum, self.input_tokens_count = _add_sum(
            cols.input_tokens, self.input_tokens_sum, self.input_tokens_count
        )
        self.output_tokens_sum, self.output_tokens_count = _add_sum(
            cols.output_tokens, self.output_tokens_sum, self.output_tokens_count
        )
        cost = _present(cols.cost_usd)
        self.cost_sum += float(cost.sum())
        self.cost.add(cost)
        latency = _present(cols.latency_ms)
        self.latency_sum += float(latency.sum())
        self.latency.add(latency)
        depth = _present(cols.loop_depth)
        if depth.size:
            self.loop_depth.add(depth)
            top = int(depth.max())
            self.loop_depth_max = (
                top if self.loop_depth_max is None else max(top, self.loop_depth_max)
            )
        for scores in cols.scores:
            for name, value in scores.items():
                self.score_sums[name] += value
                self.score_counts[name] += 1
        self._add_retries_and_guardrails(cols)

    def _add_retries_and_guardrails(self, cols: EventColumns) -> None:
        if cols.retry_count is not None:
            retried = cols.retry_count > 0
            self.retried_count += int(np.count_nonzero(retried))
            self.retries_sum += int(cols.retry_count[retried].sum())
        if cols.guardrail_action is None or cols.guardrail_name is None:
            return
        for i in np.flatnonzero(cols.guardrail_action).tolist():
            counts = self.guardrails.setdefault(cols.guardrail_name[i] or "unnamed", [0, 0, 0])
            action = int(cols.guardrail_action[i])
            counts[0] += 1
            counts[1] += action == _BLOCK
            counts[2] += action == _REDACT

    def merge(self, other: BucketStats) -> None:
        """Fold another partial of the same key and bucket in."""
        self.count += other.count
        self.error_count += other.error_count
        self.timeout_count += other.timeout_count
        self.input_tokens_sum += other.input_tokens_sum
        self.input_tokens_count += other.input_tokens_count
        self.output_tokens_sum += other.output_tokens_sum
        self.output_tokens_count += other.output_tokens_count
        self.cost_sum += other.cost_sum
        self.latency_sum += other.latency_sum
        self.max_ts = max(self.max_ts, other.max_ts)
        if other.loop_depth_max is not None:
            self.loop_depth_max = max(self.loop_depth_max or 0, other.loop_depth_max)
        self.cost.merge(other.cost)
        self.latency.merge(other.latency)
        self.loop_depth.merge(other.loop_depth)
        for name, total in other.score_sums.items():
            self.score_sums[name] += total
            self.score_counts[name] += other.score_counts[name]
        self.retried_count += other.retried_count
        self.retries_sum += other.retries_sum
        for name, theirs in other.guardrails.items():
            mine = self.guardrails.setdefault(name, [0, 0, 0])
            for j, n in enumerate(theirs):
                mine[j] += n

    def summary(self) -> dict[str, object]:
        """The flat statistics row (the columns of ``stats_1m`` minus the key)."""
        cost_q = self.cost.quantiles(QUANTILES)
        latency_q = self.latency.quantiles(QUANTILES)
        return {
            "count": self.count,
            "error_count": self.error_count,
            "timeout_count": self.timeout_count,
            "error_rate": (self.error_count + self.timeout_count) / self.count
            if self.count
            else 0.0,
            "input_tokens_sum": self.input_tokens_sum,
            "output_tokens_sum": self.output_tokens_sum,
            "input_tokens_mean": _mean(self.input_tokens_sum, self.input_tokens_count),
            "output_tokens_mean": _mean(self.output_tokens_sum, self.output_tokens_count),
            "cost_count": self.cost.count,
            "cost_sum": self.cost_sum,
            "cost_p50": cost_q[0],
            "cost_p95": cost_q[1],
            "cost_p99": cost_q[2],
            "latency_count": self.latency.count,
            "latency_mean": _mean(self.latency_sum, self.latency.count),
            "latency_p50": latency_q[0],
            "latency_p95": latency_q[1],
            "latency_p99": latency_q[2],
            "loop_depth_max": self.loop_depth_max,
            "loop_depth_p95": self.loop_depth.quantile(0.95),
            "score_means": {
                name: self.score_sums[name] / n for name, n in self.score_counts.items() if n
            },
            "score_counts": dict(self.score_counts),
        }


_STATE_VERSION = 1
_STATE_HEAD = struct.Struct("<BI")  # version, length of the JSON part
_SCALARS = (
    "count", "error_count", "timeout_count", "input_tokens_sum", "input_tokens_count",
    "output_tokens_sum", "output_tokens_count", "cost_sum", "latency_sum", "loop_depth_max",
)  # fmt: skip


def encode_state(stats: BucketStats) -> str:
    """``stats`` as text for a ClickHouse ``String`` column, exact and mergeable again.

    Why keep it at all: after a restart the detectors need the last hour of
    route minutes, and quantiles cannot be merged from the summary columns.
    Text (base64) rather than raw bytes, because chDB and the HTTP interface
    hand ``String`` columns back decoded as UTF-8.
    """
    sketches = [stats.cost.to_bytes(), stats.latency.to_bytes(), stats.loop_depth.to_bytes()]
    head = {name: getattr(stats, name) for name in _SCALARS}
    head["max_ts"] = stats.max_ts if math.isfinite(stats.max_ts) else None
    head["scores"] = {name: [stats.score_sums[name], n] for name, n in stats.score_counts.items()}
    head["retries"] = [stats.retried_count, stats.retries_sum]
    head["guardrails"] = stats.guardrails
    head["sketches"] = [len(b) for b in sketches]
    meta = json.dumps(head, separators=(",", ":"), allow_nan=False).encode()
    raw = _STATE_HEAD.pack(_STATE_VERSION, len(meta)) + meta + b"".join(sketches)
    return base64.b64encode(raw).decode("ascii")


def decode_state(text: str) -> BucketStats:
    """The inverse of ``encode_state``; ``ValueError`` on anything else."""
    try:
        raw = base64.b64decode(text, validate=True)
        version, length = _STATE_HEAD.unpack_from(raw)
        if version != _STATE_VERSION:
            raise ValueError(f"unsupported statistics state version {version}")
        start = _STATE_HEAD.size
        head = json.loads(raw[start : start + length])
        stats = BucketStats(**{name: head[name] for name in _SCALARS})
        stats.max_ts = -math.inf if head["max_ts"] is None else float(head["max_ts"])
        for name, (total, n) in head["scores"].items():
            stats.score_sums[name] = float(total)
            stats.score_counts[name] = int(n)
        # states written before retries and guardrails were kept have neither
        stats.retried_count, stats.retries_sum = (int(n) for n in head.get("retries", (0, 0)))
        guardrails = head.get("guardrails", {})
        stats.guardrails = {str(k): [int(n) for n in v] for k, v in guardrails.items()}
        offset = start + length
        parts = []
        for size in head["sketches"]:
            parts.append(QuantileSketch.from_bytes(raw[offset : offset + size]))
            offset += size
        stats.cost, stats.latency, stats.loop_depth = parts
    except (KeyError, TypeError, ValueError, struct.error, binascii.Error) as exc:
        # JSONDecodeError and the sketches' own errors are ValueErrors too
        raise ValueError(f"corrupt statistics state: {exc}") from None
    return stats


def _present(values: np.ndarray) -> np.ndarray:
    present: np.ndarray = values[~np.isnan(values)]
    return present


def _add_sum(values: np.ndarray, total: int, count: int) -> tuple[int, int]:
    present = _present(values)
    return total + int(present.sum()), count + int(present.size)


def _mean(total: float, count: int) -> float | None:
    return total / count if count else None
