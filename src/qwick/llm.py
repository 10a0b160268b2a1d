"""The offline API, with vLLM's names: `LLM(model=...).generate(...)` and `.chat(...)`."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from qwick.config import EngineConfig
from qwick.device import resolve_device, resolve_dtype, resolve_threads
from qwick.engine.llm_engine import LLMEngine
from qwick.lora.manager import LoRAConfig, LoRAManager
from qwick.lora.request import LoRARequest
from qwick.model.hub import resolve_model_path
from qwick.model.loader import load_config
from qwick.outputs import RequestOutput, StreamDelta
from qwick.passes.compile import compile_decode as compile_decode_pass
from qwick.passes.cpu_packing import cpu_packing_supported, pack_linears_for_cpu
from qwick.passes.load import load_model
from qwick.quant import validate_quantization
from qwick.sampling_params import GenerationDefaults, SamplingParams
from qwick.tokenizer import (
    ReasoningStreamParser,
    Tokenizer,
    output_thinks,
    parse_tool_calls,
    split_chat_output,
)
from qwick.tokenizer.reasoning import THINK_START

if TYPE_CHECKING:
    from qwick.engine.async_engine import AsyncLLMEngine
    from qwick.tasks.offline import OfflineTasks

PromptInput = str | dict[str, Any]
Message = dict[str, Any]
LoRARequestInput = LoRARequest | Sequence[LoRARequest | None] | None
DEFAULT_MODEL = "Qwen/Qwen3-0.6B"


class LLM:
    """Load a Qwen3 model and generate. `load_format="dummy"` makes random weights from config.json alone."""

    def __init__(self, model: str | Path = DEFAULT_MODEL, *, tokenizer: str | Path | None = None,
                 dtype: str | torch.dtype = "auto", device: str = "auto", max_model_len: int | None = None,
                 max_num_seqs: int = 64, max_num_batched_tokens: int = 512, block_size: int = 16,
                 kv_cache_memory_bytes: int | None = None, enable_prefix_caching: bool = True,
                 seed: int | None = None, load_format: str = "auto", revision: str | None = None,
                 skip_tokenizer_init: bool = False, quantization: str | None = None, enable_lora: bool = False,
                 max_loras: int = 1, max_lora_rank: int = 16, quantization_group_size: int | None = None,
                 threads: int | None = None, compile_decode: bool = False, kv_cache_dtype: str = "auto") -> None:
        validate_quantization(quantization, quantization_group_size or 128)
        if compile_decode and enable_lora:
            raise ValueError("compile_decode does not support enable_lora yet: use one or the other")
        if compile_decode and kv_cache_dtype != "auto":
            raise ValueError("compile_decode does not support an fp8 KV cache yet: use kv_cache_dtype='auto' with it")
        torch.set_num_threads(resolve_threads(threads))  # process-wide: torch has one intra-op pool
        lora_config = LoRAConfig(max_loras, max_lora_rank) if enable_lora else None
        if load_format not in ("auto", "safetensors", "dummy"):
            raise ValueError(f"load_format must be 'auto', 'safetensors' or 'dummy', got {load_format!r}")
        self.model_path = resolve_model_path(model, revision)
        self.model_name = str(model)
        self.load_format, self.revision, self.seed = load_format, revision, seed  # the ledger's model identity
        config = load_config(self.model_path)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device, config.torch_dtype)
        # float, FP8 or qwick-quantized checkpoint; `quantization` quantizes a float one now (qwick/quant)
        self.model = load_model(self.model_path, config, self.dtype, self.device, load_format=load_format,
                                quantization=quantization, group_size=quantization_group_size, seed=seed)
        if cpu_packing_supported(self.dtype, self.device) and not compile_decode:  # inductor cannot take
            pack_linears_for_cpu(self.model)  # oneDNN-packed weights as graph inputs: compiled bf16 stays plain
        # last: LoRA wraps whatever the projections now are (packed, quantized or plain)
        self.lora = LoRAManager(self.model, lora_config, self.dtype, self.device) if lora_config else None
        # skip_tokenizer_init (vLLM's flag): token ids in, token ids out, no text
        self.tokenizer = None if skip_tokenizer_init else Tokenizer.from_pretrained(tokenizer or self.model_path)
        limit = config.max_position_embeddings
        if max_model_len is not None and not 0 < max_model_len <= limit:
            raise ValueError(f"max_model_len must be in [1, {limit}] (the model's max_position_embeddings), "
                             f"got {max_model_len}")
        engine_config = EngineConfig(max_model_len or limit, max_num_seqs, max_num_batched_tokens, block_size,
                                     kv_cache_memory_bytes, enable_prefix_caching, kv_cache_dtype)
        if max_model_len is None:  # like Ollama, fit the context to the KV budget rather than fail
            fits = engine_config.budget_blocks(config, engine_config.cache_dtype(self.dtype), self.device) * block_size
            engine_config = replace(engine_config, max_model_len=max(1, min(limit, fits)))
        self.engine_config = engine_config
        self.max_model_len = engine_config.max_model_len
        self.generation_defaults = _generation_defaults(self.model_path, self.tokenizer, config.eos_token_id)
        self.engine = LLMEngine(self.model, self.tokenizer, self.generation_defaults, self.engine_config,
                                self.device, self.dtype, seed, lora=self.lora)
        if compile_decode:  # after the engine: the warm-up compiles on its KV cache's scratch slot
            compile_decode_pass(self.model).warm_up(self.engine.runner.cache, max_num_seqs)
        self._ids = itertools.count()

    def get_tokenizer(self) -> Tokenizer:
        if self.tokenizer is None:
            raise ValueError("this LLM was created with skip_tokenizer_init=True: it has no tokenizer")
        return self.tokenizer

    def generate(self, prompts: PromptInput | Sequence[PromptInput],
                 sampling_params: SamplingParams | Sequence[SamplingParams] | None = None, *,
                 lora_request: LoRARequestInput = None) -> list[RequestOutput]:
        """Generate for every prompt (text, or {"prompt_token_ids": [...]}) in one continuous batch.

        `lora_request`: one adapter for all prompts, or a list with one (or None) per prompt."""
        items = [prompts] if isinstance(prompts, str | dict) else list(prompts)
        params = _params_per_prompt(sampling_params, len(items))
        loras = _loras_per_prompt(lora_request, len(items))
        request_ids: list[str] = []
        try:
            for item, p, lora in zip(items, params, loras, strict=True):
                request_ids.append(self._submit(item, p, lora))
        except BaseException:  # a bad prompt in the list: nothing of this call stays queued
            for request_id in request_ids:
                self.engine.abort(request_id)
            raise
        return self._run_to_completion(request_ids)

    def chat(self, messages: list[Message] | list[list[Message]],
             sampling_params: SamplingParams | Sequence[SamplingParams] | None = None, *,
             tools: list[dict[str, Any]] | None = None, chat_template_kwargs: dict[str, Any] | None = None,
             add_generation_prompt: bool = True, lora_request: LoRARequestInput = None) -> list[RequestOutput]:
        """Render each conversation with the model's chat template, generate, split <think> into reasoning."""
        conversations = [messages] if messages and isinstance(messages[0], dict) else list(messages)
        kwargs = chat_template_kwargs or {}
        prompts = [self.render_chat(c, tools, kwargs, add_generation_prompt) for c in conversations]
        params = _params_per_prompt(sampling_params, len(prompts))
        outputs = self.generate([{"prompt": p} for p in prompts], params, lora_request=lora_request)
        thinking = kwargs.get("enable_thinking", True) is not False
        for out, prompt, p in zip(outputs, prompts, params, strict=True):
            opened, structured = prompt.rstrip().endswith(THINK_START), p.structured_outputs is not None
            for completion in out.outputs:
                # the server's split (qwick.server.chat), so offline and HTTP answers agree
                completion.reasoning_content, completion.content = split_chat_output(
                    completion.text, thinking, opened, structured)
                if tools and completion.content:  # a call cut by max_tokens is dropped, as the server drops it
                    parsed = parse_tool_calls(completion.content, cut=completion.finish_reason == "length")
                    completion.content, completion.tool_calls = parsed.content, parsed.tool_calls or None
        return outputs

    def stream(self, prompt: PromptInput, sampling_params: SamplingParams | None = None, *,
               lora_request: LoRARequest | None = None) -> Iterator[StreamDelta]:
        """Yield text deltas as tokens arrive; their concatenation equals the final text exactly."""
        request_id = self._submit(prompt, sampling_params or SamplingParams(), lora_request)
        try:
            done = False
            while not done and self.engine.has_unfinished():
                for out in self.engine.step():
                    if out.request_id == request_id:
                        yield from (d for d in out.deltas if d.text or d.finish_reason or d.token_ids)
                        done = out.finished_request is not None
        finally:
            self.engine.abort(request_id)

    def stream_chat(self, messages: list[Message], sampling_params: SamplingParams | None = None, *,
                    tools: list[dict[str, Any]] | None = None,
                    chat_template_kwargs: dict[str, Any] | None = None,
                    lora_request: LoRARequest | None = None) -> Iterator[StreamDelta]:
        """Like `stream`, with each delta's text also split into `reasoning_content` and `content` as `chat` splits
        the whole text. Tool calls are not parsed here: the text carries them (`chat` parses them)."""
        kwargs = chat_template_kwargs or {}
        prompt = self.render_chat(messages, tools, kwargs, True)
        params = sampling_params or SamplingParams()
        parsers: dict[int, ReasoningStreamParser] = {}
        thinking = kwargs.get("enable_thinking", True) is not False
        opened, structured = prompt.rstrip().endswith(THINK_START), params.structured_outputs is not None
        for delta in self.stream({"prompt": prompt}, params, lora_request=lora_request):
            if delta.index not in parsers and not delta.text and delta.finish_reason is None:
                yield delta  # no text yet: the split is decided from the first text (see output_thinks)
                continue
            parser = parsers.setdefault(delta.index, ReasoningStreamParser(
                output_thinks(delta.text, thinking, opened, structured), prompt_opened_think=opened))
            parts = [parser.feed(delta.text)]
            if delta.finish_reason is not None:
                parts.append(parser.finish())
            delta.reasoning_content = "".join(p.reasoning for p in parts)
            delta.content = "".join(p.content for p in parts)
            yield delta

    def render_chat(self, messages: list[Message], tools: list[dict[str, Any]] | None = None,
                    chat_template_kwargs: dict[str, Any] | None = None, add_generation_prompt: bool = True) -> str:
        rendered = self.get_tokenizer().apply_chat_template(messages, tools=tools, add_generation_prompt=add_generation_prompt,
                                                      tokenize=False, **(chat_template_kwargs or {}))
        assert isinstance(rendered, str)
        return rendered

    # ---- gates (qwick.tasks): exact label probabilities, relevance, embeddings; see README "Gates" ----
    @property
    def tasks(self) -> OfflineTasks:
        """The gates over this LLM (built-in gates; `llm.tasks.load_gates(path)` adds a gates file)."""
        if getattr(self, "_tasks", None) is None:
            from qwick.tasks.offline import OfflineTasks

            self._tasks = OfflineTasks(self)
        return self._tasks

    def classify(self, texts: str | list[str], labels: list[str] | None = None, *, gate: str | None = None) -> Any:
        """P(label) for each label (exact, normalised over the labels) and the top label; one Decision per text."""
        return self.tasks.classify(texts, labels, gate)

    def score(self, query: str, items: list[str], *, instruction: str | None = None) -> list[float]:
        """Relevance of each item to the query, P(yes) in Qwen3-Reranker's format, in item order."""
        return self.tasks.score(query, items, instruction)

    def embed(self, texts: str | list[str], *, dimensions: int | None = None,
              lora_request: LoRARequest | None = None) -> list[list[float]]:
        """Last-token pooled, L2-normalised embeddings (Qwen3-Embedding); `dimensions` truncates (MRL); under
        `lora_request`'s adapter if given (needs enable_lora=True)."""
        if lora_request is not None and not isinstance(lora_request, LoRARequest):
            raise TypeError(f"lora_request must be a LoRARequest, got {type(lora_request).__name__}")
        return self.tasks.embed(texts, dimensions, lora_request)

    def gate(self, name: str, text: str) -> Any:
        """Run the named gate (moderate, classify, rewrite or extract) on `text`; returns its Decision."""
        return self.tasks.gate(name, text)

    def add_lora(self, lora_request: LoRARequest) -> None:
        """Load an adapter now (checking it) rather than on its first request; needs enable_lora=True."""
        self.engine.add_lora(lora_request)

    def _submit(self, prompt: PromptInput, params: SamplingParams, lora_request: LoRARequest | None = None) -> str:
        if not isinstance(params, SamplingParams):
            raise TypeError(f"sampling_params must be SamplingParams, got {type(params).__name__}")
        if lora_request is not None and not isinstance(lora_request, LoRARequest):
            raise TypeError(f"lora_request must be a LoRARequest, got {type(lora_request).__name__}")
        text, ids = self._prompt_ids(prompt)
        request_id = str(next(self._ids))
        self.engine.add_request(request_id, ids, params, prompt=text, lora_request=lora_request)
        return request_id

    def _prompt_ids(self, prompt: PromptInput) -> tuple[str | None, list[int]]:
        if isinstance(prompt, str):
            return prompt, self.get_tokenizer().encode(prompt)
        if isinstance(prompt, dict) and "prompt_token_ids" in prompt:
            ids = prompt["prompt_token_ids"]
            if not isinstance(ids, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in ids):
                raise ValueError("prompt_token_ids must be a list of integers")
            return prompt.get("prompt"), list(ids)
        if isinstance(prompt, dict) and isinstance(prompt.get("prompt"), str):
            return prompt["prompt"], self.get_tokenizer().encode(prompt["prompt"])
        raise ValueError("a prompt must be a string, {'prompt': str} or {'prompt_token_ids': [int, ...]}")

    def _run_to_completion(self, request_ids: list[str]) -> list[RequestOutput]:
        finished: dict[str, RequestOutput] = {}
        try:
            while len(finished) < len(request_ids) and self.engine.has_unfinished():
                for out in self.engine.step():
                    if out.finished_request is not None:
                        finished[out.request_id] = out.finished_request
        finally:
            for request_id in request_ids:
                if request_id not in finished:
                    self.engine.abort(request_id)
        return [finished[r] for r in request_ids]


