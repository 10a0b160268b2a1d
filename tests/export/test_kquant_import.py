"""K-quant GGUF files (Q4_K_M / Q5_K_M mix Q4_K, Q5_K and Q6_K tensors) load, dequantized by the gguf package.

The gguf package cannot *write* K-quants (its quantize raises NotImplementedError for Q4_K/Q5_K/Q6_K), and
no such file can be downloaded here, so these tests build qwen3 files whose projections are synthetic K-quant
blocks (random codes and scales, valid float16 super-block scales), written raw with GGUFWriter. They check that
qwick loads each type to exactly the gguf package's own dequantization (its reference implementation of
llama.cpp's formats) and that the model runs. Untested here: a real llama-quantize'd file (the same reader path).
"""

from __future__ import annotations

from dataclasses import replace

import gguf
import numpy as np
import pytest
import torch

from qwick.gguf import open_gguf
from qwick.gguf.hparams import write_hparams
from qwick.gguf.load import load_gguf
from qwick.gguf.names import hf_to_gguf
from qwick.model.config import Qwen3Config
from qwick.model.qwen3 import Qwen3ForCausalLM

Q = gguf.GGMLQuantizationType
CONFIG = Qwen3Config.from_dict(dict(
    model_type="qwen3", vocab_size=64, hidden_size=256, intermediate_size=512, num_hidden_layers=1,
    num_attention_heads=4, num_key_value_heads=2, head_dim=64, rms_norm_eps=1e-6, max_position_embeddings=128,
    tie_word_embeddings=True, rope_theta=1e6))
# where each super-block keeps its float16 scale(s): byte offsets within the block
F16_FIELDS = {Q.Q4_K: (0, 2), Q.Q5_K: (0, 2), Q.Q6_K: (208,)}


def _k_blocks(rows: int, cols: int, qtype: Q, rng: np.random.Generator) -> np.ndarray:
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, size=(rows, cols // block, size), dtype=np.uint8)
    for offset in F16_FIELDS[qtype]:
        raw[:, :, offset:offset + 2] = np.frombuffer(np.float16(0.002).tobytes(), dtype=np.uint8)
    return raw.reshape(rows, -1)


def _write(path, qtype: Q) -> dict[str, np.ndarray]:
    """A one-layer qwen3 GGUF: projections in `qtype` (raw blocks), the rest float32; returns the raw arrays."""
    rng = np.random.default_rng(0)
    shapes = {name: tuple(t.shape) for name, t in Qwen3ForCausalLM(CONFIG).state_dict().items()
              if name != "lm_head.weight"}
    names = hf_to_gguf(list(shapes), 1)
    writer = gguf.GGUFWriter(path, "qwen3")
    write_hparams(writer, CONFIG)
    written = {}
    for name, shape in shapes.items():
        if name.endswith("_proj.weight"):
            data = _k_blocks(shape[0], shape[1], qtype, rng)
            writer.add_tensor(names[name], data, raw_dtype=qtype)
        else:
            data = rng.normal(0, 0.5, size=shape).astype(np.float32) + (1.0 if len(shape) == 1 else 0.0)
            writer.add_tensor(names[name], data)
        written[name] = data
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return written


@pytest.mark.parametrize("qtype", [Q.Q4_K, Q.Q5_K, Q.Q6_K])
def test_k_quant_tensors_load_as_the_gguf_reference_dequantizes_them(tmp_path, qtype):
    path = tmp_path / f"{qtype.name}.gguf"
    written = _write(path, qtype)
    file = open_gguf(path)
    assert file.config == replace(CONFIG, torch_dtype=file.config.torch_dtype) and set(file.tensor_types.values()) == {qtype.name, "F32"}
    model = load_gguf(file, torch.float32, torch.device("cpu"))
    state = model.state_dict()
    for name, raw in written.items():
        expected = gguf.quants.dequantize(raw, qtype) if name.endswith("_proj.weight") else raw
        assert np.isfinite(expected).all()
        torch.testing.assert_close(state[name], torch.from_numpy(np.asarray(expected, dtype=np.float32)),
                                   rtol=0, atol=0)
    with torch.no_grad():
        logits = model.compute_logits(model(torch.tensor([[1, 2, 3]]), torch.arange(3)[None]))
    assert torch.isfinite(logits).all()
