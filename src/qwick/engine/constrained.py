"""Constrained decoding inside the engine: a grammar matcher per sequence, token masks per step.

Masks for the next step are filled by llguidance on a worker thread while the model runs (they depend only on
the tokens so far), then applied in the sampler. Sequences without a constraint are never touched.

Qwen3 thinking: the grammar governs the answer only. While the model thinks (or a forced token is due) the
row is unconstrained; before the first token it may also open a `<think>` block; after the model closes the
block itself, the engine forces the "\\n\\n" separator Qwen3 writes there, then the grammar starts.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from enum import Enum

import llguidance as llg
import torch

from qwick.engine.grammar import clean_error
from qwick.engine.sequence import Sequence
from qwick.engine.thinking import ThinkState

logger = logging.getLogger(__name__)


class Phase(Enum):
    FREE = "free"  # thinking, or a forced token is due: no mask
    EXPECT = "expect"  # first token: grammar tokens or <think>
    ON = "on"


@dataclass
class PendingMasks:
    rows: list[Sequence]
    bitmask: torch.Tensor  # [R, ceil(V/32)] int32, filled by `fill`
    fill: Future[None]


def phase(seq: Sequence) -> Phase:
    tracker = seq.thinking
    if tracker is None:
        return Phase.ON
    if tracker.forced or tracker.state is ThinkState.INSIDE:
        return Phase.FREE
    return Phase.EXPECT if tracker.state is ThinkState.EXPECT else Phase.ON


def feeds_grammar(seq: Sequence, token: int) -> bool:
    """Whether `token`, about to be appended, belongs to the constrained answer (call before appending)."""
    if seq.constraint is None or token in seq.stop_ids:
        return False
    current = phase(seq)
    if current is Phase.FREE:
        return False
    return not (current is Phase.EXPECT and seq.thinking is not None and token == seq.thinking.start_id)


def grammar_error(seq: Sequence, token: int | None) -> str | None:
    """Feed `token` (sampled, not yet appended; None: not part of the answer) to the sequence's grammar.
    Returns why the grammar failed, if it did: a resource limit hit mid-way, or a grammar the masks could
    not keep (its mask was empty). The caller ends the sequence with an error instead of appending."""
    if seq.constraint is None:
        return None
    matcher = seq.constraint.matcher
    if token is not None:
        matcher.consume_token(token)
    if not matcher.is_error():
        return None
    message = clean_error(matcher.get_error())
    logger.warning("request %s: structured output failed: %s", seq.request_id, message)
    return f"the structured output's grammar ({seq.constraint.kind}) failed during generation: {message}"


def complete(seq: Sequence) -> bool:
    """Whether the sequence's grammar is complete: nothing but EOS could follow."""
    return seq.constraint is not None and seq.constraint.matcher.is_stopped()


class MaskBuilder:
    """Computes allowed-token masks for the constrained rows of a step, off the main thread."""

    def __init__(self, vocab_size: int, llg_eos_id: int, device: torch.device) -> None:
        self.vocab_size = vocab_size
        self.llg_eos_id = llg_eos_id
        self.device = device
        self._executor = llg.LLExecutor()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qwick-grammar")
        # byte -> its 8 bits, least significant first: unpacking is one table lookup per mask byte
        self._bits = ((torch.arange(256)[:, None] >> torch.arange(8)) & 1).to(torch.uint8).to(device)  # [256, 8]

    def submit(self, seqs: Iterable[Sequence]) -> PendingMasks | None:
        """Start filling the masks of the constrained rows among `seqs`; None when there are none."""
        rows = [s for s in seqs if s.constraint is not None and phase(s) is not Phase.FREE]
        if not rows:
            return None
        words = (self.vocab_size + 31) // 32
        bitmask = torch.full((len(rows), words), -1, dtype=torch.int32)  # [R, ceil(V/32)], contiguous on CPU
        pairs = [(s.constraint.matcher, i) for i, s in enumerate(rows) if s.constraint is not None]
        # Only the Rust fill runs on the worker, and it drops the GIL throughout: Python work there would
        # fight the forward pass for the GIL (up to 5 ms per switch). What llguidance.torch's
        # fill_next_token_bitmask_par does; that module imports torch._dynamo (~2 s), so it is not used.
        future = self._pool.submit(self._executor.unsafe_compute_mask_ptr, pairs, bitmask.data_ptr(), words * 4,
                                   len(rows))
        return PendingMasks(rows, bitmask, future)

    def collect(self, pending: PendingMasks | None) -> dict[int, torch.Tensor]:
        """id(seq) -> allowed [V] bool on the model's device, once the fill is done."""
        if pending is None:
            return {}
        pending.fill.result()
        rows = pending.rows
        # bit j of word w allows token 32*w + j; the words are little-endian, so byte k of word w holds 32*w+8k..
        # the packed bitmask is the step's one mask transfer (1/32 of a bool mask); unpacked on the model's device
        raw = pending.bitmask.to(self.device).view(torch.uint8).long()  # [R, 4 * words]
        allowed = torch.nn.functional.embedding(raw, self._bits).view(len(rows), -1)[:, : self.vocab_size].bool()
        allowed[:, self.llg_eos_id] = False  # llguidance's single EOS; each sequence's own stop ids instead
        extra_rows: list[int] = []
        extra_ids: list[int] = []
        for i, seq in enumerate(rows):
            assert seq.constraint is not None
            ids = sorted(seq.stop_ids) if seq.constraint.matcher.is_accepting() else []
            if phase(seq) is Phase.EXPECT and seq.thinking is not None:
                ids.append(seq.thinking.start_id)
            extra_rows += [i] * len(ids)
            extra_ids += ids
        if extra_ids:  # one indexed write for every row's additions
            allowed[extra_rows, extra_ids] = True
        return {id(seq): allowed[i] for i, seq in enumerate(rows)}

    def now(self, seq: Sequence) -> torch.Tensor | None:
        """One sequence's mask at its current state, computed here and now (the speculative verifier's later
        positions); None when its grammar does not apply at this token."""
        return self.collect(self.submit([seq])).get(id(seq))

    def close(self) -> None:
        self._pool.shutdown(wait=False)
