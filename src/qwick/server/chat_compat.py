"""OpenAI chat request variants mapped onto what Qwen3's template and the engine take.

- Messages: text and `refusal` content parts joined as text, `developer` as `system`, legacy `function` messages
  as tool results, an assistant's legacy `function_call` as one tool call.
- Legacy `functions` / `function_call` become `tools` / `tool_choice`; replies use `tool_calls` (the current
  form), never the deprecated `message.function_call`.
- `reasoning_effort`: Qwen3 either thinks or not, so "none" / "minimal" turn thinking off and "low" / "medium" /
  "high" leave it on; there is no finer budget (see `max_thinking_tokens` for one).
- Options that would change what the caller gets and that qwick cannot honour (audio output, web search,
  predicted outputs) are refused by name rather than ignored.
"""

from __future__ import annotations

from typing import Any

import jinja2

from qwick.server.errors import bad_request, not_supported
from qwick.server.protocol.chat import (
    ChatCompletionRequest,
    ChatMessage,
    NamedToolChoice,
    ToolCallIn,
    ToolDefinition,
)
from qwick.tokenizer import Tokenizer

# chat_template_kwargs may not override what the server itself passes to the template
RESERVED_TEMPLATE_KWARGS = frozenset({"messages", "tools", "add_generation_prompt", "tokenize", "chat_template"})
THINKING_EFFORTS = {"none": False, "minimal": False, "low": True, "medium": True, "high": True}
UNSUPPORTED_OPTIONS = {"audio": "audio output", "web_search_options": "web search",
                       "prediction": "predicted outputs"}


def refuse_unsupported(body: ChatCompletionRequest) -> None:
    if body.modalities is not None and "audio" in body.modalities:
        raise not_supported("audio output (modalities 'audio')", "modalities")
    for name, feature in UNSUPPORTED_OPTIONS.items():
        if getattr(body, name) is not None:
            raise not_supported(feature, name)


def with_legacy_functions(body: ChatCompletionRequest) -> ChatCompletionRequest:
    """The request with `functions` / `function_call` moved to `tools` / `tool_choice`."""
    if body.functions is None and body.function_call is None:
        return body
    if body.tools is not None or body.tool_choice is not None:
        param = "functions" if body.functions is not None else "function_call"
        raise bad_request(f"'{param}' (legacy) cannot be combined with 'tools' / 'tool_choice': send one form",
                          param=param, code="invalid_value")
    if body.functions is None:
        raise bad_request("'function_call' needs 'functions'", param="function_call", code="invalid_value")
    choice: str | NamedToolChoice | None
    if isinstance(body.function_call, dict):
        name = body.function_call.get("name")
        names = [function.name for function in body.functions]
        if name not in names:
            raise bad_request(f"'function_call' must be \"none\", \"auto\" or {{\"name\": <one of {names}>}}, "
                              f"got {body.function_call!r}", param="function_call", code="invalid_value")
        choice = NamedToolChoice(function={"name": name})
    else:
        choice = body.function_call
    tools = [ToolDefinition(function=function) for function in body.functions]
    return body.model_copy(update={"tools": tools, "tool_choice": choice, "functions": None, "function_call": None})


def template_kwargs(body: ChatCompletionRequest) -> dict[str, Any]:
    """chat_template_kwargs, with `reasoning_effort` as `enable_thinking` (the two may not disagree)."""
    kwargs = dict(body.chat_template_kwargs or {})
    if body.reasoning_effort is None:
        return kwargs
    thinking = THINKING_EFFORTS[body.reasoning_effort]
    if "enable_thinking" in kwargs and bool(kwargs["enable_thinking"]) != thinking:
        raise bad_request(f"reasoning_effort {body.reasoning_effort!r} contradicts chat_template_kwargs."
                          f"enable_thinking={kwargs['enable_thinking']!r}: send one of them",
                          param="reasoning_effort", code="invalid_value")
    kwargs["enable_thinking"] = thinking
    return kwargs


def render_chat(tokenizer: Tokenizer, messages: list[ChatMessage], tools: list[ToolDefinition] | None,
                add_generation_prompt: bool, template_kwargs: dict[str, Any]) -> str:
    """The prompt text; a template that rejects the conversation (it may raise) is the client's 400."""
    reserved = sorted(RESERVED_TEMPLATE_KWARGS & template_kwargs.keys())
    if reserved:
        raise bad_request(f"chat_template_kwargs may not set {reserved}: the server sets them",
                          param="chat_template_kwargs")
    plain = [_template_message(i, m) for i, m in enumerate(messages)]
    tool_dicts = [tool.model_dump(exclude_none=True) for tool in tools] if tools else None
    try:
        prompt = tokenizer.apply_chat_template(plain, tools=tool_dicts, add_generation_prompt=add_generation_prompt,
                                               **template_kwargs)
    except (jinja2.TemplateError, TypeError, ValueError) as exc:
        raise bad_request(f"the chat template cannot render these messages: {exc}", param="messages") from None
    assert isinstance(prompt, str)
    return prompt


def _template_message(i: int, message: ChatMessage) -> dict[str, Any]:
    """A message as the chat template reads it (see the module docstring)."""
    content = message.content
    if isinstance(content, list):
        texts = []
        for j, part in enumerate(content):
            text = part.text if part.type == "text" else part.refusal if part.type == "refusal" else None
            if text is None:
                raise bad_request(f"content parts of type {part.type!r} are not supported: send text parts",
                                  param=f"messages[{i}].content[{j}]", code="invalid_value")
            texts.append(text)
        content = "\n".join(texts)
    calls = message.tool_calls
    if message.function_call is not None and message.role == "assistant":
        calls = [*(calls or []), ToolCallIn(function=message.function_call)]
    if content is None and not (message.role == "assistant" and calls):
        raise bad_request(f"messages[{i}] ({message.role}) needs 'content'", param=f"messages[{i}].content")
    role = {"developer": "system", "function": "tool"}.get(message.role, message.role)
    out: dict[str, Any] = {"role": role, "content": content or ""}
    if message.name is not None:
        out["name"] = message.name
    if calls:
        out["tool_calls"] = [call.model_dump() for call in calls]
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    reasoning = message.reasoning_content if message.reasoning_content is not None else message.reasoning
    if reasoning is not None:
        out["reasoning_content"] = reasoning
    return out
