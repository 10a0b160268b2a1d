"""Built-in gates: each endpoint uses the gate named after it unless the request names another.

A gates file may redefine any of them (same name) or add more. The instructions are starting points, written
for Qwen3-0.6B answering with thinking off; tune them on your own traffic.
"""

from __future__ import annotations

from qwick.gates.spec import GateSpec

MODERATION_LABELS = ("safe", "violence", "sexual", "self_harm", "hate", "harassment", "illegal")
REWRITE_REASONS = ("unchanged", "spelling", "clarified", "expanded", "shortened")
RERANK_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"

BUILTIN_GATES: tuple[GateSpec, ...] = (
    GateSpec(
        name="moderate",
        kind="moderate",
        description="Content safety: allow iff P(safe) >= 0.5; escalate close calls for review.",
        instruction=(
            "You are a content safety classifier. Read the user's message and answer with exactly one category "
            "from this list: {labels}.\n"
            "- safe: ordinary content with no policy concern.\n"
            "- violence: threats, incitement or glorification of physical harm.\n"
            "- sexual: sexually explicit content, or any sexual content involving minors.\n"
            "- self_harm: encouragement of or instructions for suicide or self-injury.\n"
            "- hate: attacks on people for a protected attribute (race, religion, gender, ...).\n"
            "- harassment: insults, bullying or intimidation of a person.\n"
            "- illegal: help with crimes such as weapons, drugs, fraud or hacking.\n"
            "Answer with the category name only."
        ),
        labels=MODERATION_LABELS,
        threshold=0.5,
        escalate_margin=0.2,
        deadline_ms=2000,
        on_timeout="escalate",
    ),
    GateSpec(
        name="classify",
        kind="classify",
        description="Intent of a search or chat message.",
        instruction=(
            "Classify the intent of the user's message. Answer with exactly one label from this list: {labels}. "
            "Answer with the label only."
        ),
        labels=("question", "purchase", "support", "complaint", "other"),
        deadline_ms=2000,
    ),
    GateSpec(
        name="rewrite",
        kind="rewrite",
        description="Rewrite a search query so a search engine finds what the user wants.",
        instruction=(
            "Rewrite the user's search query so that a web search engine finds what they want: fix spelling, "
            "expand abbreviations, remove filler words. Keep the language of the query. Reply with JSON: "
            '{"rewrite": the new query, "reason_code": one of ' + ", ".join(REWRITE_REASONS) + "}."
        ),
        schema={
            "type": "object",
            "properties": {"rewrite": {"type": "string"}, "reason_code": {"enum": list(REWRITE_REASONS)}},
            "required": ["rewrite", "reason_code"],
            "additionalProperties": False,
        },
        max_tokens=128,
        deadline_ms=5000,
    ),
    GateSpec(
        name="score",
        kind="score",
        description="Query x document relevance, P(yes) in Qwen3-Reranker's prompt format.",
        instruction=RERANK_INSTRUCTION,
        deadline_ms=10000,
    ),
)
