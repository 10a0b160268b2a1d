"""The written file, read back with the gguf package's own GGUFReader: architecture, names, shapes, types and
metadata as llama.cpp's convert_hf_to_gguf.py writes them for qwen3."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import pytest

from qwick.export import export_gguf
from qwick.export.writer import source_hash
from qwick.gguf import open_gguf

from checkpoints import write_tiny_checkpoint

Q = gguf.GGMLQuantizationType
PER_LAYER = ["attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "attn_q_norm", "attn_k_norm", "ffn_norm",
             "ffn_gate", "ffn_up", "ffn_down"]


def _fields(path: Path) -> tuple[dict, dict]:
    reader = gguf.GGUFReader(path)
    meta = {name: field.contents() for name, field in reader.fields.items()}
    return meta, {t.name: t for t in reader.tensors}


@pytest.mark.parametrize("quantization", ["f32", "f16", "bf16", "q8_0", "q4_0"])
def test_names_shapes_and_types_follow_llama_cpp(trained_exports, quantization):
    meta, tensors = _fields(trained_exports[quantization])
    assert meta["general.architecture"] == "qwen3"
    expected = {"token_embd.weight", "output_norm.weight"} | {
        f"blk.{i}.{part}.weight" for i in range(2) for part in PER_LAYER}
    assert set(tensors) == expected  # tied: no output.weight, llama.cpp reuses token_embd
    assert list(tensors["token_embd.weight"].shape) == [128, 256]  # GGUF dims: [in, out]
    assert list(tensors["blk.0.attn_q.weight"].shape) == [128, 128]
    assert list(tensors["blk.0.attn_k.weight"].shape) == [128, 64]
    assert list(tensors["blk.1.ffn_down.weight"].shape) == [256, 128]
    assert list(tensors["blk.0.attn_q_norm.weight"].shape) == [32]
    wanted = {"f32": Q.F32, "f16": Q.F16, "bf16": Q.BF16, "q8_0": Q.Q8_0, "q4_0": Q.Q4_0}[quantization]
    for name, tensor in tensors.items():
        if name.endswith("norm.weight"):
            assert tensor.tensor_type == Q.F32, name
        elif name == "token_embd.weight" and quantization == "q4_0":
            assert tensor.tensor_type == Q.Q8_0  # the tied output projection: llama-quantize's Q6_K, we write Q8_0
        else:
            assert tensor.tensor_type == wanted, name
    file_types = {"f32": 0, "f16": 1, "bf16": 32, "q8_0": 7, "q4_0": 2}
    assert meta["general.file_type"] == file_types[quantization]


def test_hyperparameters_and_general_metadata(trained, trained_exports):
    meta, _ = _fields(trained_exports["f16"])
    config = json.loads((trained[0] / "config.json").read_text())
    assert meta["qwen3.block_count"] == config["num_hidden_layers"]
    assert meta["qwen3.context_length"] == config["max_position_embeddings"]
    assert meta["qwen3.embedding_length"] == config["hidden_size"]
    assert meta["qwen3.feed_forward_length"] == config["intermediate_size"]
    assert meta["qwen3.attention.head_count"] == config["num_attention_heads"]
    assert meta["qwen3.attention.head_count_kv"] == config["num_key_value_heads"]
    assert meta["qwen3.attention.key_length"] == meta["qwen3.attention.value_length"] == config["head_dim"]
    assert meta["qwen3.attention.layer_norm_rms_epsilon"] == pytest.approx(config["rms_norm_eps"])
    assert meta["qwen3.rope.freq_base"] == config["rope_theta"]
    assert "qwen3.rope.scaling.type" not in meta
    assert meta["general.name"] == "bigram-lm"
    assert meta["general.quantization_version"] == gguf.GGML_QUANT_VERSION
    assert meta["qwick.version"]
    assert meta["qwick.source.sha256"] == source_hash(trained[0], None)


def test_yarn_untied_and_odd_shapes(tmp_path):
    """YaRN keys; an untied output; head_dim 18 (o_proj rows of 54) is no Q8_0 block multiple: F16 fallback."""
    yarn = write_tiny_checkpoint(tmp_path / "yarn", "gqa4_yarn", vocab_size=512, with_tokenizer=False)
    meta, _ = _fields(export_gguf(yarn, tmp_path / "yarn.gguf", "f32", with_tokenizer=False).path)
    assert meta["qwen3.rope.scaling.type"] == "yarn"
    assert meta["qwen3.rope.scaling.factor"] == 4.0
    assert meta["qwen3.rope.scaling.original_context_length"] == 64
    assert meta["qwen3.context_length"] == 256
    untied = write_tiny_checkpoint(tmp_path / "untied", "untied_mha_odd", vocab_size=512, with_tokenizer=False,
                                   hidden_size=64)
    _, tensors = _fields(export_gguf(untied, tmp_path / "untied.gguf", "q8_0", with_tokenizer=False).path)
    assert tensors["output.weight"].tensor_type == Q.Q8_0
    assert tensors["blk.0.attn_output.weight"].tensor_type == Q.F16  # 54 columns: not a multiple of 32
    assert tensors["blk.0.attn_q.weight"].tensor_type == Q.Q8_0  # 64 columns


def test_config_read_back_equals_the_source_config(tmp_path):
    from qwick.model.loader import load_config

    for name in ("gqa4_yarn", "untied_mha_odd"):
        folder = write_tiny_checkpoint(tmp_path / name, name, vocab_size=512, with_tokenizer=False)
        path = export_gguf(folder, tmp_path / f"{name}.gguf", "f16", with_tokenizer=False).path
        source, read = load_config(folder), open_gguf(path).config
        assert read == type(source)(**{**source.__dict__, "torch_dtype": read.torch_dtype,
                                       "eos_token_id": read.eos_token_id})
