"""quantize_model swaps the decoder projections and lm_head; bad methods and group sizes fail before any change."""

from __future__ import annotations

import pytest
import torch
from trained import Loader

from qwick import LLM, SamplingParams
from qwick.model.layers import Linear
from qwick.passes.cpu_packing import pack_linears_for_cpu
from qwick.passes.quantize import quantize_model
from qwick.quant import Int4Linear, Int8Embedding, Int8Linear

from checkpoints import write_tiny_checkpoint


@pytest.mark.parametrize(("method", "cls"), [("int8", Int8Linear), ("int4", Int4Linear)])
def test_decoder_projections_and_lm_head_are_quantized(tiny_float_model: Loader, method: str, cls: type) -> None:
    model = tiny_float_model("tied_gqa2")
    assert quantize_model(model, method, group_size=32) == 14  # 2 layers x q/k/v/o/gate/up/down
    layer = model.model.layers[0]
    assert isinstance(layer.self_attn.q_proj, cls) and isinstance(layer.mlp.down_proj, cls)
    assert not any(isinstance(m, Linear) for m in model.modules())
    assert isinstance(model.lm_head, Int8Linear)  # int8 in both modes
    assert pack_linears_for_cpu(model) == 0  # packing leaves quantized modules alone


def test_tied_embedding_is_read_from_the_int8_lm_head(tiny_float_model: Loader) -> None:
    reference, model = tiny_float_model("tied_gqa2"), tiny_float_model("tied_gqa2")
    quantize_model(model, "int8")
    assert isinstance(model.model.embed_tokens, Int8Embedding)
    assert not any(p.numel() == 1000 * 64 for p in model.parameters())  # no float copy of the matrix is left
    ids = torch.tensor([[0, 5, 999]])
    expected = reference.model.embed_tokens(ids)
    torch.testing.assert_close(model.model.embed_tokens(ids), expected, atol=expected.abs().max().item() / 254,
                               rtol=0)


def test_untied_embedding_stays_float(tiny_float_model: Loader) -> None:
    model = tiny_float_model("untied_mha_odd")
    quantize_model(model, "int8")
    assert isinstance(model.lm_head, Int8Linear) and isinstance(model.model.embed_tokens, torch.nn.Embedding)


def test_lm_head_can_stay_float(tiny_float_model: Loader) -> None:
    model = tiny_float_model("tied_gqa2")
    quantize_model(model, "int4", group_size=32, lm_head=False)
    assert isinstance(model.lm_head, Linear) and model.lm_head.weight is model.model.embed_tokens.weight


def test_unknown_method_is_refused(tiny_float_model: Loader) -> None:
    with pytest.raises(ValueError, match="'int8' or 'int4'"):
        quantize_model(tiny_float_model("tied_gqa2"), "fp8")


def test_unsupported_group_size_is_refused(tiny_float_model: Loader) -> None:
    with pytest.raises(ValueError, match=r"group_size must be one of \(32, 64, 128\)"):
        quantize_model(tiny_float_model("tied_gqa2"), "int4", group_size=16)


def test_group_size_not_dividing_a_layer_fails_without_touching_the_model(tiny_float_model: Loader) -> None:
    model = tiny_float_model("tied_gqa2")  # hidden 64: in_features 64 and 128
    with pytest.raises(ValueError, match=r"does not divide the in_features \[64\].*group_size in \[32, 64\]"):
        quantize_model(model, "int4", group_size=128)
    assert not any(isinstance(m, Int4Linear | Int8Linear) for m in model.modules())


def test_int4_suggests_int8_when_no_group_size_fits(tiny_float_model: Loader) -> None:
    with pytest.raises(ValueError, match="use int8"):  # hidden 48, o_proj in_features 54
        quantize_model(tiny_float_model("untied_mha_odd"), "int4", group_size=32)


def test_llm_refuses_an_unknown_quantization(tiny_model_dir) -> None:
    with pytest.raises(ValueError, match="quantization must be None, 'int8' or 'int4'"):
        LLM(tiny_model_dir, quantization="q4_0")


def test_llm_refuses_a_bad_group_size_before_loading(tiny_model_dir) -> None:
    with pytest.raises(ValueError, match="group_size must be one of"):
        LLM(tiny_model_dir, quantization="int4", quantization_group_size=100)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_llm_generates_with_int8(tiny_model_dir, dtype: str) -> None:
    llm = LLM(tiny_model_dir, quantization="int8", dtype=dtype, max_model_len=128)
    assert isinstance(llm.model.model.layers[0].mlp.up_proj, Int8Linear)
    out = llm.generate("Hello", SamplingParams(temperature=0, max_tokens=8, ignore_eos=True))[0].outputs[0]
    assert len(out.token_ids) == 8 and torch.tensor(out.token_ids).lt(llm.model.config.vocab_size).all()


def test_llm_generates_with_int4(tmp_path) -> None:
    # default group size 128 needs in_features that are multiples of 128, like every real Qwen3
    folder = write_tiny_checkpoint(tmp_path / "wide", "tied_gqa2", hidden_size=128, intermediate_size=256)
    llm = LLM(folder, quantization="int4", dtype="bfloat16", max_model_len=128)
    assert isinstance(llm.model.model.layers[1].self_attn.o_proj, Int4Linear)
    out = llm.generate("Hello", SamplingParams(temperature=0, max_tokens=8, ignore_eos=True))[0].outputs[0]
    assert len(out.token_ids) == 8


def test_threads_must_be_positive(tiny_model_dir) -> None:
    with pytest.raises(ValueError, match="threads must be >= 1"):
        LLM(tiny_model_dir, threads=0)
