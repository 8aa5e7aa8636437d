"""Which attribute names are prompt, completion or tool content (tracewatch.schemas.content).

Each name below is a real attribute name of one of the conventions LLM apps are
traced with, listed with where it is defined, so a convention that grows a new
content attribute gets a new row here. Every name is checked as spelled, and
upper- and mixed-cased (apps and collectors do not agree on case).
"""

from __future__ import annotations

import pytest

from tracewatch.schemas import content
from tracewatch.schemas.content import is_content, without_content

#: (name, where it comes from)
CONTENT = [
    # OpenTelemetry GenAI semantic conventions (semconv gen_ai_attributes, v1.37+)
    ("gen_ai.input.messages", "OTel GenAI"),
    ("gen_ai.output.messages", "OTel GenAI"),
    ("gen_ai.system_instructions", "OTel GenAI"),
    ("gen_ai.tool.call.arguments", "OTel GenAI"),
    ("gen_ai.tool.call.result", "OTel GenAI"),
    ("gen_ai.tool.definitions", "OTel GenAI"),
    ("gen_ai.retrieval.query.text", "OTel GenAI"),
    ("gen_ai.retrieval.documents", "OTel GenAI"),
    ("gen_ai.evaluation.explanation", "OTel GenAI"),
    ("gen_ai.prompt", "OTel GenAI (deprecated event attribute)"),
    ("gen_ai.completion", "OTel GenAI (deprecated event attribute)"),
    ("gen_ai.user.message", "OTel GenAI (deprecated event name)"),
    ("gen_ai.system.message", "OTel GenAI (deprecated event name)"),
    ("gen_ai.assistant.message", "OTel GenAI (deprecated event name)"),
    ("gen_ai.tool.message", "OTel GenAI (deprecated event name)"),
    ("gen_ai.choice", "OTel GenAI (deprecated event name)"),
    ("gen_ai.content.prompt", "OTel GenAI (old event name)"),
    ("gen_ai.content.completion", "OTel GenAI (old event name)"),
    # OpenLLMetry / traceloop (opentelemetry-semantic-conventions-ai)
    ("gen_ai.prompt.0.content", "OpenLLMetry"),
    ("gen_ai.prompt.0.role", "OpenLLMetry"),
    ("gen_ai.completion.0.content", "OpenLLMetry"),
    ("gen_ai.completion.0.tool_calls.0.arguments", "OpenLLMetry"),
    ("llm.prompts.0.content", "OpenLLMetry (older)"),
    ("llm.completions.0.content", "OpenLLMetry (older)"),
    ("llm.request.functions.0.description", "OpenLLMetry"),
    ("llm.request.functions.0.parameters", "OpenLLMetry"),
    ("llm.content.completion.chunk", "OpenLLMetry"),
    ("traceloop.entity.input", "OpenLLMetry"),
    ("traceloop.entity.output", "OpenLLMetry"),
    ("traceloop.prompt.template", "OpenLLMetry"),
    ("traceloop.prompt.template_variables", "OpenLLMetry"),
    ("mcp.request.argument", "OpenLLMetry"),
    ("mcp.response.value", "OpenLLMetry"),
    ("haystack.openai.chat", "OpenLLMetry"),
    ("haystack.openai.completion", "OpenLLMetry"),
    ("db.query.result.document", "OpenLLMetry (vector DB event)"),
    # OpenInference (openinference-semantic-conventions)
    ("input.value", "OpenInference"),
    ("output.value", "OpenInference"),
    ("input.images.0.image.url", "OpenInference"),
    ("llm.input_messages.0.message.content", "OpenInference"),
    ("llm.input_messages.0.message.contents.0.message_content.text", "OpenInference"),
    ("llm.output_messages.0.message.content", "OpenInference"),
    ("llm.output_messages.0.message.tool_calls.0.tool_call.function.arguments", "OpenInference"),
    ("llm.prompts.0.prompt.text", "OpenInference"),
    ("llm.choices.0.completion.text", "OpenInference"),
    ("llm.prompt_template.template", "OpenInference"),
    ("llm.prompt_template.variables", "OpenInference"),
    ("llm.function_call", "OpenInference"),
    ("llm.tools.0.tool.json_schema", "OpenInference"),
    ("tool.parameters", "OpenInference"),
    ("tool.json_schema", "OpenInference"),
    ("retrieval.documents.0.document.content", "OpenInference"),
    ("retrieval.documents.0.document.metadata", "OpenInference"),
    ("reranker.query", "OpenInference"),
    ("reranker.input_documents.0.document.content", "OpenInference"),
    ("reranker.output_documents.0.document.content", "OpenInference"),
    ("embedding.embeddings.0.embedding.text", "OpenInference"),
    ("embedding.text", "OpenInference"),
    ("message.content", "OpenInference"),
    ("message.contents", "OpenInference"),
    ("message_content.text", "OpenInference"),
    ("message.function_call_arguments_json", "OpenInference"),
    ("tool_call.function.arguments", "OpenInference"),
    ("document.content", "OpenInference"),
    ("prompt.text", "OpenInference"),
    ("completion.text", "OpenInference"),
    ("audio.transcript", "OpenInference"),
    ("evaluation.explanation", "OpenInference"),
    ("annotation.explanation", "OpenInference"),
    # plain names apps use
    ("prompt", "plain"),
    ("messages", "plain"),
    ("system_prompt", "plain"),
    ("app.user.message.content", "plain (nested)"),
]

