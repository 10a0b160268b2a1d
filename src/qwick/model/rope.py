"""Rotary position embeddings (NeoX "rotate_half" style), default and YaRN, as in transformers' Qwen3."""

from __future__ import annotations

import math

import torch

from qwick.model.config import RopeConfig


def inverse_frequencies(rope: RopeConfig, head_dim: int) -> tuple[torch.Tensor, float]:
    """Return (inv_freq [head_dim // 2] float32, attention factor applied to cos/sin)."""
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64).to(torch.float32) / head_dim
    pos_freqs = rope.theta**exponents
    if rope.rope_type == "default":
        return 1.0 / pos_freqs, 1.0
    return _yarn(rope, head_dim, pos_freqs)


def _yarn(rope: RopeConfig, head_dim: int, pos_freqs: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Static YaRN: interpolate low frequencies by `factor`, keep high ones, blend linearly between."""
    factor = rope.factor
    original = rope.original_max_position_embeddings
    assert original is not None
    attention_factor = rope.attention_factor
    if attention_factor is None:
        attention_factor = 1.0 if factor <= 1 else 0.1 * math.log(factor) + 1.0

    def correction_dim(num_rotations: float) -> float:
        return head_dim * math.log(original / (num_rotations * 2 * math.pi)) / (2 * math.log(rope.theta))

    low, high = correction_dim(rope.beta_fast), correction_dim(rope.beta_slow)
    if rope.truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, head_dim - 1)
    if low == high:
        high += 0.001  # avoid a zero-width ramp
    ramp = ((torch.arange(head_dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    extrapolation_weight = 1 - ramp
    inv_freq = (1.0 / (factor * pos_freqs)) * (1 - extrapolation_weight) + (1.0 / pos_freqs) * extrapolation_weight
    return inv_freq, float(attention_factor)


class RotaryEmbedding(torch.nn.Module):
    """Computes cos/sin for given positions in float32 (like the reference), then casts to the activation dtype."""

    def __init__(self, rope: RopeConfig, head_dim: int) -> None:
        super().__init__()
        self.rope, self.head_dim = rope, head_dim
        inv_freq, self.attention_factor = inverse_frequencies(rope, head_dim)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def reset(self) -> None:
        """Recompute inv_freq in float32 after materialising from meta or a model-wide dtype cast.

        A bfloat16 inv_freq shifts every angle by up to position * 2^-9 rad: long contexts would decay.
        """
        self.inv_freq = inverse_frequencies(self.rope, self.head_dim)[0].to(self.inv_freq.device)

    @torch.no_grad()
    def forward(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        # positions [B, T] -> cos, sin [B, 1, T, head_dim]
        freqs = positions[..., None].float() * self.inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)
        cos = (emb.cos() * self.attention_factor).to(dtype).unsqueeze(1)
        sin = (emb.sin() * self.attention_factor).to(dtype).unsqueeze(1)
        return cos, sin


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, heads, T, D]; pairs dimension j with j + D/2 (not interleaved)."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin
