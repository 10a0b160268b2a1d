"""Opt-in: llama.cpp (llama-cpp-python) loads each exported type and its greedy tokens match qwick's loading
of the same file. Runs with QWICK_TEST_LLAMA_CPP=1 and `llama_cpp` importable (llama-cpp-python compiles
llama.cpp on install, ~10 minutes on 2 cores; see benchmarks/cpu.py); skipped otherwise.

The model is the tiny random checkpoint with the real Qwen3 tokenizer (llama.cpp needs a tokenizer); prompts
go in as token ids, so only the weights, hyper-parameters and the graph are compared.
"""

from __future__ import annotations

import os

import pytest
import torch

from qwick.export import export_gguf
from qwick.gguf import open_gguf
from qwick.gguf.load import load_gguf

if os.environ.get("QWICK_TEST_LLAMA_CPP") != "1":
    pytest.skip("llama.cpp check is opt-in: QWICK_TEST_LLAMA_CPP=1", allow_module_level=True)
llama_cpp = pytest.importorskip("llama_cpp")

PROMPT = [151644, 872, 198, 9707, 0, 151645, 198, 151644, 77091, 198]  # <|im_start|>user\nHello!<|im_end|>...
STEPS = 8


def _qwick_greedy(path) -> list[int]:
    model = load_gguf(open_gguf(path), torch.float32, torch.device("cpu"))
    ids = list(PROMPT)
    with torch.no_grad():
        for _ in range(STEPS):
            tokens = torch.tensor([ids])
            logits = model.compute_logits(model(tokens, torch.arange(len(ids))[None]))
            ids.append(int(logits[0, -1].argmax()))
    return ids[len(PROMPT):]


@pytest.mark.parametrize("quantization", ["f32", "f16", "bf16", "q8_0", "q4_0"])
def test_llama_cpp_runs_the_export_like_qwick(tiny_model_dir, tmp_path, quantization):
    path = export_gguf(tiny_model_dir, tmp_path / f"{quantization}.gguf", quantization).path
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=64, n_threads=2, verbose=False, logits_all=False)
    llm.eval(PROMPT)
    got = []
    for _ in range(STEPS):
        token = int(llm.sample(temp=0.0))
        got.append(token)
        llm.eval([token])
    assert got == _qwick_greedy(path)
