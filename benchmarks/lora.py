"""Serving LoRA adapters without merging: 4 adapters mixed in one batch vs the base model, on CPU.

Dummy Qwen3-0.6B weights (`load_format="dummy"`) and 4 random adapters (r=16, alpha=32, all 7 projections),
written as PEFT folders. Parts (select with --parts, default all):
  kernels     one projection's forward at batch 32 (decode) and 512 tokens (prefill), 4 adapters mixed: the
              base alone, then base + the LoRA deltas computed (a) stacked slots + mask (qwick's path), (b) rows
              grouped by adapter (index_select / index_add_), (c) a per-row gathered bmm
  throughput  64 seeded prompts (32-256 tokens), 64 greedy tokens each, one `generate` call, three engines in
              alternating rounds: plain LLM (no LoRA pass), LoRA-enabled with no adapter requested, and
              LoRA-enabled with request i using adapter i % 4. Bar: mixed >= 0.8x plain output tok/s.

Run on an idle machine (two torch processes on 2 cores slow each other 5-10x):
  python benchmarks/lora.py                 # the real numbers
  python benchmarks/lora.py --tiny          # a seconds-long smoke run on a tiny config (numbers meaningless)
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from qwick import LLM, SamplingParams
from qwick.bench import dummy_model_folder
from qwick.engine.args import EngineArgs
from qwick.lora.batch import LoRABatch, LoRAContext
from qwick.lora.layers import PROJECTIONS, LoRALinear
from qwick.lora.request import LoRARequest
from qwick.model.config import Qwen3Config
from qwick.model.layers import Linear
from qwick.passes.cpu_packing import cpu_packing_supported
from timing import best_seconds

PARTS = ("kernels", "throughput")
BAR = 0.8
FULL = {"num_prompts": 64, "output_tokens": 64, "rounds": 1}
TINY = {"num_prompts": 8, "output_tokens": 8, "rounds": 1}
TINY_CONFIG = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
               "num_key_value_heads": 2, "head_dim": 32}


@dataclass
class Run:
    engine: str
    seconds: float
    output_tokens: int

    @property
    def tok_s(self) -> float:
        return self.output_tokens / self.seconds


# ----------------------------------------------------------------------------------------------- setup
def model_folder(dest: Path, tiny: bool) -> Path:
    folder = dummy_model_folder(None, dest)
    if tiny:
        config = json.loads((resources.files("qwick") / "assets" / "qwen3-0.6b-config.json").read_text())
        (folder / "config.json").write_text(json.dumps(config | TINY_CONFIG))
    return folder


def projection_shapes(cfg: Qwen3Config) -> dict[str, tuple[int, int]]:
    """(in, out) of each projection kind."""
    h, q, kv, i = cfg.hidden_size, cfg.num_attention_heads * cfg.head_dim, cfg.num_key_value_heads * cfg.head_dim, \
        cfg.intermediate_size
    return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h), "gate_proj": (h, i),
            "up_proj": (h, i), "down_proj": (i, h)}


def write_random_adapter(dest: Path, cfg: Qwen3Config, rank: int, seed: int) -> Path:
    """A PEFT-format folder (what peft's save_pretrained writes) with random A and B on every projection."""
    dest.mkdir(parents=True)
    kinds = projection_shapes(cfg)
    config = {"peft_type": "LORA", "r": rank, "lora_alpha": 2 * rank, "target_modules": list(PROJECTIONS),
              "bias": "none", "use_rslora": False, "use_dora": False, "modules_to_save": None}
    (dest / "adapter_config.json").write_text(json.dumps(config))
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for layer in range(cfg.num_hidden_layers):
        for name, (fan_in, fan_out) in kinds.items():
            block = "self_attn" if name in PROJECTIONS[:4] else "mlp"
            key = f"base_model.model.model.layers.{layer}.{block}.{name}"
            tensors[f"{key}.lora_A.weight"] = torch.randn(rank, fan_in, generator=generator) * 0.02
            tensors[f"{key}.lora_B.weight"] = torch.randn(fan_out, rank, generator=generator) * 0.02
    save_file(tensors, dest / "adapter_model.safetensors")
    return dest


def build_llm(folder: Path, args: argparse.Namespace, lora: bool) -> LLM:
    extra = {"enable_lora": True, "max_loras": args.adapters, "max_lora_rank": args.rank} if lora else {}
    return LLM.from_engine_args(EngineArgs(
        folder, dtype=args.dtype, device="cpu", load_format="dummy", skip_tokenizer_init=True, seed=0,
        max_model_len=args.max_model_len, max_num_seqs=args.max_num_seqs,
        max_num_batched_tokens=args.max_num_batched_tokens,
        kv_cache_memory_bytes=int(args.kv_cache_gib * 1024**3), **extra))


# --------------------------------------------------------------------------------------------- kernels
def strategies(layer: LoRALinear, context: LoRAContext, x: torch.Tensor,
               row_slots: list[int]) -> dict[str, Callable[[], torch.Tensor]]:
    """The same y = base(x) + per-row LoRA delta, three ways; `layer` holds the slots' A/B stacked."""
    slots, rank, base = layer.lora_a.shape[0] // layer.max_rank, layer.max_rank, layer.base
    a = layer.lora_a.view(slots, rank, -1)  # [S, r, in]
    b = layer.lora_b.view(-1, slots, rank).permute(1, 0, 2).contiguous()  # [S, out, r]
    batch = LoRABatch.build(row_slots, 1, rank, x.dtype, x.device)
    slot_index = torch.tensor(row_slots)
    groups = [(s, (slot_index == s).nonzero().squeeze(1)) for s in range(slots)]

    def stacked() -> torch.Tensor:
        with context.use(batch):
            return layer(x)

    def grouped() -> torch.Tensor:
        y = base(x)
        for s, index in groups:
            y.index_add_(0, index, (x.index_select(0, index) @ a[s].T) @ b[s].T)
        return y

    def gathered() -> torch.Tensor:
        y = base(x)
        xa = torch.bmm(x[:, None, :], a[slot_index].transpose(1, 2))  # [tokens, 1, r]
        return y.add_(torch.bmm(xa, b[slot_index].transpose(1, 2)).squeeze(1))

    return {"base": lambda: base(x), "stacked": stacked, "grouped": grouped, "gathered": gathered}


def measure_kernels(cfg: Qwen3Config, args: argparse.Namespace) -> list[dict[str, Any]]:
    dtype, slots, rank = getattr(torch, args.dtype), args.adapters, args.rank
    rows = []
    print(f"\n== one projection + LoRA, {slots} adapters mixed, r={rank}, {args.dtype}, best of {args.reps} "
          "(overhead over the base projection)")
    for name, (fan_in, fan_out) in projection_shapes(cfg).items():
        if name in ("k_proj", "up_proj"):  # same shapes as v_proj / gate_proj
            continue
        base = Linear(fan_in, fan_out, bias=False).to(dtype).requires_grad_(False)
        if cpu_packing_supported(dtype, torch.device("cpu")):
            base.weight = torch.nn.Parameter(torch.ops.mkldnn._reorder_linear_weight(base.weight.detach(), 1),
                                             requires_grad=False)
        context = LoRAContext()
        layer = LoRALinear(base, context, slots, rank, dtype, torch.device("cpu"))
        layer.lora_a.normal_(0, 0.02)
        layer.lora_b.normal_(0, 0.02)
        for tokens in (32, 512):
            x = torch.randn(tokens, fan_in).to(dtype)
            with torch.inference_mode():
                times = {k: best_seconds(fn, args.reps) for k, fn in
                         strategies(layer, context, x, [i % slots for i in range(tokens)]).items()}
            base_s = times.pop("base")
            rows.append({"projection": name, "shape": [fan_in, fan_out], "tokens": tokens, "base_ms": base_s * 1e3,
                         **{f"{k}_ms": v * 1e3 for k, v in times.items()}})
            print(f"  {name:>9} {fan_in:>5}->{fan_out:<5} {tokens:>4} tokens: base {base_s * 1e3:7.3f} ms; " +
                  "; ".join(f"{k} +{(v - base_s) / base_s:.0%}" for k, v in times.items()), flush=True)
    return rows


# ------------------------------------------------------------------------------------------ throughput
def offline(llm: LLM, prompts: list[list[int]], output_tokens: int,
            loras: list[LoRARequest | None]) -> tuple[float, int]:
    params = SamplingParams(max_tokens=output_tokens, temperature=0, ignore_eos=True)
    start = time.perf_counter()
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, lora_request=loras)
    return time.perf_counter() - start, sum(len(o.outputs[0].token_ids) for o in outs)


