"""A route with a canary: synthetic trace events with a known effect, for the rollout judge.

One route serves requests at ``rate`` per second: one ``llm`` event each (latency,
tokens, cost, status) and, two seconds later, one ``eval`` event with its scores
(``hallucination``, lower is better; ``groundedness``). Every request carries a
cohort (``short``, ``medium``, ``long_context``). The incumbent is
``prompt_version=v20``; from ``warm_s`` on, ``share`` of the requests go to the
candidate ``v21``, whose behaviour is changed by ``effect``:

- ``cohort_quality``: hallucination 0.08 -> 0.24 on ``long_context`` only
- ``latency_errors``: latency x1.6, error rate 1 % -> 6 %
- ``cost``: cost x1.3
- ``good``: same quality, cost x0.6 (a cheaper path that holds)
- ``aa``: identical to the incumbent (an A/A split)

Used by ``bench/rollout.py``, the rollout tests and the README walkthrough.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["BAD_EFFECTS", "EFFECTS", "CanaryStream", "canary_events"]

BAD_EFFECTS = ("cohort_quality", "latency_errors", "cost")
EFFECTS = (*BAD_EFFECTS, "good", "aa")
ROUTE = "refund/primary"
COHORTS = (("short", 0.5), ("medium", 0.3), ("long_context", 0.2))
START_TS = 1_790_000_000.0  # 2026-09-21T...Z, a fixed event-time origin


@dataclass(frozen=True)
class CanaryStream:
    events: list[dict[str, Any]]
    canary_start: float
    effect: str
    share: float


def _beta(rng: np.random.Generator, mean: float, size: int, strength: float = 20.0) -> Any:
    return rng.beta(mean * strength, (1 - mean) * strength, size)


def canary_events(
    seed: int,
    share: float,
    effect: str,
    *,
    rate: float = 3.0,
    warm_s: float = 1200.0,
    canary_s: float = 2700.0,
    start_ts: float = START_TS,
    route: str = ROUTE,
) -> CanaryStream:
    """The events of one stream, in event-time order (``ts`` in Unix seconds)."""
    if effect not in EFFECTS:
        raise ValueError(f"effect must be one of {EFFECTS}, not {effect!r}")
    rng = np.random.default_rng(seed)
    n = int(rng.poisson(rate * (warm_s + canary_s)))
    ts = np.sort(rng.uniform(0.0, warm_s + canary_s, n)) + start_ts
    canary = (ts >= start_ts + warm_s) & (rng.uniform(size=n) < share)
    bad = canary if effect != "aa" else np.zeros(n, bool)
    cohort_idx = rng.choice(len(COHORTS), n, p=[w for _, w in COHORTS])
    latency = rng.lognormal(np.log(800.0), 0.45, n)
    errors = rng.uniform(size=n) < 0.01
    tokens_in = rng.lognormal(np.log(1200.0), 0.3, n).astype(int)
    tokens_out = rng.lognormal(np.log(250.0), 0.4, n).astype(int)
    cost = tokens_in * 0.15e-6 + tokens_out * 0.6e-6
    halluc = _beta(rng, 0.08, n)
    grounded = _beta(rng, 0.85, n)
    if effect == "latency_errors":
        latency[bad] *= 1.6
        errors |= bad & (rng.uniform(size=n) < 0.05)
    elif effect == "cost":
        cost[bad] *= 1.3
    elif effect == "good":
        cost[bad] *= 0.6
    elif effect == "cohort_quality":
        hit = bad & (cohort_idx == 2)
        halluc[hit] = _beta(rng, 0.24, int(hit.sum()))
    events: list[dict[str, Any]] = []
    for i in range(n):
        common = {
            "trace_id": f"t{seed}-{i}",
            "route": route,
            "model": "gpt-4o-mini",
            "prompt_version": "v21" if canary[i] else "v20",
            "cohort": COHORTS[cohort_idx[i]][0],
        }
        events.append({
            **common,
            "event_id": f"e{seed}-{i}",
            "ts": round(float(ts[i]), 6),
            "kind": "llm",
            "latency_ms": round(float(latency[i]), 3),
            "input_tokens": int(tokens_in[i]),
            "output_tokens": int(tokens_out[i]),
            "cost_usd": float(cost[i]),
            "status": "error" if errors[i] else "ok",
        })  # fmt: skip
        events.append({
            **common,
            "event_id": f"s{seed}-{i}",
            "ts": round(float(ts[i]) + 2.0, 6),
            "kind": "eval",
            "scores": {
                "hallucination": round(float(halluc[i]), 4),
                "groundedness": round(float(grounded[i]), 4),
            },
        })  # fmt: skip
    events.sort(key=lambda e: e["ts"])
    return CanaryStream(events, start_ts + warm_s, effect, share)
