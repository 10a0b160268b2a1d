"""POST /v1/chat/completions: render the chat template, generate, split reasoning and hermes tool calls."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import Response

from qwick.engine.protocol import RequestDelta
from qwick.lora.request import adapter_kwargs
from qwick.outputs import CompletionOutput, RequestOutput, StreamDelta
from qwick.sampling_params import SamplingParams, StructuredOutputsParams
from qwick.server.errors import APIError, bad_request, internal_error
from qwick.server.logprobs import chat_logprobs
from qwick.server.metrics import RequestTimer
from qwick.server.protocol import (
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatDelta,
    ChatLogprobs,
    ChatMessage,
    FunctionCallOut,
    FunctionDelta,
    ToolCallDeltaOut,
    ToolCallOut,
    ToolDefinition,
    Usage,
)
from qwick.server.serving import ServerContext, aborted, new_id, sampling_params
from qwick.server.streams import SSE_DONE, merged, respond, sse
from qwick.server.structured import check_structure, requested_structure, tool_call_structure
from qwick.tokenizer import (
    ReasoningStreamParser,
    Tokenizer,
    ToolCallStreamParser,
    parse_reasoning,
    parse_tool_calls,
)
from qwick.tokenizer.reasoning import THINK_START

logger = logging.getLogger("qwick.server")
# chat_template_kwargs may not override what the server itself passes to the template
RESERVED_TEMPLATE_KWARGS = frozenset({"messages", "tools", "add_generation_prompt", "tokenize", "chat_template"})


@dataclass
class ChatPlan:
    """A validated chat request, ready for the engine."""

    prompt: str
    prompt_ids: list[int]
    params: SamplingParams
    thinking: bool  # the template was asked to think (the default)
    prompt_opened_think: bool  # the prompt itself ends inside <think>
    parse_tools: bool
    top_logprobs: int | None  # None: no logprobs requested
    structured: bool = False  # constrained answer: an output that does not open <think> is all answer
    model: str | None = None  # the served name the request used (a LoRA adapter's); None: the base model's

    def thinks(self, output_start: str) -> bool:
        """Whether the output holds a think block, judged from its start (the grammar never writes <think>)."""
        if self.structured and self.thinking and not self.prompt_opened_think:
            return output_start.startswith(THINK_START)
        return self.thinking


class ChatServing:
    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx

    async def create(self, body: ChatCompletionRequest, request: Request) -> Response:
        lora = self.ctx.resolve_model(body.model)
        plan = await self.ctx.off_loop(self.plan, body)  # tokenizing and grammar compiling: off the event loop
        plan.model = lora.lora_name if lora is not None else None
        request_id = new_id("chatcmpl")
        logger.info("request %s: %s, %d prompt tokens", request.state.request_id, request_id, len(plan.prompt_ids))
        release = self.ctx.admission.acquire(plan.params.n)
        timer = self.ctx.metrics.timer()
        stream = merged([self.ctx.engine.generate(plan.prompt_ids, plan.params, request_id, plan.prompt,
                                                  **adapter_kwargs(lora))])
        include_usage = body.stream_options is not None and body.stream_options.include_usage
        return await respond(
            request, stream, release, streaming=body.stream,
            whole=lambda started: self._complete(started, plan, request_id, timer),
            events=lambda started: self._stream(started, plan, request_id, include_usage, timer,
                                                request.state.request_id))

    # ------------------------------------------------------------------------------------ validation

    def plan(self, body: ChatCompletionRequest) -> ChatPlan:
        if not body.messages:
            raise bad_request("'messages' must contain at least one message", param="messages", code="invalid_value")
        if len(body.messages) > self.ctx.limits.max_messages:
            raise bad_request(f"'messages' holds {len(body.messages)} messages, more than this server's limit of "
                              f"{self.ctx.limits.max_messages}", param="messages", code="too_many_messages")
        structure = self._structure(body)
        if body.top_logprobs is not None and not body.logprobs:
            raise bad_request("top_logprobs needs logprobs set to true", param="top_logprobs")
        parse_tools = bool(body.tools) and body.tool_choice != "none"
        kwargs = body.chat_template_kwargs or {}
        prompt = render_chat(self.ctx.tokenizer, body.messages, body.tools if parse_tools else None,
                             body.add_generation_prompt, kwargs)
        prompt_ids = self.ctx.encode(prompt, "messages")
        if body.max_completion_tokens is not None:
            max_tokens, max_tokens_field = body.max_completion_tokens, "max_completion_tokens"
        else:
            max_tokens, max_tokens_field = body.max_tokens, "max_tokens"
        top_logprobs = (body.top_logprobs or 0) if body.logprobs else None
        params = sampling_params(
            body, prompt_len=len(prompt_ids), max_model_len=self.ctx.max_model_len, max_tokens=max_tokens,
            logprobs=top_logprobs, max_thinking_tokens=body.max_thinking_tokens, structured_outputs=structure,
            fields={"prompt": "messages", "max_tokens": max_tokens_field, "logprobs": "top_logprobs"})
        return ChatPlan(prompt, prompt_ids, params, kwargs.get("enable_thinking", True) is not False,
                        prompt.rstrip().endswith(THINK_START), parse_tools, top_logprobs, structure is not None)

    def _structure(self, body: ChatCompletionRequest) -> StructuredOutputsParams | None:
        """The answer's constraint: response_format / structured_outputs / guided_*, or forced tool calls."""
        requested = requested_structure(body)
        forced_tools = tool_call_structure(body.tools, body.tool_choice, body.parallel_tool_calls)
        if requested is not None and forced_tools is not None:
            raise bad_request(f"{requested[1]} cannot be combined with tool_choice {body.tool_choice!r}: the "
                              "answer is either tool calls or the requested format", param=requested[1])
        if forced_tools is not None:
            requested = (forced_tools, "tool_choice")
        if requested is None:
            return None
        check_structure(self.ctx.grammars, *requested)
        return requested[0]

    # ---------------------------------------------------------------------------------- non-streaming

    async def _complete(self, stream: AsyncIterator[tuple[int, RequestDelta]], plan: ChatPlan, request_id: str,
                        timer: RequestTimer) -> Response:
        final: RequestOutput | None = None
        async for _, delta in stream:
            timer.observe(delta)
            final = delta.output or final
        if final is None or any(out.finish_reason == "abort" for out in final.outputs):
            raise aborted()
        choices = [self._choice(out, plan) for out in final.outputs]
        response = ChatCompletion(id=request_id, model=plan.model or self.ctx.model_name, choices=choices,
                                  usage=_usage(final))
        return Response(response.model_dump_json(), media_type="application/json")

    def _choice(self, out: CompletionOutput, plan: ChatPlan) -> ChatChoice:
        reasoning, content = parse_reasoning(out.text, plan.thinks(out.text), plan.prompt_opened_think)
        calls = []
        if plan.parse_tools and content:
            parsed = parse_tool_calls(content)
            content, calls = parsed.content, parsed.tool_calls
        tool_calls = [ToolCallOut(id=c.id, function=FunctionCallOut(name=c.name, arguments=c.arguments))
                      for c in calls]
        message = AssistantMessage(content=content if calls else content or "", reasoning_content=reasoning,
                                   reasoning=reasoning, tool_calls=tool_calls or None)
        return ChatChoice(index=out.index, message=message, logprobs=self._logprobs(out, plan),
                          finish_reason="tool_calls" if calls else out.finish_reason)

    def _logprobs(self, out: CompletionOutput, plan: ChatPlan) -> ChatLogprobs | None:
        if plan.top_logprobs is None or out.logprobs is None:
            return None
        return chat_logprobs(self.ctx.tokenizer, out.token_ids, out.logprobs, plan.top_logprobs)

    def _delta_logprobs(self, delta: StreamDelta, plan: ChatPlan) -> ChatLogprobs | None:
        if plan.top_logprobs is None or not delta.logprobs:
            return None
        return chat_logprobs(self.ctx.tokenizer, delta.token_ids, delta.logprobs, plan.top_logprobs)

    # -------------------------------------------------------------------------------------- streaming

    async def _stream(self, stream: AsyncIterator[tuple[int, RequestDelta]], plan: ChatPlan, request_id: str,
                      include_usage: bool, timer: RequestTimer, http_id: str) -> AsyncIterator[str]:
        created = int(time.time())
        exclude = None if include_usage else {"usage"}

        def chunk(index: int, delta: ChatDelta, finish_reason: str | None = None,
                  logprobs: ChatLogprobs | None = None) -> str:
            choice = ChatChunkChoice(index=index, delta=delta, finish_reason=finish_reason, logprobs=logprobs)
            body = ChatCompletionChunk(id=request_id, created=created, model=plan.model or self.ctx.model_name, choices=[choice])
            return f"data: {body.model_dump_json(exclude=exclude)}\n\n"

        states = [_ChoiceStream(plan) for _ in range(plan.params.n)]
        try:
            for index in range(plan.params.n):
                yield chunk(index, ChatDelta(role="assistant", content=""))
            async for _, request_delta in stream:
                timer.observe(request_delta)
                for delta in request_delta.deltas:
                    pieces = states[delta.index].feed(delta)
                    logprobs = self._delta_logprobs(delta, plan)
                    if logprobs is not None and not pieces:  # text held back (a possible stop string)
                        pieces = [ChatDelta()]
                    for n, piece in enumerate(pieces):
                        yield chunk(delta.index, piece, logprobs=logprobs if n == 0 else None)
                final = request_delta.output
                if final is None:
                    continue
                if any(out.finish_reason == "abort" for out in final.outputs):
                    yield sse(aborted().body())
                    break
                for out in final.outputs:
                    finish = "tool_calls" if states[out.index].tool_called else out.finish_reason
                    yield chunk(out.index, ChatDelta(), finish)
                if include_usage:
                    usage = ChatCompletionChunk(id=request_id, created=created, model=plan.model or self.ctx.model_name,
                                                choices=[], usage=_usage(final))
                    yield sse(usage)
        except APIError as exc:
            yield sse(exc.body())
        except Exception:
            logger.exception("request %s (%s) failed mid-stream", http_id, request_id)
            yield sse(internal_error(http_id).body())
        yield SSE_DONE


