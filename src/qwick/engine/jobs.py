"""Scoring and pooling requests inside the engine: their sequences, and their results once prefilled.

A scoring request computes its context once:
1. the context, reading the logprob of every continuation's first token at its last position;
2. for each continuation of two or more tokens, a sequence `context + continuation[:-1]` forked from the
   context's sequence: it shares the context's full KV blocks, gets its own copy of the partial last block,
   and computes only its own tokens but the last, reading the logprob of each later token.
With a flat forward (runner.py) the forks join the step that completes the context (`join_forks`): one
forward, one read of the weights. The context's new keys/values in its partial last block are mirrored into
each fork's copy, and every layer writes before it attends, so the forks see the context computed beside
them. Otherwise the forks start once the context is done and run together in the next step.
Single-token continuations (the usual label sets) need no forks. A fork that finds no free block (or is
preempted later) queues as an ordinary prompt instead: it then reuses the context through the prefix cache
and recomputes the context's partial last block.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from qwick.engine.block_manager import BlockManager, NoFreeBlocksError
from qwick.engine.readout import (
    ContinuationLogprobs,
    ContinuationSpec,
    EmbeddingOutput,
    PoolSpec,
    ReadoutOutput,
    ReadoutSpec,
    SequenceReadout,
    TopTokens,
)
from qwick.engine.scheduler import PrefillChunk, Scheduler
from qwick.engine.sequence import NullDetokenizer, Sequence
from qwick.sampling_params import MAX_LOGPROBS, SamplingParams

_NO_SAMPLING = SamplingParams(max_tokens=1, temperature=0.0)  # readout sequences are never sampled


@dataclass(eq=False)
class Job:
    request_id: str
    spec: ReadoutSpec
    arrival_time: float
    live: dict[Sequence, tuple[int, ...] | None] = field(default_factory=dict)  # queued/running -> continuation
    first: dict[int, float] = field(default_factory=dict)  # first-token id -> logprob (scoring)
    later: dict[tuple[int, ...], list[float]] = field(default_factory=dict)  # continuation -> logprobs after the first
    first_top: TopTokens = field(default_factory=list)  # top tokens where every first token is read
    later_top: dict[tuple[int, ...], list[TopTokens]] = field(default_factory=dict)
    hidden: torch.Tensor | None = None  # pooling
    lora_id: int = 0  # the adapter its sequences run under (0: the base model)
    forked: bool = False  # the forks exist (they joined the context's last step)


class Jobs:
    """The engine's scoring and pooling requests; the engine calls `finish_prefilled` after each step."""

    def __init__(self, scheduler: Scheduler, blocks: BlockManager, copy_block: Callable[[int, int], None],
                 valid_vocab: int, vocab_size: int, max_model_len: int, can_score: bool = True) -> None:
        self.scheduler = scheduler
        self.blocks = blocks
        self.copy_block = copy_block  # KV copy of one block (the forks' partial block)
        self.can_score = can_score  # False for Qwen3Model backbones: no lm_head, pooling only
        self.valid_vocab = valid_vocab  # largest id + 1 a continuation may name
        self.vocab_size = vocab_size
        self.max_model_len = max_model_len
        self.jobs: dict[str, Job] = {}

    def __contains__(self, request_id: str) -> bool:
        return request_id in self.jobs

    def __len__(self) -> int:
        return len(self.jobs)

    def add(self, request_id: str, spec: ReadoutSpec, lora_id: int = 0) -> None:
        prompt = spec.context_ids if isinstance(spec, ContinuationSpec) else spec.prompt_ids
        self._check(prompt, spec)
        job = Job(request_id, spec, time.perf_counter(), lora_id=lora_id)
        if isinstance(spec, ContinuationSpec):
            firsts = sorted({c[0] for c in spec.continuations})
            readout = SequenceReadout({len(prompt) - 1: firsts} if firsts else {}, self.valid_vocab,
                                top_k=spec.top_logprobs)
        else:
            readout = SequenceReadout({}, self.valid_vocab, pool=True)
        seq = self._sequence(job, prompt, readout)
        job.live[seq] = None
        self.scheduler.add(seq)
        self.jobs[request_id] = job

    def lora_ids(self) -> set[int]:
        """Adapters the live jobs run under (they must stay resident)."""
        return {job.lora_id for job in self.jobs.values() if job.lora_id}

    def abort(self, request_id: str) -> bool:
        """Drop a job and free its KV blocks; False if unknown."""
        job = self.jobs.pop(request_id, None)
        if job is None:
            return False
        for seq in job.live:
            self.scheduler.remove(seq)
        return True

    def join_forks(self, prefills: list[PrefillChunk]) -> list[tuple[Sequence, int, int]]:
        """Start the forks of every scoring context whose last chunk is in `prefills`, appending their chunks
        so they run in the same (flat) forward. Returns mirror writes: (context sequence, position, slot in
        a fork's copy of the partial last block) for the context tokens computed in this step. The forks' few
        tokens come on top of the step's `max_num_batched_tokens` (a label adds one or two)."""
        mirrors: list[tuple[Sequence, int, int]] = []
        for chunk in list(prefills):
            parent = chunk.seq
            job = self.jobs.get(parent.request_id) if parent.readout is not None and chunk.completes else None
            if job is None or not isinstance(job.spec, ContinuationSpec) or job.forked or job.live.get(parent, ()) is not None:
                continue  # not a scoring context completing now
            job.forked = True
            for cont in self._longer(job):
                child = self._continuation(job, cont)
                job.live[child] = cont
                copy = self._fork(parent, child, prefills)
                if copy is None:
                    continue
                size, n = self.blocks.block_size, parent.total_len
                for position in range(max(parent.num_cached, n - n % size), n):
                    mirrors.append((parent, position, copy * size + position % size))
        return mirrors

    def finish_prefilled(self, seqs: list[Sequence]) -> list[tuple[str, ReadoutOutput]]:
        """Readout sequences whose prefill completed this step leave the scheduler; return finished jobs' results."""
        results = []
        for seq in seqs:
            if seq.readout is None or seq.num_cached < seq.total_len or seq.finished:
                continue
            seq.finish_reason = "stop"
            job = self.jobs.get(seq.request_id)
            if job is None or seq not in job.live:  # its job was aborted
                self.scheduler.remove(seq)
                continue
            self._absorb(job, seq, job.live.pop(seq))  # before its blocks are freed: forks share them
            self.scheduler.remove(seq)
            if not job.live:
                del self.jobs[job.request_id]
                results.append((job.request_id, self._result(job)))
        return results

    def _absorb(self, job: Job, seq: Sequence, cont: tuple[int, ...] | None) -> None:
        readout = seq.readout
        assert readout is not None
        if isinstance(job.spec, PoolSpec):
            job.hidden = readout.hidden
            return
        if cont is None:  # the context is done: first tokens known; forks for longer continuations
            for position, ids in readout.targets.items():
                job.first = dict(zip(ids, readout.logprobs[position], strict=True))
                job.first_top = readout.top.get(position, [])
            if not job.forked:
                job.forked = True
                for c in self._longer(job):
                    child = self._continuation(job, c)
                    job.live[child] = c
                    self._fork(seq, child)
            return
        job.later[cont] = [readout.logprobs[p][0] for p in sorted(readout.targets)]
        job.later_top[cont] = [readout.top.get(p, []) for p in sorted(readout.targets)]

    def _fork(self, parent: Sequence, child: Sequence, prefills: list[PrefillChunk] | None = None) -> int | None:
        """Start `child` on the parent's KV (its first `parent.total_len` tokens are the parent's). With
        `prefills`, the parent is computed in this step: the child's chunk joins it there. Returns the child's
        copy of the parent's partial last block, if there is one; a child left without blocks queues instead."""
        n = parent.total_len
        try:
            table, copy = self.blocks.fork(parent.block_table, n)
        except NoFreeBlocksError:  # queue first in line; the prefix cache still holds the full blocks
            self.scheduler.waiting.appendleft(child)
            return None
        todo = child.total_len - n
        if prefills is not None and not self.blocks.can_append(table, n, todo):
            self.blocks.free(table)
            self.scheduler.waiting.appendleft(child)
            return None
        if copy is not None:
            self.copy_block(*copy)  # the partial block as computed so far (a joining child: mirrors add the rest)
        child.block_table, child.num_cached = table, n
        self.scheduler.adopt(child)
        if prefills is not None:
            self.blocks.append_slots(table, n, todo)
            prefills.append(PrefillChunk(child, todo))
        return copy[1] if copy is not None else None

    @staticmethod
    def _longer(job: Job) -> list[tuple[int, ...]]:
        assert isinstance(job.spec, ContinuationSpec)
        return sorted({tuple(c) for c in job.spec.continuations if len(c) > 1})

    def _continuation(self, job: Job, cont: tuple[int, ...]) -> Sequence:
        assert isinstance(job.spec, ContinuationSpec)
        n = len(job.spec.context_ids)
        # position n + j - 1 holds cont[j - 1]; its logits give cont[j]
        targets = {n + j - 1: [cont[j]] for j in range(1, len(cont))}
        return self._sequence(job, job.spec.context_ids + list(cont[:-1]),
                              SequenceReadout(targets, self.valid_vocab, top_k=job.spec.top_logprobs))

    def _result(self, job: Job) -> ReadoutOutput:
        if isinstance(job.spec, PoolSpec):
            assert job.hidden is not None
            return EmbeddingOutput(job.request_id, job.hidden, len(job.spec.prompt_ids))
        per_token = [[job.first[c[0]], *job.later.get(tuple(c), [])] for c in job.spec.continuations]
        top = None
        if job.spec.top_logprobs:
            top = [[job.first_top, *job.later_top.get(tuple(c), [])] for c in job.spec.continuations]
        return ContinuationLogprobs(job.request_id, [sum(t) for t in per_token], per_token, len(job.spec.context_ids), top)

    def _sequence(self, job: Job, prompt: list[int], readout: SequenceReadout) -> Sequence:
        return Sequence(request_id=job.request_id, index=0, prompt_ids=prompt, params=_NO_SAMPLING,
                        generator=torch.Generator(), detokenizer=NullDetokenizer(), stop_ids=frozenset(),
                        readout=readout, lora_id=job.lora_id, arrival_time=job.arrival_time)

    def _check(self, prompt: list[int], spec: ReadoutSpec) -> None:
        if not prompt:
            raise ValueError("the prompt (context) is empty: give at least one token")
        bad = [t for t in prompt if not 0 <= t < self.vocab_size]
        if bad:
            raise ValueError(f"prompt token ids out of range [0, {self.vocab_size}): {bad[:5]}")
        if isinstance(spec, ContinuationSpec) and not self.can_score:
            raise ValueError("this checkpoint (architecture Qwen3Model) has no lm_head: it can embed, not score")
        if isinstance(spec, PoolSpec):
            if len(prompt) > self.max_model_len:
                raise ValueError(f"the input has {len(prompt)} tokens but max_model_len is {self.max_model_len}")
            return
        longest = max((len(c) for c in spec.continuations), default=0)
        if len(prompt) + longest > self.max_model_len:
            raise ValueError(f"context ({len(prompt)} tokens) + longest continuation ({longest}) exceeds "
                             f"max_model_len {self.max_model_len}")
        if not 0 <= spec.top_logprobs <= MAX_LOGPROBS:
            raise ValueError(f"top_logprobs must be between 0 and {MAX_LOGPROBS}, got {spec.top_logprobs}")
        for c in spec.continuations:
            if not c:
                raise ValueError("a continuation is empty: each needs at least one token")
            if not all(0 <= t < self.valid_vocab for t in c):
                raise ValueError(f"continuation token ids must be in [0, {self.valid_vocab}), got {c[:5]}")
