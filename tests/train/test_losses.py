"""The losses read logits only where a token is learned; the top-k KL is a proper divergence."""

from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.nn.functional as F

from qwick.train.losses import cross_entropy_sum, learned_logits, topk_kl_sum
from qwick.train.render import IGNORE


class Identity:
    """Stands in for a causal LM whose hidden states are the logits themselves."""

    def __init__(self, logits: torch.Tensor) -> None:
        self.model = lambda input_ids, attention_mask: SimpleNamespace(last_hidden_state=logits)
        self.lm_head = lambda hidden: hidden


def batch(labels: list[list[int]]) -> dict[str, torch.Tensor]:
    labels_t = torch.tensor(labels)
    return {"input_ids": labels_t.clamp(min=0), "attention_mask": torch.ones_like(labels_t), "labels": labels_t}


def test_logits_are_taken_one_position_before_each_learned_token():
    logits = torch.randn(2, 4, 10)  # [B, T, vocab]
    inputs = batch([[1, IGNORE, 3, 4], [5, 6, IGNORE, IGNORE]])
    rows, targets = learned_logits(Identity(logits), inputs)
    assert torch.equal(targets, torch.tensor([3, 4, 6]))
    assert torch.equal(rows, torch.stack([logits[0, 1], logits[0, 2], logits[1, 0]]))


def test_cross_entropy_sum_matches_torch_on_the_learned_tokens():
    logits = torch.randn(1, 4, 10)
    total, count = cross_entropy_sum(Identity(logits), batch([[1, 2, IGNORE, 4]]))
    expected = F.cross_entropy(logits[0, [0, 2]], torch.tensor([2, 4]), reduction="sum")
    assert count == 2
    torch.testing.assert_close(total, expected)


def test_topk_kl_is_zero_for_a_student_equal_to_the_teacher_and_positive_otherwise():
    teacher = torch.randn(1, 3, 10)
    inputs = batch([[1, 2, 3]])
    values, indices = teacher[0, :2].topk(10)  # k = vocab: the full distribution
    inputs |= {"teacher_values": values, "teacher_indices": indices}
    same, count = topk_kl_sum(Identity(teacher), inputs, temperature=2.0)
    assert count == 2
    assert abs(same.item()) < 1e-5
    other, _ = topk_kl_sum(Identity(torch.randn(1, 3, 10)), inputs, temperature=2.0)
    assert other.item() > 0


def test_topk_kl_renormalises_the_teacher_and_scales_by_t_squared():
    teacher, student = torch.randn(1, 2, 10), torch.randn(1, 2, 10)
    values, indices = teacher[0, :1].topk(3)
    inputs = batch([[1, 2]]) | {"teacher_values": values, "teacher_indices": indices}
    kl, _ = topk_kl_sum(Identity(student), inputs, temperature=2.0)
    p = F.softmax(values / 2, -1)
    log_q = F.log_softmax(student[0, 0] / 2, -1)[indices[0]]
    torch.testing.assert_close(kl, 4 * (p * (p.log() - log_q)).sum())
