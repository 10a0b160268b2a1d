"""OpenAI Responses requests as chat requests, so /v1/responses renders, samples, constrains and parses exactly
as /v1/chat/completions does.

Mapping (the README documents it for users):
- `instructions` -> a system message first; a string `input` -> one user message; message items -> messages
  (input_text / output_text parts joined by newlines); function_call items -> the assistant's tool_calls
  (consecutive calls share one assistant message); function_call_output -> tool messages; reasoning items ->
  the next assistant message's reasoning_content.
- `tool_choice` auto / none / required / {"type": "function", "name"} as chat's (required and named forced by
  the tool-call grammar); `max_output_tokens` -> max_tokens.
- `reasoning.effort`: "none" / "minimal" -> Qwen3's thinking off, any other -> on; absent -> Qwen3's default
  (on), as chat completions.
- `text.format` json_schema / json_object -> structured output, as chat's response_format.
- No server-side state: `store` is accepted and nothing is stored; `previous_response_id`, `conversation`,
  `background` and stored `prompt`s are refused with a 400 naming them.
"""

from __future__ import annotations

from typing import Any

from qwick.server.errors import APIError, bad_request, not_supported
from qwick.server.protocol.chat import ChatCompletionRequest
from qwick.server.protocol.responses import ContentPartIn, InputItem, ResponsesRequest

TEXT_PARTS = ("input_text", "output_text", "text")
# chat's field names -> the Responses request's, for errors raised while planning the chat request
FIELD_NAMES = {"max_tokens": "max_output_tokens", "response_format": "text.format", "messages": "input",
               "reasoning_effort": "reasoning.effort"}
STATEFUL = {"previous_response_id": "previous_response_id (qwick keeps no responses: send the whole "
                                    "conversation in 'input')",
            "conversation": "conversation (qwick keeps no conversations: send them in 'input')",
            "prompt": "stored prompts ('prompt')"}


def chat_request(body: ResponsesRequest) -> ChatCompletionRequest:
    for name, feature in STATEFUL.items():
        if getattr(body, name) is not None:
            raise not_supported(feature, name)
    if body.background:
        raise not_supported("background responses", "background")
    fields: dict[str, Any] = {"model": body.model, "messages": chat_messages(body), "max_tokens": body.max_output_tokens,
                              "temperature": body.temperature, "top_p": body.top_p,
                              "parallel_tool_calls": body.parallel_tool_calls}
    fields.update(_tools(body))
    if body.reasoning is not None and body.reasoning.effort is not None:
        fields["reasoning_effort"] = "high" if body.reasoning.effort == "xhigh" else body.reasoning.effort
    fmt = body.text.format if body.text is not None else None
    if fmt is not None and fmt.type == "json_object":
        fields["response_format"] = {"type": "json_object"}
    elif fmt is not None and fmt.type == "json_schema":
        if fmt.json_schema is None:
            raise bad_request("text.format of type 'json_schema' needs 'schema'", param="text.format.schema",
                              code="invalid_value")
        fields["response_format"] = {"type": "json_schema", "json_schema": {"name": fmt.name or "output",
                                                                            "schema": fmt.json_schema}}
    return ChatCompletionRequest.model_validate({k: v for k, v in fields.items() if v is not None})


def renamed(exc: APIError) -> APIError:
    """An error from planning the chat request, naming the Responses request's field instead of chat's."""
    if exc.param is not None:
        head, dot, rest = exc.param.partition(".")
        if head in FIELD_NAMES:
            exc.message = exc.message.replace(f"'{head}'", f"'{FIELD_NAMES[head]}'")
            exc.param = FIELD_NAMES[head] + dot + rest
    return exc


