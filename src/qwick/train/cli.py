"""`qwick finetune | pretrain | distill | merge`: argument parsing and exit codes (the work is elsewhere).

Importing this module is cheap: transformers/peft load only when a command runs. Bad data exits with code 2
after printing every `file:line: problem`; a missing `qwick[train]` extra exits 2 naming the install command.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

LORA_TARGETS = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"


def register_train_commands(sub: Any) -> None:
    """Add the four training subcommands to the main `qwick` parser's subparsers."""
    ft = sub.add_parser("finetune", help="LoRA/QLoRA fine-tuning on chat, prompt/completion or gate JSONL",
                        description="Fine-tune MODEL with LoRA on JSONL rows ({\"messages\"}, {\"prompt\", "
                                    "\"completion\"} or {\"text\", \"label\"}); loss on assistant tokens only. "
                                    "Writes a standard peft adapter folder.")
    ft.add_argument("model", help="base model folder or Hugging Face id")
    _add_data_args(ft)
    _add_lora_args(ft)
    ft.add_argument("--qlora", action="store_true", help="4-bit NF4 base weights (CUDA + bitsandbytes only)")
    ft.add_argument("--gate-template", default=None,
                    help="prompt for {\"text\", \"label\"} rows, with {text} where the text goes")
    _add_train_args(ft, lr=2e-4)
    ft.set_defaults(handler=_handler(_run_finetune))

    pt = sub.add_parser("pretrain", help="continued pretraining on raw text, packed into blocks",
                        description="Continue pretraining MODEL on a .txt corpus (documents separated by blank "
                                    "lines) or .jsonl ({\"text\"} per line), packed into --max-seq-len blocks. "
                                    "Full weights by default (saves a checkpoint), --lora saves an adapter.")
    pt.add_argument("model", help="base model folder or Hugging Face id")
    _add_data_args(pt)
    pt.add_argument("--lora", action="store_true", help="train a LoRA adapter instead of every weight")
    _add_lora_args(pt)
    _add_train_args(pt, lr=None)
    pt.set_defaults(handler=_handler(_run_pretrain))

    ds = sub.add_parser("distill", help="distil a teacher into a student (top-k logit KL or sequence-level)",
                        description="Distil TEACHER (run by qwick) into STUDENT. Prompts without an answer are "
                                    "answered by the teacher. --mode logits: KL on the teacher's top-k logits; "
                                    "--mode sequence: fine-tune on the teacher's answers.")
    ds.add_argument("--teacher", required=True, help="teacher model folder or id")
    ds.add_argument("--student", required=True, help="student model folder or id (same vocabulary)")
    _add_data_args(ds)
    ds.add_argument("--mode", choices=["logits", "sequence"], default="logits")
    ds.add_argument("--top-k", type=int, default=20, help="teacher logits kept per token (default 20)")
    ds.add_argument("--kd-temperature", type=float, default=1.0, help="softmax temperature of the KL (default 1)")
    ds.add_argument("--max-new-tokens", type=int, default=256, help="teacher answer length limit (default 256)")
    ds.add_argument("--temperature", type=float, default=0.0, help="teacher sampling temperature (0 = greedy)")
    ds.add_argument("--no-think", action="store_true", help="the teacher answers with enable_thinking=False")
    ds.add_argument("--teacher-dtype", default="auto", help="teacher dtype (default auto)")
    ds.add_argument("--gate-template", default=None, help="prompt for {\"text\"[, \"label\"]} rows, with {text}")
    ds.add_argument("--lora", action="store_true", help="train a LoRA adapter on the student, not every weight")
    _add_lora_args(ds)
    _add_train_args(ds, lr=None)
    ds.set_defaults(handler=_handler(_run_distill))

    mg = sub.add_parser("merge", help="merge a LoRA adapter into its base model",
                        description="Write MODEL with ADAPTER merged into OUT (safetensors, config, tokenizer).")
    mg.add_argument("model", help="base model folder or Hugging Face id")
    mg.add_argument("adapter", help="peft adapter folder (adapter_config.json, adapter_model.safetensors)")
    mg.add_argument("out", help="folder to write the merged checkpoint to")
    mg.add_argument("--dtype", default="auto", help="saved dtype (default: the base checkpoint's)")
    mg.set_defaults(handler=_handler(_run_merge))


def _add_data_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, type=Path, help="training data file")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--eval-data", type=Path, default=None, help="held-out file for periodic eval loss")
    parser.add_argument("--max-seq-len", type=int, default=2048, help="tokens per sequence (default 2048)")


def _add_lora_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lora-r", type=int, default=16, help="LoRA rank (default 16)")
    parser.add_argument("--lora-alpha", type=float, default=32.0, help="LoRA alpha; scale = alpha/r (default 32)")
    parser.add_argument("--lora-dropout", type=float, default=0.0, help="dropout on the LoRA input (default 0)")
    parser.add_argument("--target-modules", default=LORA_TARGETS, help=f"comma-separated (default {LORA_TARGETS})")


