"""Write a GGUF: the model (loaded by source.py), its metadata, tokenizer and tensors, through GGUFWriter.

The file holds what convert_hf_to_gguf.py writes for a Qwen3 model (general.architecture `qwen3`, the
hyper-parameters of qwick.gguf.hparams, the tokenizer of qwick.gguf.vocab, llama.cpp's tensor names) plus
general.name / general.license, and `qwick.version` / `qwick.source.sha256` (the source files' hash) so a
file says where it came from. It is written to a temporary file next to OUT and renamed at the end: a failed
export leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import gguf
import torch

from qwick import __version__
from qwick.export.source import load_for_export
from qwick.export.tensor_types import EXPORT_TYPES, FILE_TYPES, encode, tensor_type
from qwick.gguf.hparams import write_hparams
from qwick.gguf.names import ARCH, hf_to_gguf
from qwick.gguf.vocab import write_vocab
from qwick.model.config import Qwen3Config
from qwick.tokenizer import Tokenizer


class ExportError(ValueError):
    """The export cannot be done as asked: names the option, file or model."""


@dataclass(frozen=True)
class ExportResult:
    path: Path
    quantization: str
    bytes: int
    tensor_types: dict[str, str]  # GGUF tensor name -> type name


def export_gguf(model: str | Path, out: str | Path, quantization: str = "f16", *, adapter: str | Path | None = None,
                force: bool = False, with_tokenizer: bool = True) -> ExportResult:
    """Write `model` (+ `adapter` merged) to the GGUF file `out` in `quantization` (f32, f16, bf16, q8_0, q4_0).
    `with_tokenizer=False` writes no tokenizer (a file llama.cpp cannot run; for models without one)."""
    if quantization not in EXPORT_TYPES:
        raise ExportError(f"quantization {quantization!r} is not an export type: choose one of "
                          f"{', '.join(EXPORT_TYPES)}")
    out = Path(out)
    if out.exists() and not force:
        raise ExportError(f"{out} already exists: pass --force (force=True) to overwrite it")
    if out.is_dir():
        raise ExportError(f"{out} is a folder: name the .gguf file to write")
    if not out.parent.is_dir():
        raise ExportError(f"{out.parent} does not exist: create the folder first")
    folder, config, net = load_for_export(model, adapter)
    tokenizer = Tokenizer.from_pretrained(folder) if with_tokenizer else None
    handle, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(handle)
    tmp = Path(tmp_name)
    try:
        writer = gguf.GGUFWriter(tmp, ARCH)
        _write_metadata(writer, folder, config, quantization, adapter)
        if tokenizer is not None:
            write_vocab(writer, folder, tokenizer, config.vocab_size)
        types = _add_tensors(writer, net, config, quantization)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        tmp.chmod(0o666 & ~_umask())  # mkstemp makes it private; a model file is shared like any other
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return ExportResult(out, quantization, out.stat().st_size, types)


def _write_metadata(writer: gguf.GGUFWriter, folder: Path, config: Qwen3Config, quantization: str,
                    adapter: str | Path | None) -> None:
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(Path(str(config.raw.get("_name_or_path") or folder.name)).name or folder.name)
    if (license_name := _license(folder)) is not None:
        writer.add_license(license_name)
    writer.add_file_type(FILE_TYPES[quantization])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_string("qwick.version", __version__)
    writer.add_string("qwick.source.sha256", source_hash(folder, adapter))
    write_hparams(writer, config)


def _add_tensors(writer: gguf.GGUFWriter, net: torch.nn.Module, config: Qwen3Config, quantization: str) -> dict[str, str]:
    state = {name: t for name, t in net.state_dict().items()
             if not (config.tie_word_embeddings and name == "lm_head.weight")}  # llama.cpp reuses token_embd
    names = hf_to_gguf(list(state), config.num_hidden_layers)
    types: dict[str, str] = {}
    for name, tensor in state.items():
        values = tensor.detach().float().cpu().numpy()  # [out, in]
        qtype = tensor_type(names[name], values.shape, quantization, config.tie_word_embeddings)
        data = encode(values, qtype)
        writer.add_tensor(names[name], data, raw_dtype=qtype if data.dtype == "uint8" else None)
        types[names[name]] = qtype.name
    return types


def source_hash(folder: Path, adapter: str | Path | None) -> str:
    """sha256 over the source's config and weight files (and the adapter's), in name order."""
    digest = hashlib.sha256()
    files = [folder / "config.json", *sorted(folder.glob("*.safetensors"))]
    if adapter is not None:
        files += sorted(p for p in Path(adapter).iterdir() if p.is_file())
    for file in files:
        digest.update(file.name.encode())
        with file.open("rb") as handle:
            while chunk := handle.read(1 << 22):
                digest.update(chunk)
    return digest.hexdigest()


def _license(folder: Path) -> str | None:
    # a Hugging Face model card's front matter: `license: apache-2.0`
    readme = folder / "README.md"
    if not readme.is_file():
        return None
    match = re.search(r"^license:\s*(\S+)\s*$", readme.read_text(encoding="utf-8", errors="replace")[:4000], re.M)
    return match.group(1) if match else None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
