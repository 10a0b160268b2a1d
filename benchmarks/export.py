"""GGUF export and load: `qwick export` time and file size per type for the Qwen3-0.6B shape (dummy weights),
against llama.cpp's own convert_hf_to_gguf.py (+ llama-quantize for q4_0) when given, and the time to load the
GGUF into qwick against loading the safetensors folder, measured in one run.

  python benchmarks/export.py [--llama-cpp-src SDIST_OR_TREE --llama-python VENV_PYTHON] [--types f16,q8_0]
Dry run (a 2-layer model of the same vocabulary): add --tiny. Setup of the llama.cpp peer: see cpu.py's
docstring (llama-cpp-python's sdist vendors convert_hf_to_gguf.py; its venv's llama_cpp runs llama-quantize).
Each export runs in its own process (`python -m qwick export`), so the times include loading the source.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

import cpu_setup

TINY = {"hidden_size": 128, "intermediate_size": 384, "num_hidden_layers": 2, "num_attention_heads": 2,
        "num_key_value_heads": 1, "head_dim": 64}
TYPES = ("f32", "f16", "bf16", "q8_0", "q4_0")


def timed(cmd: list[str], env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def qwick_export(dummy: Path, out: Path, qtype: str) -> float:
    return timed([sys.executable, "-m", "qwick", "export", str(dummy), str(out), "--quantization", qtype, "--force"])


def llama_export(dummy: Path, out: Path, qtype: str, src: Path, llama_python: str | None, work: Path) -> float | None:
    """convert_hf_to_gguf.py --outtype (f32/f16/bf16/q8_0); q4_0 = f16 conversion + llama-quantize."""
    stub = work / "sentencepiece-stub"  # see cpu_setup.gguf_files: the converter imports sentencepiece first
    stub.mkdir(exist_ok=True)
    (stub / "sentencepiece.py").write_text("class SentencePieceProcessor:\n    pass\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src / "gguf-py"), str(stub)])}
    convert = [sys.executable, str(src / "convert_hf_to_gguf.py"), str(dummy), "--outfile"]
    if qtype != "q4_0":
        return timed([*convert, str(out), "--outtype", qtype], env)
    if llama_python is None:
        return None
    f16 = out.with_name("llama-f16-for-q4_0.gguf")
    seconds = timed([*convert, str(f16), "--outtype", "f16"], env)
    return seconds + timed([llama_python, "-c", cpu_setup._QUANTIZE, str(f16), str(out),
                            str(cpu_setup.GGUF_TYPES["q4_0"])])


def load_seconds(path: Path, repeats: int) -> float:
    """Median time to build the float model from `path` (a GGUF file or a safetensors folder)."""
    from qwick.gguf import is_gguf_path, open_gguf
    from qwick.model.loader import load_config
    from qwick.passes.load import load_model

    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        if is_gguf_path(path):
            file = open_gguf(path)
            load_model(path, file.config, torch.bfloat16, torch.device("cpu"), gguf_file=file)
        else:
            load_model(path, load_config(path), torch.bfloat16, torch.device("cpu"))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default=str(Path.home() / ".cache" / "qwick-bench-export"))
    parser.add_argument("--types", default=",".join(TYPES))
    parser.add_argument("--llama-cpp-src", default=None, help="llama-cpp-python sdist or llama.cpp tree")
    parser.add_argument("--llama-python", default=None, help="python with llama_cpp (runs llama-quantize)")
    parser.add_argument("--repeats", type=int, default=3, help="load-time repeats (median)")
    parser.add_argument("--tiny", action="store_true", help="dry run: a 2-layer model")
    args = parser.parse_args()
    work = Path(args.work) / ("tiny" if args.tiny else "0.6b")
    work.mkdir(parents=True, exist_ok=True)
    dummy = cpu_setup.dummy_checkpoint(work, TINY if args.tiny else None)
    src = cpu_setup.llama_cpp_source(Path(args.llama_cpp_src), work) if args.llama_cpp_src else None
    source_mb = sum(f.stat().st_size for f in dummy.glob("*.safetensors")) / 1e6
    print(f"source: {dummy} ({source_mb:.1f} MB bf16 safetensors)")
    print(f"{'type':<6} {'qwick s':>8} {'MB':>9} {'llama.cpp s':>12} {'MB':>9} {'time ratio':>11}")
    files = {}
    for qtype in args.types.split(","):
        out = work / f"qwick-{qtype}.gguf"
        seconds = qwick_export(dummy, out, qtype)
        files[qtype] = out
        peer = peer_mb = None
        if src is not None:
            peer_out = work / f"llama-{qtype}.gguf"
            peer = llama_export(dummy, peer_out, qtype, src, args.llama_python, work)
            peer_mb = peer_out.stat().st_size / 1e6 if peer is not None else None
        ratio = f"{seconds / peer:.2f}x" if peer else "-"
        print(f"{qtype:<6} {seconds:>8.1f} {out.stat().st_size / 1e6:>9.1f} "
              f"{(f'{peer:.1f}' if peer else '-'):>12} {(f'{peer_mb:.1f}' if peer_mb else '-'):>9} {ratio:>11}")
    base = load_seconds(dummy, args.repeats)
    print(f"load into qwick (bfloat16, median of {args.repeats}): safetensors {base:.2f} s")
    for qtype, path in files.items():
        seconds = load_seconds(path, args.repeats)
        print(f"  {qtype:<6} GGUF {seconds:.2f} s ({seconds / base:.2f}x safetensors)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
