"""The pure stage: partitions come and go; without judges it only aggregates."""

from __future__ import annotations

import json

from tracewatch.config import WorkerSettings
from tracewatch.pipeline import RawMessage
from tracewatch.stage import Stage

T0 = 1_795_341_600.0


def test_revoke_drops_exactly_the_partitions_event_ids_and_watermark_holds() -> None:
    stage = Stage.from_settings(WorkerSettings(allowed_lateness_s=0))
    stage.assign([0, 1])
    body = {"trace_id": "t", "kind": "llm", "route": "r"}
    messages = [
        RawMessage(json.dumps({**body, "event_id": f"{p}-{i}", "ts": T0 + 10 * p + i}).encode(),
                   None, p, i)
        for p in (0, 1) for i in range(3)
    ]  # fmt: skip
    stage.process(messages)
    assert stage.pipeline.aggregator.watermark == T0 + 2  # partition 0 is behind
    assert stage.revoke([0]) == 3
    assert stage.pipeline.aggregator.watermark == T0 + 12  # partition 1 alone now
    again = stage.process([RawMessage(m.value, None, 1, 10 + i) for i, m in enumerate(messages)])
    assert [r.message.offset for r in again.rejected] == [13, 14, 15]  # 1-*: still known


def test_without_engine_or_board_the_stage_only_aggregates() -> None:
    stage = Stage.from_settings(WorkerSettings(allowed_lateness_s=0))
    body = {"trace_id": "t", "kind": "llm", "route": "r", "loop_depth": 99}
    out = stage.process([RawMessage(json.dumps({**body, "event_id": "a", "ts": T0}).encode())])
    assert out.events and not out.breakers and not out.transitions
    done = stage.finish()
    assert [b.stats.count for b in done.closed] == [1] and not done.transitions
