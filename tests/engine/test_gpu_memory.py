"""gpu_memory_utilization's arithmetic (engine/gpu_memory.py) with torch.cuda's memory queries stubbed: the KV
budget is the allowed share of the GPU less the profiled peak, memory outside torch and the graphs' reserve."""

from __future__ import annotations

import pytest
import torch

from qwick.engine import gpu_memory
from qwick.model.config import Qwen3Config
from qwick.model.qwen3 import Qwen3ForCausalLM

GIB = 2**30


@pytest.fixture
def fake_gpu(monkeypatch):
    """A 80 GiB GPU with 1 GiB used outside torch; the profiled peak is 3 GiB."""
    for name in ("synchronize", "empty_cache", "reset_peak_memory_stats"):
        monkeypatch.setattr(torch.cuda, name, lambda *a, **k: None)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (77 * GIB, 80 * GIB))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 2 * GIB)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 3 * GIB)


def tiny_model() -> Qwen3ForCausalLM:
    config = Qwen3Config.from_dict({"model_type": "qwen3", "architectures": ["Qwen3ForCausalLM"], "vocab_size": 64,
                                    "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                                    "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 16})
    return Qwen3ForCausalLM(config).eval()


def test_the_kv_budget_is_what_the_profiled_step_leaves(fake_gpu):
    budget = gpu_memory.profile_kv_budget(tiny_model(), torch.device("cpu"), 0.5, 16, 4)
    assert budget == 40 * GIB - 3 * GIB - 1 * GIB - gpu_memory.GRAPH_RESERVE_BYTES


def test_too_small_a_share_is_a_clear_error(fake_gpu):
    with pytest.raises(ValueError, match=r"gpu_memory_utilization=0\.05 leaves no memory for the KV cache"):
        gpu_memory.profile_kv_budget(tiny_model(), torch.device("cpu"), 0.05, 16, 4)
