"""Pass: run decode steps (one new token per row) through torch.compile'd runs of layers; prefill stays eager.

Why runs of 4 layers and not the whole model: every layer runs the same code on different weights, and with
torch.compile's default `inline_inbuilt_nn_modules` the weights are graph inputs, so one compiled graph serves
every run. Compiling the whole 28-layer forward took ~150 s on the 2-vCPU development box; a run of 4, ~20 s,
while still paying Dynamo's guard checks (~0.1 ms a call) 7 times a step instead of 28.
Shape buckets: the batch's context groups are merged into one padded group with a mask (masked slots point at
the cache's scratch slot), so every batch has the same structure whatever its rows' lengths. `warm_up` then
runs 1, 2 and 3 rows at two context lengths: torch marks the batch size and the context length dynamic, leaving
two graphs (1 row, 2+ rows) that serve every later step without recompiling (tests/quant/test_compiled_decode).
q/k/v and gate/up are fused into one matmul each here (passes/fusion.py: fewer fixed-cost calls).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from qwick.model.attention.metadata import AttentionMetadata
from qwick.model.attention.sdpa import SdpaBackend
from qwick.model.kv_cache import PagedKVCache
from qwick.model.qwen3 import DecoderLayer, Qwen3ForCausalLM, Qwen3Model
from qwick.model.rope import apply_rotary
from qwick.passes.fusion import fuse_projections

LAYERS_PER_CALL = 4


def decode_layer(layer: DecoderLayer, fused: Fused | None, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                 keys: torch.Tensor, values: torch.Tensor, slot_mapping: torch.Tensor, context_slots: torch.Tensor,
                 mask: torch.Tensor | None) -> torch.Tensor:
    """One decoder layer for x [B, 1, hidden] (the eager code in qwen3.py, with this layer's cache passed in)."""
    attn = layer.self_attn
    batch, heads, kv_heads, dim = x.shape[0], attn.num_heads, attn.num_kv_heads, attn.head_dim
    h = layer.input_layernorm(x)
    if fused is not None:  # [B, 1, (heads + 2 * kv_heads) * D] in one matmul
        q_out, k_out, v_out = fused.qkv(h).split([heads * dim, kv_heads * dim, kv_heads * dim], dim=-1)
    else:
        q_out, k_out, v_out = attn.q_proj(h), attn.k_proj(h), attn.v_proj(h)
    q = attn.q_norm(q_out.reshape(batch, 1, heads, dim)).transpose(1, 2)  # [B, heads, 1, D]
    k = attn.k_norm(k_out.reshape(batch, 1, kv_heads, dim)).transpose(1, 2)
    v = v_out.reshape(batch, 1, kv_heads, dim).transpose(1, 2)
    q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
    keys.index_copy_(0, slot_mapping, k.reshape(batch, kv_heads, dim))  # [slots, kv_heads, D]
    values.index_copy_(0, slot_mapping, v.reshape(batch, kv_heads, dim))
    kv_len = context_slots.shape[1]
    flat = context_slots.reshape(-1)
    k_ctx = keys.index_select(0, flat).view(batch, kv_len, kv_heads, dim).transpose(1, 2)  # [B, kv_heads, S, D]
    v_ctx = values.index_select(0, flat).view(batch, kv_len, kv_heads, dim).transpose(1, 2)
    out = F.scaled_dot_product_attention(q, k_ctx, v_ctx, attn_mask=mask, scale=attn.scale,
                                         enable_gqa=heads != kv_heads)  # [B, heads, 1, D]
    x = x + attn.o_proj(out.transpose(1, 2).reshape(batch, 1, heads * dim))
    h = layer.post_attention_layernorm(x)
    if fused is None:
        return x + layer.mlp(h)
    gate, up = fused.gate_up(h).split(layer.mlp.down_proj.in_features, dim=-1)
    return x + layer.mlp.down_proj(F.silu(gate) * up)


def decode_layers(layers: list[DecoderLayer], fused: list[Fused] | None, x: torch.Tensor, cos: torch.Tensor,
                  sin: torch.Tensor, keys: list[torch.Tensor], values: list[torch.Tensor], slot_mapping: torch.Tensor,
                  context_slots: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """A run of consecutive layers: one compiled call per run, not per layer (each call costs ~0.1 ms of guards)."""
    for i, (layer, k, v) in enumerate(zip(layers, keys, values, strict=True)):
        x = decode_layer(layer, fused[i] if fused else None, x, cos, sin, k, v, slot_mapping, context_slots, mask)
    return x


@dataclass
class Fused:
    """A layer's q/k/v and gate/up projections as one matmul each (passes/fusion.py)."""

    qkv: nn.Module
    gate_up: nn.Module


def fuse_layers(model: Qwen3Model) -> list[Fused] | None:
    """Every layer's fused projections, or None (all layers unfused) when any layer's cannot be fused."""
    fused = []
    for layer in model.layers:
        attn, mlp = layer.self_attn, layer.mlp
        pair = [fuse_projections([attn.q_proj, attn.k_proj, attn.v_proj]), fuse_projections([mlp.gate_proj, mlp.up_proj])]
        if None in pair:
            return None
        fused.append(Fused(*pair))
    return fused


def merged_context(meta: AttentionMetadata, positions: torch.Tensor,
                   scratch_slot: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """All rows' context slots in one [B, S] tensor (short rows padded with the scratch slot) and the mask
    [B, 1, 1, S] that hides the padding; no mask for a single row."""
    if len(meta.groups) == 1 and positions.shape[0] == 1:
        return meta.groups[0].context_slots, None
    width = max(g.context_slots.shape[1] for g in meta.groups)
    slots = torch.cat([F.pad(g.context_slots, (0, width - g.context_slots.shape[1]), value=scratch_slot)
                       for g in meta.groups])
    cols = torch.arange(width, device=positions.device)
    return slots, (cols[None, :] <= positions[:, -1:]).view(-1, 1, 1, width)


class CompiledDecode(nn.Module):
    """Stands in for a `Qwen3Model` (Qwen3ForCausalLM.model): decode steps go through the compiled layers, the
    rest through the model's eager forward. It shares the model's submodules, so parameters and state_dict names
    stay as they were."""

    def __init__(self, model: Qwen3Model) -> None:
        super().__init__()
        self._modules = model._modules  # embed_tokens, layers, norm, rotary_emb: the same objects
        self.eager = model.forward  # a bound method, not a submodule
        # layers per compiled call: the largest of 4, 2, 1 that divides the depth, so every call has one shape
        self.run = next(n for n in (LAYERS_PER_CALL, 2, 1) if len(model.layers) % n == 0)
        self.fused = fuse_layers(model)
        self.step = torch.compile(decode_layers)  # dynamic dims found by warm_up (dynamic=True would also make
        # cache dims symbolic and then specialise any context length that equals one of them)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, cache: PagedKVCache | None = None,
                meta: AttentionMetadata | None = None) -> torch.Tensor:
        if cache is None or meta is None or input_ids.shape[1] != 1 or not meta.groups:
            return self.eager(input_ids, positions, cache, meta)
        x = self.embed_tokens(input_ids)  # [B, 1, hidden]
        cos, sin = self.rotary_emb(positions, x.dtype)
        slots, mask = merged_context(meta, positions, cache.scratch_slot)
        for i in range(0, len(self.layers), self.run):
            run = slice(i, i + self.run)
            x = self.step(list(self.layers[run]), self.fused[run] if self.fused else None, x, cos, sin,
                          cache.keys[run], cache.values[run], meta.slot_mapping, slots, mask)
        return self.norm(x)

    @torch.inference_mode()  # as the engine runs it: tensors created outside it would not match the guards
    def warm_up(self, cache: PagedKVCache, max_batch: int) -> None:
        """Compile now, on the cache's scratch slot: (rows, context) pairs that vary both, so both become dynamic."""
        device, scratch = cache.keys[0].device, cache.scratch_slot
        for batch, width in [(1, 2), (1, 3), (2, 2), (3, 3)]:
            if batch > max_batch:
                break
            ids = torch.zeros(batch, 1, dtype=torch.long, device=device)
            positions = torch.full((batch, 1), width - 1, dtype=torch.long, device=device)
            slots = torch.full((batch, width), scratch, dtype=torch.long, device=device)
            mask = None if batch == 1 else torch.ones(batch, 1, 1, width, dtype=torch.bool, device=device)
            x = self.embed_tokens(ids)
            cos, sin = self.rotary_emb(positions, x.dtype)
            slot_mapping = torch.full((batch,), scratch, dtype=torch.long, device=device)
            run = slice(0, self.run)
            self.step(list(self.layers[run]), self.fused[run] if self.fused else None, x, cos, sin,
                      cache.keys[run], cache.values[run], slot_mapping, slots, mask)


def compile_decode(model: Qwen3ForCausalLM) -> CompiledDecode:
    """Route `model`'s decode steps through compiled layers: its decoder stack is swapped for a CompiledDecode."""
    # compiled steps keep gather + SDPA, which inductor fuses; the paged attention op called from a compiled
    # graph cost ~3.5 ms a token at batch 1 (int4: 31.4 vs 35.7 tok/s), where compile_decode is for
    # (short eager prefill chunks then gather too: one path per model keeps this simple)
    model.set_attention_backend(SdpaBackend())
    compiled = CompiledDecode(model.model)
    model.model = compiled  # type: ignore[assignment]
    return compiled
