"""Which GGUF type each tensor is written in, following llama.cpp's conventions for each export type.

- 1-d tensors (every RMSNorm weight) stay F32, as convert_hf_to_gguf.py writes them for every output type.
- f32 / f16 / bf16 / q8_0: every 2-d weight in that type (convert_hf_to_gguf.py --outtype; token_embd too).
- q4_0: 2-d weights in Q4_0 as llama-quantize's Q4_0 does, except the output projection (`output.weight`, or
  `token_embd.weight` when the embedding is tied and serves as the output): llama-quantize gives it Q6_K;
  the gguf package cannot write K-quants, so qwick keeps it in Q8_0 (the closer of the types it can write;
  a little larger than Q6_K).
- A row length the type's block does not divide falls back to F16, as convert_hf_to_gguf.py does.
"""

from __future__ import annotations

import gguf
import numpy as np

Q = gguf.GGMLQuantizationType
EXPORT_TYPES: dict[str, Q] = {"f32": Q.F32, "f16": Q.F16, "bf16": Q.BF16, "q8_0": Q.Q8_0, "q4_0": Q.Q4_0}
FILE_TYPES: dict[str, gguf.LlamaFileType] = {
    "f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
    "bf16": gguf.LlamaFileType.MOSTLY_BF16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
    "q4_0": gguf.LlamaFileType.MOSTLY_Q4_0}


def tensor_type(name: str, shape: tuple[int, ...], quantization: str, tied: bool) -> Q:
    """The type of GGUF tensor `name` ([out, in] in PyTorch's order) for export type `quantization`."""
    if len(shape) == 1 or name.endswith("_norm.weight"):
        return Q.F32
    wanted = EXPORT_TYPES[quantization]
    is_output = name == "output.weight" or (tied and name == "token_embd.weight")
    if wanted == Q.Q4_0 and is_output:
        wanted = Q.Q8_0
    block = gguf.GGML_QUANT_SIZES[wanted][0]
    return wanted if shape[-1] % block == 0 else Q.F16


def encode(values: np.ndarray, qtype: Q) -> np.ndarray:
    """float32 [out, in] -> what GGUFWriter.add_tensor takes for `qtype` (floats, or raw quantized bytes)."""
    if qtype == Q.F32:
        return values.astype(np.float32, copy=False)
    if qtype == Q.F16:
        return values.astype(np.float16)
    return gguf.quants.quantize(values, qtype)  # uint8 [out, bytes per row]
