"""Anthropic Messages requests as chat requests, so /v1/messages renders, samples, constrains and parses exactly
as /v1/chat/completions does (the same prompt for the same conversation, the same grammar-forced tool calls).

Mapping (the README documents it for users):
- `system` (a string or text blocks, joined by newlines) -> a system message; `tool_result` blocks -> `tool`
  messages (before the turn's text; `is_error` results are prefixed "Error: "); `tool_use` -> `tool_calls`;
  `thinking` blocks -> the assistant's `reasoning_content`.
- `tool_choice` auto / any / tool / none -> auto / required / the named function / none (any and tool are
  forced through the tool-call grammar); `disable_parallel_tool_use` -> parallel_tool_calls false (enforced by
  the grammar only when the call is forced).
- `thinking`: absent or "disabled" -> Qwen3's thinking off (Claude's default is no thinking); "enabled" -> on,
  `budget_tokens` the thinking budget (1 <= budget_tokens < max_tokens: Anthropic's floor of 1024 is not
  required of a small model); "adaptive" -> on, no budget.
- `output_config.format` json_schema -> structured output, as chat's response_format.
"""

from __future__ import annotations

import json
import re
from typing import Any

from qwick.server.errors import APIError, bad_request, not_supported
from qwick.server.protocol.anthropic import (
    AnthropicMessage,
    CountTokensRequest,
    MessagesRequest,
    TextBlockIn,
    ThinkingBlockIn,
    ToolResultBlockIn,
    ToolUseBlockIn,
)
from qwick.server.protocol.chat import ChatCompletionRequest

# chat's field names -> the Anthropic request's, for errors raised while planning the chat request
FIELD_NAMES = {"stop": "stop_sequences", "response_format": "output_config.format",
               "max_thinking_tokens": "thinking.budget_tokens", "chat_template_kwargs": "thinking"}


