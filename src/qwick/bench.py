"""`qwick bench`: prefill and batch-1 decode speed of qwick vs transformers on the same dummy weights.

Both engines get identical random weights at the Qwen3-0.6B shape (no checkpoint needed) and run in the
same process. Each measurement alternates qwick and transformers round by round and reports medians, so a
noisy neighbour or clock drift hits both alike.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

TESTS = ("prefill_128", "prefill_512", "decode")


@dataclass
class BenchRow:
    engine: str
    dtype: str
    prefill_128_tok_s: float
    prefill_512_tok_s: float
    decode_tok_s: float


def add_bench_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, help="folder with a config.json to use (default: Qwen3-0.6B)")
    parser.add_argument("--dtypes", default="float32,bfloat16", help="comma-separated dtypes to measure")
    parser.add_argument("--decode-tokens", type=int, default=32, help="tokens timed in each decode round")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds per test (median reported)")
    parser.add_argument("--no-transformers", action="store_true", help="measure qwick only")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")


def dummy_model_folder(config: str | None, dest: Path) -> Path:
    """Write a model folder without weights (config.json, generation_config.json) for load_format="dummy"."""
    if config:
        shutil.copy(Path(config) / "config.json", dest / "config.json")
    else:
        assets = resources.files("qwick") / "assets"
        (dest / "config.json").write_text((assets / "qwen3-0.6b-config.json").read_text())
        (dest / "generation_config.json").write_text((assets / "qwen3-generation_config.json").read_text())
    return dest


class QwickRunner:
    def __init__(self, folder: Path, dtype: str, decode_tokens: int) -> None:
        from qwick import LLM, SamplingParams

        # prefix caching off: every round re-sends the same prompt and must compute all of it
        self.llm = LLM(folder, dtype=dtype, device="cpu", load_format="dummy", skip_tokenizer_init=True, seed=0,
                       enable_prefix_caching=False)
        self.one = SamplingParams(max_tokens=1, temperature=0)
        self.decode_params = SamplingParams(max_tokens=decode_tokens + 1, temperature=0, ignore_eos=True)
        self.n = decode_tokens

    def prefill(self, ids: list[int]) -> None:
        self.llm.generate({"prompt_token_ids": ids}, self.one)

    def decode_rate(self, prompt: list[int]) -> float:
        stamps = [time.perf_counter() for _ in self.llm.stream({"prompt_token_ids": prompt}, self.decode_params)]
        return self.n / (stamps[-1] - stamps[0])  # first delta = prefill + token 1; the next n are decode steps


class TransformersRunner:
    def __init__(self, folder: Path, dtype: str, weights: dict[str, torch.Tensor], decode_tokens: int) -> None:
        import torch  # here and below, not at the top: `qwick --help` builds bench's parser without torch
        import transformers

        config = transformers.AutoConfig.from_pretrained(folder)
        self.model = transformers.Qwen3ForCausalLM(config).to(getattr(torch, dtype)).eval()
        self.model.load_state_dict(weights, strict=False)  # identical weights: the parameter names are the same
        if config.tie_word_embeddings:
            self.model.tie_weights()
        self.n = decode_tokens
        self.stamps: list[float] = []
        stamps = self.stamps

        class Clock(transformers.StoppingCriteria):
            def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
                stamps.append(time.perf_counter())
                return torch.zeros(input_ids.shape[0], dtype=torch.bool)

        self.criteria = transformers.StoppingCriteriaList([Clock()])

    def prefill(self, ids: list[int]) -> None:
        import torch

        with torch.inference_mode():
            self.model(torch.tensor([ids]), use_cache=True, logits_to_keep=1)

    def decode_rate(self, prompt: list[int]) -> float:
        import torch

        self.stamps.clear()
        with torch.inference_mode():
            self.model.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=self.n + 1,
                                min_new_tokens=self.n + 1, stopping_criteria=self.criteria, pad_token_id=0)
        return self.n / (self.stamps[-1] - self.stamps[0])


def _rate(fn: Callable[[], Any], tokens: int) -> float:
    start = time.perf_counter()
    fn()
    return tokens / (time.perf_counter() - start)


def measure(runners: dict[str, Any], rounds: int) -> dict[str, dict[str, float]]:
    """tokens/s per engine and test: one warm-up, then `rounds` alternating rounds, median."""
    import torch

    samples: dict[str, dict[str, list[float]]] = {name: {t: [] for t in TESTS} for name in runners}
    prompts = {length: torch.randint(0, 150000, (length,)).tolist() for length in (64, 128, 512)}
    for round_index in range(rounds + 1):
        for name, runner in runners.items():
            results = {
                "prefill_128": _rate(lambda r=runner: r.prefill(prompts[128]), 128),
                "prefill_512": _rate(lambda r=runner: r.prefill(prompts[512]), 512),
                "decode": runner.decode_rate(prompts[64]),
            }
            if round_index:  # round 0 warms up caches and kernels
                for test, value in results.items():
                    samples[name][test].append(value)
    return {name: {t: statistics.median(v) for t, v in tests.items()} for name, tests in samples.items()}


def run_bench(args: argparse.Namespace) -> int:
    import torch

    from qwick.device import cpu_has_native_bf16, resolve_dtype
    from qwick.model.cpu_packing import dense_state_dict

    rows: list[BenchRow] = []
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU bf16 math: {cpu_has_native_bf16()}, "
          f"auto dtype on CPU: {resolve_dtype('auto', torch.device('cpu'), None)}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = dummy_model_folder(args.config, Path(tmp))
        for dtype in args.dtypes.split(","):
            runners: dict[str, Any] = {"qwick": QwickRunner(folder, dtype, args.decode_tokens)}
            if not args.no_transformers:
                weights = dense_state_dict(runners["qwick"].llm.model)
                runners["transformers"] = TransformersRunner(folder, dtype, weights, args.decode_tokens)
            results = measure(runners, args.rounds)
            for name, r in results.items():
                rows.append(BenchRow(name, dtype, r["prefill_128"], r["prefill_512"], r["decode"]))
                print(_format(rows[-1]), flush=True)
            if "transformers" in results:
                q, t = results["qwick"], results["transformers"]
                print(f"  ratio qwick/transformers {dtype}: "
                      + "  ".join(f"{test} {q[test] / t[test]:.2f}x" for test in TESTS), flush=True)
            del runners
    qwick_rows = [r for r in rows if r.engine == "qwick"]
    if len(qwick_rows) > 1:
        print(f"fastest qwick dtype here: decode {max(qwick_rows, key=lambda r: r.decode_tok_s).dtype}, "
              f"prefill512 {max(qwick_rows, key=lambda r: r.prefill_512_tok_s).dtype}")
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in rows], indent=2))
    return 0


def _format(row: BenchRow) -> str:
    return (f"{row.engine:>12} {row.dtype:>8}: prefill128 {row.prefill_128_tok_s:8.1f} tok/s  "
            f"prefill512 {row.prefill_512_tok_s:8.1f} tok/s  decode {row.decode_tok_s:6.2f} tok/s")
