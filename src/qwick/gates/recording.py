"""`--ledger-all`: an EngineClient wrapper that records every finished completion in the ledger (with its
sampling parameters); the ledger row of an embedding call."""

from __future__ import annotations

import dataclasses
import json
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from qwick.engine.client import EngineClient, RequestDelta
from qwick.gates.identity import ModelIdentity
from qwick.gates.ledger import Ledger, LedgerRecord, sha256_text
from qwick.lora.request import LoRARequest
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
                    text = prompt if prompt is not None else self.tokenizer.decode(prompt_ids)
                    self._record(delta, text, params, start)
                yield delta
        finally:  # closing this stream must close (abort) the engine's at once, not at garbage collection
            await stream.aclose()  # type: ignore[attr-defined]

    def _record(self, delta: RequestDelta, prompt: str, params: SamplingParams, start: float) -> None:
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
            output_text=texts[0] if len(texts) == 1 else json.dumps(texts, ensure_ascii=False),
            params=sampling_dict(params)))


def sampling_dict(params: SamplingParams) -> dict[str, Any]:
    """The sampling parameters as given (None: the model's default), JSON-ready: what replaying the completion
    by hand needs."""
    values = {f.name: getattr(params, f.name) for f in dataclasses.fields(params) if f.init}
    if params.structured_outputs is not None:
        values["structured_outputs"] = {k: v for k, v in dataclasses.asdict(params.structured_outputs).items()
                                        if v is not None}
    if params.logit_bias is not None:
        values["logit_bias"] = {str(k): v for k, v in params.logit_bias.items()}
    return values


def embedding_record(identity: ModelIdentity, inputs: Sequence[str | list[int]], ids: list[list[int]],
                     vectors: list[list[float]], dimensions: int | None, lora: LoRARequest | None,
                     latency_ms: float) -> LedgerRecord:
    """One embed call (all its inputs) as one row: hashes of the inputs and vectors, the token count and the
    call's parameters; the raw inputs (kept only with raw text storage), never the vectors themselves."""
    texts = [x if isinstance(x, str) else json.dumps(x) for x in inputs]
    return LedgerRecord(
        request_id=f"embd-{secrets.token_hex(8)}", ts=time.time(),
        kind="embedding", gate=None, model=identity.model, revision=identity.revision,
        weights_sha256=identity.weights_sha256, prompt_sha256=sha256_text("\x1e".join(texts)),
        output_sha256=sha256_text(json.dumps(vectors)), decision="embedded", escalate=False, timed_out=False,
        scores=None, schema_valid=None, latency_ms=latency_ms, prompt_tokens=sum(len(i) for i in ids),
        output_tokens=0, input={"input": list(inputs)}, adapter=lora.lora_name if lora is not None else None,
        params={"inputs": len(inputs), "dimensions": dimensions})
