"""LLMEngine: admits requests into a running batch, steps the model, samples, and streams deltas.

Requests join between steps and leave as soon as they finish (continuous batching over a slot cache).
The paged, prefix-cached scheduler of the batched-engine issue replaces the slot cache behind this API.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field

import torch

from qwick.engine.runner import ModelRunner
from qwick.engine.sampler import SamplingRow, sample
from qwick.engine.sequence import Detokenizer, NullDetokenizer, Sequence
from qwick.engine.stopping import append_token
from qwick.engine.thinking import CLOSING_TEXT, ThinkingTracker
from qwick.model.qwen3 import Qwen3ForCausalLM
from qwick.outputs import CompletionOutput, Logprob, RequestOutput, StreamDelta
from qwick.sampling_params import GenerationDefaults, SamplingParams
from qwick.tokenizer import IncrementalDetokenizer, Tokenizer


class PromptTooLongError(ValueError):
    """The prompt does not leave room for a single generated token within max_model_len."""


@dataclass(eq=False)
class Request:
    request_id: str
    prompt: str | None
    prompt_ids: list[int]
    params: SamplingParams
    sequences: list[Sequence] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return all(s.finished for s in self.sequences)


@dataclass
class StepOutput:
    request_id: str
    deltas: list[StreamDelta]
    finished_request: RequestOutput | None  # set once the whole request is done


class LLMEngine:
    def __init__(self, model: Qwen3ForCausalLM, tokenizer: Tokenizer | None, defaults: GenerationDefaults,
                 max_model_len: int, max_num_seqs: int, device: torch.device, dtype: torch.dtype,
                 seed: int | None = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.defaults = defaults
        self.max_model_len = max_model_len
        self.max_num_seqs = max_num_seqs
        self.runner = ModelRunner(model, device, dtype)
        vocab = model.config.vocab_size
        self.valid_vocab = min(tokenizer.vocab_size, vocab) if tokenizer is not None else vocab
        self.rng = random.Random(seed)
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self._closing_ids = tokenizer.encode(CLOSING_TEXT) if tokenizer is not None else []

    def add_request(self, request_id: str, prompt_ids: list[int], params: SamplingParams,
                    prompt: str | None = None) -> None:
        if not prompt_ids:
            raise ValueError("the prompt is empty: give at least one token")
        if len(prompt_ids) >= self.max_model_len:
            raise PromptTooLongError(
                f"the prompt has {len(prompt_ids)} tokens but max_model_len is {self.max_model_len}: "
                f"shorten it to at most {self.max_model_len - 1} tokens or raise max_model_len"
            )
        bad = [t for t in prompt_ids if not 0 <= t < self.model.config.vocab_size]
        if bad:
            raise ValueError(f"prompt token ids out of range [0, {self.model.config.vocab_size}): {bad[:5]}")
        if params.max_thinking_tokens is not None and (self.tokenizer is None or self.tokenizer.think_end_id is None):
            raise ValueError("max_thinking_tokens needs a tokenizer with <think> and </think> tokens")
        params = params.resolved(self.defaults)
        request = Request(request_id, prompt, list(prompt_ids), params)
        request.sequences = [self._new_sequence(request, i) for i in range(params.n)]
        self.waiting.append(request)

    def _new_sequence(self, request: Request, index: int) -> Sequence:
        params = request.params
        seed = params.seed + index if params.seed is not None else self.rng.getrandbits(63)
        stop_ids = set(params.stop_token_ids or [])
        if not params.ignore_eos:
            stop_ids.update(self.defaults.eos_token_ids)
        thinking = None
        if params.max_thinking_tokens is not None and self.tokenizer is not None:
            thinking = ThinkingTracker.for_prompt(request.prompt_ids, self.tokenizer.think_start_id,
                                                  self.tokenizer.think_end_id, params.max_thinking_tokens,
                                                  self._closing_ids)
        return Sequence(
            request_id=request.request_id, index=index, prompt_ids=request.prompt_ids, params=params,
            generator=torch.Generator().manual_seed(seed),
            detokenizer=self._detokenizer(params),
            stop_ids=frozenset(stop_ids), thinking=thinking, logprobs=[] if params.logprobs is not None else None,
        )

    def _detokenizer(self, params: SamplingParams) -> Detokenizer:
        if self.tokenizer is None:
            return NullDetokenizer()
        return IncrementalDetokenizer(self.tokenizer, skip_special_tokens=params.skip_special_tokens)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def abort(self, request_id: str) -> None:
        for request in [r for r in self.waiting if r.request_id == request_id]:
            self.waiting.remove(request)
        for request in [r for r in self.running if r.request_id == request_id]:
            for seq in request.sequences:
                if not seq.finished:
                    seq.finish_reason = "abort"
                self._free(seq)
            self.running.remove(request)

    def step(self) -> list[StepOutput]:
        """Admit waiting requests (prefill), decode one token for the others; return what changed."""
        sampled: list[tuple[Sequence, torch.Tensor]] = []
        decoding = sorted((s for r in self.running for s in r.sequences if not s.finished), key=lambda s: s.slot)
        admitted = self._admit()
        if decoding:
            logits = self.runner.decode(decoding)
            sampled += list(zip(decoding, logits, strict=True))
        for request in admitted:
            sampled += self._prefill(request)
        self._sample_and_append(sampled)
        stepped = {id(seq) for seq, _ in sampled}
        return self._collect([r for r in self.running if any(id(s) in stepped for s in r.sequences)], stepped)

    def _admit(self) -> list[Request]:
        admitted = []
        active = sum(len(r.sequences) for r in self.running)
        while self.waiting and active + self.waiting[0].params.n <= max(self.max_num_seqs, self.waiting[0].params.n):
            request = self.waiting.popleft()
            self.running.append(request)
            admitted.append(request)
            active += request.params.n
        return admitted

    def _prefill(self, request: Request) -> list[tuple[Sequence, torch.Tensor]]:
        first = request.sequences[0]
        first.slot = self.runner.allocate_slot(first.total_len + 1)
        logits = self.runner.prefill(first)
        for seq in request.sequences[1:]:  # n > 1: share the prompt's cache, sample independently
            seq.slot = self.runner.allocate_slot(first.total_len + 1)
            self.runner.cache.copy_slot(first.slot, seq.slot, first.total_len)
            seq.num_cached = first.num_cached
        return [(seq, logits.clone()) for seq in request.sequences]

    def _sample_and_append(self, pairs: list[tuple[Sequence, torch.Tensor]]) -> None:
        if not pairs:
            return
        seqs = [s for s, _ in pairs]
        logits = torch.stack([row for _, row in pairs])  # [B, V]
        rows = [SamplingRow(s.params, s.generator, s.prompt_ids, s.output_ids, s.banned_ids()) for s in seqs]
        result = sample(logits, rows, self.valid_vocab)
        for seq, token, logprobs in zip(seqs, result.token_ids, result.logprobs, strict=True):
            forced = seq.thinking.next_forced() if seq.thinking is not None else None
            if forced is not None:
                token = forced
            if logprobs is not None:
                self._record_logprobs(seq, token, logprobs)
            append_token(seq, token, self.max_model_len)
            if seq.finished:
                self._free(seq)

    def _record_logprobs(self, seq: Sequence, token: int, logprobs: torch.Tensor) -> None:
        chosen = float(logprobs[token])
        rank = int((logprobs > chosen).sum()) + 1
        entry = {token: Logprob(chosen, rank, self._token_text(token))}
        if seq.params.logprobs:
            values, ids = torch.topk(logprobs, seq.params.logprobs)
            for r, (value, tid) in enumerate(zip(values.tolist(), ids.tolist(), strict=True), start=1):
                entry.setdefault(tid, Logprob(value, r, self._token_text(tid)))
        assert seq.logprobs is not None
        seq.logprobs.append(entry)
        seq.cumulative_logprob += chosen

    def _token_text(self, token: int) -> str:
        return self.tokenizer.decode([token]) if self.tokenizer is not None else ""

    def _free(self, seq: Sequence) -> None:
        if seq.slot >= 0:
            self.runner.release_slot(seq.slot)
            seq.slot = -1

    def _collect(self, touched: list[Request], stepped: set[int]) -> list[StepOutput]:
        outputs = []
        for request in touched:
            deltas = []
            for seq in (s for s in request.sequences if id(s) in stepped):
                text = seq.take_delta()
                new_ids = seq.output_ids[-1:] if seq.output_ids else []
                deltas.append(StreamDelta(seq.index, text, new_ids, seq.finish_reason))
            done = request.finished
            if done:
                self.running.remove(request)
            outputs.append(StepOutput(request.request_id, deltas, self._final(request) if done else None))
        return outputs

    @staticmethod
    def _final(request: Request) -> RequestOutput:
        outs = [
            CompletionOutput(s.index, s.text, list(s.output_ids),
                             s.cumulative_logprob if s.logprobs is not None else None, s.logprobs,
                             s.finish_reason, s.stop_reason)
            for s in request.sequences
        ]
        return RequestOutput(request.request_id, request.prompt, request.prompt_ids, outs, finished=True)
