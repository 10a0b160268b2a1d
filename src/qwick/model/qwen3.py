"""The Qwen3 dense decoder (transformers' `Qwen3ForCausalLM`), with Hugging Face parameter names."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from qwick.kernels.cpu_ops import paged_decode, paged_prefill, qk_norm_rope, usable
from qwick.model.config import Qwen3Config
from qwick.model.kv_cache import AttentionMetadata, PagedKVCache
from qwick.model.layers import MLP, Linear, RMSNorm
from qwick.model.packed import PackedMetadata
from qwick.model.rope import RotaryEmbedding, apply_rotary

Metadata = AttentionMetadata | PackedMetadata


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

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                cache: PagedKVCache | None, meta: Metadata | None) -> torch.Tensor:
        batch, seq, _ = x.shape
        # [B, T, heads * D] -> [B, heads, T, D]
        q = self._norm_rope(self.q_proj(x), self.q_norm, self.num_heads, cos, sin)
        k = self._norm_rope(self.k_proj(x), self.k_norm, self.num_kv_heads, cos, sin)
        v = self.v_proj(x).view(batch, seq, self.num_kv_heads, self.head_dim).transpose(1, 2)
        if isinstance(meta, PackedMetadata):
            assert cache is not None, "a packed forward reads and writes the paged cache"
            cache.write(self.layer_index, k, v, meta.slot_mapping, meta.mirror_tokens, meta.mirror_slots)
            return self.o_proj(self._attend_packed(q, k, v, cache, meta).view(batch, seq, -1))
        if cache is not None and meta is not None:
            cache.write(self.layer_index, k, v, meta.slot_mapping)
        if cache is not None and meta is not None and meta.context_lens is not None:  # the cache read in place
            assert meta.block_tables is not None
            # every new token is one query row: [B, heads, T, D] -> [B * T, heads, D], its row's block table
            rows = q.transpose(1, 2).reshape(batch * seq, self.num_heads, self.head_dim)
            tables = meta.block_tables if seq == 1 else meta.block_tables.repeat_interleave(seq, dim=0)
            out = paged_decode(rows, cache.keys[self.layer_index], cache.values[self.layer_index], tables,
                               meta.context_lens.reshape(-1), cache.block_size, self.scale)
            out = out.view(batch, seq, self.num_heads, self.head_dim).transpose(1, 2)
        elif cache is None or meta is None or not meta.groups:  # fresh prompt: its own keys, causal
            out = self._attend(q, k, v, None, is_causal=True)
        elif len(meta.groups) == 1:
            out = self._attend(q, *cache.gather(self.layer_index, meta.groups[0].context_slots), meta.groups[0].mask)
        else:
            out = torch.empty_like(q)
            for group in meta.groups:
                k_ctx, v_ctx = cache.gather(self.layer_index, group.context_slots)  # [b, kv_heads, S, D]
                out[group.rows] = self._attend(q[group.rows], k_ctx, v_ctx, group.mask)
        return self.o_proj(out.transpose(1, 2).reshape(batch, seq, self.num_heads * self.head_dim))

    def _attend_packed(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cache: PagedKVCache,
                       meta: PackedMetadata) -> torch.Tensor:
        """q [1, heads, N, D], k/v [1, kv_heads, N, D] of a packed forward (model/packed.py) -> [N, heads, D]."""
        tokens = q.shape[2]
        rows = q.transpose(1, 2).reshape(tokens, self.num_heads, self.head_dim)  # [N, heads, D]
        out = torch.empty_like(rows)
        if meta.num_paged:
            out[: meta.num_paged] = paged_decode(rows[: meta.num_paged], cache.keys[self.layer_index],
                                                 cache.values[self.layer_index], meta.block_tables,
                                                 meta.context_lens, cache.block_size, self.scale)
        for seg in meta.long:
            if meta.in_place_prefill:  # its context read in place from the cache (its own keys written above)
                out[seg.tokens] = paged_prefill(rows[seg.tokens], cache.keys[self.layer_index],
                                                cache.values[self.layer_index], seg.block_table, seg.start,
                                                cache.block_size, self.scale)
                continue
            if seg.context_slots is None:  # a fresh prompt: its own keys, causal
                part = self._attend(q[:, :, seg.tokens], k[:, :, seg.tokens], v[:, :, seg.tokens], None, True)
            else:
                part = self._attend(q[:, :, seg.tokens], *cache.gather(self.layer_index, seg.context_slots), seg.mask)
            out[seg.tokens] = part[0].transpose(0, 1)  # [heads, T, D] -> [T, heads, D]
        return out

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

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                is_causal: bool = False) -> torch.Tensor:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, scale=self.scale,
                                              enable_gqa=self.num_heads != self.num_kv_heads)


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
