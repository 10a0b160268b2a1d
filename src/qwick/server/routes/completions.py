"""POST /v1/completions: prompts as text, a list of texts, token ids or a list of token-id lists; echo; logprobs.

Each prompt is one engine request of `n` samples; choice `i * n + j` is sample j of prompt i, as in OpenAI.
An empty text prompt ("", or `prompt: null`, the contract's default) is the document boundary `<|endoftext|>`,
as OpenAI's default prompt is: the model needs at least one token to start from.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from qwick.engine.client import RequestDelta
from qwick.lora.request import adapter_kwargs
from qwick.outputs import CompletionOutput, RequestOutput
from qwick.sampling_params import SamplingParams
from qwick.server.errors import aborted, bad_request, engine_error, not_supported
from qwick.server.logprobs import completion_logprobs
from qwick.server.metrics import RequestTimer
from qwick.server.openapi import JSONRouter
from qwick.server.protocol.base import Usage
from qwick.server.protocol.completions import (
    Completion,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
)
from qwick.server.serving import ServerContext, new_id, read_body, sampling_params
from qwick.server.streams import SSE_DONE, error_event, merged, respond, sse
from qwick.server.structured import check_structure, requested_structure

logger = logging.getLogger("qwick.server")
EMPTY_PROMPT_TOKEN = "<|endoftext|>"


@dataclass
class PromptPlan:
    text: str | None
    ids: list[int]
    params: SamplingParams


def router(ctx: ServerContext) -> JSONRouter:
    completions, routes = CompletionServing(ctx), JSONRouter()

    @routes.json_post("/v1/completions", CompletionRequest)
    async def text_completions(request: Request) -> Response:
        return await completions.create(await read_body(request, CompletionRequest, ctx.limits), request)

    return routes


class CompletionServing:
    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx

    async def create(self, body: CompletionRequest, request: Request) -> Response:
        lora = self.ctx.resolve_model(body.model)
        plans = await self.ctx.off_loop(self.plan, body)  # tokenizing and grammar compiling: off the event loop
        request_id = new_id("cmpl")
        logger.info("request %s: %s, %d prompt(s)", request.state.request_id, request_id, len(plans))
        release = self.ctx.admission.acquire(body.n * len(plans))
        timers = [self.ctx.metrics.timer() for _ in plans]
        stream = merged([self.ctx.engine.generate(p.ids, p.params, f"{request_id}-{i}", p.text, **adapter_kwargs(lora))
                         for i, p in enumerate(plans)])
        return await respond(
            request, stream, release, streaming=body.stream,
            whole=lambda started: self._complete(started, body, plans, request_id, timers),
            events=lambda started: self._stream(started, body, plans, request_id, timers, request.state.request_id))

    def plan(self, body: CompletionRequest) -> list[PromptPlan]:
        if body.suffix is not None:
            raise not_supported("suffix", "suffix")
        if body.best_of is not None and body.best_of != body.n:
            raise not_supported("best_of other than n", "best_of")
        prompts = _prompt_list("" if body.prompt is None else body.prompt)
        if not prompts:
            raise bad_request("'prompt' is empty", param="prompt", code="invalid_value")
        if len(prompts) > self.ctx.limits.max_prompts:
            raise bad_request(f"'prompt' holds {len(prompts)} prompts, more than this server's limit of "
                              f"{self.ctx.limits.max_prompts}", param="prompt", code="too_many_prompts")
        requested = requested_structure(body)
        if requested is not None:
            check_structure(self.ctx.grammars, *requested)
        plans = []
        for prompt in prompts:
            text, ids = (prompt, self._encode(prompt)) if isinstance(prompt, str) else (None, prompt)
            if not ids:
                raise bad_request("a prompt is empty: give at least one token", param="prompt", code="invalid_value")
            if min(ids) < 0 or max(ids) >= self.ctx.tokenizer.vocab_size:
                raise bad_request(f"prompt token ids must be in [0, {self.ctx.tokenizer.vocab_size})",
                                  param="prompt", code="invalid_value")
            params = sampling_params(body, prompt_len=len(ids), max_model_len=self.ctx.max_model_len,
                                     max_tokens=body.max_tokens, logprobs=body.logprobs,
                                     vocab_size=self.ctx.tokenizer.vocab_size,
                                     fields={"prompt": "prompt", "max_tokens": "max_tokens", "logprobs": "logprobs"},
                                     structured_outputs=requested[0] if requested is not None else None)
            plans.append(PromptPlan(text, ids, params))
        return plans

    def _encode(self, prompt: str) -> list[int]:
        if prompt:
            return self.ctx.encode(prompt, "prompt")
        boundary = self.ctx.tokenizer.token_to_id(EMPTY_PROMPT_TOKEN)
        if boundary is None:
            raise bad_request(f"an empty prompt needs the {EMPTY_PROMPT_TOKEN} token, which this tokenizer lacks: "
                              "give at least one token", param="prompt", code="invalid_value")
        return [boundary]

    def _echo(self, plan: PromptPlan, body: CompletionRequest) -> str:
        if not body.echo:
            return ""
        return plan.text if plan.text is not None else self.ctx.tokenizer.decode(plan.ids)

    async def _echo_logprobs(self, plans: list[PromptPlan], body: CompletionRequest,
                             request_id: str) -> list[CompletionLogprobs | None]:
        """Prompt token logprobs for `echo` + `logprobs` (the first token has none), through the scoring path."""
        if not body.echo or body.logprobs is None:
            return [None] * len(plans)
        top_n = body.logprobs
        adapter = adapter_kwargs(self.ctx.resolve_model(body.model))  # prompt logprobs under the same adapter

        async def one(i: int, ids: list[int]) -> CompletionLogprobs:
            tokens = [self.ctx.tokenizer.decode([t]) for t in ids]
            values: list[float | None] = [None]
            tops: list[dict[str, float] | None] = [None]
            if len(ids) > 1:
                try:
                    scored = await self.ctx.engine.continuation_logprobs(ids[:1], [ids[1:]], f"{request_id}-echo-{i}", top_n,
                                                         **adapter)
                except Exception as exc:
                    raise engine_error(exc) or exc from None
                values += scored.token_logprobs[0]
                if top_n == 0:  # nothing ranked was asked for: empty, as for generated tokens
                    tops += [{} for _ in ids[1:]]
                else:
                    assert scored.top_logprobs is not None
                    tops += [{self.ctx.tokenizer.decode([t]): lp for t, lp in top[:top_n]}
                             for top in scored.top_logprobs[0]]
            offsets = list(itertools.accumulate((len(t) for t in tokens[:-1]), initial=0))
            return CompletionLogprobs(tokens=tokens, token_logprobs=values, top_logprobs=tops, text_offset=offsets)

        return list(await asyncio.gather(*(one(i, p.ids) for i, p in enumerate(plans))))

    def _logprobs(self, out: CompletionOutput, body: CompletionRequest, offset: int) -> CompletionLogprobs | None:
        if body.logprobs is None or out.logprobs is None:
            return None
        return completion_logprobs(out.token_ids, out.logprobs, body.logprobs, offset)

    async def _complete(self, stream: AsyncIterator[tuple[int, RequestDelta]], body: CompletionRequest,
                        plans: list[PromptPlan], request_id: str, timers: list[RequestTimer]) -> Response:
        finals: dict[int, RequestOutput] = {}
        echoed = await self._echo_logprobs(plans, body, request_id)  # the generation runs meanwhile
        async for i, delta in stream:
            timers[i].observe(delta)
            if delta.output is not None:
                finals[i] = delta.output
        if len(finals) < len(plans) or any(o.finish_reason == "abort" for f in finals.values() for o in f.outputs):
            raise aborted()
        choices = []
        for i, plan in enumerate(plans):
            echo = self._echo(plan, body)
            for out in finals[i].outputs:
                choices.append(CompletionChoice(index=i * body.n + out.index, text=echo + out.text,
                                                logprobs=_joined(echoed[i], self._logprobs(out, body, len(echo))),
                                                finish_reason=out.finish_reason))
        response = Completion(id=request_id, model=body.model or self.ctx.model_name, choices=choices,
                              usage=_usage(plans, finals.values()))
        return Response(response.model_dump_json(), media_type="application/json")

    async def _stream(self, stream: AsyncIterator[tuple[int, RequestDelta]], body: CompletionRequest,
                      plans: list[PromptPlan], request_id: str, timers: list[RequestTimer],
                      http_id: str) -> AsyncIterator[str]:
        created = int(time.time())
        model = body.model or self.ctx.model_name  # a LoRA adapter's name, if the request used one
        include_usage = body.stream_options is not None and body.stream_options.include_usage
        exclude = None if include_usage else {"usage"}

        def chunk(index: int, text: str, finish_reason: str | None = None,
                  logprobs: CompletionLogprobs | None = None) -> str:
            choice = CompletionChoice(index=index, text=text, logprobs=logprobs, finish_reason=finish_reason)
            body = Completion(id=request_id, created=created, model=model, choices=[choice])
            return f"data: {body.model_dump_json(exclude=exclude)}\n\n"

        finals: dict[int, RequestOutput] = {}
        offsets = {i * body.n + j: len(self._echo(plan, body)) for i, plan in enumerate(plans) for j in range(body.n)}
        try:
            if body.echo:
                echoed = await self._echo_logprobs(plans, body, request_id)
                for i, plan in enumerate(plans):
                    for j in range(body.n):
                        yield chunk(i * body.n + j, self._echo(plan, body), logprobs=echoed[i])
            async for i, request_delta in stream:
                timers[i].observe(request_delta)
                for delta in request_delta.deltas:
                    index = i * body.n + delta.index
                    logprobs = None
                    if body.logprobs is not None and delta.logprobs:
                        logprobs = completion_logprobs(delta.token_ids, delta.logprobs, body.logprobs, offsets[index])
                        offsets[index] += sum(len(t) for t in logprobs.tokens)
                    if delta.text or logprobs is not None:
                        yield chunk(index, delta.text, logprobs=logprobs)
                final = request_delta.output
                if final is None:
                    continue
                if any(out.finish_reason == "abort" for out in final.outputs):
                    yield sse(aborted().body())
                    break
                finals[i] = final
                for out in final.outputs:
                    yield chunk(i * body.n + out.index, "", out.finish_reason)
            else:  # no abort
                if include_usage:
                    usage = Completion(id=request_id, created=created, model=model, choices=[],
                                       usage=_usage(plans, finals.values()))
                    yield sse(usage)
        except Exception as exc:
            yield error_event(exc, http_id, request_id)
        yield SSE_DONE


def _joined(first: CompletionLogprobs | None, second: CompletionLogprobs | None) -> CompletionLogprobs | None:
    if first is None or second is None:
        return first or second
    return CompletionLogprobs(tokens=first.tokens + second.tokens,
                              token_logprobs=first.token_logprobs + second.token_logprobs,
                              top_logprobs=first.top_logprobs + second.top_logprobs,
                              text_offset=first.text_offset + second.text_offset)


def _prompt_list(prompt: str | list[str] | list[int] | list[list[int]]) -> list[str | list[int]]:
    if isinstance(prompt, str):
        return [prompt]
    if prompt and isinstance(prompt[0], int):
        return [list(prompt)]  # type: ignore[arg-type]
    return list(prompt)  # type: ignore[arg-type]


def _usage(plans: list[PromptPlan], finals: Iterable[RequestOutput]) -> Usage:
    outputs = [out for final in finals for out in final.outputs]
    return Usage.of(sum(len(p.ids) for p in plans), sum(len(out.token_ids) for out in outputs))
