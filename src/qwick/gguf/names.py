"""Tensor names: Hugging Face Qwen3 names <-> llama.cpp's `qwen3` names, from the gguf package's own map.

llama.cpp permutes Q/K weights for the `llama` architecture only (its rotary layout differs); `qwen3` uses the
NeoX rotary layout Hugging Face uses, so the weights are written unpermuted (convert_hf_to_gguf.py's Qwen2Model,
and Qwen3Model under it, do not override modify_tensors' name-only mapping).
"""

from __future__ import annotations

import gguf

ARCH = "qwen3"
ARCH_ENUM = gguf.MODEL_ARCH.QWEN3


def hf_to_gguf(names: list[str], n_layers: int) -> dict[str, str]:
    """Each Hugging Face tensor name (`model.layers.0.self_attn.q_proj.weight`) -> its GGUF name (`blk.0.attn_q.weight`)."""
    table = gguf.get_tensor_name_map(ARCH_ENUM, n_layers)
    mapped: dict[str, str] = {}
    for name in names:
        target = table.get_name(name, try_suffixes=(".weight", ".bias"))
        if target is None:
            raise ValueError(f"tensor {name!r} has no llama.cpp qwen3 name")
        mapped[name] = target
    return mapped


def gguf_to_hf(n_layers: int) -> dict[str, str]:
    """GGUF tensor name -> Hugging Face name, for every tensor a Qwen3ForCausalLM of `n_layers` has."""
    names = ["model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"]
    per_layer = ["input_layernorm", "post_attention_layernorm", "self_attn.q_proj", "self_attn.k_proj",
                 "self_attn.v_proj", "self_attn.o_proj", "self_attn.q_norm", "self_attn.k_norm", "mlp.gate_proj",
                 "mlp.up_proj", "mlp.down_proj"]
    names += [f"model.layers.{i}.{part}.weight" for i in range(n_layers) for part in per_layer]
    return {g: h for h, g in hf_to_gguf(names, n_layers).items()}