def chat_request(body: CountTokensRequest) -> ChatCompletionRequest:
    """The chat request that runs `body` (a MessagesRequest, or a CountTokensRequest that only renders)."""
    refused = next((name for name in ("mcp_servers", "container") if getattr(body, name) is not None), None)
    if refused is not None:
        raise not_supported(f"'{refused}'", refused)
    fields: dict[str, Any] = {"model": body.model, "messages": chat_messages(body)}
    fields.update(_tools(body))
    fields.update(_thinking(body))
    if body.output_config is not None and body.output_config.format is not None:
        schema = body.output_config.format.json_schema
        fields["response_format"] = {"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}
    if isinstance(body, MessagesRequest):
        fields.update(max_tokens=body.max_tokens, temperature=body.temperature, top_p=body.top_p,
                      top_k=body.top_k, stop=body.stop_sequences)
    return ChatCompletionRequest.model_validate({k: v for k, v in fields.items() if v is not None})


def renamed(exc: APIError) -> APIError:
    """An error from planning the chat request, naming the Anthropic request's field instead of chat's."""
    if exc.param is not None:
        head, dot, rest = exc.param.partition(".")
        if head in FIELD_NAMES:
            exc.message = re.sub(rf"(?<![\w.]){head}(?!\w)", FIELD_NAMES[head], exc.message)
            exc.param = FIELD_NAMES[head] + dot + rest
    return exc


def chat_messages(body: CountTokensRequest) -> list[dict[str, Any]]:
    if not body.messages:
        raise bad_request("'messages' must contain at least one message", param="messages", code="invalid_value")
    out: list[dict[str, Any]] = []
    system = body.system if isinstance(body.system, str) else "\n".join(b.text for b in body.system or [])
    if system:
        out.append({"role": "system", "content": system})
    if body.messages[0].role != "user":
        raise bad_request("the first message must have role 'user'", param="messages[0].role", code="invalid_value")
    pending: dict[str, str] = {}  # tool_use ids of the previous assistant turn -> where they were
    for i, message in enumerate(body.messages):
        if i > 0 and message.role == body.messages[i - 1].role:
            raise bad_request(f"messages must alternate between 'user' and 'assistant': messages[{i - 1}] and "
                              f"messages[{i}] are both '{message.role}'", param=f"messages[{i}].role",
                              code="invalid_value")
        if message.role == "user":
            out.extend(_user_turn(i, message, pending))
            pending = {}
        else:
            turn, pending = _assistant_turn(i, message)
            out.append(turn)
    if pending:
        raise _unanswered(pending, f"messages[{len(body.messages) - 1}]")
    if body.messages[-1].role == "assistant":
        raise not_supported("a last message from the assistant (prefilling the answer)",
                            f"messages[{len(body.messages) - 1}]")
    return out


def _blocks(i: int, message: AnthropicMessage) -> list[Any]:
    blocks = [TextBlockIn(type="text", text=message.content)] if isinstance(message.content, str) else message.content
    if not blocks:
        raise bad_request(f"messages[{i}] has no content", param=f"messages[{i}].content", code="invalid_value")
    for j, block in enumerate(blocks):
        if block.type in ("image", "document"):
            raise not_supported(f"{block.type} content blocks (qwick serves text-only Qwen3 models)",
                                f"messages[{i}].content[{j}]")
        if not isinstance(block, (TextBlockIn, ThinkingBlockIn, ToolUseBlockIn, ToolResultBlockIn)):
            raise not_supported(f"{block.type} content blocks", f"messages[{i}].content[{j}]")
    return blocks


def _user_turn(i: int, message: AnthropicMessage, pending: dict[str, str]) -> list[dict[str, Any]]:
    """Tool results as `tool` messages, then the turn's text as one user message."""
    results, texts = [], []
    for j, block in enumerate(_blocks(i, message)):
        where = f"messages[{i}].content[{j}]"
        if isinstance(block, TextBlockIn):
            texts.append(block.text)
        elif isinstance(block, ToolResultBlockIn):
            if block.tool_use_id not in pending:
                raise bad_request(f"tool_result block with tool_use_id {block.tool_use_id!r} does not answer a "
                                  f"tool_use block of the previous assistant message", param=f"{where}.tool_use_id",
                                  code="invalid_value")
            del pending[block.tool_use_id]
            content = block.content if isinstance(block.content, str) else "\n".join(
                b.text for b in block.content or [])
            results.append({"role": "tool", "tool_call_id": block.tool_use_id,
                            "content": f"Error: {content}" if block.is_error else content})
        else:
            raise bad_request(f"{block.type} blocks belong to assistant messages", param=f"{where}.type",
                              code="invalid_value")
    if pending:
        raise _unanswered(pending, f"messages[{i}].content")
    return results + ([{"role": "user", "content": "\n".join(texts)}] if texts else [])


def _assistant_turn(i: int, message: AnthropicMessage) -> tuple[dict[str, Any], dict[str, str]]:
    texts, thinking, calls, ids = [], [], [], {}
    for j, block in enumerate(_blocks(i, message)):
        where = f"messages[{i}].content[{j}]"
        if isinstance(block, TextBlockIn):
            texts.append(block.text)
        elif isinstance(block, ThinkingBlockIn):
            thinking.append(block.thinking)
        elif isinstance(block, ToolUseBlockIn):
            if block.id in ids:
                raise bad_request(f"tool_use id {block.id!r} is used twice", param=f"{where}.id", code="invalid_value")
            ids[block.id] = where
            calls.append({"id": block.id, "type": "function",
                          "function": {"name": block.name, "arguments": json.dumps(block.input, ensure_ascii=False)}})
        else:
            raise bad_request("tool_result blocks belong to user messages", param=f"{where}.type",
                              code="invalid_value")
    turn: dict[str, Any] = {"role": "assistant", "content": "\n".join(texts)}
    if calls:
        turn["tool_calls"] = calls
    if thinking:
        turn["reasoning_content"] = "\n".join(thinking)
    return turn, ids


def _unanswered(pending: dict[str, str], where: str) -> APIError:
    ids = ", ".join(repr(key) for key in pending)
    return bad_request(f"tool_use ids were found without tool_result blocks immediately after: {ids} "
                       f"({', '.join(pending.values())}); each tool_use must be answered by a tool_result block in "
                       "the next user message", param=where, code="invalid_value")


def _tools(body: CountTokensRequest) -> dict[str, Any]:
    for i, tool in enumerate(body.tools or []):
        if tool.type not in (None, "custom"):
            raise not_supported(f"the server tool {tool.type!r} (qwick runs client tools, with input_schema)",
                                f"tools[{i}].type")
        if tool.input_schema is None:
            raise bad_request(f"tools[{i}] ({tool.name!r}) needs 'input_schema'", param=f"tools[{i}].input_schema",
                              code="invalid_value")
    tools = [{"type": "function", "function": {"name": t.name, "description": t.description,
                                               "parameters": t.input_schema}} for t in body.tools or []]
    choice = body.tool_choice
    if choice is None:
        return {"tools": tools or None}
    if choice.type == "tool" and not choice.name:
        raise bad_request("tool_choice of type 'tool' needs 'name'", param="tool_choice.name", code="invalid_value")
    chat_choice: Any = {"auto": "auto", "any": "required", "none": "none"}.get(choice.type) or {
        "type": "function", "function": {"name": choice.name}}
    return {"tools": tools or None, "tool_choice": chat_choice,
            "parallel_tool_calls": False if choice.disable_parallel_tool_use else None}


def _thinking(body: CountTokensRequest) -> dict[str, Any]:
    config = body.thinking
    if config is None or config.type == "disabled":
        return {"chat_template_kwargs": {"enable_thinking": False}}
    if config.type == "adaptive":
        return {"chat_template_kwargs": {"enable_thinking": True}}
    budget = config.budget_tokens
    if budget is None:
        raise bad_request("thinking of type 'enabled' needs 'budget_tokens'", param="thinking.budget_tokens",
                          code="invalid_value")
    max_tokens = body.max_tokens if isinstance(body, MessagesRequest) else None
    if budget < 1 or (max_tokens is not None and budget >= max_tokens):
        bound = f" and less than max_tokens ({max_tokens})" if max_tokens is not None else ""
        raise bad_request(f"thinking.budget_tokens must be at least 1{bound}, got {budget}",
                          param="thinking.budget_tokens", code="invalid_value")
    return {"chat_template_kwargs": {"enable_thinking": True}, "max_thinking_tokens": budget}
