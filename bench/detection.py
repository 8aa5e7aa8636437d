"""Detection quality of the default settings on synthetic streams with known incidents.

For every incident kind (and clean streams) and every seed, generates a
four-hour stream (``tracewatch.demo.scenarios``: five routes of very different
scales, diurnal traffic, a harmless slow drift, and one injected incident),
runs it through ``tracewatch.replay.replay_file`` (the worker's own validation,
buckets, detectors, rules and lifecycle, writing to an embedded ClickHouse), and
prints per incident kind the detection delay in event time, and the false
alarms per route-hour. Also prints the replay speed on the largest stream.

    .venv/bin/python bench/detection.py [--seeds 10] [--first-seed 0] [--jobs 2] [--rules R.yaml]

No tuning to one seed: the default is ten seeds, and ``--first-seed`` moves the
whole set.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from tracewatch.config import ClickHouseSettings, DetectSettings, Settings, WorkerSettings
from tracewatch.demo.scenarios import KINDS, Scenario, make_scenario
from tracewatch.demo.scoring import format_table, score
from tracewatch.detectors.engine import Transition
from tracewatch.replay import replay_file
from tracewatch.schemas.alert import Alert
from tracewatch.sinks.clickhouse import ClickHouseSink

Run = tuple[Scenario, list[tuple[float, Alert]], int, float]


def run_one(kind: str, seed: int, workdir: str, rules: str | None) -> Run:
    """Generate, write and replay one stream; returns its alerts and replay speed."""
    scenario = make_scenario(kind, seed)
    path = Path(workdir) / f"{scenario.name}.jsonl"
    scenario.write_jsonl(path)
    settings = Settings(
        clickhouse=ClickHouseSettings(dsn=f"chdb://{workdir}/clickhouse"),
        worker=WorkerSettings(allowed_lateness_s=30),
        detect=DetectSettings(rules_file=Path(rules) if rules else None),
    )
    transitions: list[Transition] = []
    with ClickHouseSink(settings.clickhouse) as sink:
        report = replay_file(
            path, Path(workdir) / "alerts.jsonl", None, settings, sink, transitions.append
        )
    path.unlink()
    alerts = [(t.at, t.alert) for t in transitions]
    return scenario, alerts, report.counters.received, report.seconds


def _job(args: tuple[str, int, str | None]) -> Run:
    kind, seed, rules = args
    # one embedded ClickHouse per process: chDB opens one data directory per process
    return run_one(kind, seed, _workdir(), rules)


_WORKDIR: str | None = None


def _workdir() -> str:
    global _WORKDIR
    if _WORKDIR is None:
        _WORKDIR = tempfile.mkdtemp(prefix="tw-detection-")
    return _WORKDIR


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2, help="processes (one chDB each)")
    parser.add_argument("--kinds", nargs="*", default=list(KINDS))
    parser.add_argument("--rules", default=None, help="a rules file to add to auto-detection")
    args = parser.parse_args()

    work = [
        (kind, seed, args.rules)
        for seed in range(args.first_seed, args.first_seed + args.seeds)
        for kind in args.kinds
    ]
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        runs = list(pool.map(_job, work))
    elapsed = time.perf_counter() - started

    table = score([(scenario, alerts) for scenario, alerts, _, _ in runs])
    print(format_table(table))
    events = sum(n for _, _, n, _ in runs)
    largest = max(runs, key=lambda r: r[2])
    print(
        f"\n{len(runs)} streams, {events:,} events in {elapsed:.0f} s with {args.jobs} processes; "
        f"replay of the largest stream ({largest[0].name}, {largest[2]:,} events): "
        f"{largest[2] / largest[3]:,.0f} events/s"
    )


if __name__ == "__main__":
    main()
