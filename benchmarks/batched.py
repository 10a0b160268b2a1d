"""Batched serving on CPU (or --device cuda): qwick vs transformers on the same dummy Qwen3-0.6B weights, one run.

Parts (select with --parts, default all):
  peak        a plain [2048,2048]x[2048,8192] GEMM in --dtype: the machine's matmul GFLOP/s
  throughput  64 seeded prompts (32-256 tokens), 64 greedy tokens each: qwick one `generate` vs transformers
              `generate` in left-padded batches; then qwick batch-32 decode steps -> GFLOP/s and % of peak
  gate        30 requests = 500-token shared prefix + 20 unique tokens, max_tokens=1, all submitted at once:
              requests/s and latency with prefix caching on vs off
  memory      KV bytes per token (from the config and from the allocated cache) and peak RSS after each part

Run: python benchmarks/batched.py [--quick] [--device cpu|cuda] [--parts peak,throughput,gate,memory] [--json out.json]
On a GPU the gate workload defaults to 1,000 requests (the issue's GPU size) and memory reports the GPU's peak
allocation too.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from qwick import LLM, SamplingParams
from qwick.bench import dummy_model_folder
from qwick.engine.args import EngineArgs
from qwick.model.config import Qwen3Config
from qwick.passes.cpu_packing import dense_state_dict
from timing import best_seconds

PARTS = ("peak", "throughput", "gate", "memory")
FULL = {"num_prompts": 64, "output_tokens": 64, "decode_batch": 32, "decode_steps": 32, "gate_requests": 30}
QUICK = {"num_prompts": 16, "output_tokens": 16, "decode_batch": 8, "decode_steps": 8, "gate_requests": 8}
GPU = {"gate_requests": 1000}  # replaces FULL's values with --device cuda
BARS = {"throughput": 1.5, "decode_peak": 0.5, "gate": 5.0}


@dataclass
class Results:
    settings: dict[str, Any]
    peak: dict[str, Any] | None = None
    throughput: list[dict[str, Any]] = field(default_factory=list)
    decode: dict[str, Any] | None = None
    gate: list[dict[str, Any]] = field(default_factory=list)
    memory: dict[str, Any] | None = None
    peak_rss_kib: dict[str, int] = field(default_factory=dict)


@dataclass
class RunStats:
    engine: str
    requests: int
    prompt_tokens: int
    output_tokens: int
    seconds: float
    note: str = ""

    @property
    def output_tok_s(self) -> float:
        return self.output_tokens / self.seconds

    @property
    def total_tok_s(self) -> float:
        return (self.prompt_tokens + self.output_tokens) / self.seconds


@dataclass
class GateStats:
    prefix_caching: bool
    requests: int
    seconds: float
    latencies: list[float]
    prompt_tokens_computed: int
    hit_rate: float

    @property
    def req_s(self) -> float:
        return self.requests / self.seconds

    def percentile(self, q: int) -> float:
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[q - 1]


# ---------------------------------------------------------------------------------------------- helpers
def peak_rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def matmul_params(cfg: Qwen3Config) -> int:
    """Weights touched by matmuls per token: q/k/v/o + gate/up/down in every layer, plus the lm_head."""
    attn = cfg.hidden_size * cfg.head_dim * (2 * cfg.num_attention_heads + 2 * cfg.num_key_value_heads)
    mlp = 3 * cfg.hidden_size * cfg.intermediate_size
    return cfg.num_hidden_layers * (attn + mlp) + cfg.vocab_size * cfg.hidden_size


def random_prompts(rng: random.Random, count: int, low: int, high: int) -> list[list[int]]:
    return [[rng.randrange(150000) for _ in range(rng.randint(low, high))] for _ in range(count)]


def build_llm(folder: Path, args: argparse.Namespace, prefix_caching: bool = True) -> LLM:
    llm = LLM.from_engine_args(EngineArgs(
        folder, dtype=args.dtype, device=args.device, load_format="dummy", skip_tokenizer_init=True, seed=0,
        max_model_len=args.max_model_len, max_num_seqs=args.max_num_seqs,
        max_num_batched_tokens=args.max_num_batched_tokens,
        kv_cache_memory_bytes=int(args.kv_cache_gib * 1024**3), enable_prefix_caching=prefix_caching,
        enforce_eager=args.enforce_eager))
    graphs = llm.engine.runner.graphs
    print(f"  [{llm.engine.runner.backend.describe()}; CUDA-graph decode: "
          f"{'sizes ' + ','.join(map(str, graphs.sizes)) if graphs is not None else 'off'}]")
    return llm


def warm_up(llm: LLM) -> None:
    """Two short requests (random tokens, unrelated to any workload) so first-call kernel setup is not timed."""
    llm.generate([{"prompt_token_ids": list(range(1000, 1000 + n))} for n in (40, 70)],
                 SamplingParams(max_tokens=4, temperature=0, ignore_eos=True))


def greedy(max_tokens: int) -> SamplingParams:
    return SamplingParams(max_tokens=max_tokens, temperature=0, ignore_eos=True)


# ------------------------------------------------------------------------------------------------- peak
def device_sync(device: str) -> Callable[[], None] | None:
    """What a timer must call before reading the clock on `device` (GPU kernels run asynchronously)."""
    return torch.cuda.synchronize if torch.device(device).type == "cuda" else None


def timed_on(fn: Callable[..., Any], tensors: tuple[torch.Tensor, ...], reps: int,
             sync: Callable[[], None] | None) -> float:
    """best_seconds of fn(*tensors); the tensors go when the caller drops its tuple (keeps peak RSS low)."""
    return best_seconds(lambda: fn(*tensors), reps, sync)


def measure_peak(dtype: torch.dtype, reps: int = 20, quiet: bool = False, device: str = "cpu") -> dict[str, Any]:
    """Compute peak (a big square-ish GEMM), the decode-like rate (batch 32 against lm_head-sized weights: 311 MB
    in bf16, far beyond the caches) and the read bandwidth for the memory floors: the faster of that product's
    weight stream and a plain sum over twice those weights (on an AMX Xeon the product is bound by streaming its
    weights; on Zen 4 it is compute-bound at ~9 GB/s while a sum reads ~33 GB/s). On a GPU the GEMM is 8192^3 (a
    2048-row one leaves an H100 far from its peak) and the streamed matrix is 8x larger, past its 50-60 MB L2."""
    gpu = torch.device(device).type == "cuda"
    m, k, n = (8192, 8192, 8192) if gpu else (2048, 2048, 8192)
    rows = 151936 * (8 if gpu else 1)
    sync = device_sync(device)
    tensor = lambda *shape: torch.randn(*shape, device=device).to(dtype)  # noqa: E731
    gemm = timed_on(lambda a, b: torch.mm(a, b), (tensor(m, k), tensor(k, n)), reps, sync)
    x = tensor(32, 1024)
    stream = timed_on(lambda w: torch.nn.functional.linear(x, w), (tensor(rows, 1024),), reps, sync)
    stream_gb_s = rows * 1024 * dtype.itemsize / stream / 1e9
    read = timed_on(lambda t: t.sum(), (torch.ones(2 * rows, 1024, device=device, dtype=dtype),), max(3, reps // 4),
                    sync)
    sum_gb_s = 2 * rows * 1024 * dtype.itemsize / read / 1e9
    out = {"shape": [m, k, n], "seconds": gemm, "gflops": 2 * m * k * n / gemm / 1e9,
           "stream_gflops": 2 * 32 * rows * 1024 / stream / 1e9, "stream_gb_s": stream_gb_s,
           "sum_gb_s": sum_gb_s, "read_gb_s": max(stream_gb_s, sum_gb_s), "device": device}
    if not quiet:
        print(f"\n== matmul peak ({dtype}, {device}, best of {reps})")
        print(f"  [{m},{k}]x[{k},{n}] GEMM: {gemm * 1e3:.1f} ms = {out['gflops']:.0f} GFLOP/s  <- the peak")
        print(f"  [32,1024]x[1024,{rows}] (batch-32 decode against lm_head-sized weights): {stream * 1e3:.1f} ms = "
              f"{out['stream_gflops']:.0f} GFLOP/s, weights streamed at {stream_gb_s:.1f} GB/s")
        print(f"  sum over [{2 * rows},1024]: {read * 1e3:.1f} ms = {sum_gb_s:.1f} GB/s; read bandwidth for the "
              f"memory floors: {out['read_gb_s']:.1f} GB/s (the faster of the two)")
    return out


# ------------------------------------------------------------------------------------------- throughput
def qwick_offline(llm: LLM, prompts: list[list[int]], output_tokens: int) -> RunStats:
    start = time.perf_counter()
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts], greedy(output_tokens))
    seconds = time.perf_counter() - start
    produced = sum(len(o.outputs[0].token_ids) for o in outs)
    return RunStats("qwick", len(prompts), sum(map(len, prompts)), produced, seconds, "one generate() call")


class HFPeer:
    """transformers Qwen3ForCausalLM holding qwick's weights; `generate` on left-padded batches."""

    def __init__(self, folder: Path, dtype: torch.dtype, weights: dict[str, torch.Tensor],
                 device: str = "cpu") -> None:
        import transformers

        self.device = device
        transformers.logging.set_verbosity_error()
        config = transformers.AutoConfig.from_pretrained(folder)
        self.model = transformers.AutoModelForCausalLM.from_config(config, dtype=dtype).eval()
        self.model.load_state_dict(weights, strict=False, assign=True)  # same names as qwick; no extra copy
        if config.tie_word_embeddings:
            self.model.tie_weights()
        self.model.to(device)

    def generate(self, batch: list[list[int]], new_tokens: int) -> int:
        width = max(map(len, batch))
        ids = torch.tensor([[0] * (width - len(p)) + p for p in batch], device=self.device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch], device=self.device)
        with torch.inference_mode():
            out = self.model.generate(input_ids=ids, attention_mask=mask, do_sample=False, pad_token_id=0,
                                      max_new_tokens=new_tokens, min_new_tokens=new_tokens)
        return (out.shape[1] - width) * len(batch)

    def offline(self, prompts: list[list[int]], output_tokens: int, batch_size: int) -> RunStats:
        ordered = sorted(prompts, key=len)  # length-sorted batches: least padding, the peer's best case
        self.generate(ordered[:2], 2)  # warm-up
        start = time.perf_counter()
        produced = sum(self.generate(ordered[i : i + batch_size], output_tokens)
                       for i in range(0, len(ordered), batch_size))
        seconds = time.perf_counter() - start
        note = f"generate() in batches of {batch_size}, left-padded, length-sorted"
        return RunStats("transformers", len(prompts), sum(map(len, prompts)), produced, seconds, note)


