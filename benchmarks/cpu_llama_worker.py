"""One llama.cpp measurement for benchmarks/cpu.py, run by llama-cpp-python's own interpreter (no torch here).

usage: python cpu_llama_worker.py MODEL.gguf THREADS DECODE_TOKENS PREFILL_TOKENS ROUNDS
Prints one JSON line: decode and prefill tokens/s (median over rounds) and this process's peak RSS.
Decode: after a 64-token prompt, feed back the argmax token one `eval` at a time (what a batch-1 server does).
Prefill: `eval` of PREFILL_TOKENS random ids from an empty context (one n_batch = PREFILL_TOKENS chunk);
PREFILL_TOKENS 0 skips it and feeds the decode prompt one token at a time.

On an AMX CPU llama.cpp puts Q4_0/Q8_0 weights in its AMX buffer, whose multi-token matmul segfaults on
some machines (ggml-org/llama.cpp#20824, open; this one included). benchmarks/cpu.py then runs this worker
twice: as is with PREFILL_TOKENS 0 (decode only, prompt fed one token at a time), and under LD_PRELOAD of a
shim that refuses the AMX permission syscall, so llama.cpp falls back exactly as on a kernel without AMX
(Q4_0 into its CPU_REPACK buffer, Q8_0/F16 into the plain one).
"""

from __future__ import annotations

import json
import random
import statistics
import sys
import time

import llama_cpp
import numpy


def peak_rss_mib() -> float:
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across fork + exec
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def last_logits(llm: llama_cpp.Llama) -> numpy.ndarray:
    # llama.cpp's own buffer: Llama.scores is indexed by absolute position and sized for one batch
    pointer = llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1)
    return numpy.ctypeslib.as_array(pointer, shape=(llm.n_vocab(),))


def main() -> None:
    path, threads, decode_tokens, prefill_tokens, rounds = sys.argv[1], *map(int, sys.argv[2:6])
    batch = max(prefill_tokens, 64)
    llm = llama_cpp.Llama(path, n_ctx=prefill_tokens + decode_tokens + 128, n_threads=threads,
                          n_threads_batch=threads, n_batch=batch, n_ubatch=batch, verbose=False)
    rng = random.Random(0)
    decode, prefill = [], []
    for round_index in range(rounds + 1):  # round 0 warms up
        llm.reset()
        prompt = [rng.randrange(150000) for _ in range(64)]
        for chunk in [prompt] if prefill_tokens else [[t] for t in prompt]:
            llm.eval(chunk)
        start = time.perf_counter()
        for _ in range(decode_tokens):
            llm.eval([int(last_logits(llm).argmax())])
        decode_rate = decode_tokens / (time.perf_counter() - start)
        if prefill_tokens:
            llm.reset()
            ids = [rng.randrange(150000) for _ in range(prefill_tokens)]
            start = time.perf_counter()
            llm.eval(ids)
            prefill.append(prefill_tokens / (time.perf_counter() - start))
        if round_index:
            decode.append(decode_rate)
    prefill = prefill[1:]
    print(json.dumps({"decode_tok_s": statistics.median(decode),
                      "prefill_tok_s": statistics.median(prefill) if prefill else None,
                      "decode_samples": decode, "prefill_samples": prefill,
                      "bytes_per_token": llama_cpp.llama_model_size(llm.model),  # tensor bytes (embedding = head)
                      "peak_rss_mib": peak_rss_mib()}))


if __name__ == "__main__":
    main()
