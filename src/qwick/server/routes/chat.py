"""POST /v1/chat/completions: render the chat template, generate, split reasoning and hermes tool calls."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from qwick.engine.client import RequestDelta
from qwick.lora.request import adapter_kwargs
from qwick.outputs import CompletionOutput, RequestOutput, StreamDelta
from qwick.sampling_params import SamplingParams, StructuredOutputsParams
from qwick.server.chat_compat import refuse_unsupported, render_chat, template_kwargs, with_legacy_functions
from qwick.server.errors import aborted, bad_request
from qwick.server.logprobs import chat_logprobs
from qwick.server.metrics import RequestTimer
from qwick.server.openapi import JSONRouter
from qwick.server.protocol.base import Usage
from qwick.server.protocol.chat import (
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatDelta,
    ChatLogprobs,
    FunctionCallOut,
    FunctionDelta,
    ToolCallDeltaOut,
    ToolCallOut,
)
from qwick.server.serving import ServerContext, new_id, read_body, sampling_params
from qwick.server.streams import SSE_DONE, error_event, merged, respond, sse
from qwick.server.structured import check_structure, requested_structure, tool_call_structure
from qwick.tokenizer import (
    ReasoningStreamParser,
    ToolCallStreamParser,
    output_thinks,
    parse_tool_calls,
    split_chat_output,
)
from qwick.tokenizer.reasoning import THINK_START

logger = logging.getLogger("qwick.server")


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
    forced_tools: bool = False  # tool_choice "required" or named: the grammar makes every finished call valid

    def thinks(self, output_start: str) -> bool:
        """Whether the output holds a think block, judged from its start (the grammar never writes <think>)."""
        return output_thinks(output_start, self.thinking, self.prompt_opened_think, self.structured)


@dataclass
class ChatRun:
    """An admitted chat request: its plan and open engine stream; `release` frees its admission."""

    plan: ChatPlan
    request_id: str
    stream: AsyncIterator[tuple[int, RequestDelta]]
    release: Callable[[], None]
    timer: RequestTimer


def router(ctx: ServerContext) -> JSONRouter:
    chat, routes = ChatServing(ctx), JSONRouter()

    @routes.json_post("/v1/chat/completions", ChatCompletionRequest)
    async def chat_completions(request: Request) -> Response:
        return await chat.create(await read_body(request, ChatCompletionRequest, ctx.limits), request)

    return routes


class ChatServing:
    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx

    async def create(self, body: ChatCompletionRequest, request: Request) -> Response:
        run = await self.start(body, request, new_id("chatcmpl"))
        include_usage = body.stream_options is not None and body.stream_options.include_usage
        return await respond(
            request, run.stream, run.release, streaming=body.stream,
            whole=lambda started: self._complete(started, run.plan, run.request_id, run.timer),
            events=lambda started: self._stream(started, run.plan, run.request_id, include_usage, run.timer,
                                                request.state.request_id))

    async def start(self, body: ChatCompletionRequest, request: Request, request_id: str,
                    clamp_max_tokens: bool = False) -> ChatRun:
        """Plan and admit a chat request and open its engine stream (the Anthropic and Responses endpoints
        translate their bodies into a chat request and run it here too)."""
        lora = self.ctx.resolve_model(body.model)
        # tokenizing and grammar compiling: off the event loop
        plan = await self.ctx.off_loop(self.plan, body, clamp_max_tokens)
        plan.model = lora.lora_name if lora is not None else None
        logger.info("request %s: %s, %d prompt tokens", request.state.request_id, request_id, len(plan.prompt_ids))
        release = self.ctx.admission.acquire(plan.params.n)
        timer = self.ctx.metrics.timer()
        stream = merged([self.ctx.engine.generate(plan.prompt_ids, plan.params, request_id, plan.prompt,
                                                  **adapter_kwargs(lora))])
        return ChatRun(plan, request_id, stream, release, timer)

    # ------------------------------------------------------------------------------------ validation

    def plan(self, body: ChatCompletionRequest, clamp_max_tokens: bool = False) -> ChatPlan:
        """`clamp_max_tokens`: a max_tokens past the context ends the output there instead of a 400 (agent
        clients such as Claude Code always ask for tens of thousands of tokens)."""
        if not body.messages:
            raise bad_request("'messages' must contain at least one message", param="messages", code="invalid_value")
        if len(body.messages) > self.ctx.limits.max_messages:
            raise bad_request(f"'messages' holds {len(body.messages)} messages, more than this server's limit of "
                              f"{self.ctx.limits.max_messages}", param="messages", code="too_many_messages")
        refuse_unsupported(body)
        body = with_legacy_functions(body)
        structure = self._structure(body)
        if body.top_logprobs is not None and not body.logprobs:
            raise bad_request("top_logprobs needs logprobs set to true", param="top_logprobs")
        parse_tools = bool(body.tools) and body.tool_choice != "none"
        kwargs = template_kwargs(body)
        prompt = render_chat(self.ctx.tokenizer, body.messages, body.tools if parse_tools else None,
                             body.add_generation_prompt, kwargs)
        prompt_ids = self.ctx.encode(prompt, "messages")
        if body.max_completion_tokens is not None:
            max_tokens, max_tokens_field = body.max_completion_tokens, "max_completion_tokens"
        else:
            max_tokens, max_tokens_field = body.max_tokens, "max_tokens"
        if clamp_max_tokens and max_tokens is not None:
            max_tokens = min(max_tokens, max(1, self.ctx.max_model_len - len(prompt_ids)))
        top_logprobs = (body.top_logprobs or 0) if body.logprobs else None
        params = sampling_params(
            body, prompt_len=len(prompt_ids), max_model_len=self.ctx.max_model_len, max_tokens=max_tokens,
            logprobs=top_logprobs, max_thinking_tokens=body.max_thinking_tokens, structured_outputs=structure,
            vocab_size=self.ctx.tokenizer.vocab_size,
            fields={"prompt": "messages", "max_tokens": max_tokens_field, "logprobs": "top_logprobs"})
        return ChatPlan(prompt, prompt_ids, params, kwargs.get("enable_thinking", True) is not False,
                        prompt.rstrip().endswith(THINK_START), parse_tools, top_logprobs, structure is not None,
                        forced_tools=parse_tools and body.tool_choice not in (None, "auto"))

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
        final = await final_output(stream, timer)
        choices = [self.choice(out, plan) for out in final.outputs]
        response = ChatCompletion(id=request_id, model=plan.model or self.ctx.model_name, choices=choices,
                                  usage=_usage(final))
        return Response(response.model_dump_json(), media_type="application/json")

    def choice(self, out: CompletionOutput, plan: ChatPlan) -> ChatChoice:
        reasoning, content = split_chat_output(out.text, plan.thinking, plan.prompt_opened_think, plan.structured)
        calls, cut = [], False
        if plan.parse_tools and content:
            parsed = parse_tool_calls(content, cut=out.finish_reason == "length")
            content, calls, cut = parsed.content, parsed.tool_calls, parsed.cut
        tool_calls = [ToolCallOut(id=c.id, function=FunctionCallOut(name=c.name, arguments=c.arguments))
                      for c in calls]
        message = AssistantMessage(content=content if calls or cut else content or "",
                                   reasoning_content=reasoning, reasoning=reasoning, tool_calls=tool_calls or None)
        return ChatChoice(index=out.index, message=message, logprobs=self._logprobs(out, plan),
                          finish_reason=chat_finish_reason(out.finish_reason, bool(calls), cut))

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

        states = [ChoiceStream(plan) for _ in range(plan.params.n)]
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
                    yield chunk(out.index, ChatDelta(), states[out.index].finish_reason(out))
                if include_usage:
                    usage = ChatCompletionChunk(id=request_id, created=created, model=plan.model or self.ctx.model_name,
                                                choices=[], usage=_usage(final))
                    yield sse(usage)
        except Exception as exc:
            yield error_event(exc, http_id, request_id)
        yield SSE_DONE


class ChoiceStream:
    """One choice's text deltas -> OpenAI deltas: reasoning, content, then tool calls (name first, then args)."""

    def __init__(self, plan: ChatPlan) -> None:
        self.plan = plan
        self.reasoning: ReasoningStreamParser | None = None  # made at the first text: see ChatPlan.thinks
        self.tools = ToolCallStreamParser(whole_calls=plan.forced_tools) if plan.parse_tools else None
        self.tool_called = False

    @property
    def cut(self) -> bool:
        return self.tools is not None and self.tools.cut

    def finish_reason(self, out: CompletionOutput) -> str | None:
        return chat_finish_reason(out.finish_reason, self.tool_called, self.cut)

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
            cut = delta.finish_reason == "length"
            pieces = [self.tools.feed(content), *([self.tools.finish(cut)] if last else [])]
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


