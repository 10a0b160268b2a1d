"""The `vllm serve` flags a launch script carries, accepted by `qwick serve`: each does what it means here, is a
logged no-op where qwick already behaves that way, or is refused with a clear error where it cannot apply."""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qwick.llm import LLM

logger = logging.getLogger("qwick.server")
TOOL_CALL_PARSERS = ("hermes",)  # Qwen3 writes <tool_call>{json}</tool_call>: vLLM's hermes parser
REASONING_PARSERS = ("qwen3", "deepseek_r1")  # both read <think>...</think>, which qwick always splits off
ACCESS_LOGGER = "qwick.server.access"  # the one line per request (guard.py); --disable-log-requests quiets it


def add_vllm_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("vLLM flags (so a `vllm serve` launch script runs unchanged)")
    group.add_argument("--enable-auto-tool-choice", action="store_true",
                       help="no-op: tool calls are always parsed when a request sends tools")
    group.add_argument("--tool-call-parser", default=None, metavar="NAME",
                       help=f"only {', '.join(TOOL_CALL_PARSERS)} (Qwen3's format, always on); others are refused")
    group.add_argument("--reasoning-parser", default=None, metavar="NAME",
                       help=f"{' or '.join(REASONING_PARSERS)}: no-op, <think> is always split into reasoning_content")
    group.add_argument("--chat-template", default=None, metavar="FILE_OR_TEMPLATE",
                       help="a Jinja chat template (a file, or the template itself) replacing the model's")
    group.add_argument("--gpu-memory-utilization", type=float, default=None, metavar="FRACTION",
                       help="CUDA: the share of GPU memory for weights, activations and KV cache (the KV cache gets "
                            "what a profiling forward leaves); no-op on CPU (use --kv-cache-memory-bytes)")
    group.add_argument("--enforce-eager", action="store_true",
                       help="CUDA: decode without CUDA graphs; no-op on CPU")
    group.add_argument("--kv-cache-memory-bytes", type=_byte_count, default=None, metavar="BYTES",
                       help="KV cache budget, e.g. 2000000000, 4GiB or 512MB (default: a share of free memory)")
    group.add_argument("--generation-config", default="auto", metavar="auto|vllm|FOLDER",
                       help="sampling defaults: auto = the model's generation_config.json; vllm = ignore it (neutral "
                            "sampling); FOLDER = the generation_config.json in that folder")
    group.add_argument("--hf-overrides", default=None, metavar="JSON",
                       help="refused unless empty: qwick does not override config.json (edit the model's copy)")
    group.add_argument("--rope-scaling", default=None, metavar="JSON",
                       help="refused unless empty: set rope_scaling in the model's config.json")
    group.add_argument("--disable-log-requests", action="store_true",
                       help="no per-request log line")
    group.add_argument("--uvicorn-log-level", default=None,
                       choices=["critical", "error", "warning", "info", "debug", "trace"],
                       help="uvicorn's own log level (default: --log-level)")


