"""Decides, each step, which sequences run and how many tokens each computes.

Continuous batching: running sequences decode first (one token each), then partially prefilled prompts and
new requests share what is left of `max_num_batched_tokens` (chunked prefill: a long prompt is split over
steps, so it never stalls the decoding streams). When KV blocks run out, the newest running sequence is
preempted: its blocks are freed and it goes back to the front of the queue to be recomputed later.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from qwick.engine.block_manager import BlockManager
from qwick.engine.sequence import Sequence


@dataclass
class PrefillChunk:
    seq: Sequence
    num_tokens: int  # computed this step, from position seq.num_cached

    @property
    def completes(self) -> bool:
        """Whether this chunk reaches the sequence's last known token and its drafts (so it yields logits)."""
        return self.seq.num_cached + self.num_tokens == self.seq.total_len + len(self.seq.draft_ids)


@dataclass
class SchedulerOutput:
    prefills: list[PrefillChunk]
    decodes: list[Sequence]


class Scheduler:
    def __init__(self, blocks: BlockManager, max_num_seqs: int, max_num_batched_tokens: int,
                 drafter: Callable[[Sequence, int], list[int]] | None = None) -> None:
        self.blocks = blocks
        # speculative decoding: (sequence, most drafts) -> drafts to verify with its next token
        self.drafter = drafter
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []  # in admission order: the last is preempted first
        self.num_preemptions = 0

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def adopt(self, seq: Sequence) -> None:
        """A sequence that already holds its KV blocks (forked from another) joins the running batch."""
        self.running.append(seq)

    def remove(self, seq: Sequence) -> None:
        """A finished or aborted sequence leaves at once and its blocks are freed."""
        if seq in self.waiting:
            self.waiting.remove(seq)
        if seq in self.running:
            self.running.remove(seq)
        self._release(seq)

    def schedule(self) -> SchedulerOutput:
        out = SchedulerOutput([], [])
        budget = self.max_num_batched_tokens
        for seq in list(self.running):
            if budget == 0:
                break
            if seq not in self.running:  # preempted to make room for an older sequence
                continue
            todo = min(seq.total_len - seq.num_cached, budget)
            if todo == 1 and self.drafter is not None and seq.readout is None:
                todo += self._draft(seq, budget - 1)
            if not self._make_room(seq, todo):
                continue
            self.blocks.append_slots(seq.block_table, seq.num_cached, todo)
            if seq.total_len - seq.num_cached == 1 and not seq.draft_ids and seq.readout is None:  # readouts: prefill
                out.decodes.append(seq)
            else:
                out.prefills.append(PrefillChunk(seq, todo))
            budget -= todo
        while self.waiting and budget > 0 and len(self.running) < self.max_num_seqs:
            seq = self.waiting[0]
            known = seq.all_ids
            limit = seq.readout.first_position if seq.readout is not None else None
            if not self.blocks.can_allocate(known, limit, seq.lora_id):
                break
            seq.block_table, seq.num_cached = self.blocks.allocate(known, limit, seq.lora_id)
            self.waiting.popleft()
            self.running.append(seq)
            todo = min(seq.total_len - seq.num_cached, budget)
            out.prefills.append(PrefillChunk(seq, todo))
            budget -= todo
        return out

    def _draft(self, seq: Sequence, most: int) -> int:
        """Propose drafts for a decoding sequence; kept only if their KV slots fit without preempting anyone."""
        assert self.drafter is not None
        drafts = self.drafter(seq, most) if most > 0 else []
        if drafts and not self.blocks.can_append(seq.block_table, seq.num_cached, 1 + len(drafts)):
            drafts = []
        seq.draft_ids = drafts
        return len(drafts)

    def _make_room(self, seq: Sequence, todo: int) -> bool:
        """Preempt the newest sequences until `seq` can grow by `todo` tokens; False if `seq` itself went."""
        while not self.blocks.can_append(seq.block_table, seq.num_cached, todo):
            victim = self.running[-1]
            self._preempt(victim)
            if victim is seq:
                return False
        return True

    def _preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self._release(seq)
        self.waiting.appendleft(seq)
        self.num_preemptions += 1

    def _release(self, seq: Sequence) -> None:
        if seq.block_table:
            self.blocks.free(seq.block_table)
        seq.block_table = []
        seq.num_cached = 0
        seq.draft_ids = []