def qwick_decode(llm: LLM, prompts: list[list[int]], steps: int) -> dict[str, Any]:
    """`len(prompts)` sequences prefilled until each has its first token, then `steps` timed decode steps."""
    engine = llm.engine
    ids = [f"decode-{i}" for i in range(len(prompts))]
    for request_id, prompt in zip(ids, prompts, strict=True):
        engine.add_request(request_id, prompt, greedy(steps + 256))
    started: set[str] = set()
    while len(started) < len(ids):
        started.update(out.request_id for out in engine.step())
    context = sum(engine.requests[i].sequences[0].total_len for i in ids) / len(ids) + steps / 2
    widths, start = [], time.perf_counter()
    for _ in range(steps):
        widths.append(len(engine.step()))
    seconds = time.perf_counter() - start
    for request_id in ids:
        engine.abort(request_id)
    assert set(widths) == {len(ids)}, f"timed steps were not all pure batch-{len(ids)} decodes: {widths}"
    cfg, tok_s = llm.model.config, steps * len(ids) / seconds
    kv_per_token = cfg.num_hidden_layers * 2 * cfg.num_key_value_heads * cfg.head_dim * llm.dtype.itemsize
    return {"batch": len(ids), "steps": steps, "seconds": seconds, "ms_per_step": seconds / steps * 1e3,
            "tok_s": tok_s, "matmul_params": matmul_params(cfg), "gflops": 2 * matmul_params(cfg) * tok_s / 1e9,
            "mean_context": context, "weight_bytes": matmul_params(cfg) * llm.dtype.itemsize,
            "kv_bytes_per_step": context * len(ids) * kv_per_token}


