"""Qwen3 architecture hyper-parameters, read from a Hugging Face `config.json`."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SUPPORTED_ARCHITECTURES = ("Qwen3ForCausalLM", "Qwen3Model")


class UnsupportedModelError(ValueError):
    """The checkpoint is not a Qwen3 dense model."""


@dataclass(frozen=True)
class RopeConfig:
    theta: float
    rope_type: str = "default"  # "default" or "yarn"
    factor: float = 1.0
    original_max_position_embeddings: int | None = None
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    attention_factor: float | None = None
    truncate: bool = True


@dataclass(frozen=True)
class Qwen3Config:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float
    max_position_embeddings: int
    tie_word_embeddings: bool
    rope: RopeConfig
    architecture: str = "Qwen3ForCausalLM"
    torch_dtype: str | None = None
    eos_token_id: int | list[int] | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def kv_bytes_per_token(self) -> int:
        """KV cache bytes per token at 2 bytes per value (bfloat16/float16)."""
        return self.num_hidden_layers * 2 * self.num_key_value_heads * self.head_dim * 2

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "config.json") -> Qwen3Config:
        architectures = raw.get("architectures") or ["Qwen3ForCausalLM"]
        model_type = raw.get("model_type")
        if model_type != "qwen3" or architectures[0] not in SUPPORTED_ARCHITECTURES:
            raise UnsupportedModelError(
                f"{source}: model_type={model_type!r}, architectures={architectures!r}; qwick runs Qwen3 dense "
                f"models only (model_type 'qwen3', architectures {list(SUPPORTED_ARCHITECTURES)}). "
                "Qwen3-MoE, Qwen2 and other families are not supported."
            )
        if raw.get("use_sliding_window"):
            raise UnsupportedModelError(f"{source}: use_sliding_window=true is not supported by qwick")
        try:
            heads = int(raw["num_attention_heads"])
            kv_heads = int(raw.get("num_key_value_heads") or heads)
            hidden = int(raw["hidden_size"])
            config = cls(
                vocab_size=int(raw["vocab_size"]),
                hidden_size=hidden,
                intermediate_size=int(raw["intermediate_size"]),
                num_hidden_layers=int(raw["num_hidden_layers"]),
                num_attention_heads=heads,
                num_key_value_heads=kv_heads,
                head_dim=int(raw.get("head_dim") or 128),  # transformers' Qwen3 default, not hidden // heads
                rms_norm_eps=float(raw.get("rms_norm_eps", 1e-6)),
                max_position_embeddings=int(raw.get("max_position_embeddings", 40960)),
                tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
                rope=_parse_rope(raw),
                architecture=architectures[0],
                torch_dtype=raw.get("torch_dtype") or raw.get("dtype"),
                eos_token_id=raw.get("eos_token_id"),
                raw=raw,
            )
        except KeyError as exc:
            raise UnsupportedModelError(f"{source}: required field {exc.args[0]!r} is missing") from exc
        if heads % kv_heads:
            raise UnsupportedModelError(
                f"{source}: num_attention_heads={heads} is not a multiple of num_key_value_heads={kv_heads}"
            )
        return config

    @classmethod
    def from_file(cls, path: str | Path) -> Qwen3Config:
        path = Path(path)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise UnsupportedModelError(f"{path} is not valid JSON: {exc}") from exc
        if not isinstance(raw, dict):
            raise UnsupportedModelError(f"{path} must hold a JSON object, got {type(raw).__name__}")
        return cls.from_dict(raw, source=str(path))


def _parse_rope(raw: dict[str, Any]) -> RopeConfig:
    """RoPE settings from the old (`rope_theta` + `rope_scaling`) or new (`rope_parameters`) config keys."""
    params = dict(raw.get("rope_parameters") or {})
    scaling = dict(raw.get("rope_scaling") or {})
    merged = {**scaling, **params}
    theta = float(merged.get("rope_theta", raw.get("rope_theta", 10000.0)))
    rope_type = merged.get("rope_type") or merged.get("type") or "default"
    if rope_type == "default":
        return RopeConfig(theta=theta)
    if rope_type != "yarn":
        raise UnsupportedModelError(f"rope type {rope_type!r} is not supported (qwick supports default and yarn)")
    return RopeConfig(
        theta=theta,
        rope_type="yarn",
        factor=float(merged["factor"]),
        original_max_position_embeddings=int(
            merged.get("original_max_position_embeddings") or raw.get("max_position_embeddings", 32768)
        ),
        beta_fast=float(merged.get("beta_fast") or 32.0),
        beta_slow=float(merged.get("beta_slow") or 1.0),
        attention_factor=merged.get("attention_factor"),
        truncate=bool(merged.get("truncate", True)),
    )
