"""Training losses that project to the vocabulary only where a token is learned.

A chat's prompt is usually most of its tokens, and the 151,936-wide lm_head is the largest matmul of a small
Qwen3 (a quarter of 0.6B's FLOPs). transformers' own loss computes logits for every position; these run the
backbone, keep the hidden states whose next token is learned, and apply lm_head to those rows alone.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from qwick.train.render import IGNORE


def learned_logits(model: Any, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Float32 logits [N, vocab] at the N positions whose next token is learned, and those tokens [N]."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft: LoRA lives inside
    hidden = base.model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).last_hidden_state
    targets = inputs["labels"][:, 1:]  # [B, T-1]: position t predicts token t+1
    keep = targets != IGNORE
    logits = base.lm_head(hidden[:, :-1][keep])  # [N, hidden] -> [N, vocab]
    return logits.float(), targets[keep]


def cross_entropy_sum(model: Any, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Summed next-token cross-entropy over the learned tokens, and their count."""
    logits, targets = learned_logits(model, inputs)
    return F.cross_entropy(logits, targets, reduction="sum"), targets.numel()


def topk_kl_sum(model: Any, inputs: dict[str, torch.Tensor], temperature: float) -> tuple[torch.Tensor, int]:
    """Summed KL(teacher || student) on the teacher's top-k tokens, scaled by T^2 (Hinton et al.).

    The teacher's top-k logits are renormalised into p; the student's full-vocabulary log-probs q are read at
    the same k ids. Sum p (log p - log q) is >= 0 and 0 only when the student puts p's mass on those ids.
    """
    logits, _ = learned_logits(model, inputs)
    indices, values = inputs["teacher_indices"], inputs["teacher_values"]  # [N, k] each
    log_q = F.log_softmax(logits / temperature, dim=-1).gather(-1, indices)  # [N, k]
    log_p = F.log_softmax(values.float() / temperature, dim=-1)  # [N, k]
    kl = (log_p.exp() * (log_p - log_q)).sum(-1) * temperature**2  # [N]
    return kl.sum(), kl.numel()
