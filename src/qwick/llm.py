"""The offline API, with vLLM's names: `LLM(model=...).generate(...)` and `.chat(...)`."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from qwick.engine.args import DEFAULT_MODEL, EngineArgs
from qwick.engine.builder import BuiltEngine, build_engine
from qwick.engine.llm_engine import LLMEngine
from qwick.engine.sync_engine import InlineEngineClient
from qwick.lora.request import LoRARequest
from qwick.outputs import RequestOutput, StreamDelta
from qwick.sampling_params import SamplingParams
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
    from qwick.gates.identity import ModelIdentity
    from qwick.gates.ledger import Ledger
    from qwick.gates.loader import Gates
    from qwick.gates.offline import OfflineGates

PromptInput = str | dict[str, Any]
Message = dict[str, Any]
LoRARequestInput = LoRARequest | Sequence[LoRARequest | None] | None


class LLM:
    """Load a Qwen3 model and generate. `load_format="dummy"` makes random weights from config.json alone."""

    def __init__(self, model: str | Path = DEFAULT_MODEL, *, tokenizer: str | Path | None = None,
                 dtype: str | torch.dtype = "auto", device: str = "auto", max_model_len: int | None = None,
                 max_num_seqs: int = 64, max_num_batched_tokens: int = 512, block_size: int = 16,
                 kv_cache_memory_bytes: int | None = None, enable_prefix_caching: bool = True,
                 seed: int | None = None, load_format: str = "auto", revision: str | None = None,
                 skip_tokenizer_init: bool = False, quantization: str | None = None, enable_lora: bool = False,
                 max_loras: int = 1, max_lora_rank: int = 16, quantization_group_size: int | None = None,
                 threads: int | None = None, compile_decode: bool = False, kv_cache_dtype: str = "auto",
                 enforce_eager: bool = False, gpu_memory_utilization: float | None = None,
                 speculative_config: dict[str, Any] | str | None = None, jump_forward: bool = True) -> None:
        self._adopt(build_engine(EngineArgs(
            model=model, tokenizer=tokenizer, dtype=dtype, device=device, max_model_len=max_model_len,
            max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens, block_size=block_size,
            kv_cache_memory_bytes=kv_cache_memory_bytes, enable_prefix_caching=enable_prefix_caching,
            seed=seed, load_format=load_format, revision=revision, skip_tokenizer_init=skip_tokenizer_init,
            quantization=quantization, enable_lora=enable_lora, max_loras=max_loras,
            max_lora_rank=max_lora_rank, quantization_group_size=quantization_group_size, threads=threads,
            compile_decode=compile_decode, kv_cache_dtype=kv_cache_dtype, enforce_eager=enforce_eager,
            gpu_memory_utilization=gpu_memory_utilization, speculative_config=speculative_config,
            jump_forward=jump_forward)))

    @classmethod
    def from_engine_args(cls, args: EngineArgs) -> LLM:
        """vLLM's constructor from an EngineArgs (what the CLI, `qwick serve` and the benchmarks build)."""
        llm = cls.__new__(cls)
        llm._adopt(build_engine(args))
        return llm

    def _adopt(self, built: BuiltEngine) -> None:
        args = built.args
        self.engine_args = args
        self.model_path = built.model_path
        self.model_name = str(args.model)
        # the ledger's model identity
        self.load_format, self.revision, self.seed = args.load_format, args.revision, args.seed
        self.device, self.dtype = built.device, built.dtype
        self.model, self.lora, self.tokenizer = built.model, built.lora, built.tokenizer
        self.engine_config = built.config
        self.max_model_len = built.max_model_len
        self.generation_defaults = built.generation_defaults
        self.engine = built.engine
        # the offline calls step the engine in the caller's thread through this client (engine/sync_engine.py)
        self.client = InlineEngineClient(self.engine)
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
        return self.client.run_to_completion(request_ids)

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
                # the server's split (qwick.server.routes.chat), so offline and HTTP answers agree
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
        yield from self.client.stream(request_id)

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

    # ---- gates (qwick.gates): exact label probabilities, relevance, embeddings; see README "Gates" ----
    @property
    def gates(self) -> OfflineGates:
        """The gates over this LLM (built-in gates; `llm.gates.load_gates(path)` adds a gates file)."""
        if getattr(self, "_gates", None) is None:
            self._gates = self.new_gates()
        return self._gates

    @property
    def tasks(self) -> OfflineGates:
        """The old name of `gates` (the same object)."""
        return self.gates

    def new_gates(self, gates: Gates | None = None, ledger: Ledger | None = None,
                  adapters: Sequence[LoRARequest] = ()) -> OfflineGates:
        """Gates over this LLM's engine with their own gate set (default: the built-ins), decision ledger and
        LoRA adapters the gates may name. Hashes the weights (the ledger's model identity)."""
        from qwick.gates.offline import OfflineGates

        return OfflineGates(self.client, self.get_tokenizer(), self.model_identity(), gates,
                            ledger, adapters)

    def model_identity(self) -> ModelIdentity:
        """Which model decides, as the ledger records it: id, revision, sha256 of the weights (hashed per call)."""
        from qwick.gates.identity import ModelIdentity

        return ModelIdentity.of_checkpoint(self.model_name, self.model_path, getattr(self, "revision", None),
                                           getattr(self, "load_format", "auto"), getattr(self, "seed", None))

    def classify(self, texts: str | list[str], labels: list[str] | None = None, *, gate: str | None = None) -> Any:
        """P(label) for each label (exact, normalised over the labels) and the top label; one Decision per text."""
        return self.gates.classify(texts, labels, gate)

    def score(self, query: str, items: list[str], *, instruction: str | None = None) -> list[float]:
        """Relevance of each item to the query, P(yes) in Qwen3-Reranker's format, in item order."""
        return self.gates.score(query, items, instruction)

    def embed(self, texts: str | list[str], *, dimensions: int | None = None,
              lora_request: LoRARequest | None = None) -> list[list[float]]:
        """Last-token pooled, L2-normalised embeddings (Qwen3-Embedding); `dimensions` truncates (MRL); under
        `lora_request`'s adapter if given (needs enable_lora=True)."""
        if lora_request is not None and not isinstance(lora_request, LoRARequest):
            raise TypeError(f"lora_request must be a LoRARequest, got {type(lora_request).__name__}")
        return self.gates.embed(texts, dimensions, lora_request)

    def gate(self, name: str, text: str) -> Any:
        """Run the named gate (moderate, classify, rewrite or extract) on `text`; returns its Decision."""
        return self.gates.gate(name, text)

    def pipeline(self, name: str, text: str, *, user_id: str | None = None, vars: dict[str, Any] | None = None,
                 retrieval: Any = None) -> Any:
        """Run the pipeline `name` of the gates file loaded with `llm.gates.load_gates(path)` on `text`; returns
        its PipelineResult (README "Pipelines"). `retrieval`: the index service retrieve/answer steps need."""
        from qwick.pipelines.offline import run_offline

        return run_offline(self.gates, name, text, user_id=user_id, vars=vars, retrieval=retrieval)

    # ---- retrieval (qwick.rag): see README "Retrieval and answers with citations" ----
    def retrieve(self, index: str | Path, query: str, **options: Any) -> list[Any]:
        """Search an index built with this model (else pass `embed_llm=` the one it was built with): Hits
        {id, source, score, text, meta}; options top_k=10, mode="hybrid"|"vector"|"bm25", rerank=False (scored by
        this model in Qwen3-Reranker's format, or by `rerank_llm=`)."""
        return self._rag().retrieve(index, query, **options)

    def ask(self, index: str | Path, question: str, **options: Any) -> Any:
        """Retrieve, then answer from the retrieved chunks with citations that can only name them: an Answer
        {answer, citations, retrieved}; options top_k=5, as_json=False, rerank=False, sampling_params, embed_llm,
        rerank_llm, min_relevance=0.5."""
        return self._rag().ask(index, question, **options)

    def _rag(self) -> Any:
        if getattr(self, "_rag_api", None) is None:
            from qwick.rag.offline import OfflineRag

            self._rag_api = OfflineRag(self)
        return self._rag_api

    def batch(self, rows: Iterable[dict[str, Any]], task: str, *, gates: str | Path | None = None,
              window: int | None = None, **options: Any) -> Iterator[dict[str, Any]]:
        """Run `task` (generate, chat, moderate, classify, rewrite, extract, score, embed) over many rows at full
        engine occupancy; yields each row's output ({"id", **fields}) as it finishes (qwick.batch, README
        "Batch files and Ray"). `options`: gate, labels, instruction, dimensions, sampling, chat_template_kwargs."""
        from qwick.batch.api import batch_rows

        return batch_rows(self, rows, task, gates=gates, window=window, **options)

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

