"""`qwick quantize` checkpoints load back to exactly the online pass; FP8 releases load; mismatches fail clearly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from trained import BigramLanguage, load_float32

from qwick import LLM, SamplingParams
from qwick.cli import main
from qwick.model.loader import CheckpointError
from qwick.quant import Int4Linear, Int8Embedding, Int8Linear
from qwick.quant.accuracy import logits
from qwick.quant.checkpoint import save_quantized

IDS = torch.tensor([[3, 17, 200, 41, 9, 9, 120]])


def _llm(folder: Path, **kwargs) -> LLM:
    return LLM(folder, dtype="float32", skip_tokenizer_init=True, max_model_len=64, **kwargs)


@pytest.mark.parametrize(("method", "group_size"), [("int8", 128), ("int4", 64)])
def test_saved_checkpoint_equals_quantizing_at_load(trained_lm: tuple[Path, BigramLanguage], tmp_path: Path,
                                                    method: str, group_size: int) -> None:
    source, _ = trained_lm
    spec = save_quantized(source, tmp_path / method, method, group_size)
    assert json.loads((tmp_path / method / "config.json").read_text())["quantization_config"] == spec.to_config()
    with safe_open(str(tmp_path / method / "model.safetensors"), framework="pt") as handle:
        names = set(handle.keys())
    assert "model.embed_tokens.weight" not in names and "lm_head.weight_scale" in names  # tied: int8 rows only
    stored = _llm(tmp_path / method)  # quantization implied by the checkpoint
    online = _llm(source, quantization=method, quantization_group_size=group_size)
    cls = Int8Linear if method == "int8" else Int4Linear
    assert isinstance(stored.model.model.layers[0].mlp.gate_proj, cls)
    assert isinstance(stored.model.model.embed_tokens, Int8Embedding)
    torch.testing.assert_close(logits(stored.model, IDS), logits(online.model, IDS), atol=0, rtol=0)


def test_int4_checkpoint_is_about_a_quarter_of_float32(trained_lm, tmp_path: Path) -> None:
    source, _ = trained_lm
    save_quantized(source, tmp_path / "q", "int4", 128)
    ratio = (tmp_path / "q" / "model.safetensors").stat().st_size / (source / "model.safetensors").stat().st_size
    assert ratio < 0.25  # 0.5 byte/weight + 4 bytes per 128 in the layers; the 256 x 128 embedding is int8


def test_matching_quantization_argument_is_accepted(trained_lm, tmp_path: Path) -> None:
    save_quantized(trained_lm[0], tmp_path / "q", "int4", 64)
    assert _llm(tmp_path / "q", quantization="int4", quantization_group_size=64)


def test_quantization_argument_must_match_the_checkpoint(trained_lm, tmp_path: Path) -> None:
    save_quantized(trained_lm[0], tmp_path / "q", "int4", 64)
    with pytest.raises(ValueError, match="already quantized as int4; quantization='int8' does not match"):
        _llm(tmp_path / "q", quantization="int8")
    with pytest.raises(ValueError, match="group size 64, not 128"):
        _llm(tmp_path / "q", quantization="int4", quantization_group_size=128)


def test_group_size_in_config_must_match_the_tensors(trained_lm, tmp_path: Path) -> None:
    save_quantized(trained_lm[0], tmp_path / "q", "int4", 64)
    config_path = tmp_path / "q" / "config.json"
    config = json.loads(config_path.read_text())
    config["quantization_config"]["group_size"] = 128
    config_path.write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"weight_scale' has shape \(\d+, 2\), the config implies \(\d+, 1\)"):
        _llm(tmp_path / "q")


def test_missing_tensor_is_named(trained_lm, tmp_path: Path) -> None:
    save_quantized(trained_lm[0], tmp_path / "q", "int8")
    path = tmp_path / "q" / "model.safetensors"
    tensors = load_file(str(path))
    del tensors["model.layers.1.mlp.down_proj.weight_scale"]
    save_file(tensors, str(path))
    with pytest.raises(CheckpointError, match=r"missing tensor 'model\.layers\.1\.mlp\.down_proj\.weight_scale'"):
        _llm(tmp_path / "q")


def test_quantizing_a_quantized_checkpoint_is_refused(trained_lm, tmp_path: Path) -> None:
    save_quantized(trained_lm[0], tmp_path / "q", "int8")
    with pytest.raises(ValueError, match="already quantized by qwick"):
        save_quantized(tmp_path / "q", tmp_path / "qq", "int4")


def _write_fp8(source: Path, dest: Path, block: int = 64) -> None:
    """Qwen's FP8 release format: e4m3 projections with float32 scale_inv per block x block tile."""
    tensors = load_file(str(source / "model.safetensors"))
    for name in [n for n in tensors if n.endswith("_proj.weight")]:
        w = tensors[name]
        n, k = w.shape
        tiles = w.view(n // block, block, k // block, block)
        scale = tiles.abs().amax(dim=(1, 3)) / 448  # [n/b, k/b]
        tensors[name] = (tiles / scale[:, None, :, None]).view(n, k).to(torch.float8_e4m3fn)
        tensors[name + "_scale_inv"] = scale
    dest.mkdir()
    save_file(tensors, str(dest / "model.safetensors"))
    config = json.loads((source / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
                                     "weight_block_size": [block, block]}
    (dest / "config.json").write_text(json.dumps(config))


def test_fp8_checkpoint_loads_dequantized(trained_lm, tmp_path: Path) -> None:
    source, _ = trained_lm
    _write_fp8(source, tmp_path / "fp8")
    fp8, reference = _llm(tmp_path / "fp8"), load_float32(source)
    layer = fp8.model.model.layers[0].self_attn.q_proj.weight
    assert layer.dtype == torch.float32 and len(torch.unique(layer[:8, :64])) > 100  # dequantized, not codes
    result = logits(fp8.model, IDS).softmax(-1)
    torch.testing.assert_close(result, logits(reference, IDS).softmax(-1), atol=0.02, rtol=0)  # fp8's own error


def test_fp8_checkpoint_can_be_requantized(trained_lm, tmp_path: Path) -> None:
    _write_fp8(trained_lm[0], tmp_path / "fp8")
    llm = _llm(tmp_path / "fp8", quantization="int8")
    out = llm.generate({"prompt_token_ids": [1, 2, 3]}, SamplingParams(temperature=0, max_tokens=4, ignore_eos=True))
    assert len(out[0].outputs[0].token_ids) == 4
    save_quantized(tmp_path / "fp8", tmp_path / "q", "int4", 32)  # `qwick quantize` of an FP8 release
    assert isinstance(_llm(tmp_path / "q").model.model.layers[0].mlp.up_proj, Int4Linear)


def test_per_tensor_fp8_is_refused(trained_lm, tmp_path: Path) -> None:
    _write_fp8(trained_lm[0], tmp_path / "fp8")
    config_path = tmp_path / "fp8" / "config.json"
    config = json.loads(config_path.read_text())
    del config["quantization_config"]["weight_block_size"]
    config_path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match="per-tensor fp8 is not supported"):
        _llm(tmp_path / "fp8")


def test_quantize_command(trained_lm, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["quantize", str(trained_lm[0]), str(tmp_path / "q"), "--quantization", "int4",
                 "--group-size", "32"]) == 0
    assert "int4 group size 32, lm_head int8" in capsys.readouterr().err
    assert _llm(tmp_path / "q").model.model.layers[0].mlp.up_proj.group_size == 32


def test_quantize_command_refuses_a_non_empty_output(trained_lm, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "q").mkdir()
    (tmp_path / "q" / "x").write_text("")
    assert main(["quantize", str(trained_lm[0]), str(tmp_path / "q"), "--quantization", "int8"]) == 2
    assert "exists and is not empty" in capsys.readouterr().err


def test_backbone_without_lm_head_quantizes_and_embeds(tmp_path: Path) -> None:
    import transformers

    torch.manual_seed(0)
    config = transformers.Qwen3Config(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                                      tie_word_embeddings=False, architectures=["Qwen3Model"])
    transformers.Qwen3Model(config).save_pretrained(tmp_path / "backbone")  # ships no lm_head.weight
    save_quantized(tmp_path / "backbone", tmp_path / "q", "int8")
    stored, online = _llm(tmp_path / "q"), _llm(tmp_path / "backbone", quantization="int8")
    assert not stored.model.has_lm_head and not online.model.has_lm_head
    positions = torch.arange(IDS.shape[1])[None]
    with torch.no_grad():
        torch.testing.assert_close(stored.model(IDS % 256, positions), online.model(IDS % 256, positions), atol=0, rtol=0)
