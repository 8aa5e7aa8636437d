"""Canary judging quality: bad canaries rolled back, how fast; good and A/A ones never.

For every effect (``tracewatch.demo.canary``: a hallucination rise on the
``long_context`` cohort only; latency x1.6 with errors 1 % -> 6 %; cost x1.3; a
good canary 40 % cheaper; an A/A split), every share (5 %, 10 %, 25 %) and every
seed, builds a 20-minute incumbent-only stream at 3 requests/s followed by 45
minutes with the canary, drives it through the pure ``Stage`` in-process (the
worker's validation, minutes and rollout judge; no storage), and reports per
effect and share: the share of seeds rolled back within 25 minutes of event time
and at all, the delay (median and max), the deciding metrics, and for the
harmless canaries the false rollbacks and how many were promoted.

    .venv/bin/python bench/rollout.py [--seeds 20] [--first-seed 100] [--jobs 1]

The defaults were chosen on seeds 0-4 (``--first-seed 0 --seeds 5``); the
default run reports seeds 100-119, which were not looked at while tuning.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

from tracewatch.config import RolloutSettings
from tracewatch.demo.canary import BAD_EFFECTS, EFFECTS, canary_events
from tracewatch.detectors.rollout import RolloutJudge
from tracewatch.pipeline import MessageBatch, Pipeline
from tracewatch.schemas.breaker import VariantSignal
from tracewatch.stage import Stage

SHARES = (0.05, 0.10, 0.25)
TARGET_S = 25 * 60.0
BATCH = 2000


@dataclass(frozen=True)
class Outcome:
    effect: str
    share: float
    seed: int
    rollback_after_s: float | None
    promote_after_s: float | None
    metric: str | None
    cohort: str | None
    events: int
    seconds: float


def run_one(effect: str, share: float, seed: int) -> Outcome:
    stream = canary_events(seed, share, effect)
    stage = Stage(Pipeline(allowed_lateness_s=30), None, None, RolloutJudge(RolloutSettings()))
    values = [json.dumps(e).encode() for e in stream.events]
    signals: list[VariantSignal] = []
    started = time.perf_counter()
    for i in range(0, len(values), BATCH):
        chunk = values[i : i + BATCH]
        offsets = list(range(i, i + len(chunk)))
        out = stage.process(MessageBatch(chunk, [None] * len(chunk), [0] * len(chunk), offsets))
        signals += [s for s in out.breakers if isinstance(s, VariantSignal)]
    signals += [s for s in stage.finish().breakers if isinstance(s, VariantSignal)]
    seconds = time.perf_counter() - started
    rollback = next((s for s in signals if s.verdict == "rollback"), None)
    promote = next((s for s in signals if s.verdict == "promote"), None)
    return Outcome(
        effect,
        share,
        seed,
        _after(rollback, stream.canary_start),
        _after(promote, stream.canary_start),
        rollback.metric if rollback else None,
        rollback.cohort if rollback else None,
        len(values),
        seconds,
    )


def _after(signal: VariantSignal | None, start: float) -> float | None:
    if signal is None or signal.opened_at is None:
        return None
    return signal.opened_at.timestamp() - start


def report(outcomes: list[Outcome]) -> list[str]:
    lines = [
        f"{'effect':<16}{'share':>6}{'seeds':>6}{'<=25min':>9}{'ever':>6}"
        f"{'delay med':>11}{'delay max':>11}{'promoted':>10}  deciding",
    ]
    for effect in EFFECTS:
        for share in SHARES:
            rows = [o for o in outcomes if o.effect == effect and o.share == share]
            if not rows:
                continue
            delays = [o.rollback_after_s for o in rows if o.rollback_after_s is not None]
            within = sum(d <= TARGET_S for d in delays)
            promoted = sum(o.promote_after_s is not None for o in rows)
            deciding = Counter(
                (o.metric or "") + (f"@{o.cohort}" if o.cohort else "")
                for o in rows
                if o.metric and o.rollback_after_s is not None
            )
            lines.append(
                f"{effect:<16}{share:>6.0%}{len(rows):>6}{within:>9}{len(delays):>6}"
                f"{_minutes(statistics.median(delays) if delays else None):>11}"
                f"{_minutes(max(delays) if delays else None):>11}{promoted:>10}  "
                + ", ".join(f"{k} x{v}" for k, v in deciding.most_common(3))
            )
    return lines


def _minutes(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds / 60:.1f} min"


def verdict(outcomes: list[Outcome]) -> list[str]:
    bad = [o for o in outcomes if o.effect in BAD_EFFECTS and o.share >= 0.10]
    missed = [o for o in bad if o.rollback_after_s is None or o.rollback_after_s > TARGET_S]
    harmless = [o for o in outcomes if o.effect not in BAD_EFFECTS]
    false = [o for o in harmless if o.rollback_after_s is not None]
    events = sum(o.events for o in outcomes)
    seconds = sum(o.seconds for o in outcomes)
    return [
        f"bad canaries at >=10 % share rolled back within 25 min: {len(bad) - len(missed)}"
        f"/{len(bad)} (target: all)",
        f"false rollbacks over good and A/A canaries: {len(false)}/{len(harmless)} (target: 0)",
        f"stage speed with the judge: {events / seconds:,.0f} events/s",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--first-seed", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--effects", nargs="*", default=list(EFFECTS))
    args = parser.parse_args()
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    jobs = [(e, s, seed) for e in args.effects for s in SHARES for seed in seeds]
    with ProcessPoolExecutor(args.jobs) as pool:
        outcomes = list(pool.map(run_one, *zip(*jobs, strict=True)))
    print(f"seeds {seeds.start}-{seeds.stop - 1}, 3 requests/s, canary from minute 20 to 65")
    print("\n".join(report(outcomes)))
    print("\n".join(verdict(outcomes)))


if __name__ == "__main__":
    main()
