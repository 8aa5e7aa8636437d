"""One route's minute: the closed buckets of all its models and prompt versions merged.

Why detect per route rather than per (route, model, prompt version) key: the
changes people need to hear about most are exactly the ones that *change the
key*: a prompt edit that drops groundedness starts a new prompt version, a
model swap that doubles cost starts a new model. A per-key detector would meet
the new key with no history at all. Per route, the new version is compared with
the route's own recent behaviour, and the alert names the model and prompt
version that carried the route's traffic when it fired.

Merging is exact for counts and sums and within the sketches' 1 % bound for
quantiles (``BucketStats.merge``), so a route's p95 is the p95 of all its calls.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from tracewatch.detectors.buckets import ClosedBucket
from tracewatch.detectors.stats import BucketStats

__all__ = ["RouteMinute", "route_minutes"]


@dataclass(frozen=True)
class RouteMinute:
    """The merged statistics of one route for one closed minute."""

    route: str
    start: float
    end: float
    stats: BucketStats
    #: (model, prompt_version) with the most events this minute ("" when absent)
    model: str
    prompt_version: str
    #: every (model, prompt_version) with events this minute, busiest first: a new
    #: one is a deployment, and the alert engine names it as a likely change point
    carriers: tuple[tuple[str, str], ...] = ()

    def value(self, metric: str, stat: str) -> tuple[float | None, int]:
        """The statistic and how many observations it rests on (0 when there are none).

        ``metric`` and ``stat`` are the rules file's names (``cost_usd``/``p95``,
        ``score:groundedness``/``mean``, ``error_rate``/``rate`` ...).
        """
        s = self.stats
        if metric == "error_rate":
            return ((s.error_count + s.timeout_count) / s.count if s.count else None), s.count
        if metric.startswith("score:"):
            name = metric[len("score:") :]
            n = s.score_counts.get(name, 0)
            return (s.score_sums[name] / n if n else None), n
        if metric in ("input_tokens", "output_tokens"):
            total = getattr(s, f"{metric}_sum")
            n = getattr(s, f"{metric}_count")
            return (total / n if n else None), n
        sketch = {"cost_usd": s.cost, "latency_ms": s.latency, "loop_depth": s.loop_depth}[metric]
        n = sketch.count
        if not n:
            return None, 0
        if stat == "mean":
            return sketch.sum / n, n
        if stat == "max":
            return sketch.max, n
        quantile = {"p50": 0.5, "p95": 0.95, "p99": 0.99}[stat]
        return sketch.quantile(quantile), n


def route_minutes(closed: Iterable[ClosedBucket]) -> list[RouteMinute]:
    """Merge on-time closed buckets by (route, minute); oldest minute first.

    Late partials (``late=True``) are left out: their minute was judged when it
    closed, and judging it again would make the alerts depend on arrival order.
    They are still written to the statistics table, so nothing is lost.
    """
    groups: dict[tuple[float, str], list[ClosedBucket]] = defaultdict(list)
    for bucket in closed:
        if not bucket.late:
            groups[(bucket.start, bucket.route)].append(bucket)
    minutes: list[RouteMinute] = []
    for (start, route), buckets in sorted(groups.items()):
        merged = BucketStats()
        for bucket in buckets:
            merged.merge(bucket.stats)
        # ties go to the smallest key so that the choice is deterministic
        ranked = sorted(buckets, key=lambda b: (-b.stats.count, b.key))
        top = ranked[0]
        carriers = tuple(dict.fromkeys((b.key[1], b.key[2]) for b in ranked))
        minutes.append(
            RouteMinute(
                route, start, start + buckets[0].width, merged, top.key[1], top.key[2], carriers
            )
        )
    return minutes
