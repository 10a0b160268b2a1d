"""GGUF, the llama.cpp file format: Qwen3 names and metadata both ways, and loading `.gguf` files into qwick.

Reading and writing go through the `gguf` package (the llama.cpp project's own Python reader/writer); this
package only maps qwick's model, config and tokenizer onto llama.cpp's conventions for the `qwen3` architecture.
Export (which loads a model, so sits above passes/ and lora/) lives in `qwick.export`.
"""

from qwick.gguf.reader import GGUFError, is_gguf_path, open_gguf

__all__ = ["GGUFError", "is_gguf_path", "open_gguf"]
