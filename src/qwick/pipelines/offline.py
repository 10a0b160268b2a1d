"""`llm.pipeline(name, text)`: a pipeline of the gates file loaded into `llm.gates`, run to completion from
synchronous code over the LLM's own engine client (as the offline gates run)."""

from __future__ import annotations

from typing import Any

from qwick.engine.sync_engine import run_sync
from qwick.gates.offline import OfflineGates
from qwick.pipelines.loader import parse_pipelines
from qwick.pipelines.results import PipelineResult
from qwick.pipelines.retrieval import Retrieval
from qwick.pipelines.runner import PipelineRunner


def run_offline(gates: OfflineGates, name: str, text: str, *, user_id: str | None = None,
                vars: dict[str, Any] | None = None, retrieval: Retrieval | None = None) -> PipelineResult:
    """Run pipeline `name` of `gates`' gates file (`llm.gates.load_gates(path)`) on `text`."""
    runner = PipelineRunner(gates.service, parse_pipelines(gates.service.gates), retrieval)
    return run_sync(runner.run(name, text, user_id=user_id, vars=vars))
