"""What ``tracewatch rollouts`` shows: the latest verdict per candidate variant.

The rows come from variant signals (``VariantSignal``), read either from the
compacted breakers topic (as an app's ``BreakerClient`` sees them) or from a
replay's ``--breakers-out`` file, so a recorded canary can gate CI
(``tracewatch rollouts --from-file breakers.jsonl --check`` exits 1 on a rollback).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from pydantic import ValidationError

from tracewatch.errors import ConfigError
from tracewatch.schemas.breaker import BreakerSignal, VariantSignal

__all__ = ["COLUMNS", "latest_variants", "read_variant_file", "rows"]

COLUMNS = ("route", "candidate", "incumbent", "share", "verdict", "weight", "deciding", "evidence")


def latest_variants(signals: Iterable[BreakerSignal]) -> list[VariantSignal]:
    """The latest verdict per variant scope, in order of first appearance."""
    latest: dict[str, VariantSignal] = {}
    for signal in signals:
        if not signal.scope.startswith("variant:"):
            continue
        if not isinstance(signal, VariantSignal):
            signal = VariantSignal.model_validate(signal.model_dump())
        latest[signal.scope] = signal
    return list(latest.values())


def read_variant_file(path: Path) -> list[VariantSignal]:
    """Variant verdicts from a replay's ``--breakers-out`` JSON lines (others skipped)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    signals = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            signals.append(BreakerSignal.model_validate_json(line))
        except ValidationError as exc:
            raise ConfigError(
                f"{path}:{number}: not a breaker signal ({exc.errors(include_url=False)[0]['msg']})"
            ) from None
    return latest_variants(signals)


def rows(signals: Iterable[VariantSignal]) -> list[tuple[str, ...]]:
    """One row per candidate (``COLUMNS``), rollbacks first, then by route."""
    order = {"rollback": 0, "hold": 1, "promote": 2}
    ranked = sorted(signals, key=lambda s: (order[s.verdict], s.route, s.variant))
    return [
        (
            s.route,
            s.variant,
            s.incumbent,
            f"{s.share:.1%}",
            s.verdict,
            f"{s.weight:.2f}",
            (s.metric or "-") + (f" @ {s.cohort}" if s.cohort else ""),
            s.evidence,
        )
        for s in ranked
    ]