class _ChoiceStream:
    """One choice's text deltas -> OpenAI deltas: reasoning, content, then tool calls (name first, then args)."""

    def __init__(self, plan: ChatPlan) -> None:
        self.plan = plan
        self.reasoning: ReasoningStreamParser | None = None  # made at the first text: see ChatPlan.thinks
        self.tools = ToolCallStreamParser() if plan.parse_tools else None
        self.tool_called = False

    def feed(self, delta: StreamDelta) -> list[ChatDelta]:
        last = delta.finish_reason is not None
        if self.reasoning is None:
            if not delta.text and not last:
                return []
            self.reasoning = ReasoningStreamParser(self.plan.thinks(delta.text),
                                                   prompt_opened_think=self.plan.prompt_opened_think)
        parts = [self.reasoning.feed(delta.text), *([self.reasoning.finish()] if last else [])]
        reasoning = "".join(p.reasoning for p in parts)
        content = "".join(p.content for p in parts)
        calls = []
        if self.tools is not None:
            pieces = [self.tools.feed(content), *([self.tools.finish()] if last else [])]
            content = "".join(p.content for p in pieces)
            calls = [call for p in pieces for call in p.tool_calls]
        out = []
        if reasoning or content:
            out.append(ChatDelta(content=content or None, reasoning_content=reasoning or None,
                                 reasoning=reasoning or None))
        for call in calls:
            if call.name is not None:
                self.tool_called = True
                out.append(ChatDelta(tool_calls=[ToolCallDeltaOut(
                    index=call.index, id=call.id, type="function", function=FunctionDelta(name=call.name, arguments=""))]))
            if call.arguments:
                out.append(ChatDelta(tool_calls=[ToolCallDeltaOut(
                    index=call.index, function=FunctionDelta(arguments=call.arguments))]))
        return out


def _usage(final: RequestOutput) -> Usage:
    return Usage.of(len(final.prompt_token_ids), sum(len(out.token_ids) for out in final.outputs))


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
    """A message as the chat template reads it: text parts joined, `developer` as `system`."""
    content = message.content
    if isinstance(content, list):
        texts = []
        for j, part in enumerate(content):
            if part.type != "text" or part.text is None:
                raise bad_request(f"content parts of type {part.type!r} are not supported: send text parts",
                                  param=f"messages[{i}].content[{j}]", code="invalid_value")
            texts.append(part.text)
        content = "\n".join(texts)
    if content is None and not (message.role == "assistant" and message.tool_calls):
        raise bad_request(f"messages[{i}] ({message.role}) needs 'content'", param=f"messages[{i}].content")
    out: dict[str, Any] = {"role": "system" if message.role == "developer" else message.role,
                           "content": content or ""}
    if message.name is not None:
        out["name"] = message.name
    if message.tool_calls:
        out["tool_calls"] = [call.model_dump() for call in message.tool_calls]
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    reasoning = message.reasoning_content if message.reasoning_content is not None else message.reasoning
    if reasoning is not None:
        out["reasoning_content"] = reasoning
    return out
