"""The oneDNN weight-packing pass changes speed, not results."""

from __future__ import annotations

import pytest
import torch

from model.conftest import load_qwick
from qwick.model.cpu_packing import cpu_packing_supported, dense_state_dict, pack_linears_for_cpu

pytestmark = pytest.mark.skipif(not cpu_packing_supported(torch.bfloat16, torch.device("cpu")),
                                reason="this CPU/torch build has no oneDNN bf16 linear")


@pytest.mark.parametrize("name", ["tied_gqa2", "untied_mha_odd"])
def test_packed_model_gives_the_same_logits(tiny_checkpoint, name):
    plain = load_qwick(tiny_checkpoint(name), torch.bfloat16)
    packed = load_qwick(tiny_checkpoint(name), torch.bfloat16)
    assert pack_linears_for_cpu(packed) == 7 * packed.config.num_hidden_layers
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


@pytest.mark.parametrize(("rows", "padded"), [(1, False), (20, False), (32, False), (33, True), (41, True),
                                              (57, True), (63, True), (64, False), (70, False)])
def test_packed_linear_rows_padded_or_not_equal_the_plain_linear(rows, padded, monkeypatch):
    from qwick.model import layers
    from qwick.model.layers import Linear

    pads = []
    original = layers.F.pad
    monkeypatch.setattr(layers.F, "pad", lambda *a, **k: pads.append(1) or original(*a, **k))

    torch.manual_seed(rows)
    plain = Linear(96, 80, bias=False).to(torch.bfloat16)
    packed = Linear(96, 80, bias=False).to(torch.bfloat16)
    packed.weight = torch.nn.Parameter(torch.ops.mkldnn._reorder_linear_weight(plain.weight.detach(), 1),
                                       requires_grad=False)
    x = torch.randn(1, rows, 96, dtype=torch.bfloat16)  # [B, T, in], as the packed forward passes it
    with torch.inference_mode():
        got = packed(x)
        expected = torch.nn.functional.linear(x.float(), plain.weight.float())
    assert got.shape == (1, rows, 80)  # the padding rows never leave the layer
    assert (got.float() - expected).abs().max() <= 0.0625  # one bf16 step at |y| < 16
    assert bool(pads) == padded
