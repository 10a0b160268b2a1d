"""Quantized safetensors checkpoints: `qwick quantize` writes them, `load_quantized` reads them back fast
(passes/load.py picks it by config.json).

Format (a Hugging Face folder; config.json gains `"quantization_config": {"quant_method": "qwick", ...}`):
  int8 projection X:  X.weight int8 [N, K], X.weight_scale float32 [N];  w = weight * scale[n]
  int4 projection X:  X.weight_packed uint8 [N, ceil(K/2)] (column 2j in the low nibble of byte j),
                      X.weight_scale and X.weight_min float16 [N, K/group];  w = q * scale + min, q in 0..15
  lm_head (int8, when quantized): lm_head.weight + lm_head.weight_scale; a tied model stores no
                      model.embed_tokens.weight, its embedding is read from these int8 rows
  everything else (norms, an untied embedding) in the source dtype.
Loading builds the model on the meta device, creates the quantized modules straight from these tensors
(no float copy of the weights ever exists) and materialises only the float parameters that remain.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import shutil
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from safetensors.torch import save_file

from qwick.model.config import Qwen3Config
from qwick.model.loader import CheckpointError, Transform, build_model, checkpoint_files, load_weights
from qwick.model.qwen3 import Qwen3ForCausalLM
from qwick.quant.fp8 import fp8_block_size, fp8_weights
from qwick.quant.int4 import Int4Linear, quantize_int4
from qwick.quant.int8 import Int8Linear, attach_lm_head, quantize_int8
from qwick.quant.layout import pack_nibbles, unpack_nibbles
from qwick.quant.options import DEFAULT_GROUP_SIZE, PROJECTIONS, check_group_size, validate_quantization

QUANT_METHOD = "qwick"


@dataclass(frozen=True)
class QuantSpec:
    """What a quantized checkpoint holds (config.json's quantization_config)."""

    method: str  # "int8" | "int4"
    group_size: int | None  # int4 only
    lm_head: bool

    @classmethod
    def from_config(cls, raw: dict[str, Any]) -> QuantSpec | None:
        quant = raw.get("quantization_config") or {}
        if quant.get("quant_method") != QUANT_METHOD:
            return None
        spec = cls(quant.get("method", ""), quant.get("group_size"), bool(quant.get("lm_head", False)))
        try:
            validate_quantization(spec.method, spec.group_size or DEFAULT_GROUP_SIZE)
        except ValueError as exc:
            raise CheckpointError(f"config.json quantization_config is not a valid qwick one: {exc}") from exc
        return spec

    def to_config(self) -> dict[str, Any]:
        return {"quant_method": QUANT_METHOD, "method": self.method, "group_size": self.group_size,
                "lm_head": self.lm_head, "format_version": 1}


def is_projection(name: str) -> bool:
    parts = name.split(".")
    return len(parts) >= 2 and parts[-1] == "weight" and parts[-2] in PROJECTIONS and ".layers." in name


def quantized_tensors(name: str, weight: torch.Tensor, spec: QuantSpec) -> dict[str, torch.Tensor]:
    """One float weight [N, K] -> the checkpoint tensors that replace it (see the module docstring)."""
    stem = name.removesuffix(".weight")
    if spec.method == "int4" and name != "lm_head.weight":
        q, scale, mins = quantize_int4(weight, spec.group_size or DEFAULT_GROUP_SIZE)
        return {f"{stem}.weight_packed": pack_nibbles(q), f"{stem}.weight_scale": scale, f"{stem}.weight_min": mins}
    q, scales = quantize_int8(weight)
    return {f"{stem}.weight": q, f"{stem}.weight_scale": scales}


def save_quantized(source: Path, out: Path, method: str, group_size: int = DEFAULT_GROUP_SIZE, *,
                   lm_head: bool = True) -> QuantSpec:
    """Quantize the float (or FP8) checkpoint in `source` into a new folder `out` (one model.safetensors)."""
    validate_quantization(method, group_size)
    raw = json.loads((source / "config.json").read_text(encoding="utf-8"))
    config = Qwen3Config.from_dict(raw, str(source / "config.json"))
    if QuantSpec.from_config(raw) is not None:
        raise ValueError(f"{source} is already quantized by qwick ({raw['quantization_config']}): quantize the "
                         "float checkpoint instead")
    model = build_model(config, _source_dtype(raw), torch.device("cpu"))
    load_float(model, source, raw)
    lm_head = lm_head and model.has_lm_head  # a Qwen3Model backbone has none to quantize
    spec = QuantSpec(method, group_size if method == "int4" else None, lm_head)
    if method == "int4":
        check_group_size([m.in_features for name, m in model.named_modules() if is_projection(name + ".weight")],
                         group_size)
    tensors: dict[str, torch.Tensor] = {}
    for name, tensor in model.state_dict().items():
        tied_embedding = name == "model.embed_tokens.weight" and config.tie_word_embeddings
        if tied_embedding and lm_head:
            continue  # served from lm_head's int8 rows
        if name == "lm_head.weight" and ((config.tie_word_embeddings and not lm_head) or not model.has_lm_head):
            continue  # the float embedding is the head, or there is no head
        if is_projection(name) or (name == "lm_head.weight" and lm_head):
            tensors.update(quantized_tensors(name, tensor, spec))
        else:
            tensors[name] = tensor.contiguous()
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt", "quantization": method})
    for item in source.iterdir():  # tokenizer, generation config, chat template...
        if item.is_file() and item.suffix not in (".safetensors", ".bin", ".pt", ".pth") and \
                item.name not in ("config.json", "model.safetensors.index.json"):
            shutil.copy(item, out / item.name)
    raw["quantization_config"] = spec.to_config()
    (out / "config.json").write_text(json.dumps(raw, indent=2) + "\n", encoding="utf-8")
    return spec


def check_matches(stored: QuantSpec, quantization: str | None, group_size: int | None, folder: Path) -> None:
    if quantization is not None and quantization != stored.method:
        raise ValueError(f"{folder} is already quantized as {stored.method}; quantization={quantization!r} does not "
                         f"match (pass quantization=None or {stored.method!r}, or quantize the float checkpoint)")
    if group_size is not None and stored.method == "int4" and group_size != stored.group_size:
        raise ValueError(f"{folder} is quantized as int4 with group size {stored.group_size}, not {group_size}: "
                         "drop the group size or re-quantize the float checkpoint with it")


def load_quantized(folder: Path, config: Qwen3Config, spec: QuantSpec, dtype: torch.dtype, device: torch.device,
                   kernel: str = "auto") -> Qwen3ForCausalLM:
    with ExitStack() as stack:  # tensors are read one at a time: peak memory ~ the model plus one layer
        tensors = _TensorIndex(stack, checkpoint_files(folder), device)
        with torch.device("meta"):
            model = Qwen3ForCausalLM(config).to(dtype)
        for name, module in list(model.named_modules()):
            if is_projection(name + ".weight"):
                parent, attr = model.get_submodule(name.rsplit(".", 1)[0]), name.rsplit(".", 1)[1]
                setattr(parent, attr, _quantized_module(tensors, name, module, spec, dtype, kernel))
                release_freed_memory()
        if spec.lm_head:
            q = tensors.take("lm_head.weight", (config.vocab_size, config.hidden_size))
            scale = tensors.take("lm_head.weight_scale", (config.vocab_size,))
            attach_lm_head(model, Int8Linear(q, scale, dtype, kernel, out_dtype=torch.float32), dtype)
        for module in model.modules():  # what is still on meta: norms, float embedding / head
            if any(t.is_meta for t in [*module.parameters(recurse=False), *module.buffers(recurse=False)]):
                module.to_empty(device=device, recurse=False)
        if config.tie_word_embeddings and not spec.lm_head:
            model.lm_head.weight = model.model.embed_tokens.weight
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name == "lm_head.weight" and not tensors.has(name) and config.architecture == "Qwen3Model":
                    model.has_lm_head = False  # embedding/reranker backbones ship no output projection
                elif not (name == "lm_head.weight" and config.tie_word_embeddings):
                    param.copy_(tensors.take(name, tuple(param.shape)))
        if tensors.unread():
            raise CheckpointError(f"{folder}: unexpected tensors for a {spec.method} checkpoint: "
                                  f"{tensors.unread()[:5]}")
    model.model.rotary_emb.reset()
    release_freed_memory()
    return model.eval().requires_grad_(False)


def release_freed_memory() -> None:
    """Hand freed heap memory back to the OS (glibc keeps it): the read buffers and repacking temporaries of
    every layer would otherwise stay resident, measured +0.7 GB peak / +0.5 GB after loading 0.6B int4."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to do
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class _TensorIndex:
    """A checkpoint's tensors, read on demand into memory the tensor owns, with a shape check.

    Plain reads, not safe_open: its tensors can point into a file mapping that closes with the handle, and every
    mapped page it touches counts towards the process's resident memory (the whole file, on top of the model).
    """

    _DTYPES: ClassVar[dict[str, torch.dtype]] = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                                                 "I8": torch.int8, "U8": torch.uint8, "I32": torch.int32,
                                                 "I64": torch.int64}

    def __init__(self, stack: ExitStack, files: list[Path], device: torch.device) -> None:
        self.device = device
        self.entries: dict[str, tuple[Any, int, dict[str, Any]]] = {}  # name -> (file, data start, header entry)
        for path in files:
            file = stack.enter_context(path.open("rb"))
            size = int.from_bytes(file.read(8), "little")
            header = json.loads(file.read(size))
            header.pop("__metadata__", None)
            self.entries.update({name: (file, 8 + size, entry) for name, entry in header.items()})
        self.read: set[str] = set()

    def has(self, name: str) -> bool:
        return name in self.entries

    def take(self, name: str, shape: tuple[int, ...]) -> torch.Tensor:
        if name not in self.entries:
            raise CheckpointError(f"quantized checkpoint is missing tensor {name!r}")
        file, start, entry = self.entries[name]
        self.read.add(name)
        if tuple(entry["shape"]) != shape:
            raise CheckpointError(f"tensor {name!r} has shape {tuple(entry['shape'])}, the config implies {shape} "
                                  "(a different model, or a group size other than config.json's?)")
        if entry["dtype"] not in self._DTYPES:
            raise CheckpointError(f"tensor {name!r} has dtype {entry['dtype']}, not one qwick writes")
        begin, end = entry["data_offsets"]
        buffer = bytearray(end - begin)
        file.seek(start + begin)
        file.readinto(buffer)
        if not buffer:  # an empty tensor
            return torch.empty(shape, dtype=self._DTYPES[entry["dtype"]], device=self.device)
        tensor = torch.frombuffer(buffer, dtype=self._DTYPES[entry["dtype"]]).view(shape)
        return tensor.to(self.device)

    def unread(self) -> list[str]:
        return sorted(set(self.entries) - self.read)


def _quantized_module(tensors: _TensorIndex, name: str, module: torch.nn.Module, spec: QuantSpec,
                      dtype: torch.dtype, kernel: str) -> torch.nn.Module:
    n, k = module.out_features, module.in_features
    if spec.method == "int8":
        return Int8Linear(tensors.take(f"{name}.weight", (n, k)), tensors.take(f"{name}.weight_scale", (n,)),
                          dtype, kernel)
    group = spec.group_size or DEFAULT_GROUP_SIZE
    if k % group:
        raise CheckpointError(f"{name}: group size {group} (config.json) does not divide in_features {k}")
    packed = tensors.take(f"{name}.weight_packed", (n, (k + 1) // 2))
    scale = tensors.take(f"{name}.weight_scale", (n, k // group))
    mins = tensors.take(f"{name}.weight_min", (n, k // group))
    return Int4Linear(unpack_nibbles(packed, k), scale, mins, dtype, kernel)


def checkpoint_transforms(raw: dict[str, Any]) -> list[Transform]:
    """The loader transforms a float checkpoint's config.json asks for: FP8 releases are dequantized on load."""
    block = fp8_block_size(raw)
    return [] if block is None else [fp8_weights(block)]


def load_float(model: Qwen3ForCausalLM, folder: Path, raw: dict[str, Any]) -> None:
    """A float or FP8 checkpoint's weights into `model` (model/loader.py, with the transforms its config asks)."""
    load_weights(model, checkpoint_files(folder), checkpoint_transforms(raw))


def _source_dtype(raw: dict[str, Any]) -> torch.dtype:
    # quantize from the published precision (bf16 for Qwen3): what LLM(quantization=...) would quantize too
    name = raw.get("torch_dtype") or raw.get("dtype") or "bfloat16"
    return {"float32": torch.float32, "float16": torch.float16}.get(str(name), torch.bfloat16)