def add_roofline(d: dict[str, Any], peak: dict[str, Any]) -> None:
    """Fraction of the GEMM peak, and the floor set by reading weights + KV at the measured read bandwidth."""
    d["peak_gflops"] = peak["gflops"]
    d["peak_fraction"] = d["gflops"] / peak["gflops"]
    floor_s = (d["weight_bytes"] + d["kv_bytes_per_step"]) / (peak["read_gb_s"] * 1e9)
    d["bandwidth_floor_ms"] = floor_s * 1e3
    d["bandwidth_bound_fraction"] = 2 * d["matmul_params"] * d["batch"] / floor_s / 1e9 / peak["gflops"]


def run_throughput(folder: Path, args: argparse.Namespace, results: Results) -> None:
    rng = random.Random(args.seed)
    prompts = random_prompts(rng, args.num_prompts, 32, 256)
    llm = build_llm(folder, args)
    warm_up(llm)
    rows = [qwick_offline(llm, prompts, args.output_tokens)]
    preemptions = llm.engine.stats().num_preemptions
    results.peak_rss_kib["throughput (qwick only)"] = peak_rss_kib()
    if not args.no_transformers:
        peer = HFPeer(folder, llm.dtype, dense_state_dict(llm.model), args.device)
        rows.append(peer.offline(prompts, args.output_tokens, args.hf_batch))
        del peer
        gc.collect()
    print(f"\n== offline throughput: {len(prompts)} prompts, 32-256 tokens (seed {args.seed}, "
          f"{rows[0].prompt_tokens} prompt tokens), {args.output_tokens} greedy tokens each, ignore_eos")
    print(f"{'engine':>13} {'seconds':>8} {'out tok/s':>10} {'total tok/s':>12}  how")
    for r in rows:
        print(f"{r.engine:>13} {r.seconds:8.2f} {r.output_tok_s:10.1f} {r.total_tok_s:12.1f}  {r.note}")
    print(f"  qwick preemptions during the run: {preemptions}")
    if len(rows) == 2:
        ratio = rows[0].output_tok_s / rows[1].output_tok_s
        print(f"  ratio qwick/transformers output tok/s: {ratio:.2f}x  (bar >= {BARS['throughput']}x: "
              f"{'met' if ratio >= BARS['throughput'] else 'NOT met'})")
    results.throughput = [asdict(r) | {"output_tok_s": r.output_tok_s, "total_tok_s": r.total_tok_s} for r in rows]
    if args.decode_steps:
        results.decode = qwick_decode(llm, prompts[: args.decode_batch], args.decode_steps)
        if results.peak:  # re-measured next to the decode too: the better of the two is the peak
            again = measure_peak(llm.dtype, quiet=True, device=args.device)
            results.decode["peak_gflops_measurements"] = [results.peak["gflops"], again["gflops"]]
            results.peak = max(results.peak, again, key=lambda p: p["gflops"]) | {
                "read_gb_s": max(results.peak["read_gb_s"], again["read_gb_s"])}
            add_roofline(results.decode, results.peak)
        print_decode(results.decode)
    del llm
    gc.collect()


