"""The batch tasks: what each input row must hold and what its output line says, run through the engine
client the offline API uses (`GateService` for the gates and embeddings, `EngineClient.generate` for text).

The output fields are the offline API's answers, less what differs from run to run (request ids, latencies,
tool-call ids), so a deterministic task (greedy generation, gates) writes the same line every time."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from qwick.batch.context import TaskContext
from qwick.batch.rows import RowError
from qwick.gates.decisions import Decision
from qwick.gates.kinds import GATE_KINDS
from qwick.sampling_params import SamplingParams
from qwick.tokenizer import parse_tool_calls, split_chat_output
from qwick.tokenizer.reasoning import THINK_START


@dataclass(frozen=True)
class TaskOptions:
    """A task's options (the CLI's task flags; `llm.batch`'s keywords). Picklable: Ray ships it to actors."""

    gate: str | None = None  # the gate that decides (default: the one named after the task)
    labels: tuple[str, ...] | None = None  # classify: ad-hoc labels (a row's own "labels" wins)
    instruction: str | None = None  # score: the reranker instruction (a row's own wins)
    dimensions: int | None = None  # embed: truncate (MRL)
    sampling: SamplingParams = field(default_factory=SamplingParams)  # generate / chat (LLM.generate's default)
    chat_template_kwargs: dict[str, Any] | None = None  # chat: e.g. {"enable_thinking": False}


class BatchTask:
    """One task: `parse` checks a row's fields (RowError naming the field), `run` computes its output fields."""

    name: ClassVar[str]

    def parse(self, data: dict[str, Any], options: TaskOptions) -> dict[str, Any]:
        return {"text": _text(data, "text")}

    async def run(self, ctx: TaskContext, inputs: dict[str, Any], request_id: str) -> dict[str, Any]:
        raise NotImplementedError


class GateTask(BatchTask):
    """A gate that takes a text (moderate, classify, rewrite, extract): the gate's own HTTP answer fields."""

    kinds: ClassVar[tuple[str, ...]]

    async def run(self, ctx: TaskContext, inputs: dict[str, Any], request_id: str) -> dict[str, Any]:
        spec = ctx.gates.gate(ctx.options.gate or self.name, self.kinds)
        return _gate_fields(await ctx.gates.run(spec, {"text": inputs["text"]}, request_id), inputs)


class Moderate(GateTask):
    name, kinds = "moderate", ("moderate",)


class Rewrite(GateTask):
    name, kinds = "rewrite", ("rewrite",)


class Extract(GateTask):
    name, kinds = "extract", ("extract",)


class Classify(BatchTask):
    name = "classify"

    def parse(self, data: dict[str, Any], options: TaskOptions) -> dict[str, Any]:
        labels = data.get("labels", options.labels)
        if labels is not None and (not isinstance(labels, list | tuple) or len(labels) < 2
                                   or not all(isinstance(x, str) and x.strip() for x in labels)):
            raise RowError("'labels' must be a list of at least two non-empty strings")
        return {"text": _text(data, "text"), "labels": list(labels) if labels is not None else None}

    async def run(self, ctx: TaskContext, inputs: dict[str, Any], request_id: str) -> dict[str, Any]:
        decision = await ctx.gates.classify(inputs["text"], inputs["labels"], ctx.options.gate, request_id=request_id)
        return _gate_fields(decision, inputs)


class Score(BatchTask):
    name = "score"

    def parse(self, data: dict[str, Any], options: TaskOptions) -> dict[str, Any]:
        items = data.get("items")
        if not isinstance(items, list) or not items or not all(isinstance(x, str) for x in items):
            raise RowError("'items' must be a non-empty list of strings")
        instruction = data.get("instruction", options.instruction)
        if instruction is not None and not isinstance(instruction, str):
            raise RowError("'instruction' must be a string")
        return {"query": _text(data, "query"), "items": items, "instruction": instruction}

    async def run(self, ctx: TaskContext, inputs: dict[str, Any], request_id: str) -> dict[str, Any]:
        decision = await ctx.gates.score(inputs["query"], inputs["items"], ctx.options.gate,
                                         instruction=inputs["instruction"], request_id=request_id)
        return {"gate": decision.gate, "scores": decision.item_scores}


