"""`--ledger-all`: an EngineClient wrapper that records every finished completion in the ledger."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from qwick.engine.client import EngineClient, RequestDelta
from qwick.gates.identity import ModelIdentity
from qwick.gates.ledger import Ledger, LedgerRecord, sha256_text
from qwick.sampling_params import SamplingParams
from qwick.tokenizer import Tokenizer


class RecordingClient:
    """Delegates everything to `inner`; `generate` streams unchanged and records the final output."""

    def __init__(self, inner: EngineClient, ledger: Ledger, identity: ModelIdentity, tokenizer: Tokenizer) -> None:
        self.inner = inner
        self.ledger = ledger
        self.identity = identity
        self.tokenizer = tokenizer

    def __getattr__(self, name: str) -> Any:  # continuation_logprobs, embed, abort, stats, shutdown, is_running, errored
        return getattr(self.inner, name)

    async def generate(self, prompt_ids: list[int], params: SamplingParams, request_id: str,
                       *args: Any, **kwargs: Any) -> AsyncIterator[RequestDelta]:
        """The inner client's generate (any further arguments, e.g. an adapter, passed through unchanged)."""
        start = time.perf_counter()
        prompt = args[0] if args else kwargs.get("prompt")
        stream = self.inner.generate(prompt_ids, params, request_id, *args, **kwargs)
        try:
            async for delta in stream:
                if delta.output is not None:
                    self._record(delta, prompt if prompt is not None else self.tokenizer.decode(prompt_ids), start)
                yield delta
        finally:  # closing this stream must close (abort) the engine's at once, not at garbage collection
            await stream.aclose()  # type: ignore[attr-defined]

    def _record(self, delta: RequestDelta, prompt: str, start: float) -> None:
        assert delta.output is not None
        outs = delta.output.outputs
        texts = [o.text for o in outs]
        reasons = sorted({o.finish_reason or "abort" for o in outs})
        self.ledger.record(LedgerRecord(
            request_id=delta.request_id, ts=time.time(), kind="completion", gate=None, model=self.identity.model,
            revision=self.identity.revision, weights_sha256=self.identity.weights_sha256,
            prompt_sha256=sha256_text(prompt), output_sha256=sha256_text(json.dumps(texts)),
            decision=",".join(reasons), escalate=False, timed_out=False, scores=None, schema_valid=None,
            latency_ms=(time.perf_counter() - start) * 1000, prompt_tokens=len(delta.output.prompt_token_ids),
            output_tokens=sum(len(o.token_ids) for o in outs), input={"prompt": prompt},
            output_text=texts[0] if len(texts) == 1 else json.dumps(texts, ensure_ascii=False)))
