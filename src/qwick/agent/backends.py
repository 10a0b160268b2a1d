"""The model behind the agent: the offline engine (`qwick.LLM`) or any OpenAI-compatible server (a running
`qwick serve`, through the `openai` client). One step: the conversation and the tools in, one answer out.

A forced step (a tool call is due) is constrained by the tool-call grammar (`qwick.tokenizer.tool_grammar`):
every call names one of the tools and its arguments match that tool's input schema. Offline the grammar is
built here; a server forces it itself for `tool_choice: "required"` (qwick serve does, through the same
grammar; another server may not, so its calls are still checked).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol

from qwick.agent.parsing import ParsedCall, parse_calls
from qwick.agent.tools import AgentTool

FORCED_THINKING_BUDGET = 1024  # thinking tokens before a forced call, so the grammar is reached


@dataclass(frozen=True)
class Generation:
    """How each step generates (None: the model's or server's default)."""

    max_tokens: int = 2048
    temperature: float | None = None
    seed: int | None = None
    thinking: bool = True
    max_thinking_tokens: int | None = None


@dataclass(frozen=True)
class ModelTurn:
    content: str | None  # the answer text, tool calls removed
    reasoning: str | None
    calls: list[ParsedCall]
    finish_reason: str | None
    prompt: str | None = None  # the rendered prompt (offline only)
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Backend(Protocol):
    name: str

    def step(self, messages: list[dict[str, Any]], tools: list[AgentTool], forced: bool) -> ModelTurn: ...


class LocalBackend:
    """An offline `qwick.LLM`: renders with the model's own chat template, generates in this thread."""

    def __init__(self, llm: Any, generation: Generation) -> None:
        self.llm, self.generation = llm, generation
        self.name = getattr(llm, "model_name", "local")

    def step(self, messages: list[dict[str, Any]], tools: list[AgentTool], forced: bool) -> ModelTurn:
        from qwick.sampling_params import SamplingParams, StructuredOutputsParams
        from qwick.tokenizer import split_chat_output
        from qwick.tokenizer.reasoning import THINK_START
        from qwick.tokenizer.tool_grammar import tool_calls_lark

        g = self.generation
        prompt = self.llm.render_chat(messages, [t.function() for t in tools] or None,
                                      {"enable_thinking": g.thinking})
        structured = None
        if forced:
            functions = [{"name": t.name, "parameters": t.input_schema or None} for t in tools]
            structured = StructuredOutputsParams(grammar=tool_calls_lark(functions, parallel=True))
        budget = g.max_thinking_tokens
        if forced and g.thinking and budget is None:
            budget = FORCED_THINKING_BUDGET
        params = SamplingParams(max_tokens=g.max_tokens, temperature=g.temperature, seed=g.seed,
                                structured_outputs=structured, max_thinking_tokens=budget)
        output = self.llm.generate({"prompt": prompt}, params)[0]
        completion = output.outputs[0]
        opened = prompt.rstrip().endswith(THINK_START)
        reasoning, content = split_chat_output(completion.text, g.thinking, opened, structured is not None)
        cut = completion.finish_reason == "length"  # a forced step keeps the calls it finished
        content, calls = parse_calls(content or "", {t.name for t in tools}, tolerant=not forced, cut=cut)
        return ModelTurn(content, reasoning, calls, completion.finish_reason, prompt,
                         len(output.prompt_token_ids or []), len(completion.token_ids))


class OpenAIBackend:
    """Any OpenAI-compatible `/v1/chat/completions` (a running `qwick serve`); `tool_choice: "required"` on a
    forced step."""

    def __init__(self, base_url: str, generation: Generation, model: str | None = None,
                 api_key: str | None = None, timeout: float = 600.0) -> None:
        import openai

        self.generation = generation
        self.client = openai.OpenAI(base_url=base_url, api_key=api_key or "unused", timeout=timeout, max_retries=1)
        self.model = model or self._first_model(base_url)
        self.name = f"{self.model} at {base_url}"

    def _first_model(self, base_url: str) -> str:
        import openai

        try:
            models = self.client.models.list().data
        except openai.OpenAIError as exc:
            raise ValueError(f"cannot list the models of {base_url}: {exc}") from None
        if not models:
            raise ValueError(f"{base_url} serves no model")
        return models[0].id

    def step(self, messages: list[dict[str, Any]], tools: list[AgentTool], forced: bool) -> ModelTurn:
        import openai

        g = self.generation
        extra: dict[str, Any] = {"chat_template_kwargs": {"enable_thinking": g.thinking}}
        if g.max_thinking_tokens is not None:
            extra["max_thinking_tokens"] = g.max_thinking_tokens
        options: dict[str, Any] = {}
        if tools:
            options = {"tools": [t.function() for t in tools], "tool_choice": "required" if forced else "auto"}
        for key in ("temperature", "seed"):
            if getattr(g, key) is not None:
                options[key] = getattr(g, key)
        try:
            response = self.client.chat.completions.create(model=self.model, messages=messages, max_tokens=g.max_tokens,
                                                           extra_body=extra, **options)
        except openai.OpenAIError as exc:
            raise ValueError(f"the model server failed: {exc}") from None
        choice = response.choices[0]
        message = choice.message
        reasoning = getattr(message, "reasoning_content", None) or (message.model_extra or {}).get("reasoning")
        names = {t.name for t in tools}
        if message.tool_calls:
            calls = [_server_call(c.id, c.function.name, c.function.arguments) for c in message.tool_calls]
            content = message.content.strip() if message.content and message.content.strip() else None
        else:  # the server's strict parser may have left a malformed call in the text: the tolerant one reads it
            content, calls = parse_calls(message.content or "", names, tolerant=not forced)
        usage = response.usage
        return ModelTurn(content, reasoning, calls, choice.finish_reason, None,
                         usage.prompt_tokens if usage else 0, usage.completion_tokens if usage else 0)


def _server_call(call_id: str, name: str, arguments: str) -> ParsedCall:
    try:
        _, calls = parse_calls(json.dumps({"name": name, "arguments": json.loads(arguments or "{}")}), {name})
        return ParsedCall(name, calls[0].arguments, call_id, calls[0].repaired)
    except (ValueError, IndexError):
        return ParsedCall(name, None, call_id, problem=f"the arguments are not valid JSON: {arguments[:200]!r}")
