"""`qwick` command line: generate, chat, serve, bench."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from qwick.chat_repl import CHAT_HELP  # light: the REPL module imports no torch

DEFAULT_MODEL = "Qwen/Qwen3-0.6B"
# a Hugging Face id (Org/Name-1.5B) as a whole prompt is a model given in the prompt's place, not a prompt
_MODEL_ID = re.compile(r"[A-Za-z][\w.-]*/[\w.]*[\d-][\w.-]*")


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    # default None, not the id: generate must tell "no model given" apart from the default typed out
    parser.add_argument("model", nargs="?", default=None,
                        help=f"local model folder or Hugging Face id (default: {DEFAULT_MODEL})")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                        help="weights/activations dtype; auto = bfloat16 on CPUs with bf16 math, else float32")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--max-model-len", type=int, default=None,
                        help="context length (default: the model's, lowered to what the KV cache budget holds)")
    parser.add_argument("--load-format", default="auto", choices=["auto", "dummy"],
                        help="dummy = random weights from config.json alone (benchmarks)")
    parser.add_argument("--seed", type=int, default=None, help="sampling seed (same seed, same output)")
    parser.add_argument("--quantization", default=None, choices=["int8", "int4"],
                        help="weight-only quantization of a float checkpoint at load (a checkpoint written by "
                             "`qwick quantize` is used as stored)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads (default: the physical cores this process may use)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the decode step: ~25%% faster int8/int4 decode on CPU after a "
                             "10-60 s warm-up (not for bf16, where it is slower)")


def _add_sampling_args(parser: argparse.ArgumentParser, max_tokens: int | None) -> None:
    parser.add_argument("--max-tokens", type=int, default=max_tokens, help=f"tokens to generate (default {max_tokens})")
    parser.add_argument("--temperature", type=float, default=None, help="0 = greedy (default: the model's)")
    parser.add_argument("--top-p", type=float, default=None)
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--min-p", type=float, default=None)
    parser.add_argument("--presence-penalty", type=float, default=0.0)
    parser.add_argument("--repetition-penalty", type=float, default=None)
    parser.add_argument("--max-thinking-tokens", type=int, default=None, help="thinking budget (chat)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qwick", description="Fast inference for small Qwen3 models.")
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="stream a completion of one prompt to stdout",
                         description="Stream a completion of PROMPT to stdout (raw text; --chat applies the "
                                     "model's chat template).")
    _add_model_args(gen)
    gen.add_argument("prompt", help="the prompt text")
    gen.add_argument("--chat", action="store_true", help="treat PROMPT as a user message of a chat")
    gen.add_argument("--no-think", action="store_true", help="with --chat: enable_thinking=False")
    _add_lora_arg(gen)
    _add_sampling_args(gen, 256)

    chat = sub.add_parser("chat", help="interactive multi-turn chat", description=f"Interactive chat. {CHAT_HELP}")
    _add_model_args(chat)
    chat.add_argument("--no-think", action="store_true", help="start with thinking disabled (/think re-enables)")
    chat.add_argument("--system", default=None, help="system prompt")
    _add_lora_arg(chat)
    _add_sampling_args(chat, 2048)

    serve = sub.add_parser("serve", help="OpenAI-compatible HTTP server",
                           description="Serve MODEL over an OpenAI-compatible HTTP API (/v1/chat/completions, "
                                       "/v1/completions, /v1/models, /tokenize, /detokenize, /health, /metrics).")
    _add_model_args(serve)
    from qwick.server.cli import add_serve_args

    add_serve_args(serve)

    bench = sub.add_parser("bench", help="prefill/decode speed vs transformers on dummy weights",
                           description="Benchmark prefill (128/512 tokens) and batch-1 decode on the Qwen3-0.6B "
                                       "shape with dummy weights, side by side with transformers.")
    from qwick.bench import add_bench_args  # bench imports torch only when it runs

    add_bench_args(bench)
    # Further commands live beside their code; each sets `handler` (args -> exit code) on its parser.
    from qwick.gates.cli import register_ledger_commands

    register_ledger_commands(sub, _open_gates)
    from qwick.train.cli import register_train_commands

    register_train_commands(sub)
    from qwick.quant.cli import register_quant_commands

    register_quant_commands(sub)
    from qwick.pipelines.cli import register_pipeline_commands

    register_pipeline_commands(sub)
    from qwick.agent.cli import add_agent_args, register_agent_commands

    add_agent_args(chat, required=False)  # `qwick chat MODEL --mcp CONFIG.json`: turns run through the agent
    register_agent_commands(sub, _add_model_args, _load)
    from qwick.mcp_server.cli import register_mcp_commands

    register_mcp_commands(sub, _add_model_args, _load)
    from qwick.rag.cli import register_rag_commands

    register_rag_commands(sub, _load_model)
    from qwick.ray.cli import register_batch_commands  # `qwick batch` (qwick.batch) and `serve --ray`

    register_batch_commands(sub)
    from qwick.export.cli import register_export_commands

    register_export_commands(sub)
    return parser


def _add_lora_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lora", default=None, metavar="ADAPTER",
                        help="a PEFT LoRA adapter folder to generate with (applied unmerged over MODEL)")


def _open_gates(args: argparse.Namespace, model: str, adapters: list[Any]) -> Any:
    """`qwick ledger replay`'s model: the LLM its flags describe, with `adapters`, and its gates over them."""
    from qwick.lora.modules import lora_llm_options

    return _load(args, model=model, **lora_llm_options(adapters)).new_gates(adapters=adapters)


