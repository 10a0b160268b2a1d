"""Engine counters and latency samples for metrics (vLLM's metric meanings)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from qwick.lora.manager import LoRAStats

RECENT = 2048  # latency samples kept for percentiles


@dataclass
class EngineStats:
    num_running: int = 0  # requests with a sequence in the running batch
    num_waiting: int = 0
    kv_cache_usage: float = 0.0  # fraction of KV blocks referenced by live sequences
    prefix_cache_queries: int = 0  # prompt tokens looked up in the prefix cache
    prefix_cache_hits: int = 0  # of which found
    prompt_tokens: int = 0  # tokens prefilled (computed, so cache hits excluded)
    generation_tokens: int = 0
    num_preemptions: int = 0
    forward_passes: int = 0  # model forwards run (one per step on the flat path): fewer than tokens with jumps
    spec_decode_num_drafts: int = 0  # draft rounds verified (vLLM's counter names)
    spec_decode_num_draft_tokens: int = 0  # draft tokens proposed and verified
    spec_decode_num_accepted_tokens: int = 0  # of which accepted
    jump_forward_tokens: int = 0  # output tokens appended without sampling (forced by a grammar or the budget)
    requests_finished: dict[str, int] = field(default_factory=dict)  # requests, by the first sample's reason
    ttft_seconds: deque[float] = field(default_factory=lambda: deque(maxlen=RECENT))
    itl_seconds: deque[float] = field(default_factory=lambda: deque(maxlen=RECENT))
    e2e_seconds: deque[float] = field(default_factory=lambda: deque(maxlen=RECENT))
    lora: LoRAStats | None = None  # set when LoRA is enabled

    @property
    def spec_decode_acceptance_rate(self) -> float:
        """Accepted over verified draft tokens (0 when nothing was drafted)."""
        drafted = self.spec_decode_num_draft_tokens
        return self.spec_decode_num_accepted_tokens / drafted if drafted else 0.0

    @property
    def prefix_cache_hit_rate(self) -> float:
        return self.prefix_cache_hits / self.prefix_cache_queries if self.prefix_cache_queries else 0.0
