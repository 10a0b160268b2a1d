"""Build a Qwen3 model from a checkpoint folder (safetensors, single or sharded) or with dummy weights.

The one loader: a checkpoint's tensors stream through a list of transforms (a stored format's decoding, picked
by quant/ from config.json) into the model's parameters and persistent buffers (quantized modules keep their
weights in buffers), with one name map and one shape check."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO, ClassVar, Protocol

import torch
from safetensors import SafetensorError, safe_open

from qwick.model.config import Qwen3Config, UnsupportedModelError
from qwick.model.qwen3 import Qwen3ForCausalLM

Tensors = Iterator[tuple[str, torch.Tensor]]  # (checkpoint name, tensor), one at a time
Transform = Callable[[Tensors], Tensors]  # rewrites a checkpoint's tensor stream (e.g. dequantizes fp8 weights)


class TensorSource(Protocol):
    """A checkpoint's tensors as (checkpoint name, tensor); `file` is the one being read (for error messages)."""

    file: Path

    def __iter__(self) -> Tensors: ...


class CheckpointError(ValueError):
    """The checkpoint's weight files are missing, unreadable or do not match the config."""


def checkpoint_files(folder: Path) -> list[Path]:
    """Safetensors files of a folder: the shards named in model.safetensors.index.json, or every *.safetensors."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (json.JSONDecodeError, KeyError) as exc:
            raise CheckpointError(f"{index} is not a valid safetensors index: {exc}") from exc
        files = [folder / name for name in sorted(set(weight_map.values()))]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise CheckpointError(f"{folder}: shards listed in {index.name} are missing: {', '.join(missing)}")
        return files
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        other = sorted(p.name for p in folder.iterdir() if p.suffix in {".bin", ".pt", ".pth", ".gguf"})
        hint = f" (found {', '.join(other)}: convert to safetensors first)" if other else ""
        raise CheckpointError(f"{folder} has no *.safetensors weight files{hint}")
    return files


def build_model(config: Qwen3Config, dtype: torch.dtype, device: torch.device,
                edit: Callable[[Qwen3ForCausalLM], None] | None = None) -> Qwen3ForCausalLM:
    """An uninitialised model in `dtype` on `device` (allocated, not filled). `edit` changes the skeleton while
    it is still on the meta device (a stored quantized format swaps in its empty quantized modules)."""
    with torch.device("meta"):
        model = Qwen3ForCausalLM(config).to(dtype)
        if edit is not None:
            edit(model)
    model = model.to_empty(device=device)
    if config.tie_word_embeddings and isinstance(getattr(model.lm_head, "weight", None), torch.nn.Parameter):
        # to_empty materialises shared parameters separately: tie again (a quantized head has no `weight`)
        model.lm_head.weight = model.model.embed_tokens.weight
    model.model.rotary_emb.reset()
    return model.eval().requires_grad_(False)


class TensorStream:
    """Every tensor of a checkpoint's files, one at a time and sorted by name, as (checkpoint name, tensor);
    `file` is the one being read (for error messages). A read failure becomes a CheckpointError.

    safe_open validates each file; the tensors are then plain reads into memory each tensor owns, not
    safe_open's: its tensors can point into a file mapping that closes with the handle, and every mapped page it
    touches counts towards the process's resident memory (the whole file, on top of the model).
    """

    _DTYPES: ClassVar[dict[str, torch.dtype]] = {
        "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
        "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2, "I64": torch.int64, "I32": torch.int32,
        "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool}

    def __init__(self, files: list[Path]) -> None:
        self.files = files
        self.file = files[0] if files else Path()

    def __iter__(self) -> Tensors:
        for file in self.files:
            self.file = file
            try:
                with safe_open(str(file), framework="pt"), file.open("rb") as handle:  # safe_open: validation
                    size = int.from_bytes(handle.read(8), "little")
                    header = json.loads(handle.read(size))
                    header.pop("__metadata__", None)
                    for raw_name in sorted(header):
                        yield raw_name, self._read(handle, 8 + size, raw_name, header[raw_name])
            except SafetensorError as exc:
                raise CheckpointError(f"could not read {file}: {exc} (corrupt or truncated safetensors file?)") from exc
            except OSError as exc:
                raise CheckpointError(f"could not read {file}: {exc}") from exc

    def _read(self, handle: BinaryIO, start: int, name: str, entry: dict) -> torch.Tensor:
        if entry["dtype"] not in self._DTYPES:
            raise CheckpointError(f"{self.file.name}: tensor {name!r} has dtype {entry['dtype']}, not one qwick reads")
        dtype, shape = self._DTYPES[entry["dtype"]], tuple(entry["shape"])
        begin, end = entry["data_offsets"]
        if begin == end:  # an empty tensor
            return torch.empty(shape, dtype=dtype)
        buffer = bytearray(end - begin)
        handle.seek(start + begin)
        handle.readinto(buffer)
        return torch.frombuffer(buffer, dtype=dtype).view(shape)


def load_weights(model: Qwen3ForCausalLM, files: list[Path], transforms: Sequence[Transform] = (), *,
                 source: TensorSource | None = None) -> None:
    """Copy every checkpoint tensor into the model's parameters and persistent buffers, casting to their dtype;
    fail on missing or misshapen tensors. The tensors pass through `transforms` first, in order (a stored
    format's decoding, e.g. quant/fp8.py, quant/qwick_format.py). `source` replaces the safetensors files'
    stream with another file format's (gguf/reader.py)."""
    params = model.state_dict(keep_vars=True)  # parameters and persistent buffers; tied ones under both names
    tied = model.config.tie_word_embeddings
    loaded: set[str] = set()
    stream: TensorSource = source if source is not None else TensorStream(files)
    tensors: Tensors = iter(stream)
    for transform in transforms:
        tensors = transform(tensors)
    for raw_name, tensor in tensors:
        name = canonical_name(raw_name)
        if name is None or (tied and name == "lm_head.weight"):
            continue
        if name not in params:
            raise CheckpointError(f"{stream.file.name}: unexpected tensor {raw_name!r}: not a Qwen3 parameter")
        target = params[name]
        if tuple(tensor.shape) != tuple(target.shape):
            raise CheckpointError(
                f"{stream.file.name}: tensor {raw_name!r} has shape {tuple(tensor.shape)}, "
                f"the config implies {tuple(target.shape)}"
            )
        with torch.no_grad():
            target.copy_(tensor)
        loaded.add(name)
    expected = set(params) - ({"lm_head.weight"} if tied else set())
    missing = sorted(expected - loaded)
    if missing == ["lm_head.weight"] and model.config.architecture == "Qwen3Model":
        model.has_lm_head = False  # embedding/reranker backbones ship no output projection
        return
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise CheckpointError(f"checkpoint is missing {len(missing)} tensor(s): {shown}")


def init_dummy_weights(model: Qwen3ForCausalLM, seed: int = 0, std: float = 0.02) -> None:
    """Random weights from the config alone (like HF's init), for benchmarks at real shapes."""
    generator = torch.Generator(device=model.lm_head.weight.device).manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.fill_(1.0)
            else:
                param.normal_(0.0, std, generator=generator)


def canonical_name(raw: str) -> str | None:
    """HF names map to ours unchanged; Qwen3Model checkpoints lack the `model.` prefix."""
    if raw.endswith("rotary_emb.inv_freq"):
        return None
    if raw.startswith(("model.", "lm_head.")):
        return raw
    return "model." + raw


def load_config(folder: Path) -> Qwen3Config:
    path = folder / "config.json"
    if not path.is_file():
        raise UnsupportedModelError(f"{folder} has no config.json")
    return Qwen3Config.from_file(path)
