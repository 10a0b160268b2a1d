"""The LoRA pass: wrap each decoder projection so it adds per-request low-rank deltas to its base output.

y = base(x) + scale_i * (x A_iᵀ) B_iᵀ for the tokens of adapter i. Every adapter slot's A and B live stacked in
one matrix per projection (slot s = rank columns [s * r, (s + 1) * r), zero-padded to `max_lora_rank`, the
scale folded into B), so a batch mixing adapters is two matmuls plus a 0/1 mask whatever the mix: the first
matmul computes every used slot's columns for every token (wasted FLOPs, but few, larger calls).
Why (`benchmarks/lora.py --parts kernels`, 0.6B shapes, 4 adapters, r=16, on the busy 2-core dev box so only
roughly): in bf16 the LoRA overhead over the oneDNN-packed projection was about half that of grouping rows by
adapter (index_select + index_add_) at 32 and 512 tokens, and 4-40x below a per-row gathered bmm; in fp32
grouping was slightly cheaper (5-9% vs 10-15%), but bf16 is the CPU default. The base module is left as it
is: oneDNN-packed, int8 or int4 all work.
"""

from __future__ import annotations

import torch
from torch import nn

from qwick.lora.batch import LoRAContext

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class LoRALinear(nn.Module):
    """`base` ([..., in] -> [..., out], any implementation) plus the active batch's LoRA deltas."""

    def __init__(self, base: nn.Module, context: LoRAContext, max_loras: int, max_rank: int,
                 dtype: torch.dtype, device: torch.device) -> None:
        super().__init__()
        self.base = base
        self.context = context
        self.in_features: int = base.in_features
        self.out_features: int = base.out_features
        self.max_rank = max_rank
        self.register_buffer("lora_a", torch.zeros(max_loras * max_rank, self.in_features, dtype=dtype,
                                                   device=device))  # [slots * r, in]
        self.register_buffer("lora_b", torch.zeros(self.out_features, max_loras * max_rank, dtype=dtype,
                                                   device=device))  # [out, slots * r], scale folded in

    def set_slot(self, slot: int, a: torch.Tensor | None, b: torch.Tensor | None) -> None:
        """Load one adapter's A [r, in] and scaled B [out, r] into `slot` (None, None: this adapter leaves the
        projection alone); zeros pad the rank up to max_rank."""
        cols = slice(slot * self.max_rank, (slot + 1) * self.max_rank)
        self.lora_a[cols].zero_()
        self.lora_b[:, cols].zero_()
        if a is not None and b is not None:
            rank = a.shape[0]
            self.lora_a[cols.start : cols.start + rank].copy_(a)
            self.lora_b[:, cols.start : cols.start + rank].copy_(b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        batch = self.context.batch
        if batch is None:  # base-only batch: one attribute check, nothing else
            return y
        x2d = x.reshape(-1, self.in_features)  # [tokens, in]
        xa = x2d @ self.lora_a[batch.cols].T  # [tokens, cols]
        if batch.mask is not None:
            xa.mul_(batch.mask)  # each token keeps its own slot's columns only
        y2d = y.view(-1, self.out_features)  # [tokens, out]
        y2d.addmm_(xa, self.lora_b[:, batch.cols].T)
        return y

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"slots={self.lora_a.shape[0] // self.max_rank}, max_rank={self.max_rank}")


def wrap_projections(layers: nn.Module, context: LoRAContext, max_loras: int, max_rank: int,
                     dtype: torch.dtype, device: torch.device) -> dict[str, LoRALinear]:
    """Wrap every q/k/v/o/gate/up/down projection under `layers` (the decoder stack, `model.layers`);
    returns them by their checkpoint name (`model.layers.0.self_attn.q_proj`)."""
    wrapped: dict[str, LoRALinear] = {}
    for parent_name, parent in list(layers.named_modules(prefix="model.layers")):
        for name in PROJECTIONS:
            base = getattr(parent, name, None)
            if base is None or isinstance(base, LoRALinear):
                continue
            if not hasattr(base, "in_features") or not hasattr(base, "out_features"):
                raise TypeError(f"cannot add LoRA to {parent_name}.{name}: {type(base).__name__} does not say its "
                                "in_features/out_features")
            module = LoRALinear(base, context, max_loras, max_rank, dtype, device)
            setattr(parent, name, module)
            wrapped[f"{parent_name}.{name}"] = module
    return wrapped
