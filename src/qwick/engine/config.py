"""EngineConfig: the engine's size limits, as the builder derives them from EngineArgs (validated there) and
the model (max_model_len fitted to the KV budget); and the KV budget arithmetic."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from qwick.engine.spec_decode.config import SpeculativeConfig
from qwick.model.config import Qwen3Config

DEFAULT_KV_MEMORY_FRACTION = 0.3  # of available memory, when kv_cache_memory_bytes is not given
DEFAULT_CPU_KV_BYTES = 4 * 1024**3  # CPU cap on that default (vLLM's VLLM_CPU_KVCACHE_SPACE default is 4 GB)


@dataclass(frozen=True)
class EngineConfig:
    max_model_len: int
    max_num_seqs: int = 64
    max_num_batched_tokens: int = 512  # per step; chunked prefill splits longer prompts
    block_size: int = 16
    kv_cache_memory_bytes: int | None = None
    enable_prefix_caching: bool = True
    kv_cache_dtype: str = "auto"  # "fp8" / "fp8_e4m3": keys and values stored as float8 e4m3, scale 1
    jump_forward: bool = True  # off: every token is sampled, even where the grammar forces it
    speculative: SpeculativeConfig | None = None  # n-gram drafts verified each step (engine/spec_decode)

    def cache_dtype(self, model_dtype: torch.dtype) -> torch.dtype:
        """The dtype keys and values are stored in."""
        return model_dtype if self.kv_cache_dtype == "auto" else torch.float8_e4m3fn

    def budget_blocks(self, model: Qwen3Config, dtype: torch.dtype, device: torch.device) -> int:
        """KV blocks the memory budget pays for (given, or a fraction of free memory)."""
        budget = self.kv_cache_memory_bytes
        if budget is None:
            budget = int(_available_memory(device) * DEFAULT_KV_MEMORY_FRACTION)
            if device.type == "cpu":
                budget = min(budget, DEFAULT_CPU_KV_BYTES)
        return budget // self.bytes_per_block(model, dtype)

    def bytes_per_block(self, model: Qwen3Config, dtype: torch.dtype) -> int:
        return model.num_hidden_layers * 2 * model.num_key_value_heads * model.head_dim * dtype.itemsize * self.block_size

    def num_kv_blocks(self, model: Qwen3Config, dtype: torch.dtype, device: torch.device) -> int:
        """Blocks to allocate: what the budget pays for, never more than max_num_seqs full sequences use."""
        useful = -(-self.max_num_seqs * self.max_model_len // self.block_size)
        blocks = min(self.budget_blocks(model, dtype, device), useful)
        if blocks * self.block_size < self.max_model_len:
            per_token = self.bytes_per_block(model, dtype) // self.block_size
            raise ValueError(
                f"the KV cache budget holds {blocks * self.block_size} tokens ({per_token} bytes/token), less "
                f"than one sequence of max_model_len={self.max_model_len}: raise kv_cache_memory_bytes or lower "
                "max_model_len"
            )
        return blocks


def _available_memory(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 * 1024**3  # no /proc (macOS, Windows): assume 8 GiB
