"""One qwick or transformers measurement for benchmarks/cpu.py, in its own process (so peak RSS is its own).

usage: python cpu_worker.py ENGINE MODEL_DIR THREADS DECODE_TOKENS PREFILL_TOKENS REPEATS [--compile]
ENGINE: qwick-bf16 | qwick-int8 | qwick-int4 (MODEL_DIR: the dummy folder or its `qwick quantize` copy) or
transformers-bf16. Prints one JSON line like cpu_llama_worker.py, plus the bytes of weights one decode step reads.
"""

from __future__ import annotations

import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch


def weight_bytes(model: torch.nn.Module, skip_embedding: bool) -> int:
    """Bytes of parameters and buffers (each once), less an untied embedding (a lookup reads one row)."""
    tensors = [*model.named_parameters(), *model.named_buffers()]
    return sum(t.numel() * t.element_size() for name, t in tensors
               if not ((skip_embedding and "embed_tokens" in name) or "rotary" in name))


def peak_rss_mib() -> float:
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across fork + exec
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def qwick_worker(folder: Path, threads: int, decode: int, prefill: int, repeats: int,
                 compile_decode: bool) -> dict[str, Any]:
    from qwick import LLM, SamplingParams
    from qwick.engine.args import EngineArgs
    from qwick.model.loader import load_config

    context = prefill + decode + 128  # what the llama.cpp worker's n_ctx holds
    kv_bytes = load_config(folder).kv_bytes_per_token * (context + 16)  # the same KV memory as llama.cpp's
    start = time.perf_counter()
    llm = LLM.from_engine_args(EngineArgs(
        folder, dtype="bfloat16", device="cpu", skip_tokenizer_init=True, threads=threads, seed=0,
        enable_prefix_caching=False, max_model_len=context, max_num_seqs=1, kv_cache_memory_bytes=kv_bytes,
        compile_decode=compile_decode))
    load_s = time.perf_counter() - start
    rng = random.Random(0)
    decode_params = SamplingParams(max_tokens=decode + 1, temperature=0, ignore_eos=True)
    one = SamplingParams(max_tokens=1, temperature=0)
    decode_rates, prefill_rates = [], []
    for i in range(repeats + 1):  # the first round warms up
        prompt = [rng.randrange(150000) for _ in range(64)]
        stamps = [time.perf_counter() for _ in llm.stream({"prompt_token_ids": prompt}, decode_params)]
        ids = [rng.randrange(150000) for _ in range(prefill)]
        t = time.perf_counter()
        llm.generate({"prompt_token_ids": ids}, one)
        if i:
            decode_rates.append(decode / (stamps[-1] - stamps[0]))  # first delta = prefill + token 1
            prefill_rates.append(prefill / (time.perf_counter() - t))
    tied = llm.model.config.tie_word_embeddings
    return {"decode_tok_s": statistics.median(decode_rates), "prefill_tok_s": statistics.median(prefill_rates),
            "decode_samples": decode_rates, "load_s": load_s, "bytes_per_token": weight_bytes(llm.model, not tied)}


def transformers_worker(folder: Path, threads: int, decode: int, prefill: int, repeats: int) -> dict[str, Any]:
    import transformers

    torch.set_num_threads(threads)
    start = time.perf_counter()
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16).eval()
    load_s = time.perf_counter() - start
    stamps: list[float] = []

    class Clock(transformers.StoppingCriteria):
        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
            stamps.append(time.perf_counter())
            return torch.zeros(input_ids.shape[0], dtype=torch.bool)

    gen = torch.Generator().manual_seed(0)
    decode_rates, prefill_rates = [], []
    with torch.inference_mode():
        for i in range(repeats + 1):
            stamps.clear()
            prompt = torch.randint(0, 150000, (1, 64), generator=gen)
            model.generate(prompt, do_sample=False, max_new_tokens=decode + 1, min_new_tokens=decode + 1,
                           stopping_criteria=transformers.StoppingCriteriaList([Clock()]), pad_token_id=0)
            ids = torch.randint(0, 150000, (1, prefill), generator=gen)
            t = time.perf_counter()
            model(ids, use_cache=True, logits_to_keep=1)
            if i:
                decode_rates.append(decode / (stamps[-1] - stamps[0]))
                prefill_rates.append(prefill / (time.perf_counter() - t))
    return {"decode_tok_s": statistics.median(decode_rates), "prefill_tok_s": statistics.median(prefill_rates),
            "decode_samples": decode_rates, "load_s": load_s, "bytes_per_token": weight_bytes(model, False)}


def main() -> None:
    engine, folder = sys.argv[1], Path(sys.argv[2])
    threads, decode, prefill, repeats = map(int, sys.argv[3:7])
    if engine.startswith("qwick"):
        result = qwick_worker(folder, threads, decode, prefill, repeats, "--compile" in sys.argv)
    else:
        result = transformers_worker(folder, threads, decode, prefill, repeats)
    result["peak_rss_mib"] = peak_rss_mib()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
