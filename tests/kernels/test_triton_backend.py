"""The CUDA attention backend (model/attention/triton_paged.py) on the GPU, or on a CPU under Triton's
interpreter: an engine on it gives the tokens and scores of the portable SDPA backend, through flat steps with
decodes, chunked prefill (a chunk's context gathered) and scoring forks (mirror writes of a partial block)."""

from __future__ import annotations

import pytest
import torch

from qwick import LLM, SamplingParams
from qwick.engine.readout import ContinuationSpec
from qwick.model.attention.sdpa import SdpaBackend
from qwick.model.attention.select import select_backend
from qwick.model.attention.triton_paged import BACKEND_ENV, TritonPagedBackend

CPU = torch.device("cpu")
PROMPTS = [[(7 * i + j) % 5000 + 100 for j in range(n)] for i, n in enumerate([3, 40, 17])]


def test_selection_by_device_and_environment(monkeypatch):
    monkeypatch.delenv(BACKEND_ENV, raising=False)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert TritonPagedBackend.select(CPU, torch.float32, torch.float32, 128) is None  # a CPU: not unless forced
    monkeypatch.setenv(BACKEND_ENV, "triton")
    with pytest.raises(ValueError, match="needs TRITON_INTERPRET=1"):
        TritonPagedBackend.select(CPU, torch.float32, torch.float32, 128)
    monkeypatch.setenv(BACKEND_ENV, "sdpa")
    assert type(select_backend(CPU, torch.float32, torch.float32, 128)) is SdpaBackend
    monkeypatch.setenv(BACKEND_ENV, "flash")
    with pytest.raises(ValueError, match="must be 'triton', 'sdpa' or 'auto'"):
        select_backend(CPU, torch.float32, torch.float32, 128)


def interpret_on_a_cpu(device: str, monkeypatch) -> None:
    if device == "cpu":  # on a GPU the kernels run compiled
        monkeypatch.setenv("TRITON_INTERPRET", "1")


def test_forced_on_an_interpreted_cpu_and_fp8_falls_back(triton_kernels, kernel_device, monkeypatch):
    monkeypatch.setenv(BACKEND_ENV, "triton")
    interpret_on_a_cpu(kernel_device, monkeypatch)
    device = torch.device(kernel_device)
    chosen = select_backend(device, torch.float32, torch.float32, 64)
    assert isinstance(chosen, TritonPagedBackend) and chosen.supports_flat_step
    assert TritonPagedBackend.select(device, torch.bfloat16, torch.float8_e4m3fn, 128) is None  # fp8: SDPA


def outputs(llm: LLM) -> tuple[list[list[int]], list[float]]:
    params = SamplingParams(max_tokens=3, temperature=0.0, ignore_eos=True)
    tokens = [o.outputs[0].token_ids for o in llm.generate([{"prompt_token_ids": p} for p in PROMPTS], params)]
    context = PROMPTS[1][:21]  # a partial last block: each fork writes its own copy (mirror slots)
    llm.engine.add_readout("s", ContinuationSpec(context, [PROMPTS[1][21:24], PROMPTS[1][21:23]]))
    while llm.engine.has_unfinished():
        for out in llm.engine.step():
            if out.result is not None:
                return tokens, [float(x) for row in out.result.token_logprobs for x in row]
    raise AssertionError("no scoring result")


def test_engine_on_the_backend_matches_sdpa(triton_kernels, kernel_device, tiny_model_dir, monkeypatch):
    def build() -> LLM:  # chunks of 32 tokens: later chunks attend to context gathered from the cache
        return LLM(tiny_model_dir, dtype="float32", device=kernel_device, max_model_len=256,
                   max_num_batched_tokens=32, skip_tokenizer_init=True)

    monkeypatch.setenv(BACKEND_ENV, "sdpa")
    want_tokens, want_scores = outputs(build())
    monkeypatch.setenv(BACKEND_ENV, "triton")
    interpret_on_a_cpu(kernel_device, monkeypatch)
    llm = build()
    assert isinstance(llm.engine.runner.backend, TritonPagedBackend)
    got_tokens, got_scores = outputs(llm)
    assert got_tokens == want_tokens
    assert got_scores == pytest.approx(want_scores, abs=1e-4)