class Embed(BatchTask):
    name = "embed"

    async def run(self, ctx: TaskContext, inputs: dict[str, Any], request_id: str) -> dict[str, Any]:
        vectors, tokens = await ctx.gates.embed([inputs["text"]], ctx.options.dimensions)
        return {"embedding": vectors[0], "prompt_tokens": tokens}


class Generate(BatchTask):
    name = "generate"

    def parse(self, data: dict[str, Any], options: TaskOptions) -> dict[str, Any]:
        return {"prompt": _text(data, "prompt")}

    async def run(self, ctx: TaskContext, inputs: dict[str, Any], request_id: str) -> dict[str, Any]:
        out = await _generate(ctx, inputs["prompt"], request_id)
        return {"text": out.text, "finish_reason": out.finish_reason, **out.usage}


class Chat(BatchTask):
    name = "chat"

    def parse(self, data: dict[str, Any], options: TaskOptions) -> dict[str, Any]:
        messages, tools = data.get("messages"), data.get("tools")
        if not isinstance(messages, list) or not messages or not all(
                isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
            raise RowError("'messages' must be a non-empty list of {\"role\": ..., \"content\": ...} objects")
        if tools is not None and (not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools)):
            raise RowError("'tools' must be a list of tool objects")
        return {"messages": messages, "tools": tools}

    async def run(self, ctx: TaskContext, inputs: dict[str, Any], request_id: str) -> dict[str, Any]:
        kwargs, tools = ctx.options.chat_template_kwargs or {}, inputs["tools"]
        prompt = ctx.tokenizer.apply_chat_template(inputs["messages"], tools=tools, add_generation_prompt=True,
                                                   tokenize=False, **kwargs)
        out = await _generate(ctx, prompt, request_id)
        # LLM.chat's split (the server's), so batch and offline answers agree
        structured = ctx.options.sampling.structured_outputs is not None
        reasoning, content = split_chat_output(out.text, kwargs.get("enable_thinking", True) is not False,
                                               prompt.rstrip().endswith(THINK_START), structured)
        calls = None
        if tools and content:
            parsed = parse_tool_calls(content, cut=out.finish_reason == "length")
            content = parsed.content
            calls = [{"name": c.name, "arguments": c.arguments} for c in parsed.tool_calls] or None
        return {"content": content, "reasoning_content": reasoning, "tool_calls": calls,
                "finish_reason": out.finish_reason, **out.usage}


@dataclass
class _Generated:
    text: str
    finish_reason: str | None
    usage: dict[str, int]


async def _generate(ctx: TaskContext, prompt: str, request_id: str) -> _Generated:
    ids = ctx.tokenizer.encode(prompt)
    final = None
    async for delta in ctx.client.generate(ids, ctx.options.sampling, request_id, prompt=prompt):
        final = delta.output if delta.finished else final
    if final is None:
        raise RuntimeError(f"the engine ended request {request_id} without an output")
    sample = final.outputs[0]
    return _Generated(sample.text, sample.finish_reason,
                      {"prompt_tokens": len(final.prompt_token_ids), "completion_tokens": len(sample.token_ids)})


def _gate_fields(decision: Decision, inputs: dict[str, Any]) -> dict[str, Any]:
    """The gate endpoint's answer (server/routes/gates.py gate_json) without its request id and latency."""
    return {"gate": decision.gate, **GATE_KINDS[decision.kind].response(decision, inputs)}


def _text(data: dict[str, Any], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str):
        got = "it is missing" if value is None else f"got {type(value).__name__}"
        raise RowError(f"'{name}' must be a string ({got})")
    return value


TASKS: dict[str, BatchTask] = {t.name: t for t in (Generate(), Chat(), Moderate(), Classify(), Rewrite(), Extract(),
                                                    Score(), Embed())}
