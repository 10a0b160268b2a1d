"""The quantization choices, apart from the torch code that applies them, so `qwick --help` lists them cheaply."""

from __future__ import annotations

QUANTIZATION_METHODS = ("int8", "int4")
DEFAULT_GROUP_SIZE = 128
INT4_GROUP_SIZES = (32, 64, 128)