def chat_messages(body: ResponsesRequest) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{"role": "system", "content": body.instructions}] if body.instructions else []
    if isinstance(body.input, str):
        return [*out, {"role": "user", "content": body.input}]
    if not body.input:
        raise bad_request("'input' must hold at least one item", param="input", code="invalid_value")
    calls: dict[str, int] = {}  # call_id -> the function_call item's index, until its output is seen
    reasoning: list[str] = []  # reasoning items waiting for the assistant message they belong to
    for i, item in enumerate(body.input):
        if item.type == "message":
            out.append(_message(i, item, reasoning))
        elif item.type == "function_call":
            out.append(_function_call(i, item, out, calls, reasoning))
        elif item.type == "function_call_output":
            if item.call_id not in calls:
                raise bad_request(f"input[{i}] answers call_id {item.call_id!r}, which no earlier function_call "
                                  "item has (or which was answered already)", param=f"input[{i}].call_id",
                                  code="invalid_value")
            del calls[item.call_id]
            output = item.output if isinstance(item.output, str) else _text(i, item.output or [], "output")
            out.append({"role": "tool", "tool_call_id": item.call_id, "content": output})
        elif item.type == "reasoning":
            if isinstance(item.content, str):
                reasoning.append(item.content)
            else:  # its reasoning_text parts, else its summary
                reasoning.append(_text(i, item.content or item.summary or [], "content"))
        else:
            raise not_supported(f"input items of type {item.type!r}", f"input[{i}].type")
    if calls:
        first = min(calls.values())
        raise bad_request(f"no function_call_output item for call_id(s) {sorted(calls)}: each function_call "
                          "needs its output before the model can go on", param=f"input[{first}].call_id",
                          code="invalid_value")
    return [message for message in out if message]


def _message(i: int, item: InputItem, reasoning: list[str]) -> dict[str, Any]:
    if item.role is None:
        raise bad_request(f"input[{i}] (a message) needs 'role'", param=f"input[{i}].role", code="invalid_value")
    if item.content is None:
        raise bad_request(f"input[{i}] (a message) needs 'content'", param=f"input[{i}].content",
                          code="invalid_value")
    content = item.content if isinstance(item.content, str) else _text(i, item.content, "content")
    message: dict[str, Any] = {"role": item.role, "content": content}
    if item.role == "assistant" and reasoning:
        message["reasoning_content"] = "\n".join(reasoning)
        reasoning.clear()
    return message


def _function_call(i: int, item: InputItem, out: list[dict[str, Any]], calls: dict[str, int],
                   reasoning: list[str]) -> dict[str, Any]:
    """The call joins the assistant message just before it (a turn of several calls), else makes its own;
    returns the message to append ({} when it joined one)."""
    for name in ("call_id", "name", "arguments"):
        if getattr(item, name) is None:
            raise bad_request(f"input[{i}] (a function_call) needs '{name}'", param=f"input[{i}].{name}",
                              code="invalid_value")
    assert item.call_id is not None
    if item.call_id in calls:
        raise bad_request(f"call_id {item.call_id!r} is used twice", param=f"input[{i}].call_id",
                          code="invalid_value")
    calls[item.call_id] = i
    call = {"id": item.call_id, "type": "function", "function": {"name": item.name, "arguments": item.arguments}}
    last = out[-1] if out else {}
    if last.get("role") == "assistant" and not reasoning:
        last.setdefault("tool_calls", []).append(call)
        return {}
    message: dict[str, Any] = {"role": "assistant", "content": "", "tool_calls": [call]}
    if reasoning:
        message["reasoning_content"] = "\n".join(reasoning)
        reasoning.clear()
    return message


def _text(i: int, parts: list[ContentPartIn], field: str) -> str:
    texts = []
    for j, part in enumerate(parts):
        if part.type not in (*TEXT_PARTS, "reasoning_text", "summary_text") or part.text is None:
            raise not_supported(f"{part.type!r} content (qwick serves text-only Qwen3 models: send input_text)",
                                f"input[{i}].{field}[{j}]")
        texts.append(part.text)
    return "\n".join(texts)


def _tools(body: ResponsesRequest) -> dict[str, Any]:
    for i, tool in enumerate(body.tools or []):
        if tool.type != "function":
            raise not_supported(f"{tool.type!r} tools (qwick runs function tools)", f"tools[{i}].type")
        if not tool.name:
            raise bad_request(f"tools[{i}] needs 'name'", param=f"tools[{i}].name", code="invalid_value")
    tools = [{"type": "function", "function": {"name": t.name, "description": t.description,
                                               "parameters": t.parameters}} for t in body.tools or []]
    choice: Any = body.tool_choice
    if choice is not None and not isinstance(choice, str):
        choice = {"type": "function", "function": {"name": choice.name}}
    return {"tools": tools or None, "tool_choice": choice}