#: names that look close but are identifiers, counts or settings: kept
NOT_CONTENT = [
    ("gen_ai.prompt.name", "OTel GenAI: an identifier"),
    ("gen_ai.usage.input_tokens", "OTel GenAI"),
    ("gen_ai.usage.prompt_tokens", "OTel GenAI"),
    ("gen_ai.response.finish_reasons", "OTel GenAI"),
    ("gen_ai.tool.call.id", "OTel GenAI"),
    ("gen_ai.system", "OTel GenAI: the provider"),
    ("gen_ai.data_source.id", "OTel GenAI"),
    ("llm.token_count.prompt", "OpenInference: a count"),
    ("llm.token_count.completion", "OpenInference: a count"),
    ("llm.cost.prompt", "OpenInference: a cost"),
    ("llm.prompt_template.version", "OpenInference: a version"),
    ("llm.model_name", "OpenInference"),
    ("input.mime_type", "OpenInference"),
    ("tool.name", "OpenInference"),
    ("traceloop.entity.name", "OpenLLMetry"),
    ("traceloop.prompt.version", "OpenLLMetry"),
    ("llm.usage.total_tokens", "OpenLLMetry"),
    ("messaging.batch.message_count", "OTel messaging"),
    ("region", "app"),
    ("tier", "app"),
]


def spellings(name: str) -> list[str]:
    return [name, name.upper(), "".join(c.upper() if i % 2 else c for i, c in enumerate(name))]


@pytest.mark.parametrize(("name", "source"), CONTENT, ids=[n for n, _ in CONTENT])
def test_content_names_of_each_convention_are_content(name: str, source: str) -> None:
    for spelled in spellings(name):
        assert is_content(spelled), f"{spelled!r} ({source}) carries content and was kept"


@pytest.mark.parametrize(("name", "source"), NOT_CONTENT, ids=[n for n, _ in NOT_CONTENT])
def test_identifiers_and_counts_are_kept(name: str, source: str) -> None:
    for spelled in spellings(name):
        assert not is_content(spelled), f"{spelled!r} ({source}) is not content and was dropped"


def test_without_content_drops_every_spelling_and_keeps_the_rest() -> None:
    attributes: dict[str, object] = {name: "SECRET" for name, _ in CONTENT}
    attributes |= {"GEN_AI.PROMPT.0.CONTENT": "SECRET", "Input.Value": "SECRET"}
    attributes |= {name: 1 for name, _ in NOT_CONTENT}
    kept = without_content(attributes)
    assert kept == {name: 1 for name, _ in NOT_CONTENT}


def test_without_content_copies_nothing_when_nothing_is_content() -> None:
    assert without_content({"region": "eu", "tier": 2}) is None


def test_verdicts_are_cached_per_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hot path decides once per attribute name, then looks the verdict up."""
    calls: list[str] = []
    real = content.is_content

    def counting(name: str) -> bool:
        calls.append(name)
        return real(name)

    monkeypatch.setattr(content, "_VERDICTS", {})
    monkeypatch.setattr(content, "is_content", counting)
    batch = {"region": "eu", "GEN_AI.PROMPT.0.CONTENT": "SECRET", "tool.parameters": "{}"}
    for _ in range(100):
        assert without_content(batch) == {"region": "eu"}
    assert sorted(calls) == sorted(batch)
