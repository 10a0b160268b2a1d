"""Request fields -> StructuredOutputsParams, checked (compiled) before any generation.

Sources, at most one per request: OpenAI's `response_format`, vLLM's `structured_outputs` object, vLLM's older
`guided_json` / `guided_regex` / `guided_choice` / `guided_grammar`, and, for chat, `tool_choice` "required" or a
named function, which forces Hermes-format `<tool_call>` blocks whose JSON matches the tools' parameters.
"""

from __future__ import annotations

from typing import Any

from qwick.engine.grammar import GrammarCompiler, StructuredOutputError
from qwick.sampling_params import STRUCTURED_KINDS, StructuredOutputsParams
from qwick.server.errors import bad_request
from qwick.server.protocol.base import SamplingFields
from qwick.server.protocol.chat import NamedToolChoice, ToolDefinition
from qwick.tokenizer.tool_grammar import check_tool_name, tool_calls_lark

GUIDED_FIELDS = {"guided_json": "json", "guided_regex": "regex", "guided_choice": "choice",
                 "guided_grammar": "grammar"}


def requested_structure(body: SamplingFields) -> tuple[StructuredOutputsParams, str] | None:
    """The request's constraint and the field it came from (for error messages), or None."""
    sources: list[tuple[str, dict[str, Any]]] = []
    fmt = body.response_format
    if fmt is not None and fmt.type == "json_object":
        sources.append(("response_format", {"json_object": True}))
    elif fmt is not None and fmt.type == "json_schema":
        if fmt.json_schema is None or fmt.json_schema.json_schema is None:
            raise bad_request("response_format of type 'json_schema' needs json_schema.schema",
                              param="response_format.json_schema", code="invalid_value")
        sources.append(("response_format", {"json": fmt.json_schema.json_schema}))
    if body.structured_outputs is not None:
        unknown = sorted(set(body.structured_outputs) - set(STRUCTURED_KINDS))
        if unknown:
            raise bad_request(f"structured_outputs: unsupported fields {unknown}; use one of "
                              f"{list(STRUCTURED_KINDS)}", param="structured_outputs", code="invalid_value")
        sources.append(("structured_outputs", dict(body.structured_outputs)))
    for name, kind in GUIDED_FIELDS.items():
        value = getattr(body, name)
        if value is not None:
            sources.append((name, {kind: value}))
    if not sources:
        return None
    if len(sources) > 1:
        raise bad_request(f"give one structured-output constraint, not several: {[n for n, _ in sources]}",
                          param=sources[1][0], code="invalid_value")
    name, fields = sources[0]
    try:
        return StructuredOutputsParams(**fields), name
    except (TypeError, ValueError) as exc:
        raise bad_request(str(exc), param=name, code="invalid_value") from None


def tool_call_structure(tools: list[ToolDefinition] | None, tool_choice: str | NamedToolChoice | None,
                        parallel: bool | None) -> StructuredOutputsParams | None:
    """For tool_choice "required" or a named function: a grammar of one or more `<tool_call>` blocks."""
    if tool_choice is None or tool_choice in ("auto", "none"):
        return None
    if not tools:
        raise bad_request("tool_choice requires 'tools'", param="tool_choice", code="invalid_value")
    chosen = tools
    if isinstance(tool_choice, NamedToolChoice):
        name = tool_choice.function.get("name")
        chosen = [t for t in tools if t.function.name == name]
        if not isinstance(name, str) or not chosen:
            raise bad_request(f"tool_choice names function {name!r}, which is not in 'tools' "
                              f"({[t.function.name for t in tools]})", param="tool_choice", code="invalid_value")
        parallel = False  # a named function means one call to it
    for i, tool in enumerate(tools):
        problem = check_tool_name(tool.function.name)
        if problem is not None:
            raise bad_request(problem, param=f"tools[{i}].function.name", code="invalid_value")
    functions = [{"name": t.function.name, "parameters": t.function.parameters} for t in chosen]
    return StructuredOutputsParams(grammar=tool_calls_lark(functions, parallel is not False))


def check_structure(grammars: GrammarCompiler, params: StructuredOutputsParams, field: str) -> None:
    """Compile now (cached for the engine), so a bad schema is a 400 before any generation. Slow for a big
    grammar (up to ~100 ms within the limits): callers run it on a worker thread."""
    try:
        grammars.compile(params)
    except StructuredOutputError as exc:
        message = str(exc)
        if field != "structured_outputs":  # name the request's own field: guided_regex, not structured_outputs.regex
            message = message.replace(f"structured_outputs.{params.kind}", field, 1)
        raise bad_request(message, param=field, code="invalid_value") from None
