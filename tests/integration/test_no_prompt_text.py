"""No prompt or completion text is stored: through the real worker into real ClickHouse.

Apps often have the conversation at hand when they emit a trace event and put it
in: as extra top-level fields (``prompt``, ``messages`` …) or as attributes named
after it (``prompt``, ``gen_ai.prompt.0.content`` …). The contract has no place
for that text and tracewatch stores none of it (docs/security.md): every stored
row is searched for the text afterwards, while ordinary attributes stay.
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tracewatch.config import KafkaSettings
from tracewatch.sdk import TraceProducer
from tracewatch.streams.topics import ensure_topics

pytestmark = pytest.mark.integration

CONTENT_FIELDS = ("prompt", "completion", "messages", "input", "output")
CONTENT_ATTRIBUTES = (
    *CONTENT_FIELDS,
    "gen_ai.prompt.0.content",
    "gen_ai.completion.0.content",
    "gen_ai.input.messages",
    "gen_ai.output.messages",
    "llm.input_messages",
)


def text(n: int, what: str) -> str:
    return f"SECRET-{what}-{n}: my card number is 4111 1111 1111 1111"


def events(t0: float) -> list[dict[str, Any]]:
    made = []
    for n in range(50):
        event: dict[str, Any] = {
            "event_id": f"content-{n}", "trace_id": f"t-{n}", "ts": t0 + n, "kind": "llm",
            "route": "support/chat", "model": "gpt-4o-mini", "input_tokens": 120,
            "attributes": {"region": "eu", "tier": n % 3},
        }  # fmt: skip
        event.update({name: text(n, name) for name in CONTENT_FIELDS})
        event["messages"] = [{"role": "user", "content": text(n, "messages")}]
        if n % 2:  # half of them also carry the text as attributes
            event["attributes"].update({name: text(n, name) for name in CONTENT_ATTRIBUTES})
        made.append(event)
    return made


def query(url: str, sql: str, **parameters: Any) -> list[list[Any]]:
    body = json.dumps({"sql": sql, "parameters": {"db": "tracewatch", **parameters}}).encode()
    request = urllib.request.Request(
        f"{url}/query", body, {"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        rows: list[list[Any]] = json.loads(response.read())["rows"]
    return rows


def test_no_prompt_or_completion_text_is_stored(
    kafka_settings: KafkaSettings, tmp_path: Path, free_port: int, make_worker: Any
) -> None:
    ensure_topics(kafka_settings)
    sent = events(time.time() - 3600)
    with TraceProducer(settings=kafka_settings) as producer:
        for event in sent:
            producer.send(event)  # the SDK takes them: unknown fields are not an error
    worker = make_worker(kafka_settings, tmp_path, free_port)
    worker.start()
    worker.wait_for(lambda b: b["stored_events"] >= len(sent) and b["pending_events"] == 0)

    columns = {
        row[0]
        for row in query(
            worker.url,
            "SELECT name FROM system.columns WHERE database = {db:String} AND table = 'events'",
        )
    }
    assert columns and not columns & {*CONTENT_FIELDS, *CONTENT_ATTRIBUTES}
    rows = query(
        worker.url,
        "SELECT * FROM {db:Identifier}.events WHERE event_id IN {ids:Array(String)}",
        ids=[e["event_id"] for e in sent],
    )
    assert len(rows) == len(sent)
    stored = json.dumps(rows)
    assert stored.count('"region"') == len(sent)  # ordinary attributes are kept
    kept = sorted({
        name for row in rows for cell in row if isinstance(cell, dict)
        for name, value in cell.items() if "SECRET-" in str(value)
    })  # fmt: skip
    assert not kept, f"attributes {kept} were stored with the prompt/completion text in them"
    assert "SECRET-" not in stored
    worker.stop()
