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
