"""The oneDNN weight-packing pass changes speed, not results."""

from __future__ import annotations

import pytest
import torch

from model.conftest import load_qwick
from qwick.kernels.cpu_ops import bf16_ops_available
from qwick.model.layers import Linear
from qwick.passes.cpu_packing import cpu_packing_supported, dense_state_dict, pack_linears_for_cpu

pytestmark = pytest.mark.skipif(not cpu_packing_supported(torch.bfloat16, torch.device("cpu")),
                                reason="this CPU/torch build has no oneDNN bf16 linear")


@pytest.mark.parametrize("name", ["tied_gqa2", "untied_mha_odd"])
def test_packed_model_gives_the_same_logits(tiny_checkpoint, name):
    plain = load_qwick(tiny_checkpoint(name), torch.bfloat16)
    packed = load_qwick(tiny_checkpoint(name), torch.bfloat16)
    assert pack_linears_for_cpu(packed) == 7 * packed.config.num_hidden_layers + 1  # and lm_head
    assert not packed.model.embed_tokens.weight.is_mkldnn
    # oneDNN's layout, or linear_bf16's on AVX512-BF16 CPUs without AMX where the shape allows
    assert all(m.weight.is_mkldnn or m.vnni for m in packed.modules() if isinstance(m, Linear))
    ids = torch.randint(0, 1000, (1, 24))
    positions = torch.arange(24)[None]
    with torch.inference_mode():
        for tokens, pos in ((ids, positions), (ids[:, -1:], positions[:, -1:])):  # prefill rows and a 1-row step
            expected = plain.compute_logits(plain(tokens, pos))
            got = packed.compute_logits(packed(tokens, pos))
            assert (got - expected).abs().max() <= 0.0625  # at most one bf16 step at |logit| < 8


def test_dense_state_dict_round_trips_the_weights(tiny_checkpoint):
    plain = load_qwick(tiny_checkpoint("tied_gqa2"), torch.bfloat16)
    packed = load_qwick(tiny_checkpoint("tied_gqa2"), torch.bfloat16)
    pack_linears_for_cpu(packed)
    dense = dense_state_dict(packed)
    for key, value in plain.state_dict().items():
        assert torch.equal(dense[key], value), key


def test_tied_lm_head_gets_its_own_packed_copy(tiny_checkpoint):
    model = load_qwick(tiny_checkpoint("tied_gqa2"), torch.bfloat16)
    embedding = model.model.embed_tokens.weight.detach().clone()
    pack_linears_for_cpu(model)
    assert model.lm_head.weight is not model.model.embed_tokens.weight  # the embedding keeps its dense rows
    assert torch.equal(model.model.embed_tokens.weight, embedding)
    assert torch.equal(model.lm_head.weight.to_dense(), embedding)


@pytest.mark.parametrize(("amx", "bf16_ops"), [(True, True), (False, False), (False, True)])
def test_the_layout_follows_the_cpu(tiny_checkpoint, monkeypatch, amx, bf16_ops):
    from qwick.passes import cpu_packing

    if bf16_ops and not bf16_ops_available():
        pytest.skip("linear_bf16 needs AVX512-BF16 and a C++ compiler")
    monkeypatch.setattr(cpu_packing, "cpu_has_flags", lambda flags: amx and flags == ("amx_bf16",))
    monkeypatch.setattr(cpu_packing, "bf16_ops_available", lambda: bf16_ops)
    model = load_qwick(tiny_checkpoint("tied_gqa2"), torch.bfloat16)
    pack_linears_for_cpu(model)
    layer_linears = [m for m in model.model.layers.modules() if isinstance(m, Linear)]
    # AMX: oneDNN, rows padded (a heuristic for its AMX kernel); else linear_bf16 where it runs, oneDNN otherwise
    assert all(m.vnni == (bf16_ops and not amx) for m in layer_linears)
    assert all(m.weight.is_mkldnn != m.vnni for m in layer_linears)
    assert all(m.pad_rows == amx for m in layer_linears)
    assert not model.lm_head.pad_rows  # the heuristic was measured on the layers' shapes only
    assert not model.lm_head.vnni  # this vocabulary (1000) is no multiple of 16: oneDNN's layout


@pytest.mark.parametrize(("rows", "padded"), [(1, False), (20, False), (32, False), (33, True), (41, True),
                                              (57, True), (63, True), (64, False), (70, False)])
@pytest.mark.parametrize("pad_rows", [True, False])
def test_packed_linear_rows_padded_or_not_equal_the_plain_linear(rows, padded, pad_rows, monkeypatch):
    from qwick.model.layers import Linear
    from qwick.passes import cpu_packing

    pads = []
    original = cpu_packing.F.pad
    monkeypatch.setattr(cpu_packing.F, "pad", lambda *a, **k: pads.append(1) or original(*a, **k))

    torch.manual_seed(rows)
    plain = Linear(96, 80, bias=False).to(torch.bfloat16)
    packed = cpu_packing.OneDnnLinear(plain, pad_rows)
    x = torch.randn(1, rows, 96, dtype=torch.bfloat16)  # [B, T, in], as the flat forward passes it
    with torch.inference_mode():
        got = packed(x)
        expected = torch.nn.functional.linear(x.float(), plain.weight.float())
    assert got.shape == (1, rows, 80)  # the padding rows never leave the layer
    assert (got.float() - expected).abs().max() <= 0.0625  # one bf16 step at |y| < 16
    assert bool(pads) == (padded and pad_rows)
