"""Appending one token to a sequence: feed its grammar, record logprobs, apply the stop rules, time it.

Every token a step produces goes through `TokenEmitter.emit`, whether the sampler drew it, the grammar or the
thinking budget forced it (jump-forward), or it was an accepted draft (speculative decoding), so all of them
obey the same rules in the same order.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from qwick.engine.constrained import complete, grammar_error
from qwick.engine.sequence import Sequence
from qwick.engine.stats import EngineStats
from qwick.engine.stopping import append_token, fail, finish
from qwick.outputs import Logprob


class TokenEmitter:
    def __init__(self, counters: EngineStats, max_model_len: int, token_text: Callable[[int], str]) -> None:
        self.counters = counters
        self.max_model_len = max_model_len
        self.token_text = token_text

    def emit(self, seq: Sequence, token: int, logprobs: torch.Tensor | None, now: float, *, fed: bool) -> bool:
        """Append `token` (fed: it belongs to the constrained answer, so the grammar consumes it). Returns False
        when the grammar failed instead: the token is dropped, the sequence ends with an error, no text that
        breaks the grammar is ever emitted."""
        error = grammar_error(seq, token if fed else None)
        if error is not None:
            fail(seq, error)
            return False
        if logprobs is not None:
            self._record_logprobs(seq, token, logprobs)
        append_token(seq, token, self.max_model_len)
        if fed and complete(seq) and not seq.finished:
            finish(seq, "stop")
        self._record_timing(seq, now)
        return True

    def _record_timing(self, seq: Sequence, now: float) -> None:
        self.counters.generation_tokens += 1
        if seq.first_token_time is None:
            seq.first_token_time = now
            self.counters.ttft_seconds.append(now - seq.arrival_time)
        elif seq.last_token_time is not None:
            self.counters.itl_seconds.append(now - seq.last_token_time)
        seq.last_token_time = now

    def _record_logprobs(self, seq: Sequence, token: int, logprobs: torch.Tensor) -> None:
        chosen = float(logprobs[token])
        rank = int((logprobs > chosen).sum()) + 1
        entry = {token: Logprob(chosen, rank, self.token_text(token))}
        if seq.params.logprobs:
            values, ids = torch.topk(logprobs, seq.params.logprobs)
            for r, (value, tid) in enumerate(zip(values.tolist(), ids.tolist(), strict=True), start=1):
                entry.setdefault(tid, Logprob(value, r, self.token_text(tid)))
        assert seq.logprobs is not None
        seq.logprobs.append(entry)
        seq.cumulative_logprob += chosen
