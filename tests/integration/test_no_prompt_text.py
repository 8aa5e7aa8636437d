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
import urllib.error
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


def answer(worker: Any, sql: str, **parameters: Any) -> dict[str, Any]:
    body = json.dumps({"sql": sql, "parameters": {"db": "tracewatch", **parameters}}).encode()
    request = urllib.request.Request(
        f"{worker.url}/query",
        body,
        {"Content-Type": "application/json", **worker.auth()},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            result: dict[str, Any] = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"/query answered {exc.code}: {exc.read().decode()}") from None
    return result


def query(worker: Any, sql: str, **parameters: Any) -> list[list[Any]]:
    rows: list[list[Any]] = answer(worker, sql, **parameters)["rows"]
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

    # the events table's columns (system tables are not open to /query)
    columns = set(answer(worker, "SELECT * FROM {db:Identifier}.events LIMIT 1")["columns"])
    assert columns and not columns & {*CONTENT_FIELDS, *CONTENT_ATTRIBUTES}
    rows = query(
        worker,
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


#: Real content attribute names of each convention (tests/schemas/test_content.py lists
#: them with their sources), some spelled in another case, as senders do.
CONVENTION_NAMES = (
    # OpenTelemetry GenAI
    "gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.system_instructions",
    "gen_ai.tool.call.arguments", "gen_ai.tool.call.result", "gen_ai.tool.definitions",
    "gen_ai.retrieval.query.text", "gen_ai.retrieval.documents", "gen_ai.user.message",
    "gen_ai.choice", "gen_ai.evaluation.explanation", "GEN_AI.PROMPT.0.CONTENT",
    "Gen_AI.Input.Messages",
    # OpenLLMetry (traceloop)
    "gen_ai.prompt.0.content", "gen_ai.completion.0.content", "llm.request.functions.0.parameters",
    "llm.request.functions.0.description", "traceloop.entity.input", "traceloop.entity.output",
    "traceloop.prompt.template", "llm.prompts.0.content", "TRACELOOP.ENTITY.INPUT",
    # OpenInference
    "input.value", "output.value", "llm.input_messages.0.message.content",
    "llm.output_messages.0.message.content", "llm.prompt_template.template",
    "llm.prompt_template.variables", "retrieval.documents.0.document.content",
    "embedding.embeddings.0.embedding.text", "tool.parameters", "reranker.query",
    "reranker.input_documents.0.document.content", "message.content",
    "tool_call.function.arguments", "Input.Value", "LLM.Input_Messages.0.Message.Content",
)  # fmt: skip


def otlp_body(trace_id: str, t0_ns: int, n_spans: int) -> dict[str, Any]:
    """An OTLP/JSON export: chat spans carrying every convention name, and one kept attribute."""

    def attribute(key: str, text_value: str) -> dict[str, Any]:
        return {"key": key, "value": {"stringValue": text_value}}

    spans = [
        {
            "traceId": trace_id,
            "spanId": f"{n + 1:016x}",
            "name": "chat gpt-4o-mini",
            "startTimeUnixNano": str(t0_ns + n * 1_000_000_000),
            "endTimeUnixNano": str(t0_ns + n * 1_000_000_000 + 300_000_000),
            "attributes": [
                attribute("gen_ai.operation.name", "chat"),
                attribute("gen_ai.request.model", "gpt-4o-mini"),
                attribute("tracewatch.route", "support/otlp"),
                attribute("region", "eu"),
                *(attribute(name, text(n, name)) for name in CONVENTION_NAMES),
            ],
        }
        for n in range(n_spans)
    ]
    return {"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}


def test_no_content_attribute_of_any_convention_is_stored_via_kafka_or_otlp(
    kafka_settings: KafkaSettings,
    tmp_path: Path,
    free_port: int,
    make_worker: Any,
    start_otlp: Any,
) -> None:
    t0 = time.time() - 3600
    sent = [
        {
            "event_id": f"convention-{n}", "trace_id": f"c-{n}", "ts": t0 + n, "kind": "llm",
            "route": "support/kafka", "model": "gpt-4o-mini",
            "attributes": {"region": "eu", **{name: text(n, name) for name in CONVENTION_NAMES}},
        }
        for n in range(10)
    ]  # fmt: skip
    with TraceProducer(settings=kafka_settings) as producer:
        for event in sent:
            producer.send(event)
    trace_id = "5bf92f3577b34da6a3ce929d0e0e4736"
    otlp_home = tmp_path / "otlp"
    otlp_home.mkdir()
    with start_otlp(kafka_settings, otlp_home) as url:
        body = json.dumps(otlp_body(trace_id, int(t0 * 1e9), 10)).encode()
        request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = json.loads(response.read())
    assert "partialSuccess" not in answer or not answer["partialSuccess"].get("rejectedSpans")
    ids = [e["event_id"] for e in sent] + [f"{trace_id}-{n + 1:016x}" for n in range(10)]

    worker = make_worker(kafka_settings, tmp_path, free_port)
    worker.start()
    worker.wait_for(lambda b: b["stored_events"] >= len(ids) and b["pending_events"] == 0)
    rows = query(
        worker,
        "SELECT event_id, attributes FROM {db:Identifier}.events "
        "WHERE event_id IN {ids:Array(String)}",
        ids=ids,
    )
    assert sorted(row[0] for row in rows) == sorted(ids)
    kept = sorted({n for _, a in rows for n, value in a.items() if "SECRET-" in str(value)})
    assert not kept, f"content attributes were stored: {kept}"
    assert all(attributes.get("region") == "eu" for _, attributes in rows)
    worker.stop()
