"""`qwick bench`: prefill and batch-1 decode speed of qwick vs transformers on the same dummy weights.

Both engines get identical random weights at the Qwen3-0.6B shape (no checkpoint needed) and run in the
same process, one after the other, so the printed ratios compare like with like on this machine.
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

import torch


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
    parser.add_argument("--decode-tokens", type=int, default=32, help="tokens timed in the decode test")
    parser.add_argument("--repeats", type=int, default=3, help="prefill repeats (median reported)")
    parser.add_argument("--no-transformers", action="store_true", help="measure qwick only")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")


def _median_time(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _model_folder(config: str | None, dest: Path) -> Path:
    if config:
        shutil.copy(Path(config) / "config.json", dest / "config.json")
    else:
        assets = resources.files("qwick") / "assets"
        (dest / "config.json").write_text((assets / "qwen3-0.6b-config.json").read_text())
        (dest / "generation_config.json").write_text((assets / "qwen3-generation_config.json").read_text())
    return dest


def bench_qwick(folder: Path, dtype: str, args: argparse.Namespace) -> tuple[BenchRow, dict[str, torch.Tensor]]:
    from qwick import LLM, SamplingParams

    llm = LLM(folder, dtype=dtype, device="cpu", load_format="dummy", skip_tokenizer_init=True, seed=0)
    one = SamplingParams(max_tokens=1, temperature=0)
    prefill = {}
    for length in (128, 512):
        ids = torch.randint(0, 150000, (length,)).tolist()
        seconds = _median_time(lambda ids=ids: llm.generate({"prompt_token_ids": ids}, one), args.repeats)
        prefill[length] = length / seconds
    n = args.decode_tokens
    params = SamplingParams(max_tokens=n + 1, temperature=0, ignore_eos=True)
    prompt = {"prompt_token_ids": torch.randint(0, 150000, (64,)).tolist()}

    def decode_rate() -> float:
        stamps = [time.perf_counter() for _ in llm.stream(prompt, params)]
        return n / (stamps[-1] - stamps[0])  # first delta = prefill + first token; the next n are decode steps

    decode_rate()
    decode = statistics.median(decode_rate() for _ in range(2))
    weights = {k: v for k, v in llm.model.state_dict().items()}
    return BenchRow("qwick", dtype, prefill[128], prefill[512], decode), weights


def bench_transformers(folder: Path, dtype: str, weights: dict[str, torch.Tensor],
                       args: argparse.Namespace) -> BenchRow:
    import transformers

    config = transformers.AutoConfig.from_pretrained(folder)
    model = transformers.Qwen3ForCausalLM(config).to(getattr(torch, dtype)).eval()
    model.load_state_dict(weights, strict=False)  # identical weights (same parameter names)
    if config.tie_word_embeddings:
        model.tie_weights()
    prefill = {}
    with torch.inference_mode():
        for length in (128, 512):
            ids = torch.randint(0, 150000, (1, length))
            seconds = _median_time(lambda ids=ids: model(ids, use_cache=True, logits_to_keep=1), args.repeats)
            prefill[length] = length / seconds
        n = args.decode_tokens
        stamps: list[float] = []

        class Clock(transformers.StoppingCriteria):
            def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: object) -> torch.Tensor:
                stamps.append(time.perf_counter())
                return torch.zeros(input_ids.shape[0], dtype=torch.bool)

        prompt = torch.randint(0, 150000, (1, 64))

        def decode_rate() -> float:
            stamps.clear()
            model.generate(prompt, do_sample=False, max_new_tokens=n + 1, min_new_tokens=n + 1,
                           stopping_criteria=transformers.StoppingCriteriaList([Clock()]), pad_token_id=0)
            return n / (stamps[-1] - stamps[0])

        decode_rate()
        decode = statistics.median(decode_rate() for _ in range(2))
    return BenchRow("transformers", dtype, prefill[128], prefill[512], decode)


def run_bench(args: argparse.Namespace) -> int:
    from qwick.device import cpu_has_native_bf16, resolve_dtype

    rows: list[BenchRow] = []
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"CPU bf16 math: {cpu_has_native_bf16()}, auto dtype on CPU: "
          f"{resolve_dtype('auto', torch.device('cpu'), None)}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = _model_folder(args.config, Path(tmp))
        for dtype in args.dtypes.split(","):
            row, weights = bench_qwick(folder, dtype, args)
            rows.append(row)
            print(_format(row), flush=True)
            if not args.no_transformers:
                ref = bench_transformers(folder, dtype, weights, args)
                rows.append(ref)
                print(_format(ref), flush=True)
                print(f"  ratio qwick/transformers {dtype}: prefill128 {row.prefill_128_tok_s / ref.prefill_128_tok_s:.2f}x"
                      f"  prefill512 {row.prefill_512_tok_s / ref.prefill_512_tok_s:.2f}x"
                      f"  decode {row.decode_tok_s / ref.decode_tok_s:.2f}x", flush=True)
            del weights
    qwick_rows = [r for r in rows if r.engine == "qwick"]
    if len(qwick_rows) > 1:
        best = max(qwick_rows, key=lambda r: r.decode_tok_s)
        print(f"fastest qwick dtype for decode here: {best.dtype}")
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in rows], indent=2))
    return 0


def _format(row: BenchRow) -> str:
    return (f"{row.engine:>12} {row.dtype:>8}: prefill128 {row.prefill_128_tok_s:8.1f} tok/s  "
            f"prefill512 {row.prefill_512_tok_s:8.1f} tok/s  decode {row.decode_tok_s:6.2f} tok/s")
