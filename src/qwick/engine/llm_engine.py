"""LLMEngine: requests in, incremental outputs out; one `step()` = schedule, run the model, sample.

Requests join the running batch between steps and leave as soon as they finish (continuous batching);
KV memory is paged (`BlockManager`) with automatic prefix caching; long prompts are prefilled in chunks.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from qwick.engine.block_manager import BlockManager
from qwick.engine.config import EngineConfig
from qwick.engine.constrained import MaskBuilder, feeds_grammar
from qwick.engine.emit import TokenEmitter
from qwick.engine.grammar import GrammarCompiler, SequenceConstraint
from qwick.engine.jobs import Jobs
from qwick.engine.jump_forward import jump_forward, jumps
from qwick.engine.readout import ReadoutOutput, ReadoutSpec
from qwick.engine.runner import ModelRunner, group_chunks
from qwick.engine.sampler import SamplingRow, sample
from qwick.engine.scheduler import PrefillChunk, Scheduler
from qwick.engine.sequence import Detokenizer, NullDetokenizer, Sequence
from qwick.engine.spec_decode.drafter import NgramDrafter
from qwick.engine.spec_decode.rows import rows_per_sequence
from qwick.engine.spec_decode.verify import DraftVerifier
from qwick.engine.stats import EngineStats
from qwick.engine.thinking import (
    ANSWER_SEPARATOR,
    ASSISTANT_HEADER,
    CLOSING_TEXT,
    ThinkingTracker,
    ThinkState,
)
from qwick.model.kv_cache import PagedKVCache
from qwick.model.qwen3 import Qwen3ForCausalLM
from qwick.outputs import CompletionOutput, RequestOutput, StreamDelta
from qwick.sampling_params import GenerationDefaults, SamplingParams
from qwick.tokenizer import IncrementalDetokenizer, Tokenizer

if TYPE_CHECKING:
    from qwick.lora.manager import LoRAManager
    from qwick.lora.request import LoRARequest


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
    result: ReadoutOutput | None = None  # readouts (scoring / pooling): their result (no deltas, no finished_request)

    @property
    def finished(self) -> bool:
        return self.finished_request is not None or self.result is not None


class LLMEngine:
    def __init__(self, model: Qwen3ForCausalLM, tokenizer: Tokenizer | None, defaults: GenerationDefaults,
                 config: EngineConfig, device: torch.device, dtype: torch.dtype, seed: int | None = None,
                 lora: LoRAManager | None = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.defaults = defaults
        self.config = config
        self.max_model_len = config.max_model_len
        cfg = model.config
        cache_dtype = config.cache_dtype(dtype)
        num_blocks = config.num_kv_blocks(cfg, cache_dtype, device)
        self.cache = PagedKVCache(cfg.num_hidden_layers, num_blocks, config.block_size, cfg.num_key_value_heads,
                                  cfg.head_dim, cache_dtype, device, compute_dtype=dtype)
        self.blocks = BlockManager(num_blocks, config.block_size, config.enable_prefix_caching,
                                   self.cache.copy_block)  # copies reuse computed prompt tails
        drafter = NgramDrafter(config.speculative, config.max_model_len) if config.speculative else None
        self.scheduler = Scheduler(self.blocks, config.max_num_seqs, config.max_num_batched_tokens, drafter)
        self.lora = lora  # adapter slots, when the model carries the LoRA pass (LLM(enable_lora=True))
        self.runner = ModelRunner(model, self.cache, device, lora)
        vocab = cfg.vocab_size
        self.valid_vocab = min(tokenizer.vocab_size, vocab) if tokenizer is not None else vocab
        self.jobs = Jobs(self.scheduler, self.blocks, self.cache.copy_block, self.valid_vocab, vocab,
                         self.max_model_len, model.has_lm_head)  # scoring / pooling requests
        self.rng = random.Random(seed)
        self.requests: dict[str, Request] = {}
        self.counters = EngineStats()
        self.emitter = TokenEmitter(self.counters, self.max_model_len, self._token_text)
        self._closing_ids = tokenizer.encode(CLOSING_TEXT) if tokenizer is not None else []
        self._separator_ids = tokenizer.encode(ANSWER_SEPARATOR) if tokenizer is not None else []
        self._assistant_header = tokenizer.encode(ASSISTANT_HEADER) if tokenizer is not None else []
        # structured output: grammars compile against the tokenizer; masks are as wide as the logits
        llg_eos = (defaults.eos_token_ids or (tokenizer.eos_token_id or 0,))[0] if tokenizer is not None else 0
        self.grammars = (GrammarCompiler.for_tokenizer(tokenizer, vocab, llg_eos) if tokenizer is not None
                         else None)
        self._masks = MaskBuilder(vocab, llg_eos, device)
        self.verifier = DraftVerifier(self.emitter, self.blocks, self.counters, self.valid_vocab, self._masks.now,
                                      config.jump_forward)

    # ----------------------------------------------------------------------------------------- requests
    def add_request(self, request_id: str, prompt_ids: list[int], params: SamplingParams,
                    prompt: str | None = None, lora_request: LoRARequest | None = None) -> None:
        if request_id in self.requests or request_id in self.jobs:
            raise ValueError(f"request id {request_id!r} is already in use")
        if not prompt_ids:
            raise ValueError("the prompt is empty: give at least one token")
        if not self.model.has_lm_head:  # fail here, not in the step (which would fail its whole batch)
            raise ValueError("this checkpoint (architecture Qwen3Model) has no lm_head: it can embed, not generate")
        if len(prompt_ids) >= self.max_model_len:
            raise PromptTooLongError(
                f"the prompt has {len(prompt_ids)} tokens but max_model_len is {self.max_model_len}: "
                f"shorten it to at most {self.max_model_len - 1} tokens or raise max_model_len"
            )
        bad = [t for t in prompt_ids if not 0 <= t < self.model.config.vocab_size]
        if bad:
            raise ValueError(f"prompt token ids out of range [0, {self.model.config.vocab_size}): {bad[:5]}")
        bad = [t for t in params.logit_bias or {} if t >= self.valid_vocab]
        if bad:  # checked here: an id past the logits would fail the whole batch's step
            raise ValueError(f"logit_bias token ids out of range [0, {self.valid_vocab}): {bad[:5]}")
        if params.max_thinking_tokens is not None and (self.tokenizer is None or self.tokenizer.think_end_id is None):
            raise ValueError("max_thinking_tokens needs a tokenizer with <think> and </think> tokens")
        if params.structured_outputs is not None:
            if self.grammars is None:
                raise ValueError("structured_outputs needs the tokenizer: not available with skip_tokenizer_init=True")
            self.grammars.compile(params.structured_outputs)  # fail before any generation
        if lora_request is not None:
            self.add_lora(lora_request)
        lora_id = lora_request.lora_int_id if lora_request is not None else 0
        params = params.resolved(self.defaults)
        request = Request(request_id, prompt, list(prompt_ids), params)
        now = time.perf_counter()
        request.sequences = [self._new_sequence(request, i, now) for i in range(params.n)]
        self.requests[request_id] = request
        for seq in request.sequences:
            seq.lora_id = lora_id
            self.scheduler.add(seq)

    def add_lora(self, lora_request: LoRARequest) -> None:
        """Load (or keep) the adapter in a slot; it cannot be evicted while a live request uses it."""
        if self.lora is None:
            raise ValueError(f"LoRA adapter {lora_request.lora_name!r} requested but LoRA is not enabled: create the "
                             "LLM with enable_lora=True (qwick serve: --lora-modules)")
        in_use = {s.lora_id for r in self.requests.values() for s in r.sequences} | self.jobs.lora_ids()
        self.lora.acquire(lora_request, in_use)

    def _new_sequence(self, request: Request, index: int, now: float) -> Sequence:
        params = request.params
        seed = params.seed + index if params.seed is not None else self.rng.getrandbits(63)
        stop_ids = set(params.stop_token_ids or [])
        if not params.ignore_eos:
            stop_ids.update(self.defaults.eos_token_ids)
        thinking, constraint = None, None
        structured = params.structured_outputs
        if structured is not None and self.grammars is not None:
            constraint = SequenceConstraint(self.grammars.matcher(self.grammars.compile(structured)), structured.kind)
        tok = self.tokenizer
        if (params.max_thinking_tokens is not None or constraint is not None) and tok is not None and (
            tok.think_start_id is not None and tok.think_end_id is not None
        ):
            thinking = ThinkingTracker.for_prompt(request.prompt_ids, tok.think_start_id, tok.think_end_id,
                                                  params.max_thinking_tokens, self._closing_ids,
                                                  self._separator_ids if constraint is not None else None)
            if constraint is not None and thinking.state is ThinkState.EXPECT and not self._opens_assistant_turn(
                request.prompt_ids
            ):  # a raw completion prompt: the constrained text starts at once, no <think> block first
                thinking.state = ThinkState.DONE
        return Sequence(
            request_id=request.request_id, index=index, prompt_ids=request.prompt_ids, params=params,
            generator=torch.Generator(device=self.runner.device).manual_seed(seed),
            detokenizer=self._detokenizer(params),
            stop_ids=frozenset(stop_ids), thinking=thinking, constraint=constraint, logprobs=[] if params.logprobs is not None else None,
            arrival_time=now,
        )

    def _opens_assistant_turn(self, prompt_ids: list[int]) -> bool:
        header = self._assistant_header
        return bool(header) and prompt_ids[-len(header):] == header

    def _detokenizer(self, params: SamplingParams) -> Detokenizer:
        if self.tokenizer is None:
            return NullDetokenizer()
        return IncrementalDetokenizer(self.tokenizer, skip_special_tokens=params.skip_special_tokens)

    def add_readout(self, request_id: str, spec: ReadoutSpec) -> None:
        """A scoring or pooling request (no sampling); its result comes back as `StepOutput.result`."""
        if request_id in self.requests or request_id in self.jobs:
            raise ValueError(f"request id {request_id!r} is already in use")
        lora = spec.lora_request
        if lora is not None:
            self.add_lora(lora)
        self.jobs.add(request_id, spec, lora.lora_int_id if lora is not None else 0)

    def has_unfinished(self) -> bool:
        return bool(self.requests) or bool(self.jobs)

    def abort(self, request_id: str) -> StepOutput | None:
        """Drop a request now, freeing its KV blocks; returns its last deltas and final output (None if unknown)."""
        if self.jobs.abort(request_id):
            return StepOutput(request_id, [], None)
        request = self.requests.pop(request_id, None)
        if request is None:
            return None
        deltas = []
        for seq in request.sequences:
            if not seq.finished:
                seq.finish_reason = "abort"
                deltas.append(StreamDelta(seq.index, seq.take_delta(), [], "abort"))
            self.scheduler.remove(seq)
        self._count_finished("abort")
        return StepOutput(request_id, deltas, self._final(request))

    # --------------------------------------------------------------------------------------------- step
    def step(self) -> list[StepOutput]:
        """Schedule, run the model, sample; return the requests that advanced."""
        batch = self.scheduler.schedule()
        completing = [c.seq for c in batch.prefills if c.completes]  # their prompts are computed after this step
        # grammar masks for the rows that sample this step, computed while the model runs
        masks = self._masks.submit(completing + batch.decodes)
        if self.runner.backend.supports_flat_step:  # one flat forward for the whole step, scoring forks included
            mirrors = self.jobs.join_forks(batch.prefills)
            self.counters.prompt_tokens += sum(_prompt_part(c) for c in batch.prefills)
            self.counters.forward_passes += bool(batch.prefills or batch.decodes)
            seqs, logits = self.runner.flat_step(batch.prefills, batch.decodes, mirrors)
            sampled, logits = rows_per_sequence(seqs, logits)
        else:
            sampled, logits = self._run_grouped(batch.prefills, batch.decodes)
        for seq in [c.seq for c in batch.prefills] + batch.decodes:
            if not seq.draft_ids:  # a drafting sequence commits once its drafts are verified (verify.py)
                self.blocks.commit_full_blocks(seq.block_table, seq.all_ids, seq.num_cached, seq.lora_id)
        for seq in completing:  # a prompt's partial last block: later prompts may copy its computed tokens
            if not seq.draft_ids:
                self.blocks.commit_tail(seq.block_table, seq.all_ids, seq.num_cached, seq.lora_id)
        done = self.jobs.finish_prefilled([c.seq for c in batch.prefills])
        masks_now = self._masks.collect(masks)
        for seq, rows in sampled:
            if seq.draft_ids:
                self.verifier.verify(seq, rows, masks_now.get(id(seq)))
                if seq.finished:
                    self.scheduler.remove(seq)
        self._sample_and_append([(s, r) for s, r in sampled if r.dim() == 1], masks_now, logits)
        return self._collect(sampled) + [StepOutput(rid, [], None, result) for rid, result in done]

    def _run_grouped(self, prefills: list[PrefillChunk], decodes: list[Sequence]
                     ) -> tuple[list[tuple[Sequence, torch.Tensor]], torch.Tensor | None]:
        """Prefill chunks in padded groups of similar length, then all decodes in one forward. Returns the rows
        to sample and, for a pure decode step, their logits [B, V] as one tensor (sampled without a re-stack)."""
        sampled: list[tuple[Sequence, torch.Tensor]] = []
        for group in group_chunks(prefills):
            self.counters.prompt_tokens += sum(_prompt_part(c) for c in group)
            self.counters.forward_passes += 1
            for chunk, logits in zip(group, self.runner.prefill(group), strict=True):
                if logits is not None:
                    sampled.append((chunk.seq, logits))
        if not decodes:
            return sampled, None
        decodes.sort(key=lambda s: -s.total_len)  # similar contexts side by side: less gather padding
        decode_logits = self.runner.decode(decodes)
        self.counters.forward_passes += 1
        whole = decode_logits if not sampled else None
        return sampled + list(zip(decodes, decode_logits, strict=True)), whole

    @torch.inference_mode()  # the decode's logits are an inference tensor, and the sampler edits them in place
    def _sample_and_append(self, pairs: list[tuple[Sequence, torch.Tensor]], masks: dict[int, torch.Tensor],
                           logits: torch.Tensor | None = None) -> None:
        """Sample each pair's row; `logits` [B, V], when given, holds exactly the pairs' rows in order."""
        if not pairs:
            return
        seqs = [s for s, _ in pairs]
        if logits is None:
            logits = torch.stack([row for _, row in pairs])  # [B, V]
        rows = [SamplingRow(s.params, s.generator, s.prompt_ids, s.output_ids, s.banned_ids(), masks.get(id(s)))
                for s in seqs]
        result = sample(logits, rows, self.valid_vocab)
        now = time.perf_counter()
        for seq, token, logprobs in zip(seqs, result.token_ids, result.logprobs, strict=True):
            forced = seq.thinking.next_forced() if seq.thinking is not None else None
            if forced is not None:
                token = forced
            fed = forced is None and feeds_grammar(seq, token)
            if self.emitter.emit(seq, token, logprobs, now, fed=fed) and self.config.jump_forward and jumps(seq):
                self.counters.jump_forward_tokens += jump_forward(seq, self.emitter, now)
            if seq.finished:
                self.scheduler.remove(seq)

    def _token_text(self, token: int) -> str:
        return self.tokenizer.decode([token]) if self.tokenizer is not None else ""

    def _collect(self, sampled: list[tuple[Sequence, torch.Tensor]]) -> list[StepOutput]:
        by_request: dict[str, list[Sequence]] = {}
        for seq, _ in sampled:
            by_request.setdefault(seq.request_id, []).append(seq)
        outputs = []
        for request_id, seqs in by_request.items():
            request = self.requests[request_id]
            deltas = [self._delta(s) for s in seqs]
            final = None
            if request.finished:
                del self.requests[request_id]
                final = self._final(request)
                # one count per request (like an abort), by its first sample's reason
                self._count_finished(request.sequences[0].finish_reason or "abort")
                last = max(s.last_token_time or s.arrival_time for s in request.sequences)
                self.counters.e2e_seconds.append(last - request.sequences[0].arrival_time)
            outputs.append(StepOutput(request_id, deltas, final))
        return outputs

    @staticmethod
    def _delta(seq: Sequence) -> StreamDelta:
        """This step's delta: the tokens appended since the last one (several with jump-forward or drafts)."""
        start, seq.streamed = seq.streamed, len(seq.output_ids)
        return StreamDelta(seq.index, seq.take_delta(), seq.output_ids[start:], seq.finish_reason,
                           logprobs=seq.logprobs[start:] if seq.logprobs is not None else None)

    def _count_finished(self, reason: str) -> None:
        self.counters.requests_finished[reason] = self.counters.requests_finished.get(reason, 0) + 1

    @staticmethod
    def _final(request: Request) -> RequestOutput:
        outs = [
            CompletionOutput(s.index, s.text, list(s.output_ids),
                             s.cumulative_logprob if s.logprobs is not None else None, s.logprobs,
                             s.finish_reason, s.stop_reason)
            for s in request.sequences
        ]
        return RequestOutput(request.request_id, request.prompt, request.prompt_ids, outs, finished=True)

    # -------------------------------------------------------------------------------------------- stats
    def stats(self) -> EngineStats:
        """A snapshot: gauges computed now, counters and latency samples as accumulated."""
        c = self.counters
        running = {s.request_id for s in self.scheduler.running}
        return EngineStats(
            num_running=len(running), num_waiting=len(self.requests) + len(self.jobs) - len(running),
            kv_cache_usage=self.blocks.usage, prefix_cache_queries=self.blocks.stats.queries,
            prefix_cache_hits=self.blocks.stats.hits, prompt_tokens=c.prompt_tokens,
            generation_tokens=c.generation_tokens, num_preemptions=self.scheduler.num_preemptions,
            requests_finished=dict(c.requests_finished), ttft_seconds=c.ttft_seconds.copy(),
            itl_seconds=c.itl_seconds.copy(), e2e_seconds=c.e2e_seconds.copy(),
            forward_passes=c.forward_passes, jump_forward_tokens=c.jump_forward_tokens,
            spec_decode_num_drafts=c.spec_decode_num_drafts,
            spec_decode_num_draft_tokens=c.spec_decode_num_draft_tokens,
            spec_decode_num_accepted_tokens=c.spec_decode_num_accepted_tokens,
            lora=self.lora.stats([s.lora_id for s in self.scheduler.running],
                                 [s.lora_id for s in self.scheduler.waiting]) if self.lora is not None else None,
        )


def _prompt_part(chunk: PrefillChunk) -> int:
    """Prompt tokens a chunk computes (a jump-forward chunk computes output tokens)."""
    seq = chunk.seq
    return max(0, min(seq.num_cached + chunk.num_tokens, len(seq.prompt_ids)) - seq.num_cached)
