"""`qwick export MODEL OUT.gguf`: write a GGUF file for llama.cpp / Ollama (and an Ollama Modelfile)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

EXPORT_CHOICES = ("f32", "f16", "bf16", "q8_0", "q4_0")  # tensor_types.EXPORT_TYPES, without importing gguf


def register_export_commands(sub: Any) -> None:
    """Add `export` to the main `qwick` parser's subparsers."""
    parser = sub.add_parser(
        "export", help="write a model as a GGUF file for llama.cpp and Ollama",
        description="Write MODEL (a Hugging Face folder or id, a merged fine-tune, a qwick-quantized folder) as "
                    "the GGUF file OUT, with llama.cpp's qwen3 names, the tokenizer and the chat template. "
                    "Norms stay f32; q4_0 keeps the output projection in q8_0.")
    parser.add_argument("model", help="source model folder or Hugging Face id")
    parser.add_argument("out", help="the .gguf file to write")
    parser.add_argument("--quantization", default="f16", choices=EXPORT_CHOICES,
                        help="tensor type of the weights (default f16)")
    parser.add_argument("--adapter", default=None, metavar="LORA_DIR",
                        help="a PEFT LoRA adapter folder to merge into the weights on the way")
    parser.add_argument("--ollama", default=None, metavar="DIR",
                        help="also write DIR/Modelfile for `ollama create NAME -f DIR/Modelfile`")
    parser.add_argument("--force", action="store_true", help="overwrite OUT (and the Modelfile) if they exist")
    parser.set_defaults(handler=run_export)


def run_export(args: argparse.Namespace) -> int:
    from qwick.export.ollama import write_modelfile
    from qwick.export.writer import export_gguf

    out = Path(args.out)
    if out.suffix.lower() != ".gguf":
        raise ValueError(f"OUT must be a .gguf file name, got {str(out)!r}")
    if args.ollama is not None and (Path(args.ollama) / "Modelfile").exists() and not args.force:
        raise ValueError(f"{Path(args.ollama) / 'Modelfile'} already exists: pass --force to overwrite it")
    start = time.perf_counter()
    result = export_gguf(args.model, out, args.quantization, adapter=args.adapter, force=args.force)
    print(f"wrote {result.path} ({result.quantization}, {result.bytes / 1e6:.1f} MB) in "
          f"{time.perf_counter() - start:.1f} s", file=sys.stderr)
    if args.ollama is not None:
        modelfile = write_modelfile(result.path, Path(args.ollama), force=True)
        print(f"wrote {modelfile}: run `ollama create NAME -f {modelfile}`", file=sys.stderr)
    return 0
