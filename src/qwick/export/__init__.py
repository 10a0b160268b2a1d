"""`qwick export`: any model qwick loads written as a GGUF file that llama.cpp and Ollama run unchanged.

Uses the `gguf` package (the llama.cpp project's own writer and quantizers) through qwick.gguf's names and
metadata; see writer.py for the file's contents and tensor_types.py for which tensor gets which type.
"""

from typing import Any

# Imported on first use: `qwick export --help` (export/cli.py, inside this package) must not load torch and gguf.
_EXPORTS = ("EXPORT_TYPES", "ExportError", "export_gguf")


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'qwick.export' has no attribute {name!r}")
    from qwick.export import writer

    return getattr(writer, name)


__all__ = ["EXPORT_TYPES", "ExportError", "export_gguf"]
