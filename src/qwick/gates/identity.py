"""Which model made a decision: id, revision, and the sha256 of its weights (computed once, at load)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from qwick.lora.adapter import WEIGHTS_FILE
from qwick.model.loader import checkpoint_files

if TYPE_CHECKING:
    from qwick.llm import LLM


@dataclass(frozen=True)
class ModelIdentity:
    model: str
    revision: str | None
    weights_sha256: str

    @classmethod
    def of(cls, llm: LLM) -> ModelIdentity:
        path = Path(llm.model_path)
        # a Hugging Face cache snapshot folder is named after its commit
        revision = path.name if path.parent.name == "snapshots" else getattr(llm, "revision", None)
        if getattr(llm, "load_format", "auto") == "dummy":
            digest = f"dummy:{getattr(llm, 'seed', None) or 0}"
        else:
            digest = weights_sha256(checkpoint_files(path))
        return cls(llm.model_name, revision, digest)


def adapter_weights_sha256(adapter_dir: str | Path) -> str:
    """A PEFT adapter folder's weights: the sha256 of its adapter_model.safetensors (the file qwick loads)."""
    return _file_sha256(Path(adapter_dir) / WEIGHTS_FILE)


def weights_sha256(files: list[Path]) -> str:
    """One file: its sha256 (comparable with the hub's published LFS hash). Several (shards): the sha256 of the
    lines 'name sha256' of each file, sorted by name."""
    digests = {f.name: _file_sha256(f) for f in files}
    if len(digests) == 1:
        return next(iter(digests.values()))
    listing = "".join(f"{name} {digest}\n" for name, digest in sorted(digests.items()))
    return hashlib.sha256(listing.encode()).hexdigest()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
