"""The quantization choices, apart from the torch code that applies them, so `qwick --help` lists them cheaply."""

from __future__ import annotations

QUANTIZATION_METHODS = ("int8", "int4")
DEFAULT_GROUP_SIZE = 128
INT4_GROUP_SIZES = (32, 64, 128)
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def validate_quantization(method: str | None, group_size: int = DEFAULT_GROUP_SIZE) -> None:
    """Raise a ValueError for an unknown method or int4 group size (call before loading any weights)."""
    if method is not None and method not in QUANTIZATION_METHODS:
        raise ValueError(f"quantization must be None, 'int8' or 'int4', got {method!r}")
    if method == "int4" and group_size not in INT4_GROUP_SIZES:
        raise ValueError(f"int4 group_size must be one of {INT4_GROUP_SIZES}, got {group_size!r}")


def check_group_size(in_features: list[int], group_size: int) -> None:
    """int4 needs every in_features to be a multiple of the group size; say which sizes would fit."""
    misfits = sorted({k for k in in_features if k % group_size})
    if misfits:
        fitting = [g for g in INT4_GROUP_SIZES if all(k % g == 0 for k in in_features)]
        hint = f"use group_size in {fitting}" if fitting else "use int8 for this model"
        raise ValueError(f"int4 group_size {group_size} does not divide the in_features {misfits} of some "
                         f"projections: {hint}")
