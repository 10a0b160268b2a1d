"""What `qwick export` reads: a qwick-quantized folder (dequantized, then requantized) and base + LoRA adapter."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file
from trained import load_float32

from qwick.export import export_gguf
from qwick.gguf import open_gguf
from qwick.gguf.load import load_gguf
from qwick.quant.checkpoint import save_quantized
from qwick.quant.int4 import dequantize_int4, quantize_int4
from qwick.quant.int8 import quantize_int8

CPU = torch.device("cpu")


def _state(path) -> dict[str, torch.Tensor]:
    return load_gguf(open_gguf(path), torch.float32, CPU).state_dict()


@pytest.mark.parametrize("method", ["int8", "int4"])
def test_qwick_quantized_folder_exports_its_dequantized_weights(trained, tmp_path, method):
    folder = tmp_path / method
    save_quantized(trained[0], folder, method, 32)
    got = _state(export_gguf(folder, tmp_path / "x.gguf", "f32", with_tokenizer=False).path)
    source = load_float32(trained[0]).state_dict()
    weight = source["model.layers.1.mlp.down_proj.weight"]
    if method == "int8":
        q, scale = quantize_int8(weight)
        expected = q.float() * scale.float()[:, None]
    else:
        expected = dequantize_int4(*quantize_int4(weight, 32))
    torch.testing.assert_close(got["model.layers.1.mlp.down_proj.weight"], expected, rtol=0, atol=1e-6)
    q, scale = quantize_int8(source["model.embed_tokens.weight"])  # the tied head: int8 rows
    torch.testing.assert_close(got["model.embed_tokens.weight"], q.float() * scale.float()[:, None], rtol=0,
                               atol=1e-6)
    torch.testing.assert_close(got["model.norm.weight"], source["model.norm.weight"], rtol=0, atol=0)


def test_adapter_is_merged_on_the_way(trained, tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "down_proj"]}))
    gen = torch.Generator().manual_seed(0)
    a_q, b_q = torch.randn(4, 128, generator=gen), torch.randn(128, 4, generator=gen)
    a_d, b_d = torch.randn(4, 256, generator=gen), torch.randn(128, 4, generator=gen)
    prefix = "base_model.model.model.layers"
    save_file({f"{prefix}.0.self_attn.q_proj.lora_A.weight": a_q, f"{prefix}.0.self_attn.q_proj.lora_B.weight": b_q,
               f"{prefix}.1.mlp.down_proj.lora_A.weight": a_d, f"{prefix}.1.mlp.down_proj.lora_B.weight": b_d},
              str(adapter / "adapter_model.safetensors"))
    got = _state(export_gguf(trained[0], tmp_path / "x.gguf", "f32", adapter=adapter, with_tokenizer=False).path)
    base = load_float32(trained[0]).state_dict()
    torch.testing.assert_close(got["model.layers.0.self_attn.q_proj.weight"],
                               base["model.layers.0.self_attn.q_proj.weight"] + 2.0 * b_q @ a_q)
    torch.testing.assert_close(got["model.layers.1.mlp.down_proj.weight"],
                               base["model.layers.1.mlp.down_proj.weight"] + 2.0 * b_d @ a_d)
    torch.testing.assert_close(got["model.layers.1.self_attn.q_proj.weight"],
                               base["model.layers.1.self_attn.q_proj.weight"], rtol=0, atol=0)


def test_adapter_for_another_model_is_refused(trained, tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2, "lora_alpha": 2}))
    save_file({"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": torch.zeros(2, 64),
               "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight": torch.zeros(128, 2)},
              str(adapter / "adapter_model.safetensors"))
    with pytest.raises(ValueError, match="another model"):
        export_gguf(trained[0], tmp_path / "x.gguf", "f16", adapter=adapter, with_tokenizer=False)
    assert not (tmp_path / "x.gguf").exists()
