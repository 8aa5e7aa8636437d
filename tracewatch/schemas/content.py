"""Which attribute names carry prompt, completion, document or tool content.

The contract: "Prompt and completion text are not part of the contract and are
not stored unless an operator opts in". Unknown top-level fields are never
stored; attributes are, so apps that put the conversation into ``attributes``
(or OpenTelemetry instrumentations, whose content attributes have well-known
names) would leak it into ClickHouse. The worker drops these attributes unless
``TRACEWATCH_WORKER_STORE_CONTENT=true``, and the OTLP receiver never copies them.

Three conventions name content attributes, and each flattens lists into indexed
names (``gen_ai.prompt.0.content``, ``llm.input_messages.0.message.content``):

- OpenTelemetry GenAI: ``gen_ai.input.messages``, ``gen_ai.system_instructions``,
  ``gen_ai.tool.call.arguments`` …, and the older event names (``gen_ai.user.message``,
  ``gen_ai.choice`` …);
- OpenLLMetry (traceloop): ``gen_ai.prompt.N.*``, ``gen_ai.completion.N.*``,
  ``llm.request.functions.N.*``, ``traceloop.entity.input`` / ``output`` …;
- OpenInference: ``input.value``, ``output.value``, ``llm.input_messages.*``,
  ``retrieval.documents.*``, ``tool.parameters``, ``reranker.query`` ….

A name is content when, compared lower-cased (senders do not agree on case), it
is one of ``CONTENT_NAMES``, starts with a namespace of ``CONTENT_ATTRIBUTES``, or
holds one of ``CONTENT_SEGMENTS`` as whole dotted segments anywhere (the nested
objects of OpenInference: ``….message.content``, ``….document.content``), or its
last segment is one of ``CONTENT_LEAVES``. ``tests/schemas/test_content.py`` lists
each convention's real names with their source.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = [
    "CONTENT_ATTRIBUTES",
    "CONTENT_LEAVES",
    "CONTENT_NAMES",
    "CONTENT_SEGMENTS",
    "is_content",
    "without_content",
]

#: Namespaces (lower-case name prefixes) whose values are content.
CONTENT_ATTRIBUTES: tuple[str, ...] = (
    # OpenTelemetry GenAI
    "gen_ai.input.messages",
    "gen_ai.output.messages",
    "gen_ai.system_instructions",
    "gen_ai.prompt",  # also OpenLLMetry's gen_ai.prompt.N.*
    "gen_ai.completion",  # also OpenLLMetry's gen_ai.completion.N.*
    "gen_ai.tool.call.arguments",
    "gen_ai.tool.call.result",
    "gen_ai.tool.definitions",
    "gen_ai.retrieval.query.text",
    "gen_ai.retrieval.documents",
    "gen_ai.evaluation.explanation",
    "gen_ai.user.message",
    "gen_ai.system.message",
    "gen_ai.assistant.message",
    "gen_ai.tool.message",
    "gen_ai.choice",
    "gen_ai.content.",
    # OpenLLMetry (traceloop)
    "llm.prompts",
    "llm.completions",
    "llm.request.functions",
    "llm.content.",
    "traceloop.entity.input",
    "traceloop.entity.output",
    "traceloop.prompt.template",
    "mcp.request.argument",
    "mcp.response.value",
    "haystack.openai.",
    "db.query.result.document",
    # OpenInference
    "input.value",
    "output.value",
    "input.images",
    "input.documents",
    "llm.input_messages",
    "llm.output_messages",
    "llm.choices",
    "llm.prompt_template.",
    "llm.function_call",
    "llm.tools",
    "tool.parameters",
    "tool.json_schema",
    "retrieval.documents",
    "reranker.query",
    "reranker.input_documents",
    "reranker.output_documents",
    "embedding.embeddings",
    "embedding.text",
)

#: Dotted segments that are content wherever they appear in a name (OpenInference's
#: nested objects, which also appear on their own: ``message.content``).
CONTENT_SEGMENTS: tuple[str, ...] = (
    "message.content",
    "message.contents",
    "message_content.text",
    "message.function_call_arguments_json",
    "tool_call.function.arguments",
    "document.content",
    "embedding.text",
    "prompt.text",
    "completion.text",
    "audio.transcript",
    "evaluation.explanation",
    "annotation.explanation",
)

#: Last segments that are content in any namespace (``app.chat.messages``).
CONTENT_LEAVES: frozenset[str] = frozenset({"content", "contents", "messages"})

#: Plain attribute names apps use for the conversation itself.
CONTENT_NAMES: frozenset[str] = frozenset(
    {
        "prompt", "prompts", "completion", "completions", "messages", "message", "input",
        "output", "response", "system_prompt", "instructions", "query", "question", "answer",
        "content", "text",
    }
)  # fmt: skip

#: Identifiers under a content namespace, safe to keep.
_NOT_CONTENT = frozenset({"gen_ai.prompt.name", "llm.prompt_template.version"})

_SEGMENTS = tuple(f".{segment}." for segment in CONTENT_SEGMENTS)


def is_content(name: str) -> bool:
    """Whether an attribute of this name carries content (case does not matter)."""
    lower = name.lower()
    if lower in _NOT_CONTENT:
        return False
    if lower in CONTENT_NAMES or lower.startswith(CONTENT_ATTRIBUTES):
        return True
    if lower.rpartition(".")[2] in CONTENT_LEAVES:
        return True
    dotted = f".{lower}."
    return any(segment in dotted for segment in _SEGMENTS)


#: verdicts per attribute name seen: apps use a handful of names over and over, so the
#: hot path pays a dict lookup per attribute, not the checks above (cleared when large)
_VERDICTS: dict[str, bool] = {}
_MAX_VERDICTS = 10_000


def _verdict(name: str) -> bool:
    verdicts = _VERDICTS
    verdict = verdicts.get(name)
    if verdict is None:
        if len(verdicts) >= _MAX_VERDICTS:
            verdicts.clear()
        verdict = verdicts[name] = is_content(name)
    return verdict


def without_content(attributes: Mapping[str, object]) -> dict[str, object] | None:
    """The attributes without content, or None when there is nothing to drop (no copy)."""
    verdicts = _VERDICTS
    for name in attributes:
        verdict = verdicts.get(name)  # inlined _verdict: this loop runs for every event
        if verdict is None:
            verdict = _verdict(name)
        if verdict:
            return {k: v for k, v in attributes.items() if not _verdict(k)}
    return None