def print_decode(d: dict[str, Any]) -> None:
    print(f"\n== qwick batch-{d['batch']} decode: {d['steps']} timed engine steps after every sequence had "
          f"its first token (mean context {d['mean_context']:.0f} tokens)")
    print(f"  {d['ms_per_step']:.1f} ms/step = {d['tok_s']:.1f} tok/s; FLOPs counted as 2 x "
          f"{d['matmul_params'] / 1e6:.0f}M matmul weights per token (q/k/v/o/gate/up/down x layers + lm_head; "
          f"attention scores not counted) = {d['gflops']:.0f} GFLOP/s")
    if "peak_fraction" not in d:
        print("  fraction of matmul peak: n/a (add 'peak' to --parts)")
        return
    met = "met" if d["peak_fraction"] >= BARS["decode_peak"] else "NOT met"
    first, again = d["peak_gflops_measurements"]
    print(f"  fraction of measured matmul peak: {d['peak_fraction']:.1%} (bar >= {BARS['decode_peak']:.0%}: {met}); "
          f"peak = the better GEMM of the peak part ({first:.0f}) and a re-run next to this decode ({again:.0f})")
    bound = (f"i.e. at most {d['bandwidth_bound_fraction']:.0%} of peak at this batch"
             if d["bandwidth_bound_fraction"] < 1 else "below the compute floor: this batch is compute-bound here")
    print(f"  memory floor: {d['weight_bytes'] / 1e9:.2f} GB weights + {d['kv_bytes_per_step'] / 1e9:.2f} GB KV "
          f"read per step at the read bandwidth = {d['bandwidth_floor_ms']:.0f} ms/step, {bound}")


