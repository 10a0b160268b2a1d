"""Reading a Hugging Face config.json into Qwen3Config and the RoPE tables it implies (SPEC.md §1, §3, §4)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch

from qwick.model.config import Qwen3Config, RopeConfig, UnsupportedModelError
from qwick.model.loader import build_model, init_dummy_weights, load_config
from qwick.model.rope import RotaryEmbedding, inverse_frequencies

from checkpoints import ASSETS, TINY_CONFIGS

REAL = {"0.6B": "config.json", "1.7B": "config-1.7B.json", "4B": "config-4B.json"}
YARN_4X = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}


def real_raw(size: str = "0.6B") -> dict:
    return json.loads((ASSETS / REAL[size]).read_text())


def hf_config(raw: dict):
    import transformers

    return transformers.Qwen3Config(**{k: v for k, v in raw.items() if k not in ("architectures", "model_type")})


@pytest.mark.parametrize(
    ("size", "layers", "heads", "kv_heads", "kv_bytes"),
    [("0.6B", 28, 16, 8, 114_688), ("1.7B", 28, 16, 8, 114_688), ("4B", 36, 32, 8, 147_456)],
)
def test_published_configs_parse(size, layers, heads, kv_heads, kv_bytes):
    config = Qwen3Config.from_file(ASSETS / REAL[size])
    assert (config.num_hidden_layers, config.num_attention_heads, config.num_key_value_heads) == (layers, heads, kv_heads)
    assert config.head_dim == 128  # explicit in config.json, not hidden_size // heads
    assert config.tie_word_embeddings is True
    assert config.kv_bytes_per_token == kv_bytes
    assert config.rope == RopeConfig(theta=1_000_000.0)
    assert config.vocab_size == 151936
    assert config.eos_token_id == 151645


@pytest.mark.parametrize(
    ("size", "parameters"), [("0.6B", 596_049_920), ("1.7B", 1_720_574_976), ("4B", 4_022_468_096)]
)
def test_module_tree_has_the_published_parameter_count(size, parameters):
    # meta device: real shapes, no memory; parameters() counts the tied embedding / lm_head once
    model = build_model(Qwen3Config.from_file(ASSETS / REAL[size]), torch.bfloat16, torch.device("meta"))
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert sum(p.numel() for p in model.parameters()) == parameters


def test_dummy_weights_fill_every_parameter_once_and_keep_the_tie():
    raw = {**real_raw(), "num_hidden_layers": 2, "vocab_size": 512}  # 0.6B widths, fewer layers and rows
    model = build_model(Qwen3Config.from_dict(raw), torch.float32, torch.device("cpu"))
    init_dummy_weights(model, seed=3)
    again = build_model(Qwen3Config.from_dict(raw), torch.float32, torch.device("cpu"))
    init_dummy_weights(again, seed=3)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    for (name, param), other in zip(model.named_parameters(), again.parameters(), strict=True):
        assert torch.equal(param, other), f"{name} differs for the same seed"
        if name.endswith("norm.weight"):
            assert torch.all(param == 1), name
        else:
            assert 0.015 < param.std() < 0.025, name


def test_missing_head_dim_defaults_to_128_like_transformers():
    raw = {k: v for k, v in real_raw().items() if k != "head_dim"}
    raw["hidden_size"] = 512  # hidden // heads would be 32
    assert Qwen3Config.from_dict(raw).head_dim == hf_config(raw).head_dim == 128


def test_old_rope_theta_key_is_read():
    raw = real_raw()
    assert "rope_parameters" not in raw
    assert Qwen3Config.from_dict({**raw, "rope_theta": 5e5}).rope == RopeConfig(theta=5e5)


def test_new_rope_parameters_key_is_read():
    raw = {k: v for k, v in real_raw().items() if k not in ("rope_theta", "rope_scaling")}
    raw["rope_parameters"] = {"rope_type": "default", "rope_theta": 5e5}
    assert Qwen3Config.from_dict(raw).rope == RopeConfig(theta=5e5)


def test_tiny_checkpoint_written_by_transformers_5_round_trips(tiny_checkpoint):
    # transformers 5 writes rope_parameters (with rope_theta inside) and no top-level rope_theta
    folder = tiny_checkpoint("gqa4_yarn")
    raw = json.loads((folder / "config.json").read_text())
    assert "rope_parameters" in raw and "rope_theta" not in raw
    rope = load_config(folder).rope
    assert (rope.rope_type, rope.factor, rope.original_max_position_embeddings) == ("yarn", 4.0, 64)


@pytest.mark.parametrize("key", ["rope_scaling", "rope_parameters"])
def test_yarn_parameters_are_read_from_either_key(key):
    raw = {**real_raw("4B"), key: {**YARN_4X, "beta_fast": 16, "attention_factor": 1.2}}
    rope = Qwen3Config.from_dict(raw).rope
    assert rope == RopeConfig(theta=1_000_000.0, rope_type="yarn", factor=4.0, original_max_position_embeddings=32768,
                              beta_fast=16.0, beta_slow=1.0, attention_factor=1.2)


def test_old_yarn_type_key_is_accepted():
    rope = Qwen3Config.from_dict({**real_raw("4B"), "rope_scaling": {"type": "yarn", "factor": 2.0}}).rope
    assert (rope.rope_type, rope.factor) == ("yarn", 2.0)
    assert rope.original_max_position_embeddings == 40960  # falls back to max_position_embeddings


def test_unsupported_rope_type_names_the_type():
    with pytest.raises(UnsupportedModelError, match=r"rope type 'llama3' is not supported.*yarn"):
        Qwen3Config.from_dict({**real_raw(), "rope_scaling": {"rope_type": "llama3", "factor": 8.0}})


def test_default_inverse_frequencies_match_transformers():
    from transformers.models.qwen3.modeling_qwen3 import Qwen3RotaryEmbedding

    raw = real_raw()
    expected, factor = Qwen3RotaryEmbedding.compute_default_rope_parameters(hf_config(raw))
    ours, ours_factor = inverse_frequencies(Qwen3Config.from_dict(raw).rope, 128)
    torch.testing.assert_close(ours, expected, atol=0, rtol=0)
    assert ours_factor == factor == 1.0


@pytest.mark.parametrize(
    ("head_dim", "rope"),
    [(128, YARN_4X), (128, {**YARN_4X, "factor": 2.0, "beta_fast": 16, "beta_slow": 2}),
     (18, {**YARN_4X, "original_max_position_embeddings": 64}), (128, {**YARN_4X, "truncate": False}),
     (128, {"type": "yarn", "factor": 2.0})],
    ids=["qwen3-4x", "betas", "odd-head-dim", "no-truncate", "old-type-key-no-original"],
)
def test_yarn_inverse_frequencies_match_transformers(head_dim, rope):
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    raw = {**real_raw("4B"), "head_dim": head_dim, "rope_scaling": rope}
    expected, expected_factor = ROPE_INIT_FUNCTIONS["yarn"](hf_config(raw))
    ours, factor = inverse_frequencies(Qwen3Config.from_dict(raw).rope, head_dim)
    torch.testing.assert_close(ours, expected, atol=0, rtol=1e-6)
    assert factor == pytest.approx(expected_factor)


def test_yarn_scales_cos_and_sin_by_the_attention_factor():
    rope = Qwen3Config.from_dict({**real_raw("4B"), "rope_scaling": YARN_4X}).rope
    cos, sin = RotaryEmbedding(rope, 128)(torch.zeros(1, 1, dtype=torch.long), torch.float32)
    assert cos.max().item() == pytest.approx(0.1 * math.log(4.0) + 1)  # 1.13863 (SPEC.md §4)
    assert sin.abs().max().item() == 0


@pytest.mark.parametrize("name", list(TINY_CONFIGS))
def test_rotary_cos_sin_match_transformers(name, tiny_checkpoint):
    import transformers
    from transformers.models.qwen3.modeling_qwen3 import Qwen3RotaryEmbedding

    folder = tiny_checkpoint(name)
    positions = torch.arange(300)[None]  # past gqa4_yarn's original 64 positions
    expected_cos, expected_sin = Qwen3RotaryEmbedding(transformers.AutoConfig.from_pretrained(folder))(
        torch.zeros(1, dtype=torch.float32), positions)
    config = load_config(folder)
    cos, sin = RotaryEmbedding(config.rope, config.head_dim)(positions, torch.float32)
    torch.testing.assert_close(cos[:, 0], expected_cos, atol=1e-6, rtol=0)
    torch.testing.assert_close(sin[:, 0], expected_sin, atol=1e-6, rtol=0)


def test_bfloat16_model_keeps_rope_frequencies_in_float32():
    # a bfloat16 inv_freq moves every angle by up to position * 2^-9 rad: long prompts would degrade
    model = build_model(Qwen3Config.from_dict(real_raw()), torch.bfloat16, torch.device("meta"))
    assert model.model.rotary_emb.inv_freq.dtype == torch.float32


def test_other_model_type_is_rejected_with_what_is_supported():
    with pytest.raises(UnsupportedModelError, match=r"model_type='llama'.*Qwen3 dense models only"):
        Qwen3Config.from_dict({**real_raw(), "model_type": "llama", "architectures": ["LlamaForCausalLM"]})


def test_qwen3_moe_is_rejected_by_name():
    raw = {**real_raw(), "model_type": "qwen3_moe", "architectures": ["Qwen3MoeForCausalLM"]}
    with pytest.raises(UnsupportedModelError, match=r"model_type='qwen3_moe'.*Qwen3-MoE.*not supported"):
        Qwen3Config.from_dict(raw)


def test_unknown_architecture_of_qwen3_type_is_rejected():
    raw = {**real_raw(), "architectures": ["Qwen3ForSequenceClassification"]}
    with pytest.raises(UnsupportedModelError, match=r"Qwen3ForSequenceClassification.*Qwen3ForCausalLM"):
        Qwen3Config.from_dict(raw)


def test_sliding_window_is_rejected():
    with pytest.raises(UnsupportedModelError, match="use_sliding_window=true is not supported"):
        Qwen3Config.from_dict({**real_raw(), "use_sliding_window": True, "sliding_window": 4096})


def test_heads_not_divisible_by_kv_heads_are_rejected_with_both_numbers():
    with pytest.raises(UnsupportedModelError, match=r"num_attention_heads=12 .*multiple of num_key_value_heads=8"):
        Qwen3Config.from_dict({**real_raw(), "num_attention_heads": 12})


@pytest.mark.parametrize("field", ["hidden_size", "num_attention_heads", "vocab_size", "intermediate_size"])
def test_missing_required_field_is_named_with_the_file(field, tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({k: v for k, v in real_raw().items() if k != field}))
    with pytest.raises(UnsupportedModelError, match=rf"{re.escape(str(path))}: required field '{field}' is missing"):
        Qwen3Config.from_file(path)


def test_invalid_json_names_the_file(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{"model_type": "qwen3",')
    with pytest.raises(UnsupportedModelError, match=rf"{re.escape(str(path))} is not valid JSON"):
        Qwen3Config.from_file(path)


def test_folder_without_config_json_is_named(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(UnsupportedModelError, match=rf"{re.escape(str(tmp_path))} has no config.json"):
        load_config(Path(tmp_path))
