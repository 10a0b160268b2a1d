"""Opening a `.gguf` file for qwick: checks (architecture, tensors, truncation), config, tokenizer, tensors.

`open_gguf` reads the metadata with the gguf package's `GGUFReader` (a memory map; nothing is copied yet) and
turns it into a `Qwen3Config`; `GGUFTensors` is the file's tensors as the one loader's tensor stream
(model/loader.py), under Hugging Face names, dequantized to float32 by the gguf package's own code (F16,
BF16, Q8_0, Q4_0, the K-quants Q4_K/Q5_K/Q6_K of Q4_K_M/Q5_K_M files, and every other type it reads).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import torch

from qwick.gguf.hparams import config_dict
from qwick.gguf.names import ARCH, gguf_to_hf
from qwick.gguf.vocab import tokenizer_from_meta
from qwick.model.config import Qwen3Config
from qwick.tokenizer import Tokenizer

_PLAIN = {gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16}


class _Reader(gguf.GGUFReader):
    """GGUFReader over a plain ndarray view of its memory map: it slices the file once per metadata item (~455k
    times for Qwen3's vocabulary and merges), and each np.memmap slice pays memmap's __array_finalize__; the
    same bytes through an ndarray view parse 3.6x faster (measured 25.5 s -> 7.1 s on a loaded 2-core box)."""

    @property
    def data(self) -> np.ndarray:
        return self._data

    @data.setter
    def data(self, value: np.ndarray) -> None:  # GGUFReader.__init__ assigns its np.memmap here
        self._data = value.view(np.ndarray)  # no copy; the view keeps the mapping alive


class GGUFError(ValueError):
    """The file is not a GGUF qwick can load: says which file and what is wrong with it."""


@dataclass
class GGUFFile:
    path: Path
    reader: gguf.GGUFReader
    meta: dict[str, Any]  # metadata key -> value (strings, numbers, lists)
    config: Qwen3Config
    tensor_types: dict[str, str] = field(default_factory=dict)  # GGUF tensor name -> ggml type name

    def tokenizer(self) -> Tokenizer:
        try:
            return tokenizer_from_meta(self.meta, str(self.path))
        except (KeyError, ValueError, TypeError) as exc:
            raise GGUFError(f"{self.path}: its tokenizer metadata cannot be read: {exc}") from exc

    def tensors(self) -> GGUFTensors:
        return GGUFTensors(self)


def open_gguf(path: str | Path) -> GGUFFile:
    """Open and check `path`; a truncated or corrupt file, another architecture or missing keys raise GGUFError."""
    path = Path(path)
    if not path.is_file():
        raise GGUFError(f"GGUF file {str(path)!r} does not exist")
    try:
        reader = _Reader(path)
    except Exception as exc:  # the reader raises ValueError, IndexError, struct errors... on bad bytes
        raise GGUFError(f"{path} is not a readable GGUF file ({type(exc).__name__}: {exc}): truncated or "
                        "corrupt?") from exc
    meta = {name: f.contents() for name, f in reader.fields.items() if not name.startswith("GGUF.")}
    arch = meta.get(gguf.Keys.General.ARCHITECTURE)
    if arch != ARCH:
        raise GGUFError(f"{path}: architecture {arch!r} is not supported: qwick loads {ARCH!r} GGUF files "
                        "(Qwen3 dense models) only")
    names = {t.name for t in reader.tensors}
    embed = next((t for t in reader.tensors if t.name == "token_embd.weight"), None)
    if embed is None:
        raise GGUFError(f"{path} has no token_embd.weight tensor")
    try:
        raw = config_dict(meta, ARCH, int(embed.shape[1]), "output.weight" not in names)
        config = Qwen3Config.from_dict(raw, source=str(path))
    except KeyError as exc:
        raise GGUFError(f"{path}: metadata key {exc.args[0]!r} is missing") from exc
    except ValueError as exc:
        raise GGUFError(f"{path}: {exc}") from exc
    return GGUFFile(path, reader, meta, config, {t.name: t.tensor_type.name for t in reader.tensors})


class GGUFTensors:
    """The file's tensors as (Hugging Face name, float32 tensor [out, in]), one at a time: the one loader's
    tensor stream (model/loader.py `load_weights(..., source=)`)."""

    def __init__(self, file: GGUFFile) -> None:
        self.gguf = file
        self.file = file.path

    def __iter__(self) -> Iterator[tuple[str, torch.Tensor]]:
        names = gguf_to_hf(self.gguf.config.num_hidden_layers)
        for tensor in self.gguf.reader.tensors:
            if tensor.name not in names:
                raise GGUFError(f"{self.file}: unexpected tensor {tensor.name!r}: not a qwen3 tensor of a "
                                f"{self.gguf.config.num_hidden_layers}-layer model")
            yield names[tensor.name], dequantize(tensor, self.file)


def dequantize(tensor: gguf.ReaderTensor, file: Path) -> torch.Tensor:
    """A GGUF tensor as float32, shaped like PyTorch's (reversed GGUF dims: [out, in])."""
    try:
        if tensor.tensor_type in _PLAIN:
            values = np.array(tensor.data, dtype=np.float32)
        else:
            values = gguf.quants.dequantize(np.asarray(tensor.data), tensor.tensor_type)
    except NotImplementedError as exc:
        raise GGUFError(f"{file}: tensor {tensor.name!r} has type {tensor.tensor_type.name}, which the gguf "
                        "package cannot dequantize") from exc
    shape = tuple(reversed([int(d) for d in tensor.shape]))
    return torch.from_numpy(np.ascontiguousarray(values)).reshape(shape)
