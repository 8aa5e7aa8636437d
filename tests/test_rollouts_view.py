"""``tracewatch rollouts``: the latest verdict per candidate, from a replay's breakers file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tracewatch.config import RolloutSettings
from tracewatch.demo.canary import canary_events
from tracewatch.detectors.rollout import RolloutJudge
from tracewatch.errors import ConfigError
from tracewatch.pipeline import MessageBatch, Pipeline
from tracewatch.rollouts_view import read_variant_file, rows
from tracewatch.stage import Stage

TRACEWATCH = str(Path(sys.executable).with_name("tracewatch"))
ROUTE_BREAKER = (
    '{"scope": "route:refund/primary", "state": "open", "reason": "error rate", "ttl_s": 60}'
)


def breakers_file(tmp_path: Path, effect: str) -> Path:
    """What ``tracewatch replay --breakers-out`` writes for a canary stream."""
    stage = Stage(Pipeline(allowed_lateness_s=30), None, None, RolloutJudge(RolloutSettings()))
    values = [json.dumps(e).encode() for e in canary_events(8, 0.25, effect, canary_s=1500).events]
    n = len(values)
    lines = [ROUTE_BREAKER]
    out = stage.process(MessageBatch(values, [None] * n, [0] * n, list(range(n))))
    for signal in out.breakers + stage.finish().breakers:
        lines.append(signal.model_dump_json())
    path = tmp_path / "breakers.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_rolled_back_canary_fails_the_ci_gate(tmp_path: Path) -> None:
    path = breakers_file(tmp_path, "latency_errors")
    (row,) = rows(read_variant_file(path))
    assert row[:3] == ("refund/primary", "prompt_version=v21", "prompt_version=v20")
    assert row[4:6] == ("rollback", "0.00") and row[6] == "latency_ms"
    result = subprocess.run(
        [TRACEWATCH, "rollouts", "--from-file", str(path), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stderr
    assert "prompt_version=v21" in result.stdout and "rollback" in result.stdout


def test_a_good_canary_passes_the_gate(tmp_path: Path) -> None:
    path = breakers_file(tmp_path, "good")
    assert [r[4] for r in rows(read_variant_file(path))] == ["promote"]
    result = subprocess.run(
        [TRACEWATCH, "rollouts", "--from-file", str(path), "--check", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["verdict"] == "promote"


def test_a_broken_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "b.jsonl"
    path.write_text(ROUTE_BREAKER + "\n{}\n")
    with pytest.raises(ConfigError, match=r"b.jsonl:2: not a breaker signal"):
        read_variant_file(path)
