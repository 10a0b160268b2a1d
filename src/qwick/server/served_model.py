"""ServedModel: what the HTTP server needs to know of the model it serves, besides the engine client."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from qwick.engine.grammar import GrammarCompiler
from qwick.tokenizer import Tokenizer

if TYPE_CHECKING:
    from qwick.llm import LLM
    from qwick.lora.manager import LoRAManager


@dataclass(frozen=True)
class ServedModel:
    name: str  # the model id clients send (--served-model-name)
    tokenizer: Tokenizer
    max_model_len: int
    max_num_seqs: int | None = None  # the engine's batch size; needed only with limits.max_queue
    grammars: GrammarCompiler | None = None  # the engine's compiler (None: one is built for validation only)
    lora: LoRAManager | None = None  # the adapter slots, for runtime adapter loading (enable_lora=True)

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a served model needs a name (served_model_name)")

    @classmethod
    def of(cls, llm: LLM, name: str | None = None) -> ServedModel:
        """An LLM's tokenizer, limits, grammars and adapter slots, served as `name` (default: its model)."""
        return cls(name or llm.model_name, llm.get_tokenizer(), llm.max_model_len, llm.engine_config.max_num_seqs,
                   llm.engine.grammars, llm.lora)
