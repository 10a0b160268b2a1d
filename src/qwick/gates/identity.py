"""Which model made a decision: id, revision, and the sha256 of its weights (computed once, at load)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from qwick.lora.adapter import WEIGHTS_FILE
from qwick.model.loader import checkpoint_files


@dataclass(frozen=True)
class ModelIdentity:
    model: str
    revision: str | None
    weights_sha256: str

    @classmethod
    def of_checkpoint(cls, model: str, path: str | Path, revision: str | None = None, load_format: str = "auto",
                      seed: int | None = None) -> ModelIdentity:
        """The identity of a model loaded from the folder `path` (hashes its weight files; dummy weights are
        named by their seed instead)."""
        path = Path(path)
        # a Hugging Face cache snapshot folder is named after its commit
        revision = path.name if path.parent.name == "snapshots" else revision
        if load_format == "dummy":  # no weight files to hash
            return cls(model, revision, f"dummy:{seed or 0}")
        files = [path] if path.is_file() else checkpoint_files(path)  # a .gguf file is its own weights
        return cls(model, revision, weights_sha256(files))


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