def check_vllm_args(args: argparse.Namespace) -> list[str]:
    """Refuse what cannot apply (before the model loads); returns the given flags that are no-ops here."""
    if args.tool_call_parser is not None and args.tool_call_parser not in TOOL_CALL_PARSERS:
        raise ValueError(f"--tool-call-parser {args.tool_call_parser!r} does not apply: Qwen3 writes tool calls in "
                         f"the hermes format, which qwick always parses (use --tool-call-parser hermes or omit it)")
    if args.reasoning_parser is not None and args.reasoning_parser not in REASONING_PARSERS:
        raise ValueError(f"--reasoning-parser {args.reasoning_parser!r} does not apply: qwick splits Qwen3's "
                         f"<think> block itself (use --reasoning-parser qwen3 or omit it)")
    if args.gpu_memory_utilization is not None and not 0 < args.gpu_memory_utilization <= 1:
        raise ValueError(f"--gpu-memory-utilization must be in (0, 1], got {args.gpu_memory_utilization}")
    for flag, value in (("--hf-overrides", args.hf_overrides), ("--rope-scaling", args.rope_scaling)):
        if value is not None and _json_object(flag, value):
            raise ValueError(f"{flag} is not supported: qwick reads the model's config.json as it is; put the "
                             "override there (e.g. rope_scaling for a longer context)")
    if args.generation_config not in ("auto", "vllm") and not Path(args.generation_config).is_dir():
        raise ValueError(f"--generation-config must be auto, vllm or a folder, got {args.generation_config!r}")
    chat_template(args)  # a missing template file fails now
    noops = []
    if args.enable_auto_tool_choice:
        noops.append("--enable-auto-tool-choice (tool calls are always parsed)")
    if args.tool_call_parser is not None:
        noops.append(f"--tool-call-parser {args.tool_call_parser} (Qwen3's format, always parsed)")
    if args.reasoning_parser is not None:
        noops.append(f"--reasoning-parser {args.reasoning_parser} (<think> is always split off)")
    from qwick.device import resolve_device  # imports torch: not at `qwick --help` time

    on_cuda = resolve_device(getattr(args, "device", "auto")).type == "cuda"
    if args.gpu_memory_utilization is not None and not on_cuda:
        noops.append(f"--gpu-memory-utilization {args.gpu_memory_utilization} (CUDA only: use "
                     "--kv-cache-memory-bytes)")
    if getattr(args, "enforce_eager", False) and not on_cuda:
        noops.append("--enforce-eager (CUDA graphs are a CUDA feature)")
    for flag, value in (("--hf-overrides", args.hf_overrides), ("--rope-scaling", args.rope_scaling)):
        if value is not None:
            noops.append(f"{flag} {{}} (empty)")
    return noops


def chat_template(args: argparse.Namespace) -> str | None:
    """--chat-template's text: a file's content, or the value itself when it is a template."""
    value = args.chat_template
    if value is None:
        return None
    path = Path(value).expanduser()
    if path.is_file():
        return path.read_text(encoding="utf-8")
    if "{{" in value or "{%" in value:
        return value
    raise ValueError(f"--chat-template {value!r}: no such file (and not a Jinja template)")


def configure_llm(llm: LLM, args: argparse.Namespace) -> LLM:
    """Apply --chat-template and --generation-config to a loaded LLM (before it serves anything)."""
    from qwick.sampling_params import GenerationDefaults

    template = chat_template(args)
    if template is not None:
        tokenizer = llm.get_tokenizer()
        tokenizer.chat_template = template
        try:  # a broken template fails at start-up, not on the first chat request
            tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True)
        except Exception as exc:
            raise ValueError(f"--chat-template does not render a chat: {exc}") from None
    eos = llm.generation_defaults.eos_token_ids
    if args.generation_config == "vllm":  # vLLM's meaning: sampling defaults ignore generation_config.json
        defaults = GenerationDefaults(eos_token_ids=eos)
    elif args.generation_config != "auto":
        raw = _json_object("--generation-config", (Path(args.generation_config) / "generation_config.json")
                           .read_text(encoding="utf-8"))
        loaded = GenerationDefaults.from_dict(raw)
        defaults = replace(loaded, eos_token_ids=loaded.eos_token_ids or eos)
    else:
        return llm
    llm.generation_defaults = defaults
    llm.engine.defaults = defaults
    return llm


def quiet_request_log(args: argparse.Namespace) -> None:
    if args.disable_log_requests:
        logging.getLogger(ACCESS_LOGGER).setLevel(logging.WARNING)


def _json_object(flag: str, value: str) -> dict[str, Any]:
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{flag}: not valid JSON ({exc})") from None
    if not isinstance(parsed, dict):
        raise ValueError(f"{flag}: expected a JSON object, got {value!r}")
    return parsed


_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "ki": 2**10, "mi": 2**20, "gi": 2**30}


def _byte_count(value: str) -> int:
    """`4GiB`, `512MB`, `2e9` or a plain integer."""
    text = value.strip().lower().replace("_", "")
    number = text.rstrip("kmgibB")
    unit = text[len(number):]
    try:
        count = int(float(number) * _UNITS[unit])
    except (KeyError, ValueError):
        raise argparse.ArgumentTypeError(f"not a byte count: {value!r} (e.g. 4GiB, 512MB, 2000000000)") from None
    if count < 1:
        raise argparse.ArgumentTypeError(f"a byte count must be positive, got {value!r}")
    return count
