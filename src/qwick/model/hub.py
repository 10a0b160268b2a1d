"""Find a model's files: a local folder, or a Hugging Face hub id through `huggingface_hub` and its cache."""

from __future__ import annotations

import re
from pathlib import Path

HUB_PATTERNS = ["*.json", "*.safetensors", "*.jinja", "*.txt"]
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class ModelNotFoundError(FileNotFoundError):
    """Neither a local folder nor a reachable/cached hub repository."""


def resolve_model_path(model: str | Path, revision: str | None = None) -> Path:
    """Return a local folder holding config.json for `model` (a folder path or a hub id like Qwen/Qwen3-0.6B)."""
    path = Path(model).expanduser()
    if path.exists():
        if path.is_file() and path.suffix.lower() == ".gguf":  # a llama.cpp file (qwick/gguf reads it)
            return path
        if not path.is_dir():
            raise ModelNotFoundError(f"{model} is a file; pass the model folder (the one holding config.json) "
                                     "or a .gguf file")
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"{path} has no config.json; is it a Hugging Face model folder?")
        return path
    if not _REPO_ID.match(str(model)):
        raise ModelNotFoundError(f"model folder {str(model)!r} does not exist")
    return _download(str(model), revision)


def _download(repo_id: str, revision: str | None) -> Path:
    from huggingface_hub import snapshot_download

    try:  # the cache first: works offline and costs no request
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=HUB_PATTERNS, local_files_only=True))
    except Exception:
        pass
    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=HUB_PATTERNS))
    except Exception as exc:
        raise ModelNotFoundError(
            f"could not get model {repo_id!r}: no local folder has that name, it is not in the Hugging Face cache "
            "and the hub could not be reached "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). Download it where the hub is "
            f"reachable (`hf download {repo_id} --local-dir DIR`) and pass the folder instead, e.g. "
            "`qwick generate DIR \"prompt\"` or `LLM(model=\"DIR\")`."
        ) from exc
