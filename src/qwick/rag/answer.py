"""Grounded answers: the prompt that shows the retrieved chunks as numbered sources, and the constraints that
make a citation to anything else impossible to generate.

Text answers: a regex over the whole answer in which `[` and `]` appear only in markers `[1]`..`[K]`, K the
number of sources shown. JSON answers: a schema `{"answer", "citations": [{"id", "quote"?}]}` in which each
citation is one of the shown chunks (`id` an enum of their ids) and its optional quote one of that chunk's own
sentences (whitespace collapsed), so a quote is copied, never invented. The model answers with thinking off, so
the constraint applies from the first token.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from qwick.rag.chunking import PARAGRAPH, SENTENCE

SYSTEM = ("You answer questions using only the numbered sources given. After each statement, cite the sources "
          "that support it by their number in square brackets, like [1]. If the sources do not answer the "
          "question, say that you do not know.")
JSON_SYSTEM = ("You answer questions using only the sources given. Reply with JSON: {\"answer\": your answer, "
               "\"citations\": [{\"id\": the id of a source that supports it, \"quote\": a sentence copied from "
               "that source}]}. If the sources do not answer the question, say that you do not know.")
NOTHING_RELEVANT = "I could not find anything relevant to this question in the index, so I cannot answer it."
MAX_QUOTES = 32  # sentences per chunk a JSON citation may quote
MAX_QUOTE_CHARS = 400
_MARKER = re.compile(r"\[(\d+)\]")


@dataclass(frozen=True)
class Source:
    id: str
    source: str
    text: str


def messages(question: str, sources: Sequence[Source], as_json: bool) -> list[dict[str, str]]:
    if as_json:
        shown = "\n\n".join(f"id: {s.id} (from {s.source})\n{s.text}" for s in sources)
    else:
        shown = "\n\n".join(f"[{i}] (from {s.source})\n{s.text}" for i, s in enumerate(sources, 1))
    user = f"Sources:\n\n{shown}\n\nQuestion: {question}"
    return [{"role": "system", "content": JSON_SYSTEM if as_json else SYSTEM}, {"role": "user", "content": user}]


def marker_regex(count: int) -> str:
    """Any text in which brackets appear only as citation markers [1]..[count]."""
    numbers = "|".join(str(i) for i in range(1, count + 1))
    return rf"([^\[\]]|\[({numbers})\])*"


def quotes(text: str) -> list[str]:
    """The sentences of a chunk a citation may quote: whitespace collapsed, at most MAX_QUOTES of them."""
    found: list[str] = []
    for paragraph in PARAGRAPH.split(text):
        for sentence in SENTENCE.split(paragraph):
            sentence = " ".join(sentence.split())
            if len(sentence) >= 3 and sentence not in found:
                found.append(sentence[:MAX_QUOTE_CHARS])
    return found[:MAX_QUOTES]


def answer_schema(sources: Sequence[Source]) -> dict[str, Any]:
    """The JSON answer's schema: citation ids are an enum of the sources' ids; answer text may hold no
    brackets other than markers of the shown sources."""
    def citation(s: Source) -> dict[str, Any]:
        properties: dict[str, Any] = {"id": {"enum": [s.id]}}
        found = quotes(s.text)
        if found:
            properties["quote"] = {"enum": found}
        return {"type": "object", "properties": properties, "required": ["id"], "additionalProperties": False}

    items: dict[str, Any] = {"anyOf": [citation(s) for s in sources]} if sources else {"not": {}}
    return {
        "type": "object",
        "properties": {
            "answer": {"type": "string", "pattern": "^" + marker_regex(len(sources)) + "$"},
            "citations": {"type": "array", "items": items},
        },
        "required": ["answer", "citations"],
        "additionalProperties": False,
    }


def parse_text(text: str, sources: Sequence[Source]) -> list[dict[str, Any]]:
    """Citations of a text answer, in order of first mention. A marker outside [1..K] cannot be generated under
    the grammar: finding one means the constraint did not hold, which is an error, not a citation dropped."""
    cited: list[dict[str, Any]] = []
    for match in _MARKER.finditer(text):
        number = int(match.group(1))
        if not 1 <= number <= len(sources):
            raise RuntimeError(f"the answer cites [{number}] but only {len(sources)} sources were shown")
        source = sources[number - 1]
        if all(c["id"] != source.id for c in cited):
            cited.append({"id": source.id, "source": source.source})
    return cited


def parse_json(text: str, sources: Sequence[Source]) -> tuple[str, list[dict[str, Any]]] | None:
    """(answer, citations) of a JSON answer, or None if it is not complete valid JSON of the schema (cut by
    max_tokens); a complete answer that breaks the schema is an error (the grammar should have prevented it)."""
    import jsonschema

    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None
    try:
        jsonschema.validate(value, answer_schema(sources))
    except jsonschema.ValidationError as exc:
        raise RuntimeError(f"the JSON answer breaks its schema: {exc.message}") from None
    by_id = {s.id: s for s in sources}
    citations = []
    for c in value["citations"]:
        entry = {"id": c["id"], "source": by_id[c["id"]].source}
        if "quote" in c:
            entry["quote"] = c["quote"]
        citations.append(entry)
    parse_text(value["answer"], sources)  # markers in the answer text must name shown sources too
    return value["answer"], citations
