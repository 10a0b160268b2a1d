"""Sampling cost per decode step: qwick's sampler vs transformers' logits processors, same logits, same run.

Rows of [batch, 151936] float32 logits (Qwen3's vocabulary), in two shapes: "peaked" (what a trained model
gives: a few hundred plausible tokens) and "flat" (random weights). Settings: temperature 1 with no truncation
(the OpenAI API default), Qwen3's generation config (temperature 0.6, top-k 20, top-p 0.95), top-p 0.8 alone,
min-p 0.1. Peer: transformers' TemperatureLogitsWarper / TopKLogitsWarper / TopPLogitsWarper / MinPLogitsWarper,
then softmax + torch.multinomial, batched (what `generate(do_sample=True)` runs each step).
Both draw a token per row; qwick also keeps each row's own seeded generator.

Run: python benchmarks/sampling.py [--batch 32] [--repeats 10]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import transformers

from qwick.engine.sampler import SamplingRow, sample
from qwick.sampling_params import SamplingParams

VOCAB, VALID = 151936, 151669
SETTINGS = {
    "temperature 1, no truncation": {"temperature": 1.0, "top_p": 1.0, "top_k": 0, "min_p": 0.0},
    "Qwen3 defaults (0.6, top-k 20, top-p 0.95)": {"temperature": 0.6, "top_p": 0.95, "top_k": 20, "min_p": 0.0},
    "top-p 0.8 alone": {"temperature": 0.7, "top_p": 0.8, "top_k": 0, "min_p": 0.0},
    "min-p 0.1": {"temperature": 1.0, "top_p": 1.0, "top_k": 0, "min_p": 0.1},
}


def median_ms(run: Callable[[], object], repeats: int) -> float:
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def transformers_step(logits: torch.Tensor, s: dict[str, float]) -> Callable[[], torch.Tensor]:
    warpers = transformers.LogitsProcessorList([transformers.TemperatureLogitsWarper(s["temperature"])])
    if s["top_k"]:
        warpers.append(transformers.TopKLogitsWarper(int(s["top_k"])))
    if s["top_p"] < 1.0:
        warpers.append(transformers.TopPLogitsWarper(s["top_p"]))
    if s["min_p"]:
        warpers.append(transformers.MinPLogitsWarper(s["min_p"]))

    def step() -> torch.Tensor:
        scores = warpers(None, logits.clone())  # type: ignore[arg-type]
        return torch.multinomial(torch.softmax(scores, dim=-1), 1)

    return step


def qwick_step(logits: torch.Tensor, s: dict[str, float]) -> Callable[[], object]:
    params = SamplingParams(**s)  # type: ignore[arg-type]
    rows = [SamplingRow(params, torch.Generator().manual_seed(i), [1], [], []) for i in range(logits.shape[0])]
    return lambda: sample(logits.clone(), rows, VALID)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    gen = torch.Generator().manual_seed(0)
    shapes = {"peaked": torch.randn(args.batch, VOCAB, generator=gen) * 6,
              "flat": torch.randn(args.batch, VOCAB, generator=gen)}
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {torch.get_num_threads()} threads, "
          f"batch {args.batch} x {VOCAB} logits; median ms per step (incl. one logits copy each)")
    print(f"{'setting':44s} {'logits':7s} {'qwick':>8s} {'transformers':>13s} {'ratio':>7s}")
    for name, setting in SETTINGS.items():
        for shape, logits in shapes.items():
            ours = median_ms(qwick_step(logits, setting), args.repeats)
            peer = median_ms(transformers_step(logits, setting), args.repeats)
            print(f"{name:44s} {shape:7s} {ours:8.1f} {peer:13.1f} {peer / ours:6.2f}x")


if __name__ == "__main__":
    main()
