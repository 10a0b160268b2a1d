"""MaskBuilder.collect: llguidance's packed bitmask becomes each row's allowed-token mask, exactly."""

from concurrent.futures import Future
from types import SimpleNamespace

import torch

from qwick.engine.constrained import MaskBuilder, PendingMasks

V = 1000  # not a multiple of 32: the last word is partial


def _row(accepting: bool, stop_ids: frozenset[int]) -> SimpleNamespace:
    matcher = SimpleNamespace(is_accepting=lambda: accepting)
    return SimpleNamespace(constraint=SimpleNamespace(matcher=matcher), stop_ids=stop_ids, thinking=None)


def test_bits_map_to_tokens_and_stop_ids_follow_the_grammar():
    builder = MaskBuilder(V, llg_eos_id=999, device=torch.device("cpu"))
    allowed_sets = [{0, 5, 31, 32, 33, 255, 256, 640, 998, 999}, {7, 8, 900}]
    words = (V + 31) // 32
    bitmask = torch.zeros(2, words, dtype=torch.int64)
    for r, tokens in enumerate(allowed_sets):
        for t in tokens:
            bitmask[r, t // 32] |= 1 << (t % 32)
    bitmask = bitmask.to(torch.int32)  # wraps bit 31 to the sign bit, as llguidance writes it
    done: Future[None] = Future()
    done.set_result(None)
    rows = [_row(accepting=True, stop_ids=frozenset({3, 4})), _row(accepting=False, stop_ids=frozenset({3}))]
    masks = builder.collect(PendingMasks(rows, bitmask, done))  # type: ignore[arg-type]
    got = [set(masks[id(row)].nonzero().flatten().tolist()) for row in rows]
    # llguidance's EOS (999) is never allowed; an accepting grammar allows the sequence's own stop ids
    assert got[0] == (allowed_sets[0] - {999}) | {3, 4}
    assert got[1] == allowed_sets[1]
    assert masks[id(rows[0])].shape == (V,) and masks[id(rows[0])].dtype == torch.bool
    builder.close()
