"""Verifying a sequence's drafts against the model's logits at each draft position, by rejection sampling.

A chunk [last token, d1 .. dk] yields logits [1 + k, V]: row j is the model's next-token distribution after
d1 .. dj. Row by row, the verifier builds exactly the distribution `sample` would draw from there (grammar mask
at that position, penalties over the output so far, temperature, top-k/top-p/min-p) and:
- greedy: accepts d(j+1) if it is that distribution's first maximum, else emits the maximum and stops;
- sampling: accepts d(j+1) with probability p(d(j+1)), else draws from p with d(j+1) removed (renormalised)
  and stops. A draft proposed deterministically (q = a point mass) makes this the standard speculative
  rejection rule: each emitted token has exactly the model's distribution p;
- after k accepted drafts, row k's distribution gives one more token as usual (the bonus).
Tokens go through the same `TokenEmitter` as sampled ones (grammar, stops, max_tokens, logprobs), so nothing
is emitted past a stop. Keys and values written for rejected drafts are dropped: `num_cached` falls back to the
emitted tokens and the table's surplus blocks are freed; only then are full blocks committed to the prefix cache.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from qwick.engine.block_manager import BlockManager
from qwick.engine.constrained import feeds_grammar
from qwick.engine.emit import TokenEmitter
from qwick.engine.jump_forward import jump_forward, jumps
from qwick.engine.sampler import SamplingRow, draw, row_distribution
from qwick.engine.sequence import Sequence
from qwick.engine.stats import EngineStats


class DraftVerifier:
    def __init__(self, emitter: TokenEmitter, blocks: BlockManager, counters: EngineStats, valid_vocab: int,
                 mask_now: Callable[[Sequence], torch.Tensor | None], jump_forward: bool) -> None:
        self.emitter = emitter
        self.blocks = blocks
        self.counters = counters
        self.valid_vocab = valid_vocab
        self.mask_now = mask_now  # the grammar mask at the sequence's current state (None: unconstrained)
        self.jump_forward = jump_forward

    @torch.inference_mode()
    def verify(self, seq: Sequence, logits: torch.Tensor, first_mask: torch.Tensor | None) -> None:
        """logits [1 + k, V] float32 for `seq`'s k drafts; `first_mask`: the grammar mask before d1."""
        drafts, seq.draft_ids = seq.draft_ids, []
        now = time.perf_counter()
        accepted = 0
        for j in range(len(drafts) + 1):
            mask = first_mask if j == 0 else self.mask_now(seq)
            raw = self._raw_logprobs(logits[j]) if seq.logprobs is not None else None
            row = SamplingRow(seq.params, seq.generator, seq.prompt_ids, seq.output_ids, seq.banned_ids(), mask)
            values, ids = row_distribution(logits[j].clone(), row, self.valid_vocab)
            draft = drafts[j] if j < len(drafts) else None
            token, hit = self._choose(seq, values, ids, draft)
            if seq.thinking is not None and (forced := seq.thinking.next_forced()) is not None:
                token, hit = forced, False  # the thinking budget decides this token, not the model
            if not self.emitter.emit(seq, token, raw, now, fed=feeds_grammar(seq, token)) or seq.finished:
                break
            if not hit or (seq.thinking is not None and seq.thinking.forced):
                break
            accepted += 1
        self.counters.spec_decode_num_drafts += 1
        self.counters.spec_decode_num_draft_tokens += len(drafts)
        self.counters.spec_decode_num_accepted_tokens += accepted
        # the cache holds every emitted token but the last (which the next step computes)
        seq.num_cached = min(seq.num_cached, seq.total_len - 1)
        self.blocks.trim(seq.block_table, seq.total_len)
        self.blocks.commit_full_blocks(seq.block_table, seq.all_ids, seq.num_cached, seq.lora_id)
        if self.jump_forward and not seq.finished and jumps(seq):
            self.counters.jump_forward_tokens += jump_forward(seq, self.emitter, now)

    def _raw_logprobs(self, logits: torch.Tensor) -> torch.Tensor:
        """[V] the model's own logprobs over the tokenizer's ids, as `sample` reports them."""
        row = logits.clone()
        row[self.valid_vocab :] = float("-inf")
        return torch.log_softmax(row, dim=-1)

    @staticmethod
    def _choose(seq: Sequence, values: torch.Tensor, ids: torch.Tensor | None, draft: int | None
                ) -> tuple[int, bool]:
        """(token, whether it is the draft): greedy first maximum, or the rejection-sampling rule."""
        if seq.params.greedy:
            token = int(values.max(dim=-1).indices)
            return token, token == draft
        if draft is not None:
            where = (ids == draft).nonzero() if ids is not None else torch.tensor([[draft]])
            probs = torch.softmax(values, dim=-1)
            p = float(probs[int(where[0, 0])]) if where.numel() else 0.0
            u = float(torch.rand((), dtype=torch.float64, generator=seq.generator, device=seq.generator.device))
            if u < p:
                return draft, True
            if where.numel():
                values = values.clone()
                values[int(where[0, 0])] = float("-inf")  # the residual: p without the draft, renormalised
                if not torch.isfinite(values).any():  # p(draft) was 1 but for rounding
                    return draft, True
        choice = draw(values, seq.generator)
        return (int(ids[choice]) if ids is not None else choice), False