def _add_train_args(parser: argparse.ArgumentParser, lr: float | None) -> None:
    default_lr = "2e-4" if lr else "2e-4 with --lora, else 2e-5"
    parser.add_argument("--epochs", type=float, default=1.0, help="passes over the data (default 1)")
    parser.add_argument("--max-steps", type=int, default=-1, help="stop after this many steps (overrides --epochs)")
    parser.add_argument("--lr", type=float, default=lr, help=f"peak learning rate (default {default_lr})")
    parser.add_argument("--batch-size", type=int, default=4, help="sequences per step (default 4)")
    parser.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step (default 1)")
    parser.add_argument("--warmup-steps", type=float, default=0.0, help="warmup steps, or a fraction if < 1")
    parser.add_argument("--logging-steps", type=int, default=10, help="log the loss every N steps (default 10)")
    parser.add_argument("--eval-steps", type=int, default=None, help="eval every N steps (default: 10 per run)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", default="auto", help="auto, float32, bfloat16 or float16 (default auto)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar or loss lines")


def _handler(run: Callable[[argparse.Namespace], str]) -> Callable[[argparse.Namespace], int]:
    def handle(args: argparse.Namespace) -> int:
        from qwick.train.data import DataError
        from qwick.train.extra import MissingExtraError

        try:
            message = run(args)
        except DataError as exc:
            for issue in exc.issues:
                print(issue, file=sys.stderr)
            shown = f"{exc.total} problems, the first {len(exc.issues)} above" if exc.total > len(exc.issues) else ""
            print(f"qwick: error: invalid training data{f' ({shown})' if shown else ''}; nothing was trained",
                  file=sys.stderr)
            return 2
        except MissingExtraError as exc:
            print(f"qwick: error: {exc}", file=sys.stderr)
            return 2
        print(message)
        return 0

    return handle


def _lora(args: argparse.Namespace) -> Any:
    from qwick.train.model import LoraSettings

    targets = tuple(t.strip() for t in args.target_modules.split(",") if t.strip())
    return LoraSettings(args.lora_r, args.lora_alpha, args.lora_dropout, targets)


def _settings(args: argparse.Namespace, lora: bool) -> Any:
    from qwick.train.trainer import TrainSettings

    lr = args.lr if args.lr is not None else (2e-4 if lora else 2e-5)
    return TrainSettings(epochs=args.epochs, lr=lr, batch_size=args.batch_size, grad_accum=args.grad_accum,
                         max_steps=args.max_steps, warmup_steps=args.warmup_steps, logging_steps=args.logging_steps,
                         eval_steps=args.eval_steps, seed=args.seed, progress=not args.no_progress)


def _summary(result: Any, out: Path, what: str) -> str:
    losses = [f"{x:.4f}" for x in result.losses[:1] + result.losses[1:][-1:]]  # first and last logged
    loss = f", loss {' -> '.join(losses)}" if losses else ""
    evals = f", eval loss {result.eval_losses[-1]:.4f}" if result.eval_losses else ""
    return (f"saved {what} to {out}: {result.steps} steps{loss}{evals}, "
            f"{result.tokens_per_second:.0f} training tokens/s")


def _run_finetune(args: argparse.Namespace) -> str:
    from qwick.train.data import DEFAULT_GATE_TEMPLATE
    from qwick.train.finetune import FinetuneConfig, finetune

    cfg = FinetuneConfig(args.model, args.data, args.out, args.eval_data, _lora(args), args.qlora, args.max_seq_len,
                         args.gate_template or DEFAULT_GATE_TEMPLATE, args.dtype, args.device, _settings(args, True))
    return _summary(finetune(cfg), args.out, "the LoRA adapter")


def _run_pretrain(args: argparse.Namespace) -> str:
    from qwick.train.pretrain import PretrainConfig, pretrain

    cfg = PretrainConfig(args.model, args.data, args.out, args.eval_data, _lora(args) if args.lora else None,
                         args.max_seq_len, args.dtype, args.device, _settings(args, args.lora))
    return _summary(pretrain(cfg), args.out, "the LoRA adapter" if args.lora else "the model")


def _run_distill(args: argparse.Namespace) -> str:
    from qwick.train.data import DEFAULT_GATE_TEMPLATE
    from qwick.train.distill import DistillConfig, distill
    from qwick.train.teacher import GenerationSettings

    generation = GenerationSettings(args.max_new_tokens, args.temperature, not args.no_think, args.seed)
    cfg = DistillConfig(args.teacher, args.student, args.data, args.out, args.eval_data, args.mode, args.top_k,
                        args.kd_temperature, generation, _lora(args) if args.lora else None, args.max_seq_len,
                        args.gate_template or DEFAULT_GATE_TEMPLATE, args.dtype, args.teacher_dtype, args.device,
                        train=_settings(args, args.lora))
    return _summary(distill(cfg), args.out, "the student adapter" if args.lora else "the student")


def _run_merge(args: argparse.Namespace) -> str:
    from qwick.train.merge import merge

    return f"saved the merged model to {merge(args.model, args.adapter, args.out, args.dtype)}"
