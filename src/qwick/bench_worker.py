"""One engine's measurement for `qwick bench`, in a process of its own: `python -m qwick.bench_worker ENGINE
FOLDER DTYPE DECODE_TOKENS REPEATS SEED` prints one JSON line of tokens/s (median of REPEATS after a warm-up).

Why a process per engine: with both models in one process the numbers were not what a user of either gets
(the second model's memory and allocator state, transformers' model built in code with a bfloat16 rotary
table); here each engine loads the same checkpoint from disk the way its users load it.
"""

from __future__ import annotations

import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

TESTS = ("prefill_128", "prefill_512", "decode")


def _prompts(seed: int, repeats: int) -> list[dict[str, list[int]]]:
    """Fresh random token ids per repeat (the same for both engines): a 64-token decode prompt and two prefills."""
    rng = random.Random(seed)
    return [{str(n): [rng.randrange(150000) for _ in range(n)] for n in (64, 128, 512)} for _ in range(repeats + 1)]


def qwick_runner(folder: Path, dtype: str, decode: int) -> tuple[Callable[[list[int]], None], Callable[..., float]]:
    from qwick import LLM, SamplingParams
    from qwick.engine.args import EngineArgs

    # prefix caching off: every repeat must compute its whole prompt
    llm = LLM.from_engine_args(EngineArgs(folder, dtype=dtype, device="cpu", skip_tokenizer_init=True, seed=0,
                                          enable_prefix_caching=False))
    one = SamplingParams(max_tokens=1, temperature=0)
    params = SamplingParams(max_tokens=decode + 1, temperature=0, ignore_eos=True)

    def prefill(ids: list[int]) -> None:
        llm.generate({"prompt_token_ids": ids}, one)

    def decode_rate(prompt: list[int]) -> float:
        stamps = [time.perf_counter() for _ in llm.stream({"prompt_token_ids": prompt}, params)]
        return decode / (stamps[-1] - stamps[0])  # first delta = prefill + token 1; the next are decode steps

    return prefill, decode_rate


def transformers_runner(folder: Path, dtype: str,
                        decode: int) -> tuple[Callable[[list[int]], None], Callable[..., float]]:
    import torch
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, dtype)).eval()
    stamps: list[float] = []

    class Clock(transformers.StoppingCriteria):
        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
            stamps.append(time.perf_counter())
            return torch.zeros(input_ids.shape[0], dtype=torch.bool)

    criteria = transformers.StoppingCriteriaList([Clock()])

    @torch.inference_mode()
    def prefill(ids: list[int]) -> None:
        model(torch.tensor([ids]), use_cache=True, logits_to_keep=1)

    @torch.inference_mode()
    def decode_rate(prompt: list[int]) -> float:
        stamps.clear()
        model.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=decode + 1, min_new_tokens=decode + 1,
                       stopping_criteria=criteria, pad_token_id=0)
        return decode / (stamps[-1] - stamps[0])

    return prefill, decode_rate


def measure(engine: str, folder: Path, dtype: str, decode: int, repeats: int, seed: int) -> dict[str, float]:
    """tokens/s per test: one warm-up repeat, then the median of `repeats`."""
    make = qwick_runner if engine == "qwick" else transformers_runner
    prefill, decode_rate = make(folder, dtype, decode)
    samples: dict[str, list[float]] = {t: [] for t in TESTS}
    for i, prompts in enumerate(_prompts(seed, repeats)):
        results = {}
        for n in (128, 512):
            start = time.perf_counter()
            prefill(prompts[str(n)])
            results[f"prefill_{n}"] = n / (time.perf_counter() - start)
        results["decode"] = decode_rate(prompts["64"])
        if i:  # the first repeat warms up caches and kernels
            for test, value in results.items():
                samples[test].append(value)
    return {t: statistics.median(v) for t, v in samples.items()}


def main() -> None:
    engine, folder, dtype = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    decode, repeats, seed = map(int, sys.argv[4:7])
    print(json.dumps(measure(engine, folder, dtype, decode, repeats, seed)), flush=True)


if __name__ == "__main__":
    main()
