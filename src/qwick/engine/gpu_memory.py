"""`gpu_memory_utilization` (vLLM's option): on CUDA, the KV cache gets what a profiling forward leaves.

The engine may use `utilization` x the GPU's total memory. A forward of one full step (max_num_batched_tokens
tokens, logits for max_num_seqs rows) with the weights loaded measures the peak torch allocates; memory used
outside torch (the CUDA context, other processes) is measured before it. The KV budget is what remains, less a
reserve for the CUDA graphs and allocator slack. CPU keeps its own sizing (engine/config.py).
"""

from __future__ import annotations

import torch

from qwick.model.qwen3 import Qwen3ForCausalLM

GRAPH_RESERVE_BYTES = 256 * 2**20  # CUDA graphs' pool (their activations are a decode step's) and slack


def profile_kv_budget(model: Qwen3ForCausalLM, device: torch.device, utilization: float,
                      max_num_batched_tokens: int, max_num_seqs: int) -> int:
    """Bytes the KV cache may take so the engine stays within `utilization` of the GPU's memory."""
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    free, total = torch.cuda.mem_get_info(device)
    outside_torch = max(0, total - free - torch.cuda.memory_reserved(device))  # context, other processes
    tokens = max_num_batched_tokens
    with torch.inference_mode():
        ids = torch.zeros(1, tokens, dtype=torch.long, device=device)
        positions = torch.arange(tokens, device=device)[None, :]  # [1, T]
        hidden = model(ids, positions)  # no cache: a fresh prompt, causal over itself
        model.compute_logits(hidden[0, -min(max_num_seqs, tokens):])  # [rows, V] float32
        del hidden
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device)  # weights + the step's activations
    torch.cuda.empty_cache()
    budget = int(total * utilization) - peak - outside_torch - GRAPH_RESERVE_BYTES
    if budget <= 0:
        gib = 2**30
        raise ValueError(f"gpu_memory_utilization={utilization} leaves no memory for the KV cache: of "
                         f"{total / gib:.1f} GiB, the model and a step's activations take {peak / gib:.2f} GiB and "
                         f"memory outside torch {outside_torch / gib:.2f} GiB; raise gpu_memory_utilization or "
                         "lower max_num_batched_tokens")
    return budget
