"""Serving under load: `qwick serve` vs `transformers serve` on the same dummy-weight Qwen3-0.6B, in one run.

Each server runs as a subprocess on 127.0.0.1 over the same model folder (random weights in the 0.6B shape,
saved once, plus the real Qwen3 tokenizer). For each concurrency level the load generator sends --requests
streaming /v1/completions requests (random prompts of about --prompt-tokens tokens, greedy, --output-tokens
tokens each) from that many concurrent clients, optionally paced to --request-rate requests/s (Poisson
arrivals), and reports requests/s, output tokens/s, time to first token and inter-token latency p50/p95/p99.
It ends with the issue's bar at concurrency 16: qwick >= 2x the peer's output tokens/s, and a lower p95 TTFT.

Run: python benchmarks/serve.py [--quick] [--concurrency 1,4,16] [--requests 48] [--prompt-tokens 128]
                                [--output-tokens 64] [--request-rate inf] [--peers qwick,transformers]
                                [--model FOLDER] [--dtype bfloat16] [--json out.json]
`transformers serve` needs `pip install accelerate` on top of the test extra.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
BAR_CONCURRENCY, BAR_RATIO = 16, 2.0
STARTUP_TIMEOUT = 900.0  # seconds: loading 0.6B on a small CPU box is slow
REQUEST_TIMEOUT = 900.0


@dataclass
class RequestResult:
    ok: bool
    ttft: float = math.nan
    itls: list[float] = field(default_factory=list)
    output_tokens: int = 0
    error: str = ""


@dataclass
class LevelStats:
    peer: str
    concurrency: int
    requests: int
    failed: int
    seconds: float
    output_tokens: int
    requests_per_s: float
    output_tok_per_s: float
    ttft_ms: dict[str, float]
    itl_ms: dict[str, float]


# ------------------------------------------------------------------------------------------ the model


def make_model_folder(dest: Path, dtype: str) -> Path:
    """Random weights in the Qwen3-0.6B shape (seeded), saved with transformers, plus the real tokenizer."""
    import torch
    import transformers

    sys.path.insert(0, str(ROOT / "tests"))
    from checkpoints import copy_tokenizer_files

    config = json.loads((ROOT / "src" / "qwick" / "assets" / "qwen3-0.6b-config.json").read_text())
    torch.manual_seed(0)
    model = transformers.Qwen3ForCausalLM(transformers.Qwen3Config(**config)).to(getattr(torch, dtype)).eval()
    model.save_pretrained(dest)
    copy_tokenizer_files(dest)
    return dest


def random_prompts(folder: Path, count: int, tokens: int, seed: int = 0) -> list[str]:
    """Distinct prompts of about `tokens` tokens (random ordinary tokens, decoded), so no prefix is shared."""
    from qwick.tokenizer import Tokenizer

    tokenizer = Tokenizer.from_pretrained(folder)
    rng = random.Random(seed)
    return [tokenizer.decode([rng.randrange(1000, 100_000) for _ in range(tokens)]) for _ in range(count)]


# ---------------------------------------------------------------------------------------- the servers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_command(peer: str, folder: Path, port: int, dtype: str, max_num_seqs: int) -> list[str]:
    if peer == "qwick":
        return [sys.executable, "-m", "qwick.cli", "serve", str(folder), "--port", str(port), "--dtype", dtype,
                "--max-model-len", "2048", "--max-num-seqs", str(max_num_seqs), "--log-level", "warning"]
    if peer == "transformers":
        return ["transformers", "serve", str(folder), "--host", "127.0.0.1", "--port", str(port), "--device", "cpu",
                "--dtype", dtype, "--continuous-batching", "--log-level", "warning"]
    raise ValueError(f"unknown peer {peer!r}: use qwick or transformers")


class Server:
    def __init__(self, peer: str, folder: Path, dtype: str, max_num_seqs: int, log: Path) -> None:
        self.peer = peer
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log.open("w")
        command = server_command(peer, folder, self.port, dtype, max_num_seqs)
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT, env=os.environ.copy())

    def wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.peer} server exited with {self.process.returncode}; see {self.log.name}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(1)
        raise TimeoutError(f"{self.peer} server not ready after {STARTUP_TIMEOUT:.0f} s; see {self.log.name}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(60)
        self.log.close()


# ---------------------------------------------------------------------------------------------- load


async def one_request(client: httpx.AsyncClient, url: str, model: str, prompt: str,
                      output_tokens: int) -> RequestResult:
    body = {"model": model, "prompt": prompt, "max_tokens": output_tokens, "temperature": 0.0, "stream": True,
            "stream_options": {"include_usage": True}}  # no ignore_eos: transformers rejects it; a random model
    # almost never samples EOS, and tokens are counted from `usage` either way
    start = time.perf_counter()
    stamps: list[float] = []
    usage_tokens = None
    try:
        async with client.stream("POST", f"{url}/v1/completions", json=body) as response:
            if response.status_code != 200:
                return RequestResult(False, error=f"HTTP {response.status_code}: {(await response.aread())[:200]!r}")
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    return RequestResult(False, error=str(chunk["error"])[:200])
                if any(choice.get("text") for choice in chunk.get("choices", [])):
                    stamps.append(time.perf_counter())
                if chunk.get("usage"):
                    usage_tokens = chunk["usage"]["completion_tokens"]
    except httpx.HTTPError as exc:
        return RequestResult(False, error=repr(exc))
    if not stamps:
        return RequestResult(False, error="no text streamed")
    itls = [b - a for a, b in itertools.pairwise(stamps)]
    return RequestResult(True, stamps[0] - start, itls, usage_tokens if usage_tokens is not None else len(stamps))


async def run_level(url: str, model: str, prompts: list[str], concurrency: int, output_tokens: int,
                    request_rate: float, seed: int) -> tuple[list[RequestResult], float]:
    rng = random.Random(seed)
    arrivals, t = [], 0.0
    for _ in prompts:
        arrivals.append(t)
        t += rng.expovariate(request_rate) if math.isfinite(request_rate) else 0.0
    queue: asyncio.Queue[tuple[float, str]] = asyncio.Queue()
    for item in zip(arrivals, prompts, strict=True):
        queue.put_nowait(item)
    results: list[RequestResult] = []
    limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency + 4)
    async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT, limits=limits) as client:
        start = time.perf_counter()

        async def worker() -> None:
            while not queue.empty():
                arrival, prompt = queue.get_nowait()
                delay = start + arrival - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                results.append(await one_request(client, url, model, prompt, output_tokens))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return results, time.perf_counter() - start


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": math.nan, "p95": math.nan, "p99": math.nan}
    cuts = statistics.quantiles(values, n=100, method="inclusive") if len(values) > 1 else values * 99
    return {"p50": cuts[49] * 1e3, "p95": cuts[94] * 1e3, "p99": cuts[98] * 1e3}


def summarize(peer: str, concurrency: int, results: list[RequestResult], seconds: float) -> LevelStats:
    ok = [r for r in results if r.ok]
    tokens = sum(r.output_tokens for r in ok)
    return LevelStats(peer, concurrency, len(results), len(results) - len(ok), seconds, tokens,
                      len(ok) / seconds, tokens / seconds, percentiles([r.ttft for r in ok]),
                      percentiles([x for r in ok for x in r.itls]))


def bench_peer(peer: str, folder: Path, args: argparse.Namespace, prompts: list[str],
               logs: Path) -> list[LevelStats]:
    print(f"\n== {peer}: starting server", flush=True)
    server = Server(peer, folder, args.dtype, max(args.concurrency), logs / f"{peer}.log")
    stats = []
    try:
        server.wait_ready()
        model = str(folder)
        # warm up at the largest level's shape: the first batches pay for kernel selection and page faults
        top = max(args.concurrency)
        warm = asyncio.run(run_level(server.url, model, prompts[:top], top, 8, math.inf, 0))[0]
        if not all(r.ok for r in warm):
            raise RuntimeError(f"{peer} warm-up failed: {[r.error for r in warm]}")
        for level in args.concurrency:
            results, seconds = asyncio.run(run_level(server.url, model, prompts, level, args.output_tokens,
                                                     args.request_rate, seed=level))
            stats.append(summarize(peer, level, results, seconds))
            print(row(stats[-1]), flush=True)
            failures = [r.error for r in results if not r.ok]
            if failures:
                print(f"   {len(failures)} failed, e.g. {failures[0]}", flush=True)
    finally:
        server.stop()
    return stats


# ------------------------------------------------------------------------------------------- report


HEADER = (f"{'peer':<13}{'conc':>5}{'req/s':>8}{'out tok/s':>11}{'TTFT p50':>10}{'p95':>8}{'p99':>8}"
          f"{'ITL p50':>9}{'p95':>8}{'p99':>8}  (ms)")


def row(s: LevelStats) -> str:
    return (f"{s.peer:<13}{s.concurrency:>5}{s.requests_per_s:>8.2f}{s.output_tok_per_s:>11.1f}"
            f"{s.ttft_ms['p50']:>10.0f}{s.ttft_ms['p95']:>8.0f}{s.ttft_ms['p99']:>8.0f}"
            f"{s.itl_ms['p50']:>9.0f}{s.itl_ms['p95']:>8.0f}{s.itl_ms['p99']:>8.0f}")


def verdict(stats: list[LevelStats]) -> list[str]:
    at = {s.peer: s for s in stats if s.concurrency == BAR_CONCURRENCY}
    if "qwick" not in at or "transformers" not in at:
        return [f"bar not checked: needs qwick and transformers at concurrency {BAR_CONCURRENCY}"]
    ours, peer = at["qwick"], at["transformers"]
    ratio = ours.output_tok_per_s / peer.output_tok_per_s if peer.output_tok_per_s else math.inf
    return [
        f"output tok/s at c={BAR_CONCURRENCY}: qwick / transformers = {ratio:.2f}x (bar >= {BAR_RATIO}x): "
        f"{'PASS' if ratio >= BAR_RATIO else 'FAIL'}",
        f"p95 TTFT at c={BAR_CONCURRENCY}: qwick {ours.ttft_ms['p95']:.0f} ms vs transformers "
        f"{peer.ttft_ms['p95']:.0f} ms (bar: lower): {'PASS' if ours.ttft_ms['p95'] < peer.ttft_ms['p95'] else 'FAIL'}",
    ]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="16 requests of 16 tokens at concurrency 1 and 16")
    parser.add_argument("--concurrency", default="1,4,16", help="comma-separated levels (default 1,4,16)")
    parser.add_argument("--requests", type=int, default=48, help="requests per level (default 48)")
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--output-tokens", type=int, default=64)
    parser.add_argument("--request-rate", type=float, default=math.inf, help="requests/s, Poisson (default: all at once)")
    parser.add_argument("--peers", default="qwick,transformers")
    parser.add_argument("--model", type=Path, default=None, help="an existing model folder (default: make one)")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    if args.quick:
        args.requests, args.output_tokens, args.concurrency = 16, 16, "1,16"
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    args.peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="qwick-serve-bench-") as tmp:
        folder = args.model or make_model_folder(Path(tmp) / "qwen3-0.6b-dummy", args.dtype)
        prompts = random_prompts(folder, args.requests, args.prompt_tokens)
        print(f"model {folder}; {args.requests} requests/level, ~{args.prompt_tokens} prompt + {args.output_tokens} "
              f"output tokens, rate {args.request_rate} req/s, {os.cpu_count()} CPUs\n{HEADER}", flush=True)
        stats: list[LevelStats] = []
        for peer in args.peers:
            try:
                stats += bench_peer(peer, folder, args, prompts, Path(tmp))
            except (RuntimeError, TimeoutError) as exc:
                print(f"{peer}: could not be measured: {exc}", flush=True)
                log = Path(tmp) / f"{peer}.log"
                if log.is_file():
                    print(log.read_text()[-2000:], flush=True)
        print(f"\n{HEADER}")
        for s in stats:
            print(row(s))
        lines = verdict(stats)
        print("\n" + "\n".join(lines))
        if args.json:
            args.json.write_text(json.dumps({"settings": {k: str(v) for k, v in vars(args).items()},
                                             "levels": [asdict(s) for s in stats], "verdict": lines}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
