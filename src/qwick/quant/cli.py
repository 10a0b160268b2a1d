"""`qwick quantize MODEL OUT --quantization int8|int4`: write a quantized checkpoint that loads fast."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from qwick.quant.options import DEFAULT_GROUP_SIZE, INT4_GROUP_SIZES, QUANTIZATION_METHODS


def register_quant_commands(sub: Any) -> None:
    """Add `quantize` to the main `qwick` parser's subparsers."""
    parser = sub.add_parser(
        "quantize", help="save a weight-only int8/int4 quantized copy of a model",
        description="Quantize MODEL (a float or Qwen FP8 checkpoint: folder or Hugging Face id) into the folder "
                    "OUT. Decoder projections become per-channel int8 or group-wise int4, lm_head int8 (a tied "
                    "embedding is then read from those int8 rows); tokenizer and generation files are copied. "
                    "Load OUT like any model: `qwick chat OUT`, `LLM(OUT)`.")
    parser.add_argument("model", help="source model folder or Hugging Face id")
    parser.add_argument("out", help="output folder (created)")
    parser.add_argument("--quantization", required=True, choices=QUANTIZATION_METHODS)
    parser.add_argument("--group-size", type=int, default=DEFAULT_GROUP_SIZE, choices=INT4_GROUP_SIZES,
                        help=f"int4 columns per scale/min pair (default {DEFAULT_GROUP_SIZE})")
    parser.add_argument("--no-quantize-lm-head", action="store_true",
                        help="keep lm_head (and a tied embedding) in the source dtype")
    parser.add_argument("--revision", default=None, help="hub revision of MODEL")
    parser.set_defaults(handler=run_quantize)


def run_quantize(args: argparse.Namespace) -> int:
    from qwick.model.hub import resolve_model_path
    from qwick.quant.checkpoint import save_quantized

    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} exists and is not empty: choose a new folder")
    source = resolve_model_path(args.model, args.revision)
    start = time.perf_counter()
    spec = save_quantized(source, out, args.quantization, args.group_size, lm_head=not args.no_quantize_lm_head)
    size = sum(f.stat().st_size for f in out.glob("*.safetensors"))
    group = f" group size {spec.group_size}" if spec.group_size else ""
    print(f"wrote {out} ({spec.method}{group}, lm_head {'int8' if spec.lm_head else 'float'}, "
          f"{size / 1e6:.1f} MB of weights) in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0
