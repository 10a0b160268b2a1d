"""Weight-only int8: per-output-channel symmetric int8 weights, activations stay in the model dtype."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from qwick.kernels.woq import resolve_kernel
from qwick.quant.layout import block_int8, gather_int8_rows

if TYPE_CHECKING:
    from qwick.model.qwen3 import Qwen3ForCausalLM


def quantize_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[N, K] float -> (int8 [N, K] in -127..127, float32 scales [N]) with weight ≈ q * scale[:, None]."""
    w32 = weight.float()
    scales = w32.abs().amax(dim=1).clamp(min=1e-12) / 127  # [N]; -128 unused so the grid is symmetric
    q = torch.round(w32 / scales[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scales


def dense_weight(linear: nn.Linear) -> torch.Tensor:
    weight = linear.weight.detach()
    return weight.to_dense() if weight.is_mkldnn else weight


class Int8Linear(nn.Module):
    """Drop-in for a bias-free Linear holding int8 weights q [N, K] and float32 scales [N].

    kernel "qwick": qwick's AVX-512 op on the blocked layout; "torch": `_weight_int8pack_mm` on CPU (scales in
    the activation dtype, as it requires), an int8 -> dtype matmul elsewhere. `out_dtype` fixes the output dtype
    (float32 for lm_head: the logits are wanted in float32 anyway). Deliberately not a
    `qwick.model.layers.Linear`, so `pack_linears_for_cpu` leaves it alone.
    """

    def __init__(self, q: torch.Tensor, scales: torch.Tensor, dtype: torch.dtype, kernel: str = "auto",
                 out_dtype: torch.dtype | None = None, *, device: torch.device | None = None) -> None:
        # device: where it will run (default q's); the checkpoint loader builds empty ones on meta for it
        super().__init__()
        self.out_features, self.in_features = q.shape
        self.kernel = resolve_kernel(kernel, device or q.device)
        self.dtype = dtype
        self.out_dtype = out_dtype
        for name, tensor in self.layout_buffers(q, scales).items():
            self.register_buffer(name, tensor)

    def layout_buffers(self, q: torch.Tensor, scales: torch.Tensor) -> dict[str, torch.Tensor]:
        """This module's buffers holding q [N, K] and scales [N] in its kernel's layout."""
        if self.kernel == "qwick":
            return {"weight_packed": block_int8(q),  # [ceil(N/4), ceil(K/32), 4, 32]
                    "scale": scales.float()}  # [N]
        return {"weight_int8": q.contiguous(),  # [N, K]
                "scale": scales.to(self.dtype)}  # [N], the activation dtype

    @classmethod
    def from_linear(cls, linear: nn.Linear, kernel: str = "auto", out_dtype: torch.dtype | None = None) -> Int8Linear:
        if linear.bias is not None:
            raise ValueError("Int8Linear supports bias-free Linear layers only (Qwen3 has no projection biases)")
        weight = dense_weight(linear)
        q, scales = quantize_int8(weight)
        return cls(q, scales, weight.dtype, kernel, out_dtype)

    def int8_rows(self, ids: torch.Tensor) -> torch.Tensor:
        # int8 [*ids.shape, K]: the rows an embedding lookup needs
        if self.kernel == "qwick":
            return gather_int8_rows(self.weight_packed, ids, self.in_features)
        return self.weight_int8[ids]

    def dequantize(self) -> torch.Tensor:
        # [N, K] float32
        ids = torch.arange(self.out_features, device=self.scale.device)
        return self.int8_rows(ids).float() * self.scale.float()[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x2d = x.reshape(-1, self.in_features)  # [M, K]
        if self.kernel == "qwick":
            out = torch.ops.qwick.int8_linear(x2d, self.weight_packed, self.scale, self.out_dtype)
        elif x2d.device.type == "cpu":
            out = torch.ops.aten._weight_int8pack_mm(x2d.to(self.scale.dtype), self.weight_int8, self.scale)
        else:  # no fused kernel: int8 -> activation dtype is exact, scale the [M, N] output (cheaper than [N, K])
            out = F.linear(x2d, self.weight_int8.to(x2d.dtype)) * self.scale.to(x2d.dtype)
        return out.to(self.out_dtype or x.dtype).view(*x.shape[:-1], self.out_features)  # [..., N]

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, int8 per-channel, "
                f"kernel={self.kernel}")


class Int8Embedding(nn.Module):
    """Embedding lookup served from an Int8Linear's rows: a tied lm_head quantized once serves both roles,
    so the model holds no float copy of the 151936 x hidden matrix (311 MB for Qwen3-0.6B in bf16)."""

    def __init__(self, head: Int8Linear, dtype: torch.dtype) -> None:
        super().__init__()
        self.dtype = dtype
        self.num_embeddings, self.embedding_dim = head.out_features, head.in_features
        self._head = [head]  # a list: not a submodule, so the tensors are not registered twice

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        head = self._head[0]
        rows = head.int8_rows(ids).to(self.dtype)  # [*ids.shape, K]
        return rows * head.scale[ids].to(self.dtype).unsqueeze(-1)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, int8 rows of the tied lm_head"


def attach_lm_head(model: Qwen3ForCausalLM, head: Int8Linear, dtype: torch.dtype) -> None:
    """Install an int8 lm_head; with tied embeddings the embedding lookup is served from its rows."""
    model.lm_head = head
    if model.config.tie_word_embeddings:
        model.model.embed_tokens = Int8Embedding(head, dtype)
