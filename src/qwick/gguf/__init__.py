"""GGUF, the llama.cpp file format: Qwen3 names and metadata both ways, and loading `.gguf` files into qwick.

Reading and writing go through the `gguf` package (the llama.cpp project's own Python reader/writer); this
package only maps qwick's model, config and tokenizer onto llama.cpp's conventions for the `qwen3` architecture.
Export (which loads a model, so sits above passes/ and lora/) lives in `qwick.export`.
"""

from pathlib import Path
from typing import Any


def is_gguf_path(path: str | Path) -> bool:
    """Whether `path` names a GGUF file (by its suffix; checked before the gguf package is imported)."""
    return Path(path).suffix.lower() == ".gguf"


def __getattr__(name: str) -> Any:
    # the reader imports the gguf package (~0.2 s): only models given as .gguf files pay for it
    if name not in ("GGUFError", "open_gguf"):
        raise AttributeError(f"module 'qwick.gguf' has no attribute {name!r}")
    from qwick.gguf import reader

    return getattr(reader, name)


__all__ = ["GGUFError", "is_gguf_path", "open_gguf"]
