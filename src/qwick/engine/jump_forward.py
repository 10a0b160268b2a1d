"""Jump-forward decoding: tokens nothing else could follow are appended without sampling.

After a sampled token, a sequence may have a stretch that is already decided: the thinking-budget closer
("\\n</think>\\n\\n", thinking.py) or text its grammar forces (JSON keys and punctuation, a tool call's wrapper).
Those tokens are appended at once; their keys and values are computed in the next forward, together with the
position that samples next (the sequence is scheduled as a short chunk on the step's token axis), so a forced
stretch costs no forward passes of its own.

Exactness: the grammar's tokens are llguidance's `compute_ff_tokens`, the canonical tokenization of the forced
bytes minus a last token that a longer token could still extend (token healing). llguidance's mask at each of
those positions allows that one token only (tests/engine/test_jump_forward.py checks this), so step-by-step
decoding would pick the same tokens: greedy outputs are identical, and so are seeded samples, because each
skipped draw still takes its one uniform number from the row's generator. A request that asks for logprobs
decodes step by step (the model's logprobs of every token, as vLLM reports them, need a forward per token).
"""

from __future__ import annotations

import torch

from qwick.engine.constrained import Phase, phase
from qwick.engine.emit import TokenEmitter
from qwick.engine.sequence import Sequence


def jumps(seq: Sequence) -> bool:
    """Whether forced tokens of this sequence may be appended without sampling."""
    return seq.params.jump_forward and seq.logprobs is None


def jump_forward(seq: Sequence, emitter: TokenEmitter, now: float) -> int:
    """Append every token that is forced after the sequence's last one; returns how many."""
    count = 0
    while not seq.finished:
        forced = seq.thinking.next_forced() if seq.thinking is not None else None
        if forced is not None:  # the thinking-budget closer or the separator after </think>
            tokens, fed = [forced], False
        elif seq.constraint is not None and phase(seq) is Phase.ON:
            tokens, fed = seq.constraint.matcher.compute_ff_tokens(), True
        else:
            tokens = []
        if not tokens:
            break
        for token in tokens:
            _skip_draw(seq)
            if not emitter.emit(seq, token, None, now, fed=fed and token not in seq.stop_ids):
                return count
            count += 1
            if seq.finished:
                break
    return count


def _skip_draw(seq: Sequence) -> None:
    """Take the uniform number the sampler would have drawn for this token, so seeded sampling stays identical."""
    if not seq.params.greedy:
        torch.rand((), dtype=torch.float64, generator=seq.generator, device=seq.generator.device)
