"""Prefill (128/512 tokens) and batch-1 decode: qwick vs transformers, same dummy Qwen3-0.6B weights.

Same as `qwick bench`; run: python benchmarks/foundation.py [--dtypes float32,bfloat16] [--json out.json]
"""

from __future__ import annotations

import argparse
import sys

from qwick.bench import add_bench_args, run_bench

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    add_bench_args(parser)
    sys.exit(run_bench(parser.parse_args()))