def run_throughput(folder: Path, cfg: Qwen3Config, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    rng = random.Random(args.seed)
    prompts = [[rng.randrange(150000) for _ in range(rng.randint(32, 256))] for _ in range(args.num_prompts)]
    adapters = [LoRARequest(f"adapter-{i}", i + 1, str(write_random_adapter(tmp / f"a{i}", cfg, args.rank, i)))
                for i in range(args.adapters)]
    mixed = [adapters[i % len(adapters)] for i in range(len(prompts))]
    plain, lora = build_llm(folder, args, lora=False), build_llm(folder, args, lora=True)
    for adapter in adapters:
        lora.add_lora(adapter)
    warm = [[1000 + i for i in range(n)] for n in (40, 70)]
    for llm, loras in ((plain, [None, None]), (lora, adapters[:2])):
        offline(llm, warm, 4, loras)
    cases = {"plain": (plain, [None] * len(prompts)), "lora, no adapter": (lora, [None] * len(prompts)),
             f"lora, {len(adapters)} mixed": (lora, mixed)}
    runs: dict[str, list[Run]] = {name: [] for name in cases}
    for _ in range(args.rounds):  # alternate, so drift and neighbours hit every engine alike
        for name, (llm, loras) in cases.items():
            runs[name].append(Run(name, *offline(llm, prompts, args.output_tokens, loras)))
    medians = {name: statistics.median(r.tok_s for r in rs) for name, rs in runs.items()}
    print(f"\n== offline throughput: {len(prompts)} prompts, 32-256 tokens (seed {args.seed}), {args.output_tokens} "
          f"greedy tokens each, {args.dtype}, {len(adapters)} adapters r={args.rank} on all 7 projections, "
          f"median of {args.rounds} round(s)")
    for name, tok_s in medians.items():
        print(f"  {name:>18}: {tok_s:8.1f} output tok/s  ({tok_s / medians['plain']:.2f}x plain)")
    ratio = medians[f"lora, {len(adapters)} mixed"] / medians["plain"]
    print(f"  mixed adapters / plain: {ratio:.2f}x  (bar >= {BAR}x: {'met' if ratio >= BAR else 'NOT met'})")
    return {"tok_s": medians, "ratio": ratio, "runs": {k: [asdict(r) for r in v] for k, v in runs.items()}}


# ------------------------------------------------------------------------------------------------ main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    p.add_argument("--tiny", action="store_true", help="tiny model and counts: a smoke run, numbers meaningless")
    p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    p.add_argument("--adapters", type=int, default=4, help="adapters mixed in the batch (= max_loras)")
    p.add_argument("--rank", type=int, default=16, help="adapter rank (= max_lora_rank)")
    for name, value in FULL.items():
        p.add_argument(f"--{name.replace('_', '-')}", type=int, default=None, help=f"default {value}")
    p.add_argument("--reps", type=int, default=30, help="repetitions per kernel timing (best reported)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--kv-cache-gib", type=float, default=2.0, help="kv_cache_memory_bytes, in GiB")
    p.add_argument("--max-model-len", type=int, default=2048)
    p.add_argument("--max-num-seqs", type=int, default=64)
    p.add_argument("--max-num-batched-tokens", type=int, default=512)
    p.add_argument("--json", default=None, help="also write every measurement to this JSON file")
    args = p.parse_args(argv)
    args.parts = [part for part in args.parts.split(",") if part]
    unknown = set(args.parts) - set(PARTS)
    if unknown:
        p.error(f"unknown parts {sorted(unknown)}; choose from {', '.join(PARTS)}")
    for name, value in (TINY if args.tiny else FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.tiny:
        args.reps = min(args.reps, 3)
        args.kv_cache_gib = min(args.kv_cache_gib, 0.25)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.dtype}, parts {','.join(args.parts)}"
          f"{' (tiny: a smoke run, numbers meaningless)' if args.tiny else ''}", flush=True)
    results: dict[str, Any] = {"settings": {k: v for k, v in vars(args).items() if k != "json"}}
    with tempfile.TemporaryDirectory() as tmp:
        folder = model_folder(Path(tmp), args.tiny)
        cfg = Qwen3Config.from_dict(json.loads((folder / "config.json").read_text()))
        if "kernels" in args.parts:
            results["kernels"] = measure_kernels(cfg, args)
        if "throughput" in args.parts:
            results["throughput"] = run_throughput(folder, cfg, args, Path(tmp))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