# ------------------------------------------------------------------------------------------------- gate
def gate_run(llm: LLM, prompts: list[list[int]], prefix_caching: bool) -> GateStats:
    """Submit every request at once, step until done; latency = finish - own submission time."""
    engine, before = llm.engine, llm.engine.stats()
    submitted: dict[str, float] = {}
    for i, prompt in enumerate(prompts):
        submitted[f"gate-{i}"] = time.perf_counter()
        engine.add_request(f"gate-{i}", prompt, greedy(1))
    first, latencies = min(submitted.values()), []
    while engine.has_unfinished():
        for out in engine.step():
            if out.finished_request is not None:
                latencies.append(time.perf_counter() - submitted[out.request_id])
    seconds = time.perf_counter() - first
    after = engine.stats()
    queries = after.prefix_cache_queries - before.prefix_cache_queries
    hits = after.prefix_cache_hits - before.prefix_cache_hits
    return GateStats(prefix_caching, len(prompts), seconds, latencies, after.prompt_tokens - before.prompt_tokens,
                     hits / queries if queries else 0.0)


def run_gate(folder: Path, args: argparse.Namespace, results: Results) -> None:
    rng = random.Random(args.seed + 1)
    prefix = random_prompts(rng, 1, args.gate_prefix, args.gate_prefix)[0]
    prompts = [prefix + s for s in random_prompts(rng, args.gate_requests, args.gate_suffix, args.gate_suffix)]
    rows = []
    for caching in (True, False):
        llm = build_llm(folder, args, prefix_caching=caching)
        warm_up(llm)
        rows.append(gate_run(llm, prompts, caching))
        del llm
        gc.collect()
    print(f"\n== gate workload: {len(prompts)} requests = {args.gate_prefix}-token shared prefix + "
          f"{args.gate_suffix} unique tokens, max_tokens=1, all submitted at once")
    print("  prefix cache not pre-warmed: the first request computes the prefix (kernels warmed on an "
          "unrelated prompt)")
    print(f"{'prefix cache':>13} {'seconds':>8} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'computed tok':>13} "
          f"{'hit rate':>9}")
    for r in rows:
        print(f"{'on' if r.prefix_caching else 'off':>13} {r.seconds:8.2f} {r.req_s:8.2f} "
              f"{r.percentile(50) * 1e3:8.0f} {r.percentile(95) * 1e3:8.0f} {r.prompt_tokens_computed:13d} "
              f"{r.hit_rate:9.1%}")
    speedup = rows[0].req_s / rows[1].req_s
    print(f"  speed-up with prefix caching (req/s): {speedup:.2f}x  (bar >= {BARS['gate']}x: "
          f"{'met' if speedup >= BARS['gate'] else 'NOT met'})")
    results.gate = [asdict(r) | {"req_s": r.req_s, "p50_s": r.percentile(50), "p95_s": r.percentile(95)}
                    for r in rows]


