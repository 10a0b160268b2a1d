"""The start-up line of `qwick serve`: what is being served and how (the numbers an operator checks first)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from qwick.model.layers import Linear

if TYPE_CHECKING:
    from qwick.llm import LLM


def describe(llm: LLM) -> str:
    """Model, dtype, device, max model len, KV cache (tokens, bytes, dtype) and the CPU kernels chosen."""
    engine = llm.engine
    cache = engine.cache
    tokens = cache.num_blocks * cache.block_size
    parts = [f"model {llm.model_name}", f"dtype {_name(llm.dtype)}", f"device {llm.device}",
             f"max_model_len {llm.max_model_len}",
             f"KV cache {tokens} tokens / {cache.nbytes()} bytes ({cache.nbytes() / 2**20:.1f} MiB, "
             f"{_name(cache.dtype)}, prefix caching {'on' if engine.config.enable_prefix_caching else 'off'})",
             f"max_num_batched_tokens {engine.config.max_num_batched_tokens}"]
    if llm.device.type == "cpu":
        parts.append(f"CPU kernels: {cpu_kernels(llm)}")
    return "serving: " + ", ".join(parts)


def cpu_kernels(llm: LLM) -> str:
    """Which attention and matmul paths the engine picked (model/attention/select.py, passes/cpu_packing.py)."""
    attention = llm.engine.runner.backend.describe()
    linears = [m for m in llm.model.modules() if isinstance(m, Linear)]
    vnni = sum(1 for m in linears if m.vnni)
    onednn = sum(1 for m in linears if not m.vnni and m.weight.is_mkldnn)
    plain = len(linears) - vnni - onednn
    kinds = [f"{n} {what}" for n, what in ((vnni, "AVX512-BF16 packed"), (onednn, "oneDNN packed"),
                                           (plain, "torch")) if n]
    return f"{attention}; linears {' + '.join(kinds) or 'none'}"


def _name(dtype: object) -> str:
    return str(dtype).removeprefix("torch.")
