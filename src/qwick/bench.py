"""`qwick bench`: prefill and batch-1 decode speed of qwick vs transformers on the same dummy weights.

Random weights at the Qwen3-0.6B shape (or --config's) are written once as a bfloat16 safetensors checkpoint;
each engine then loads it the way its users do, in a process of its own (qwick/bench_worker.py), and the engines
alternate process by process, so a noisy neighbour or clock drift hits both alike. Medians are reported.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

from qwick.bench_worker import TESTS


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
    parser.add_argument("--decode-tokens", type=_at_least_one, default=32, help="tokens timed in each decode run")
    parser.add_argument("--rounds", type=_at_least_one, default=3, help="processes per engine, alternating (median)")
    parser.add_argument("--repeats", type=_at_least_one, default=2,
                        help="measurements inside each process, after a warm-up")
    parser.add_argument("--no-transformers", action="store_true", help="measure qwick only")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")


def _at_least_one(value: str) -> int:
    """A count for a median: 0 would leave nothing to take the median of."""
    try:
        count = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {value!r}") from None
    if count < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {count}")
    return count


def dummy_model_folder(config: str | None, dest: Path) -> Path:
    """Write a model folder without weights (config.json, generation_config.json) for load_format="dummy"."""
    if config:
        shutil.copy(Path(config) / "config.json", dest / "config.json")
    else:
        assets = resources.files("qwick") / "assets"
        (dest / "config.json").write_text((assets / "qwen3-0.6b-config.json").read_text())
        (dest / "generation_config.json").write_text((assets / "qwen3-generation_config.json").read_text())
    return dest


def write_dummy_checkpoint(folder: Path) -> None:
    """Random bfloat16 weights for `folder`'s config.json, saved as model.safetensors (as Qwen3 ships)."""
    from safetensors.torch import save_file

    from qwick import LLM
    from qwick.engine.args import EngineArgs
    from qwick.passes.cpu_packing import dense_state_dict

    llm = LLM.from_engine_args(EngineArgs(folder, dtype="bfloat16", device="cpu", load_format="dummy",
                                          skip_tokenizer_init=True, seed=0))
    state = dense_state_dict(llm.model)
    if llm.model.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)  # the checkpoint holds the shared matrix once, as embed_tokens
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"),
              metadata={"format": "pt"})


def run_worker(engine: str, folder: Path, dtype: str, args: argparse.Namespace, seed: int) -> dict[str, float]:
    cmd = [sys.executable, "-m", "qwick.bench_worker", engine, str(folder), dtype, str(args.decode_tokens),
           str(args.repeats), str(seed)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{engine} {dtype} benchmark process failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(engines: list[str], folder: Path, dtype: str, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """tokens/s per engine and test: the median of `rounds` processes per engine, engines alternating."""
    samples: dict[str, dict[str, list[float]]] = {e: {t: [] for t in TESTS} for e in engines}
    for round_index in range(args.rounds):
        for engine in engines:
            result = run_worker(engine, folder, dtype, args, seed=round_index)  # same prompts for both engines
            for test in TESTS:
                samples[engine][test].append(result[test])
    return {e: {t: statistics.median(v) for t, v in tests.items()} for e, tests in samples.items()}


def run_bench(args: argparse.Namespace) -> int:
    import torch

    from qwick.device import cpu_has_native_bf16, resolve_dtype

    rows: list[BenchRow] = []
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU bf16 math: {cpu_has_native_bf16()}, "
          f"auto dtype on CPU: {resolve_dtype('auto', torch.device('cpu'), None)}", flush=True)
    engines = ["qwick"] if args.no_transformers else ["qwick", "transformers"]
    with tempfile.TemporaryDirectory() as tmp:
        folder = dummy_model_folder(args.config, Path(tmp))
        write_dummy_checkpoint(folder)
        for dtype in args.dtypes.split(","):
            results = measure(engines, folder, dtype, args)
            for name, r in results.items():
                rows.append(BenchRow(name, dtype, r["prefill_128"], r["prefill_512"], r["decode"]))
                print(_format(rows[-1]), flush=True)
            if "transformers" in results:
                q, t = results["qwick"], results["transformers"]
                print(f"  ratio qwick/transformers {dtype}: "
                      + "  ".join(f"{test} {q[test] / t[test]:.2f}x" for test in TESTS), flush=True)
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
