"""Which drafts a decoding sequence verifies this step: n-gram proposals, cut to what may follow.

Drafts never run past `max_tokens` or `max_model_len`, are not proposed while the thinking budget is forcing
tokens or before a constrained answer's first token (where `<think>` may open), and a constrained answer's
drafts are cut to the prefix its grammar accepts (llguidance's `validate_tokens`, which leaves the matcher as
it was): the verifier then checks each against the model under the grammar's mask at its position.
"""

from __future__ import annotations

from qwick.engine.constrained import Phase, phase
from qwick.engine.sequence import Sequence
from qwick.engine.spec_decode.config import SpeculativeConfig
from qwick.engine.spec_decode.ngram import propose


class NgramDrafter:
    def __init__(self, config: SpeculativeConfig, max_model_len: int) -> None:
        self.config = config
        self.max_model_len = max_model_len

    def __call__(self, seq: Sequence, most: int) -> list[int]:
        """Drafts for `seq`'s next positions, at most `most` (the step's token budget left)."""
        params = seq.params
        room = self.max_model_len - seq.total_len - 1  # all accepted plus the bonus token stay in the context
        if params.max_tokens is not None:
            room = min(room, params.max_tokens - len(seq.output_ids) - 1)
        most = min(most, room, self.config.num_speculative_tokens)
        if most <= 0 or (seq.thinking is not None and seq.thinking.forced):
            return []
        constrained = seq.constraint is not None and phase(seq) is not Phase.FREE
        if constrained and phase(seq) is Phase.EXPECT:
            return []
        drafts = propose(seq.all_ids, most, self.config.prompt_lookup_min, self.config.prompt_lookup_max)
        if drafts and constrained and seq.constraint is not None:
            drafts = drafts[: seq.constraint.matcher.validate_tokens(drafts)]
        return drafts