# ----------------------------------------------------------------------------------------------- memory
def run_memory(folder: Path, args: argparse.Namespace, results: Results) -> None:
    llm = build_llm(folder, args)
    cfg, cache = llm.model.config, llm.engine.cache
    itemsize = llm.dtype.itemsize
    from_config = cfg.num_hidden_layers * 2 * cfg.num_key_value_heads * cfg.head_dim * itemsize
    slots = cache.num_blocks * cache.block_size
    from_cache = cache.nbytes() / slots
    results.memory = {"kv_bytes_per_token_config": from_config, "kv_bytes_per_token_cache": from_cache,
                      "num_blocks": cache.num_blocks, "block_size": cache.block_size, "cache_bytes": cache.nbytes()}
    del llm
    gc.collect()
    results.peak_rss_kib["memory"] = peak_rss_kib()
    if torch.device(args.device).type == "cuda":
        results.memory["gpu_peak_allocated_bytes"] = torch.cuda.max_memory_allocated()
    print(f"\n== memory ({args.dtype})")
    print(f"  KV bytes/token from config: {cfg.num_hidden_layers} layers x 2 (K,V) x {cfg.num_key_value_heads} "
          f"kv heads x {cfg.head_dim} head_dim x {itemsize} B = {from_config} B = {from_config / 1024:.1f} KiB")
    print(f"  KV bytes/token from the cache: {cache.nbytes()} B / ({cache.num_blocks} blocks x "
          f"{cache.block_size} slots) = {from_cache:.0f} B  ({args.kv_cache_gib} GiB budget -> {slots} tokens)")
    extra = cache.nbytes() - from_config * slots
    if extra:
        print(f"  the cache holds {extra} B beyond {slots} token slots = {extra / from_config:g} extra slot(s) "
              "(the engine's padding scratch slot)")
    print(f"{'peak RSS after part':>20} {'MiB':>8}")
    for part, kib in results.peak_rss_kib.items():
        print(f"{part:>20} {kib / 1024:8.0f}")
    if "gpu_peak_allocated_bytes" in results.memory:
        print(f"  GPU peak allocated (torch.cuda.max_memory_allocated, whole run): "
              f"{results.memory['gpu_peak_allocated_bytes'] / 2**20:.0f} MiB")
    print("  (ru_maxrss is the process high-water mark: it only grows, parts run in the order shown)")


# ------------------------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32", "float16"))
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--quick", action="store_true", help="small counts for a fast end-to-end check: "
                   + ", ".join(f"{k}={v}" for k, v in QUICK.items()))
    p.add_argument("--json", default=None, help="also write every measurement to this JSON file")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--hf-batch", type=int, default=16, help="transformers generate() batch size")
    p.add_argument("--no-transformers", action="store_true", help="skip the transformers peer")
    p.add_argument("--enforce-eager", action="store_true", help="CUDA: decode without CUDA graphs")
    for name, value in FULL.items():
        p.add_argument(f"--{name.replace('_', '-')}", type=int, default=None, help=f"default {value}")
    p.add_argument("--gate-prefix", type=int, default=500, help="shared prefix tokens in the gate workload")
    p.add_argument("--gate-suffix", type=int, default=20, help="unique tokens per gate request")
    p.add_argument("--kv-cache-gib", type=float, default=2.0, help="kv_cache_memory_bytes, in GiB")
    p.add_argument("--max-model-len", type=int, default=2048)
    p.add_argument("--max-num-seqs", type=int, default=64)
    p.add_argument("--max-num-batched-tokens", type=int, default=512)
    args = p.parse_args(argv)
    sizes = QUICK if args.quick else FULL | (GPU if args.device == "cuda" else {})
    for name, value in sizes.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    parts = [s.strip() for s in args.parts.split(",") if s.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        p.error(f"unknown part(s) {unknown}; choose from {', '.join(PARTS)}")
    args.parts = [part for part in PARTS if part in parts]  # fixed order: peak feeds the decode fraction
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = Results(settings={k: v for k, v in vars(args).items() if k != "json"})
    where = torch.cuda.get_device_name() if args.device == "cuda" else f"{torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, {where}, dtype {args.dtype}, parts "
          f"{','.join(args.parts)}{' (quick)' if args.quick else ''}", flush=True)
    runners = {"throughput": run_throughput, "gate": run_gate}
    with tempfile.TemporaryDirectory() as tmp:
        folder = dummy_model_folder(None, Path(tmp))
        for part in args.parts:
            start = time.perf_counter()
            if part == "peak":
                results.peak = measure_peak(getattr(torch, args.dtype), device=args.device)
            elif part in runners:
                runners[part](folder, args, results)
            else:
                run_memory(folder, args, results)
            results.peak_rss_kib.setdefault(part, peak_rss_kib())
            print(f"  [{part}: {time.perf_counter() - start:.0f} s, peak RSS {peak_rss_kib() / 1024:.0f} MiB]",
                  flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(asdict(results), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
