"""Chat outputs as OpenAI Responses: output items (reasoning, message, function_call) with ids, the response
object, and the streaming events in OpenAI's order (response.created, response.in_progress, then per item
output_item.added, content_part.added, *.delta, *.done, content_part.done, output_item.done, and
response.completed / response.incomplete last).

`OutputItems` builds the items from chat deltas for both paths: a whole output is fed as one delta (its
events discarded), so streamed and whole responses cannot drift apart.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

from qwick.server.protocol.chat import ChatChoice, ChatDelta, FunctionDelta, ToolCallDeltaOut
from qwick.server.protocol.responses import ResponsesRequest

Event = dict[str, Any]


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


class OutputItems:
    """Chat deltas -> output items, one open at a time (a change of kind closes it), and their events."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self.open: str | None = None  # "reasoning" | "message" | "function_call"

    def feed(self, delta: ChatDelta) -> list[Event]:
        events = []
        if delta.reasoning_content:
            events += self._ensure("reasoning", {"type": "reasoning", "summary": [], "content": []},
                                   {"type": "reasoning_text", "text": ""})
            events.append(self._text_delta("response.reasoning_text.delta", delta.reasoning_content))
        if delta.content:
            events += self._ensure("message", {"type": "message", "role": "assistant", "content": []},
                                   {"type": "output_text", "text": "", "annotations": [], "logprobs": []})
            events.append({**self._text_delta("response.output_text.delta", delta.content), "logprobs": []})
        for call in delta.tool_calls or []:
            assert call.function is not None
            if call.id is not None:  # a new call: its own item
                events += self.close()
                events += self._ensure("function_call", {"type": "function_call", "call_id": call.id,
                                                         "name": call.function.name, "arguments": ""}, None)
            if call.function.arguments:
                self.items[-1]["arguments"] += call.function.arguments
                events.append({"type": "response.function_call_arguments.delta", **self._where(),
                               "delta": call.function.arguments})
        return events

    def close(self) -> list[Event]:
        if self.open is None:
            return []
        item, where, kind = self.items[-1], self._where(), self.open
        self.open = None
        item["status"] = "completed"
        if kind == "function_call":
            done = [{"type": "response.function_call_arguments.done", **where, "name": item["name"],
                     "arguments": item["arguments"]}]
        else:
            part = item["content"][0]
            text_done = {"type": "response.output_text.done", **where, "content_index": 0, "text": part["text"],
                         "logprobs": []}
            if kind == "reasoning":
                text_done = {"type": "response.reasoning_text.done", **where, "content_index": 0,
                             "text": part["text"]}
            done = [text_done, {"type": "response.content_part.done", **where, "content_index": 0,
                                "part": dict(part)}]
        return [*done, {"type": "response.output_item.done", "output_index": len(self.items) - 1,
                        "item": dict(item)}]

    def feed_whole(self, choice: ChatChoice) -> None:
        """A finished output's items (no events): reasoning, text, then its tool calls."""
        reply = choice.message
        calls = [ToolCallDeltaOut(index=n, id=call.id, function=FunctionDelta(name=call.function.name,
                                                                             arguments=call.function.arguments))
                 for n, call in enumerate(reply.tool_calls or [])]
        self.feed(ChatDelta(reasoning_content=reply.reasoning_content, content=reply.content, tool_calls=calls))
        self.close()

    def reasoning_text(self) -> str:
        return "".join(part["text"] for item in self.items if item["type"] == "reasoning" for part in item["content"])

    def _ensure(self, kind: str, item: dict[str, Any], part: dict[str, Any] | None) -> list[Event]:
        if self.open == kind:
            return []
        events = self.close()
        prefix = {"reasoning": "rs", "message": "msg", "function_call": "fc"}[kind]
        self.items.append({"id": new_id(prefix), **item, "status": "in_progress"})
        self.open = kind
        events.append({"type": "response.output_item.added", "output_index": len(self.items) - 1,
                       "item": json.loads(json.dumps(self.items[-1]))})
        if part is not None:
            self.items[-1]["content"].append(dict(part))
            events.append({"type": "response.content_part.added", **self._where(), "content_index": 0,
                           "part": dict(part)})
        return events

    def _text_delta(self, kind: str, text: str) -> Event:
        self.items[-1]["content"][0]["text"] += text
        return {"type": kind, **self._where(), "content_index": 0, "delta": text}

    def _where(self) -> dict[str, Any]:
        return {"item_id": self.items[-1]["id"], "output_index": len(self.items) - 1}


def response_object(body: ResponsesRequest, response_id: str, model: str, created_at: int, *,
                    status: str = "in_progress", output: list[dict[str, Any]] | None = None,
                    usage: dict[str, Any] | None = None) -> dict[str, Any]:
    """The response envelope, echoing the request's settings; `store` is false: nothing is kept."""
    return {
        "id": response_id, "object": "response", "created_at": created_at, "status": status, "model": model,
        "output": output or [], "usage": usage, "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "instructions": body.instructions, "max_output_tokens": body.max_output_tokens,
        "temperature": body.temperature, "top_p": body.top_p,
        "tools": [tool.model_dump(exclude_none=True) for tool in body.tools or []],
        "tool_choice": body.tool_choice.model_dump() if hasattr(body.tool_choice, "model_dump")
        else body.tool_choice or "auto",
        "parallel_tool_calls": body.parallel_tool_calls is not False,
        "text": {"format": body.text.format.model_dump(by_alias=True, exclude_none=True)}
        if body.text is not None and body.text.format is not None else {"format": {"type": "text"}},
        "reasoning": {"effort": body.reasoning.effort if body.reasoning is not None else None, "summary": None},
        "store": False, "previous_response_id": None, "metadata": body.metadata or {},
    }


def usage(prompt_tokens: int, output_tokens: int, reasoning_tokens: int) -> dict[str, Any]:
    return {"input_tokens": prompt_tokens, "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": output_tokens, "output_tokens_details": {"reasoning_tokens": reasoning_tokens},
            "total_tokens": prompt_tokens + output_tokens}


def now() -> int:
    return int(time.time())