def _load_model(args: argparse.Namespace, model: str, **overrides: Any) -> Any:
    """The LLM `model` under the parsed flags (the rag commands load embedding, answer and rerank models)."""
    return _load(args, model=model, **overrides)


def _sampling_params(args: argparse.Namespace) -> Any:
    from qwick import SamplingParams

    return SamplingParams(max_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p,
                          top_k=args.top_k, min_p=args.min_p, presence_penalty=args.presence_penalty,
                          repetition_penalty=args.repetition_penalty, seed=args.seed,
                          max_thinking_tokens=args.max_thinking_tokens)


def _load(args: argparse.Namespace, **overrides: Any) -> Any:
    """The LLM the parsed flags describe (EngineArgs.from_cli_args), `overrides` (LoRA settings) on top."""
    from qwick import LLM
    from qwick.engine.args import EngineArgs

    return LLM.from_engine_args(EngineArgs.from_cli_args(args, **overrides))


def _load_with_lora(args: argparse.Namespace) -> tuple[Any, Any]:
    """The LLM and the LoRARequest of --lora (None without it); the adapter is loaded and checked now."""
    if args.lora is None:
        return _load(args), None
    from pathlib import Path

    from qwick.lora.adapter import read_rank
    from qwick.lora.request import LoRARequest

    if not Path(args.lora).is_dir():
        raise FileNotFoundError(f"--lora {args.lora!r} is not a folder: pass a PEFT adapter folder "
                                "(adapter_config.json + adapter_model.safetensors)")
    llm = _load(args, enable_lora=True, max_lora_rank=read_rank(args.lora))
    lora = LoRARequest(Path(args.lora).name or "adapter", 1, args.lora)
    llm.add_lora(lora)
    return llm, lora


def _check_generate_args(args: argparse.Namespace) -> None:
    """`qwick generate FOLDER` (prompt forgotten) parses as the default model with FOLDER as the prompt."""
    if args.model is not None:
        return
    from pathlib import Path

    looks_like_model = Path(args.prompt).is_dir() or _MODEL_ID.fullmatch(args.prompt) is not None
    if looks_like_model:
        raise ValueError(f"{args.prompt!r} looks like a model, given where the prompt goes, and no prompt was "
                         f"given: run `qwick generate {args.prompt} \"PROMPT\"` (or name the model and the prompt "
                         "both, to send this text as the prompt)")


def run_generate(args: argparse.Namespace, out: TextIO) -> int:
    params = _sampling_params(args)
    llm, lora = _load_with_lora(args)
    if args.chat:
        kwargs = {"enable_thinking": False} if args.no_think else {}
        deltas = llm.stream_chat([{"role": "user", "content": args.prompt}], params, chat_template_kwargs=kwargs,
                                 lora_request=lora)
    else:
        deltas = llm.stream(args.prompt, params, lora_request=lora)
    for delta in deltas:
        out.write(delta.text)
        out.flush()
    out.write("\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "handler", None) is not None:
            return int(args.handler(args))
        if args.command == "generate":
            _check_generate_args(args)
        if args.command in ("generate", "chat", "serve"):
            args.model = args.model or DEFAULT_MODEL  # _add_model_args' default, once generate has checked
        if args.command == "generate":
            return run_generate(args, sys.stdout)
        if args.command == "chat":
            from qwick.chat_repl import run_chat

            params = _sampling_params(args)  # bad values fail before the model loads
            if args.mcp is not None:
                from qwick.agent.cli import run_chat_with_tools

                return run_chat_with_tools(args, _load)
            llm, lora = _load_with_lora(args)
            return run_chat(llm, params, sys.stdout, sys.stdin, model=args.model,
                            thinking=not args.no_think, system=args.system, lora=lora)
        if args.command == "serve":
            from qwick.server.cli import run_serve

            return run_serve(args, _load)
        from qwick.bench import run_bench

        return run_bench(args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"qwick: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