def start_async_engine(make_llm: Callable[[], LLM]) -> tuple[LLM, AsyncLLMEngine]:
    """Build an LLM with `make_llm` on the loop thread of the AsyncLLMEngine that then steps it, so every torch op
    runs on one thread: an LLM built on the main thread and stepped by the loop thread runs 1.3-1.7x slower
    on CPU (qwick.engine.async_engine says why). `make_llm`'s error is raised here."""
    from qwick.engine.async_engine import AsyncLLMEngine

    built: list[LLM] = []

    def build() -> LLMEngine:
        built.append(make_llm())
        return built[0].engine

    client = AsyncLLMEngine(build)
    return built[0], client


def _params_per_prompt(params: SamplingParams | Sequence[SamplingParams] | None, count: int) -> list[SamplingParams]:
    if params is None:
        return [SamplingParams()] * count
    if isinstance(params, SamplingParams):
        return [params] * count
    params = list(params)
    if len(params) != count:
        raise ValueError(f"got {len(params)} SamplingParams for {count} prompts: pass one, or one per prompt")
    return params


def _loras_per_prompt(lora_request: LoRARequestInput, count: int) -> list[LoRARequest | None]:
    if lora_request is None or isinstance(lora_request, LoRARequest):
        return [lora_request] * count
    loras = list(lora_request)
    if len(loras) != count:
        raise ValueError(f"got {len(loras)} lora_requests for {count} prompts: pass one, or one (or None) per prompt")
    return loras


def _generation_defaults(folder: Path, tokenizer: Tokenizer | None,
                         config_eos: int | list[int] | None) -> GenerationDefaults:
    """The model's generation_config.json; without one, neutral sampling that stops on the EOS token."""
    path = folder / "generation_config.json"
    raw: dict[str, Any] = {}
    if path.is_file():
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path} is not valid JSON: {exc}") from exc
    if "eos_token_id" not in raw:
        raw["eos_token_id"] = tokenizer.eos_token_id if tokenizer is not None else config_eos
    return GenerationDefaults.from_dict(raw)
