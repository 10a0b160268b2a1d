"""How far a quantized model's logits are from its float reference: mean KL and greedy-token agreement.

The reference greedily continues each prompt; the candidate is teacher-forced on the same tokens, so agreement
is counted per position and one early miss does not derail the rest. `margin` reports how decisive the
reference was (median top-1 minus top-2 logit): agreement means little where that is near zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from qwick.model.qwen3 import Qwen3ForCausalLM


@dataclass(frozen=True)
class Agreement:
    kl: float  # mean KL(reference || candidate) per position, nats
    agreement: float  # fraction of positions whose argmax matches
    margin: float  # median top-1 minus top-2 logit of the reference
    positions: int

    def __str__(self) -> str:
        return (f"mean KL {self.kl:.2e} nats, greedy agreement {self.agreement:.2%} over {self.positions} positions "
                f"(reference median top-2 margin {self.margin:.2f})")


def logits(model: Qwen3ForCausalLM, ids: torch.Tensor) -> torch.Tensor:
    # ids [B, T] -> float32 logits [B, T, vocab], no KV cache (causal attention over the whole row)
    positions = torch.arange(ids.shape[1], device=ids.device).expand_as(ids)
    return model.compute_logits(model(ids, positions)).float()


@torch.no_grad()
def greedy_continuation(model: Qwen3ForCausalLM, prompts: torch.Tensor, steps: int) -> torch.Tensor:
    ids = prompts
    for _ in range(steps):
        ids = torch.cat([ids, logits(model, ids)[:, -1].argmax(-1, keepdim=True)], dim=1)
    return ids  # [B, prompt + steps]


@torch.no_grad()
def compare(reference: Qwen3ForCausalLM, candidate: Qwen3ForCausalLM, prompts: torch.Tensor,
            steps: int) -> Agreement:
    """prompts [B, P] token ids; scores the `steps` generated positions of each row."""
    ids = greedy_continuation(reference, prompts, steps)
    scored = slice(prompts.shape[1] - 1, -1)  # the positions whose next token was generated
    ref = F.log_softmax(logits(reference, ids)[:, scored], dim=-1)  # [B, steps, vocab]
    cand = F.log_softmax(logits(candidate, ids)[:, scored], dim=-1)
    kl = F.kl_div(cand, ref, log_target=True, reduction="none").sum(-1).mean().item()
    top2 = ref.topk(2, dim=-1).values  # log-softmax differences equal logit differences
    return Agreement(kl, (cand.argmax(-1) == ref.argmax(-1)).float().mean().item(),
                     (top2[..., 0] - top2[..., 1]).median().item(), ref.shape[0] * ref.shape[1])
