"""Fuse projections that read the same input (q/k/v, gate/up) into one matmul whose weight they then view.

At batch-1 decode every matmul call costs a fixed ~10 us (dispatch, activation quantization, a parallel
region) on top of streaming its weights; one call for q+k+v and one for gate+up saves 3 of 7 per layer and
streams longer runs. The originals keep working (the eager prefill path calls them) on views of the fused
weight: no byte is stored twice.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from qwick.model.layers import Linear
from qwick.quant.int4 import Int4Linear
from qwick.quant.int8 import Int8Linear
from qwick.quant.layout import ROWS


def fuse_projections(modules: list[nn.Module]) -> nn.Module | None:
    """One module computing torch.cat([m(x) for m in modules], -1), or None when they cannot share storage."""
    first = modules[0]
    same = all(type(m) is type(first) and m.in_features == first.in_features for m in modules)
    if not same:
        return None
    if isinstance(first, Int8Linear | Int4Linear):
        if first.kernel != "qwick" or any(m.out_features % ROWS for m in modules):
            return None  # torch's packed layouts cannot be sliced; row blocks must not straddle two modules
        if isinstance(first, Int4Linear) and any(m.group_size != first.group_size for m in modules):
            return None
        return _fuse_buffers(modules, ["weight_packed", "scale", *(["mins"] if isinstance(first, Int4Linear) else [])])
    if type(first) is Linear and first.bias is None and not first.weight.is_mkldnn and not first.vnni:
        fused = Linear(first.in_features, sum(m.out_features for m in modules), bias=False,
                       device=first.weight.device, dtype=first.weight.dtype)
        fused.weight = nn.Parameter(torch.cat([m.weight.detach() for m in modules]), requires_grad=False)
        start = 0
        for m in modules:  # the originals become views of the fused weight
            m.weight = nn.Parameter(fused.weight.detach()[start : start + m.out_features], requires_grad=False)
            start += m.out_features
        return fused
    return None


def _fuse_buffers(modules: list[nn.Module], names: list[str]) -> nn.Module:
    """Concatenate the named buffers along dim 0 (rows or row blocks) into a copy of modules[0]."""
    fused = copy.copy(modules[0])  # same settings (kernel, group size, dtypes)...
    fused._buffers = {}  # ...own buffers
    fused.out_features = sum(m.out_features for m in modules)
    for name in names:
        tensor = torch.cat([getattr(m, name) for m in modules])
        fused.register_buffer(name, tensor)
        start = 0
        for m in modules:
            size = getattr(m, name).shape[0]
            setattr(m, name, tensor[start : start + size])  # a contiguous view: dim 0 is outermost
            start += size
    return fused
