"""Which attribute names carry prompt, completion or tool content.

The contract: "Prompt and completion text are not part of the contract and are
not stored unless an operator opts in". Unknown top-level fields are never
stored; attributes are, so apps that put the conversation into ``attributes``
(or OpenTelemetry instrumentations, whose content attributes have well-known
names) would leak it into ClickHouse. The worker drops these attributes unless
``TRACEWATCH_WORKER_STORE_CONTENT=true``, and the OTLP receiver never copies them.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["CONTENT_ATTRIBUTES", "CONTENT_NAMES", "is_content", "without_content"]

#: Attribute names (and name prefixes) whose values are prompt, completion or tool
#: content: the OpenTelemetry GenAI conventions, OpenLLMetry and OpenInference.
CONTENT_ATTRIBUTES: tuple[str, ...] = (
    "gen_ai.input.messages",
    "gen_ai.output.messages",
    "gen_ai.system_instructions",
    "gen_ai.prompt",
    "gen_ai.completion",
    "gen_ai.tool.call.arguments",
    "gen_ai.tool.call.result",
    "gen_ai.tool.definitions",
    "gen_ai.retrieval.query.text",
    "gen_ai.retrieval.documents",
    "gen_ai.evaluation.explanation",
    "llm.prompts",
    "llm.completions",
    "llm.input_messages",
    "llm.output_messages",
    "input.value",
    "output.value",
)

#: Plain attribute names apps use for the conversation itself (compared lower-cased).
CONTENT_NAMES: frozenset[str] = frozenset(
    {
        "prompt", "prompts", "completion", "completions", "messages", "message", "input",
        "output", "response", "system_prompt", "instructions", "query", "question", "answer",
        "content", "text",
    }
)  # fmt: skip

#: Identifiers under a content prefix, safe to keep.
_NOT_CONTENT = frozenset({"gen_ai.prompt.name"})


def is_content(name: str) -> bool:
    if name in _NOT_CONTENT:
        return False
    return name.lower() in CONTENT_NAMES or name.startswith(CONTENT_ATTRIBUTES)


#: verdicts per attribute name seen: apps use a handful of names over and over, so the
#: hot path pays a dict lookup per attribute, not a prefix scan (cleared when large)
_VERDICTS: dict[str, bool] = {}
_MAX_VERDICTS = 10_000


def without_content(attributes: Mapping[str, object]) -> dict[str, object] | None:
    """The attributes without content, or None when there is nothing to drop (no copy)."""
    verdicts = _VERDICTS
    for name in attributes:
        verdict = verdicts.get(name)
        if verdict is None:
            if len(verdicts) >= _MAX_VERDICTS:
                verdicts.clear()
            verdict = verdicts[name] = is_content(name)
        if verdict:
            return {k: v for k, v in attributes.items() if not is_content(k)}
    return None
