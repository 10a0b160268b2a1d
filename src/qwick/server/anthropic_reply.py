"""Chat outputs as Anthropic messages: content blocks (thinking, text, tool_use), stop_reason, usage, and the
SSE event sequence the official clients read (message_start, content_block_start / delta / stop, message_delta,
message_stop; an `error` event when a stream fails mid-way)."""

from __future__ import annotations

import json
import secrets
from typing import Any

from pydantic import BaseModel

from qwick.outputs import CompletionOutput
from qwick.server.errors import APIError
from qwick.server.protocol.anthropic import (
    AnthropicResponse,
    AnthropicUsage,
    ContentBlock,
    TextBlock,
    ThinkingBlock,
    ToolUseBlock,
)
from qwick.server.protocol.chat import ChatChoice, ChatDelta

# chat finish reasons -> Anthropic stop reasons ("stop" is end_turn unless a stop sequence matched)
STOP_REASONS = {"tool_calls": "tool_use", "length": "max_tokens", "stop": "end_turn"}


def new_message_id() -> str:
    return f"msg_{secrets.token_hex(12)}"


def tool_use_id(call_id: str) -> str:
    """Anthropic's `toolu_` ids for the parser's `call_` ids."""
    return "toolu_" + call_id.removeprefix("call_")


def stop_reason(chat_reason: str | None, out: CompletionOutput,
                stop_sequences: list[str] | None) -> tuple[str, str | None]:
    """(stop_reason, stop_sequence) of a finished output."""
    if chat_reason == "stop" and isinstance(out.stop_reason, str) and out.stop_reason in (stop_sequences or []):
        return "stop_sequence", out.stop_reason
    return STOP_REASONS.get(chat_reason or "stop", "end_turn"), None


def message(choice: ChatChoice, out: CompletionOutput, *, request_id: str, model: str, prompt_tokens: int,
            stop_sequences: list[str] | None) -> AnthropicResponse:
    reply = choice.message
    blocks: list[ContentBlock] = []
    if reply.reasoning_content:
        blocks.append(ThinkingBlock(thinking=reply.reasoning_content))
    if reply.content:
        blocks.append(TextBlock(text=reply.content))
    for call in reply.tool_calls or []:
        blocks.append(ToolUseBlock(id=tool_use_id(call.id), name=call.function.name,
                                   input=json.loads(call.function.arguments)))
    reason, sequence = stop_reason(choice.finish_reason, out, stop_sequences)
    return AnthropicResponse(id=request_id, model=model, content=blocks, stop_reason=reason,  # type: ignore[arg-type]
                             stop_sequence=sequence,
                             usage=AnthropicUsage(input_tokens=prompt_tokens, output_tokens=len(out.token_ids)))


def event(name: str, payload: BaseModel | dict[str, Any]) -> str:
    data = payload.model_dump_json() if isinstance(payload, BaseModel) else json.dumps(payload)
    return f"event: {name}\ndata: {data}\n\n"


def error_event(error: APIError) -> str:
    return event("error", error.anthropic_body())


def start_event(request_id: str, model: str, prompt_tokens: int) -> str:
    start = AnthropicResponse(id=request_id, model=model, content=[], stop_reason=None,
                              usage=AnthropicUsage(input_tokens=prompt_tokens, output_tokens=0))
    return event("message_start", {"type": "message_start", "message": start.model_dump()})


def end_events(reason: str, sequence: str | None, output_tokens: int) -> list[str]:
    return [event("message_delta", {"type": "message_delta",
                                    "delta": {"stop_reason": reason, "stop_sequence": sequence},
                                    "usage": {"output_tokens": output_tokens}}),
            event("message_stop", {"type": "message_stop"})]


class BlockEvents:
    """Chat stream deltas (reasoning, content, tool-call pieces) -> content_block events, one block at a time:
    a change of kind closes the open block and starts the next (index counting up from 0)."""

    def __init__(self) -> None:
        self.index = -1
        self.open: str | None = None  # "thinking" | "text" | "tool_use"

    def feed(self, delta: ChatDelta) -> list[str]:
        out = []
        if delta.reasoning_content:
            out += self._ensure("thinking", {"type": "thinking", "thinking": "", "signature": ""})
            out.append(self._delta({"type": "thinking_delta", "thinking": delta.reasoning_content}))
        if delta.content:
            out += self._ensure("text", {"type": "text", "text": ""})
            out.append(self._delta({"type": "text_delta", "text": delta.content}))
        for call in delta.tool_calls or []:
            if call.id is not None:  # a new call: its own block
                assert call.function is not None and call.function.name is not None
                out += self.close()
                out += self._ensure("tool_use", {"type": "tool_use", "id": tool_use_id(call.id),
                                                 "name": call.function.name, "input": {}})
            if call.function is not None and call.function.arguments:
                out.append(self._delta({"type": "input_json_delta", "partial_json": call.function.arguments}))
        return out

    def close(self) -> list[str]:
        if self.open is None:
            return []
        self.open = None
        return [event("content_block_stop", {"type": "content_block_stop", "index": self.index})]

    def _ensure(self, kind: str, block: dict[str, Any]) -> list[str]:
        if self.open == kind:
            return []
        out = self.close()
        self.index += 1
        self.open = kind
        out.append(event("content_block_start", {"type": "content_block_start", "index": self.index,
                                                 "content_block": block}))
        return out

    def _delta(self, delta: dict[str, Any]) -> str:
        return event("content_block_delta", {"type": "content_block_delta", "index": self.index, "delta": delta})
