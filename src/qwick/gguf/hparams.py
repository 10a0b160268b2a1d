"""Qwen3 hyper-parameters <-> GGUF metadata, with the keys convert_hf_to_gguf.py writes for `qwen3`.

Written: {arch}.block_count, context_length, embedding_length, feed_forward_length, attention.head_count,
attention.head_count_kv, attention.key_length / value_length (Qwen3's head_dim is not hidden / heads),
attention.layer_norm_rms_epsilon, rope.freq_base, and for YaRN rope.scaling.type / factor /
original_context_length (+ yarn_beta_fast / yarn_beta_slow). Read back into a Hugging Face-style config dict,
so `Qwen3Config.from_dict` validates an imported file like a config.json.
"""

from __future__ import annotations

from typing import Any

import gguf

from qwick.model.config import Qwen3Config

_FILE_DTYPES = {gguf.LlamaFileType.ALL_F32: "float32", gguf.LlamaFileType.MOSTLY_F16: "float16"}


def write_hparams(writer: gguf.GGUFWriter, config: Qwen3Config) -> None:
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_key_length(config.head_dim)
    writer.add_value_length(config.head_dim)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(config.rope.theta)
    if config.rope.rope_type == "yarn":
        writer.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        writer.add_rope_scaling_factor(config.rope.factor)
        if config.rope.original_max_position_embeddings is not None:
            writer.add_rope_scaling_orig_ctx_len(config.rope.original_max_position_embeddings)
        writer.add_rope_scaling_yarn_beta_fast(config.rope.beta_fast)
        writer.add_rope_scaling_yarn_beta_slow(config.rope.beta_slow)


def config_dict(meta: dict[str, Any], arch: str, vocab_size: int, tied: bool) -> dict[str, Any]:
    """A config.json-like dict from a GGUF's metadata (`meta`: key -> value); a missing key raises KeyError."""
    k = gguf.Keys
    heads = meta[k.Attention.HEAD_COUNT.format(arch=arch)]
    hidden = meta[k.LLM.EMBEDDING_LENGTH.format(arch=arch)]
    raw: dict[str, Any] = {
        "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "vocab_size": vocab_size,
        "hidden_size": hidden,
        "intermediate_size": meta[k.LLM.FEED_FORWARD_LENGTH.format(arch=arch)],
        "num_hidden_layers": meta[k.LLM.BLOCK_COUNT.format(arch=arch)],
        "num_attention_heads": heads,
        "num_key_value_heads": meta.get(k.Attention.HEAD_COUNT_KV.format(arch=arch), heads),
        "head_dim": meta.get(k.Attention.KEY_LENGTH.format(arch=arch), hidden // heads),
        # stored as float32: 1e-6 reads back 9.99999997e-07; its 7 significant digits give config.json's value
        "rms_norm_eps": float(f"{meta[k.Attention.LAYERNORM_RMS_EPS.format(arch=arch)]:.7g}"),
        "max_position_embeddings": meta[k.LLM.CONTEXT_LENGTH.format(arch=arch)],
        "rope_theta": meta.get(k.Rope.FREQ_BASE.format(arch=arch), 10000.0),
        "tie_word_embeddings": tied,
        "torch_dtype": _FILE_DTYPES.get(meta.get(k.General.FILE_TYPE, -1), "bfloat16"),  # the GPU's pick
    }
    value_length = meta.get(k.Attention.VALUE_LENGTH.format(arch=arch), raw["head_dim"])
    if value_length != raw["head_dim"]:
        raise ValueError(f"attention.value_length {value_length} differs from key_length {raw['head_dim']}: "
                         "not a Qwen3 dense model")
    scaling = meta.get(k.Rope.SCALING_TYPE.format(arch=arch), "none")
    if scaling == "yarn":
        raw["rope_scaling"] = {
            "rope_type": "yarn", "factor": meta[k.Rope.SCALING_FACTOR.format(arch=arch)],
            "original_max_position_embeddings": meta.get(k.Rope.SCALING_ORIG_CTX_LEN.format(arch=arch)),
            "beta_fast": meta.get(k.Rope.SCALING_YARN_BETA_FAST.format(arch=arch), 32.0),
            "beta_slow": meta.get(k.Rope.SCALING_YARN_BETA_SLOW.format(arch=arch), 1.0)}
    elif scaling not in ("none", ""):
        raise ValueError(f"rope.scaling.type {scaling!r} is not supported (qwick runs default and yarn rope)")
    return raw
