"""`qwick export`: any model qwick loads written as a GGUF file that llama.cpp and Ollama run unchanged.

Uses the `gguf` package (the llama.cpp project's own writer and quantizers) through qwick.gguf's names and
metadata; see writer.py for the file's contents and tensor_types.py for which tensor gets which type.
"""

from qwick.export.writer import EXPORT_TYPES, ExportError, export_gguf

__all__ = ["EXPORT_TYPES", "ExportError", "export_gguf"]
