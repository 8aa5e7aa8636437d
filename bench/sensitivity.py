"""Detection sensitivity of the automatic watches: effect size x traffic, and false alarms.

Drives the pure core in-process -- per-minute ``BucketStats`` built from event
columns exactly as ``Pipeline`` builds them, handed to the ``AlertEngine`` as
closed buckets (what replay does after decoding) -- without ClickHouse, Kafka or
JSON, so hundreds of streams fit in minutes on two cores.

Each **step stream** is one route over four hours of event time with a daily
volume swing (+-50 %, the day compressed into the stream as in
``tracewatch.demo.scenarios``) and one lasting step starting between minutes
100 and 160: p95 latency or cost x1.2..x3 (every call slower / dearer), mean
groundedness -0.03..-0.15 (from 0.85, half the calls scored), the error rate
+2/+5 points (from 1 %), or the block rate of a guardrail every call passes
+4 points (from 1 %). Traffic: 0.5, 3 or 20 requests a second on average.
A step counts as detected by the first firing alert with its ``metric`` label
decided after the step started; its delay is the event time between the two.

Each **clean stream** is twelve hours (three compressed days of volume) with one
nuisance and no incident: ``diurnal`` (p95 latency and cost swing +-50 % over a
24-hour day, from a random phase), ``diurnal4h`` (the same swing over the
compressed 4-hour day: a stress test, reported apart),
``drift`` (latency and cost +30 % over four hours, then on), ``traffic``
(volume doubles for an hour, then halves for an hour) or ``prompt`` (a new
prompt version every hour that changes nothing). Every firing alert on a clean
stream is a false alarm, and so is one on a step stream's other metrics.

    .venv/bin/python bench/sensitivity.py [--seeds 10] [--first-seed 0] [--jobs 2]

Tuning was done on seeds 0-9; ``--first-seed 100`` gives the unseen ones.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
import zlib
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

from tracewatch.detectors.buckets import ClosedBucket
from tracewatch.detectors.columns import GUARDRAIL_CODES, STATUS_CODES, EventColumns
from tracewatch.detectors.engine import AlertEngine
from tracewatch.detectors.stats import BucketStats

ROUTE = "bench/route"
MODEL = "gpt-4o-mini"
T0 = 1_800_000_000.0
STEP_MINUTES = 240
CLEAN_MINUTES = 720
DAY_MINUTES = 240  # the compressed day of tracewatch.demo.scenarios
TRAFFIC = (0.5, 3.0, 20.0)
#: (kind, metric label, sizes)
EFFECTS: tuple[tuple[str, str, tuple[float, ...]], ...] = (
    ("latency", "latency_ms", (1.2, 1.3, 1.5, 2.0, 3.0)),
    ("cost", "cost_usd", (1.2, 1.3, 1.5, 2.0, 3.0)),
    ("score", "score:groundedness", (-0.03, -0.05, -0.07, -0.15)),
    ("errors", "error_rate", (0.02, 0.05)),
    ("guardrail", "guardrail_block_rate:prompt_injection", (0.04,)),
)
NUISANCES = ("diurnal", "drift", "traffic", "prompt", "diurnal4h")
#: Period of the value swing of ``diurnal`` (a real day) and of ``diurnal4h`` (the
#: bench's compressed day: a stress test, +-50 % within two hours of trough to peak)
VALUE_DAYS = {"diurnal": 1440, "diurnal4h": DAY_MINUTES}


@dataclass(frozen=True)
class Stream:
    """One synthetic route: what changes, how busy, which seed."""

    kind: str  # an effect kind, or "clean:<nuisance>"
    size: float
    traffic: float
    seed: int

    @property
    def minutes(self) -> int:
        return CLEAN_MINUTES if self.kind.startswith("clean") else STEP_MINUTES

    def rng(self) -> np.random.Generator:
        tag = zlib.crc32(f"{self.kind}/{self.size}/{self.traffic}".encode())
        return np.random.default_rng((self.seed, tag))


@dataclass(frozen=True)
class Result:
    stream: Stream
    step_at: float | None
    detected_at: float | None
    false_alarms: tuple[str, ...]


def _factor(stream: Stream, m: float, step: float) -> tuple[float, float, float, float, float]:
    """(latency x, cost x, score shift, error rate, block rate) at minute ``m``."""
    lat = cost = 1.0
    shift, errors, blocks = 0.0, 0.01, 0.01
    nuisance = stream.kind.removeprefix("clean:")
    if nuisance in VALUE_DAYS:
        day = VALUE_DAYS[nuisance]
        lat = cost = 1.0 + 0.5 * math.sin(2 * math.pi * m / day + 0.7 * stream.seed)
    elif nuisance == "drift":
        lat = cost = 1.0 + 0.3 * m / 240.0
    if m >= step:
        if stream.kind == "latency":
            lat *= stream.size
        elif stream.kind == "cost":
            cost *= stream.size
        elif stream.kind == "score":
            shift = stream.size
        elif stream.kind == "errors":
            errors += stream.size
        elif stream.kind == "guardrail":
            blocks += stream.size
    return lat, cost, shift, errors, blocks


def _volume(stream: Stream, m: int, phase: float) -> float:
    wave = 1.0 + 0.5 * math.sin(2 * math.pi * m / DAY_MINUTES + phase)
    if stream.kind == "clean:traffic":
        hour = (m // 60) % 3
        wave *= (1.0, 2.0, 0.5)[hour]
    return wave


def _minute(stream: Stream, rng: np.random.Generator, m: int, n: int, step: float) -> BucketStats:
    lat_x, cost_x, shift, error_rate, block_rate = _factor(stream, m + 0.5, step)
    u = rng.uniform(size=n)
    status = np.where(u < error_rate, STATUS_CODES["error"], STATUS_CODES["ok"]).astype(np.int8)
    status[(u >= error_rate) & (u < error_rate + 0.002)] = STATUS_CODES["timeout"]
    latency = 1200.0 * lat_x * np.exp(0.5 * rng.standard_normal(n))
    latency[status == STATUS_CODES["timeout"]] = 60_000.0
    ok = status == STATUS_CODES["ok"]
    tokens_in = np.where(ok, np.round(1500 * np.exp(0.35 * rng.standard_normal(n))), np.nan)
    tokens_out = np.where(ok, np.round(250 * np.exp(0.5 * rng.standard_normal(n))), np.nan)
    cost = cost_x * (tokens_in * 0.15 + tokens_out * 0.6) / 1e6
    mean = 0.85 + shift
    scored = rng.uniform(size=n) < 0.5
    draws = rng.beta(mean * 10, (1 - mean) * 10, n)
    scores = [{"groundedness": float(v)} if s else {} for v, s in zip(draws, scored, strict=True)]
    cols = EventColumns(
        ts=T0 + 60.0 * m + np.sort(rng.uniform(0, 60, n)),
        status=status,
        latency_ms=latency,
        cost_usd=cost,
        input_tokens=tokens_in,
        output_tokens=tokens_out,
        loop_depth=np.full(n, np.nan),
        scores=scores,
        retry_count=np.zeros(n),
        # every call passes the input guardrail first (its own span in real traffic)
        guardrail_action=np.where(
            rng.uniform(size=n) < block_rate,
            GUARDRAIL_CODES["block"],
            GUARDRAIL_CODES["allow"],
        ).astype(np.int8),
        guardrail_name=["prompt_injection"] * n,
    )
    stats = BucketStats()
    stats.add(cols)
    return stats


def buckets(stream: Stream) -> Iterator[tuple[int, ClosedBucket]]:
    rng = stream.rng()
    phase = float(rng.uniform(0, 2 * math.pi))
    step = _step_minute(stream)
    for m in range(stream.minutes):
        n = int(rng.poisson(stream.traffic * 60.0 * _volume(stream, m, phase)))
        if n == 0:
            continue
        version = f"v{m // 60 + 1}" if stream.kind == "clean:prompt" else "v1"
        if stream.kind == "score" and m >= step:
            version = "v2"  # a bad prompt edit ships as a new version
        stats = _minute(stream, rng, m, n, step)
        yield m, ClosedBucket((ROUTE, MODEL, version), T0 + 60.0 * m, 60.0, False, stats)


def _step_minute(stream: Stream) -> float:
    if stream.kind.startswith("clean"):
        return math.inf
    rng = np.random.default_rng((stream.seed, 7))
    return float(rng.integers(100, 161))


def run(stream: Stream) -> Result:
    engine = AlertEngine()
    step = _step_minute(stream)
    target = {kind: metric for kind, metric, _ in EFFECTS}.get(stream.kind)
    detected: float | None = None
    false: list[str] = []
    for _, bucket in buckets(stream):
        for t in engine.observe([bucket]):
            if t.alert.status != "firing":
                continue
            minute = (t.at - T0) / 60.0
            if t.alert.labels["metric"] == target and minute > step:
                if detected is None:
                    detected = minute
            else:
                false.append(f"{t.alert.alertname}@{minute:.0f}")
    return Result(stream, None if math.isinf(step) else step, detected, tuple(false))


def _streams(seeds: range) -> list[Stream]:
    out = [
        Stream(kind, size, traffic, seed)
        for seed in seeds
        for kind, _, sizes in EFFECTS
        for size in sizes
        for traffic in TRAFFIC
    ]
    out += [
        Stream(f"clean:{nuisance}", 0.0, traffic, seed)
        for seed in seeds
        for nuisance in NUISANCES
        for traffic in TRAFFIC
    ]
    return out


def _fmt_delay(values: list[float]) -> str:
    if not values:
        return "     -      -"
    return f"{statistics.median(values):6.1f} {max(values):6.1f}"


def report(results: list[Result]) -> str:
    lines = [
        f"{'effect':<18}{'traffic':>8}{'detected':>10}{'<=10 min':>10}{'median':>8}{'max':>7}",
        "-" * 61,
    ]
    groups: dict[tuple[str, float, float], list[Result]] = defaultdict(list)
    for r in results:
        groups[(r.stream.kind, r.stream.size, r.stream.traffic)].append(r)
    for kind, _, sizes in EFFECTS:
        for size in sizes:
            for traffic in TRAFFIC:
                rs = groups[(kind, size, traffic)]
                delays = [
                    r.detected_at - r.step_at
                    for r in rs
                    if r.detected_at is not None and r.step_at is not None
                ]
                fast = sum(1 for d in delays if d <= 10.0)
                signed = kind in ("score", "errors", "guardrail")
                name = f"{kind} {size:+g}" if signed else f"{kind} x{size:g}"
                lines.append(
                    f"{name:<18}{traffic:>8g}{len(delays):>6}/{len(rs):<3}{fast:>6}/{len(rs):<3}"
                    f"{_fmt_delay(delays)}"
                )
    lines += ["", _false_alarm_lines(results)]
    return "\n".join(lines)


def _false_alarm_lines(results: list[Result]) -> str:
    lines = [f"{'clean stream':<18}{'traffic':>8}{'route-hours':>13}{'false alarms':>14}"]
    total_hours = total_false = 0.0
    for nuisance in NUISANCES:
        for traffic in TRAFFIC:
            rs = [r for r in results if r.stream.kind == f"clean:{nuisance}"]
            rs = [r for r in rs if r.stream.traffic == traffic]
            hours = sum(r.stream.minutes for r in rs) / 60.0
            false = sum(len(r.false_alarms) for r in rs)
            if nuisance != "diurnal4h":  # the stress test is reported apart
                total_hours += hours
                total_false += false
            lines.append(f"{nuisance:<18}{traffic:>8g}{hours:>13.0f}{false:>14}")
    step_hours = sum(r.stream.minutes for r in results if r.step_at is not None) / 60.0
    step_false = sum(len(r.false_alarms) for r in results if r.step_at is not None)
    lines.append(
        f"\nclean streams (without diurnal4h): {total_false:.0f} false alarms in "
        f"{total_hours:.0f} route-hours ({1000 * total_false / max(total_hours, 1):.2f} "
        f"per 1 000); step streams, alerts on other metrics: {step_false} in "
        f"{step_hours:.0f} route-hours"
    )
    listed = [(r.stream, f) for r in results for f in r.false_alarms]
    listed = sorted(listed, key=lambda pair: pair[0].kind == "clean:diurnal4h")[:15]
    for s, alarm in listed:
        lines.append(f"  false  {s.kind} x{s.size:g} {s.traffic:g}/s seed {s.seed}: {alarm}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--kinds", nargs="*", default=None, help="only these stream kinds")
    args = parser.parse_args()
    streams = _streams(range(args.first_seed, args.first_seed + args.seeds))
    if args.kinds:
        streams = [s for s in streams if s.kind in args.kinds]
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(run, streams, chunksize=4))
    print(report(results))
    seeds = f"{args.first_seed}-{args.first_seed + args.seeds - 1}"
    print(f"\n{len(streams)} streams, seeds {seeds}, {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