async def final_output(stream: AsyncIterator[tuple[int, RequestDelta]], timer: RequestTimer) -> RequestOutput:
    """A whole request's last output (503 if the engine aborted it)."""
    final: RequestOutput | None = None
    async for _, delta in stream:
        timer.observe(delta)
        final = delta.output or final
    if final is None or any(out.finish_reason == "abort" for out in final.outputs):
        raise aborted()
    return final


async def chat_pieces(stream: AsyncIterator[tuple[int, RequestDelta]], run: ChatRun,
                      choice: ChoiceStream) -> AsyncIterator[ChatDelta | RequestOutput]:
    """A one-choice stream as `choice`'s chat deltas, then the final output (503 if the engine aborted it):
    what the Anthropic and Responses endpoints re-shape into their own events."""
    async for _, request_delta in stream:
        run.timer.observe(request_delta)
        for delta in request_delta.deltas:
            for piece in choice.feed(delta):
                yield piece
        final = request_delta.output
        if final is not None:
            if any(out.finish_reason == "abort" for out in final.outputs):
                raise aborted()
            yield final


def _usage(final: RequestOutput) -> Usage:
    return Usage.of(len(final.prompt_token_ids), sum(len(out.token_ids) for out in final.outputs))


def chat_finish_reason(engine_reason: str | None, tool_called: bool, cut: bool) -> str | None:
    """"tool_calls" when calls were made, unless max_tokens cut the last one: then "length" (as when cut anywhere)."""
    return "tool_calls" if tool_called and not cut else engine_reason
