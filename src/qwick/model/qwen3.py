"""The Qwen3 dense decoder (transformers' `Qwen3ForCausalLM`), with Hugging Face parameter names."""

from __future__ import annotations

import torch
from torch import nn

from qwick.kernels.cpu_ops import qk_norm_rope, usable
from qwick.model.attention.backend import AttentionBackend, Metadata
from qwick.model.attention.sdpa import SdpaBackend
from qwick.model.config import Qwen3Config
from qwick.model.kv_cache import PagedKVCache
from qwick.model.layers import MLP, Linear, RMSNorm
from qwick.model.rope import RotaryEmbedding, apply_rotary


class Attention(nn.Module):
    """GQA self-attention with per-head RMSNorm on q and k before RoPE."""

    def __init__(self, config: Qwen3Config, layer_index: int) -> None:
        super().__init__()
        self.layer_index = layer_index
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        self.scale = self.head_dim**-0.5
        hidden = config.hidden_size
        self.q_proj = Linear(hidden, self.num_heads * self.head_dim, bias=False)
        self.k_proj = Linear(hidden, self.num_kv_heads * self.head_dim, bias=False)
        self.v_proj = Linear(hidden, self.num_kv_heads * self.head_dim, bias=False)
        self.o_proj = Linear(self.num_heads * self.head_dim, hidden, bias=False)
        self.q_norm = RMSNorm(self.head_dim, config.rms_norm_eps)
        self.k_norm = RMSNorm(self.head_dim, config.rms_norm_eps)
        # how this layer stores keys/values and attends: Qwen3ForCausalLM.set_attention_backend picks it
        self.backend: AttentionBackend = SdpaBackend()

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                cache: PagedKVCache | None, meta: Metadata | None) -> torch.Tensor:
        batch, seq, _ = x.shape
        # [B, T, heads * D] -> [B, heads, T, D]
        q = self._norm_rope(self.q_proj(x), self.q_norm, self.num_heads, cos, sin)
        k = self._norm_rope(self.k_proj(x), self.k_norm, self.num_kv_heads, cos, sin)
        v = self.v_proj(x).view(batch, seq, self.num_kv_heads, self.head_dim).transpose(1, 2)
        out = self.backend.attend(q, k, v, cache, meta, self.layer_index, self.scale)  # [B, T, heads, D]
        return self.o_proj(out.reshape(batch, seq, self.num_heads * self.head_dim))

    def _norm_rope(self, projected: torch.Tensor, norm: RMSNorm, heads: int, cos: torch.Tensor,
                   sin: torch.Tensor) -> torch.Tensor:
        """projected [B, T, heads * D] -> per-head RMSNorm, then rotary: [B, heads, T, D]."""
        batch, seq, _ = projected.shape
        if usable(projected) and usable(cos) and norm.weight.dtype == projected.dtype:  # one op (kernels/cpu_ops.py)
            out = qk_norm_rope(projected.view(batch * seq, heads, self.head_dim), norm.weight, norm.eps,
                               cos.view(batch * seq, self.head_dim), sin.view(batch * seq, self.head_dim))
            return out.view(batch, seq, heads, self.head_dim).transpose(1, 2)
        x = norm(projected.view(batch, seq, heads, self.head_dim)).transpose(1, 2)
        return apply_rotary(x, cos, sin)


class DecoderLayer(nn.Module):
    def __init__(self, config: Qwen3Config, layer_index: int) -> None:
        super().__init__()
        self.self_attn = Attention(config, layer_index)
        self.mlp = MLP(config.hidden_size, config.intermediate_size)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                cache: PagedKVCache | None, meta: Metadata | None) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, cache, meta)
        return x + self.mlp(self.post_attention_layernorm(x))


class Qwen3Model(nn.Module):
    """Embedding, decoder stack and final norm (the `model.` prefix of the checkpoint)."""

    def __init__(self, config: Qwen3Config) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.rotary_emb = RotaryEmbedding(config.rope, config.head_dim)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, cache: PagedKVCache | None = None,
                meta: Metadata | None = None) -> torch.Tensor:
        # input_ids, positions [B, T] -> hidden states [B, T, hidden]
        x = self.embed_tokens(input_ids)
        cos, sin = self.rotary_emb(positions, x.dtype)
        for layer in self.layers:
            x = layer(x, cos, sin, cache, meta)
        return self.norm(x)


class Qwen3ForCausalLM(nn.Module):
    def __init__(self, config: Qwen3Config) -> None:
        super().__init__()
        self.config = config
        self.model = Qwen3Model(config)
        self.lm_head = Linear(config.hidden_size, config.vocab_size, bias=False)
        self.has_lm_head = True  # False for Qwen3Model backbones (embedding/reranker checkpoints)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.attention_backend: AttentionBackend = SdpaBackend()  # portable until the engine picks one

    def set_attention_backend(self, backend: AttentionBackend) -> None:
        """Every layer attends through `backend` (model/attention/select.py picks it once per engine)."""
        self.attention_backend = backend
        for layer in self.model.layers:
            layer.self_attn.backend = backend

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, cache: PagedKVCache | None = None,
                meta: Metadata | None = None) -> torch.Tensor:
        """Hidden states [B, T, hidden]; call `compute_logits` on the rows that need logits."""
        return self.model(input_ids, positions, cache, meta)

    def compute_logits(self, hidden: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """[..., hidden] -> [..., vocab_size] in float32 for sampling; written into `out` when given."""
        if not self.has_lm_head:
            raise ValueError("this checkpoint (architecture Qwen3Model) has no lm_head: it cannot generate text")
        logits = self.lm_head(hidden)
        return logits.float() if out is None else out.copy_(logits)
