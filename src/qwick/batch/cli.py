"""`qwick batch MODEL --input IN --output OUT --task TASK`: the flags, and the job they describe.

The command is registered and run by `qwick.ray.cli` (which adds `--ray`: the same job on a Ray cluster): the
LLM it loads and the Ray runner both sit above this package."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from qwick.batch.job import BatchJob

# qwick.batch.tasks.TASKS' names (a test keeps them equal): that module imports torch, this one stays light
TASK_NAMES = ("generate", "chat", "moderate", "classify", "rewrite", "extract", "score", "embed")
GATE_TASKS = ("moderate", "classify", "rewrite", "extract", "score")


def add_batch_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="local model folder or Hugging Face id")
    parser.add_argument("--input", required=True, metavar="IN", help="JSONL (one JSON object per line) or *.parquet")
    parser.add_argument("--output", required=True, metavar="OUT",
                        help="JSONL (or *.parquet) output, one row per input row with its id; an existing file is "
                             "resumed: rows whose id it holds are skipped")
    parser.add_argument("--task", required=True, choices=TASK_NAMES)
    parser.add_argument("--errors", default=None, metavar="PATH",
                        help="rows without output and why, one JSON line each (default: OUT's name + .errors.jsonl)")
    parser.add_argument("--max-errors", type=int, default=100,
                        help="stop after more rows than this fail (default 100; -1: no limit)")
    parser.add_argument("--window", type=int, default=None,
                        help="rows in flight at once (default: 2 x --max-num-seqs, enough to keep the engine full)")
    parser.add_argument("--no-progress", action="store_true", help="no progress line and summary on stderr")
    engine = parser.add_argument_group("model and engine")
    engine.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    engine.add_argument("--device", default="auto", help="auto, cpu or cuda")
    engine.add_argument("--max-model-len", type=int, default=None)
    engine.add_argument("--load-format", default="auto", choices=["auto", "dummy"])
    engine.add_argument("--quantization", default=None, choices=["int8", "int4"])
    engine.add_argument("--threads", type=int, default=None)
    engine.add_argument("--max-num-seqs", type=int, default=64, help="sequences run together (default 64)")
    engine.add_argument("--max-num-batched-tokens", type=int, default=512)
    gates = parser.add_argument_group("task options")
    gates.add_argument("--gates", default=None, metavar="FILE", help="gates file (adds or redefines gates)")
    gates.add_argument("--gate", default=None, metavar="NAME",
                       help="the gate that decides (default: the one named after the task; extract needs one)")
    gates.add_argument("--labels", default=None, help="classify: comma-separated labels (a row's 'labels' wins)")
    gates.add_argument("--instruction", default=None, help="score: the reranker instruction (a row's own wins)")
    gates.add_argument("--dimensions", type=int, default=None, help="embed: truncate the vectors (MRL)")
    gates.add_argument("--max-tokens", type=int, default=256, help="generate / chat: tokens per row (default 256)")
    gates.add_argument("--temperature", type=float, default=None, help="generate / chat: 0 = greedy (default: "
                                                                         "the model's; greedy is reproducible)")
    gates.add_argument("--top-p", type=float, default=None)
    gates.add_argument("--top-k", type=int, default=None)
    gates.add_argument("--seed", type=int, default=None, help="sampling seed")
    gates.add_argument("--no-think", action="store_true", help="chat: enable_thinking=False")


def job_from_args(args: argparse.Namespace) -> BatchJob:
    """The job the flags describe, checked (files, gates file, task options) before any model loads."""
    from qwick.batch.job import BatchJob
    from qwick.batch.tasks import TaskOptions
    from qwick.sampling_params import SamplingParams

    labels = tuple(x.strip() for x in args.labels.split(",")) if args.labels else None
    if labels is not None and args.task != "classify":
        raise ValueError("--labels applies to --task classify only")
    if args.gate is not None and args.task not in GATE_TASKS:
        raise ValueError(f"--gate applies to --task {', '.join(GATE_TASKS)}; {args.task} uses no gate")
    if args.max_errors < -1:
        raise ValueError(f"--max-errors must be >= 0 (or -1: no limit), got {args.max_errors}")
    if args.dimensions is not None and args.dimensions < 1:
        raise ValueError(f"--dimensions must be >= 1, got {args.dimensions}")
    sampling = SamplingParams(max_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p,
                              top_k=args.top_k, seed=args.seed)
    options = TaskOptions(gate=args.gate, labels=labels, instruction=args.instruction, dimensions=args.dimensions,
                          sampling=sampling, chat_template_kwargs={"enable_thinking": False} if args.no_think else None)
    job = BatchJob(Path(args.input), Path(args.output), args.task, options, args.gates, args.errors,
                   None if args.max_errors < 0 else args.max_errors, args.window, not args.no_progress)
    job.check()
    _check_gate(job)
    return job


def _check_gate(job: BatchJob) -> None:
    """The task's gate exists in the gates file and is of the task's kind (so a typo fails before the load)."""
    from qwick.gates.loader import load_gates

    gates = load_gates(job.gates_file)
    if job.task not in GATE_TASKS:
        return
    name = job.options.gate or job.task
    spec = gates.get(name)
    if spec is None:
        where = f"{job.gates_file}" if job.gates_file else "the built-in gates (pass --gates FILE)"
        raise ValueError(f"--task {job.task} needs a gate named {name!r} and {where} have none; known: "
                         f"{', '.join(sorted(gates))}")
    allowed = ("classify", "moderate") if job.task == "classify" else (job.task,)
    if spec.kind not in allowed:
        raise ValueError(f"gate {name!r} is a {spec.kind} gate; --task {job.task} needs a {' or '.join(allowed)} gate")
