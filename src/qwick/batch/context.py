"""TaskContext: what a batch task runs on — the engine client, the tokenizer, the gates (deadlines off) and the
task's options — built from an LLM (duck-typed: this package sits below `qwick.llm`, which delegates to it)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from qwick.engine.client import EngineClient
from qwick.gates.identity import ModelIdentity
from qwick.gates.loader import Gates, load_gates
from qwick.gates.service import GateService
from qwick.tokenizer import Tokenizer


@dataclass
class TaskContext:
    client: EngineClient
    tokenizer: Tokenizer
    gates: GateService
    options: Any  # tasks.TaskOptions

    @classmethod
    def of(cls, llm: Any, options: Any, gates_file: str | Path | None = None) -> TaskContext:
        """Over `llm`'s own engine client (`llm.client`: coroutines that step its engine in this thread)."""
        tokenizer = llm.get_tokenizer()
        gates = batch_gates(load_gates(gates_file))
        gates.check_tokens(tokenizer)
        # no ledger in batch runs, so the identity is never recorded: no need to hash the weights for it
        identity = ModelIdentity(str(llm.model_name), None, "")
        return cls(llm.client, tokenizer, GateService(llm.client, tokenizer, gates, identity), options)


def batch_gates(gates: Gates) -> Gates:
    """The gates with their deadlines off: a deadline is a serving latency budget, while a batch row waits its
    turn behind the rows submitted before it (it would time out under full occupancy, not for being slow)."""
    return Gates([replace(spec, deadline_ms=None) for spec in gates.values()], gates.source)
