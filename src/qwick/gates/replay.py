"""Replay: run a recorded gate request again (same gate definition, same inputs) and compare decisions."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from qwick.engine.sync_engine import run_sync
from qwick.gates.decisions import Decision
from qwick.gates.kinds import GATE_KINDS
from qwick.gates.loader import Gates
from qwick.gates.offline import OfflineGates
from qwick.gates.spec import GateSpec


def replay(gates: OfflineGates, row: dict[str, Any], tolerance: float = 1e-3) -> dict[str, Any]:
    """Re-run the ledger row's request over `gates`' model (under the recorded gate's adapter, one of the
    adapters `gates` knows); the deadline is lifted (replay may run on other hardware).

    Matches when the decision word is equal and every score is within `tolerance`."""
    if row["kind"] == "completion":
        raise ValueError("completions are recorded, not replayed: replay works on gate decisions")
    spec = replace(GateSpec.from_dict(row["gate_config"]), deadline_ms=None)
    base = gates.service
    if spec.adapter is not None and spec.adapter not in base.adapters:
        raise ValueError(f"the recorded gate ran under LoRA adapter {spec.adapter!r}: pass it to replay "
                         f"(`--lora-modules {spec.adapter}=PATH`)")
    service = OfflineGates(base.engine, base.tokenizer, base.identity, Gates([spec]),
                           adapters=list(base.adapters.values())).service
    decision: Decision = run_sync(service.run(spec, row["input"]))
    new_scores = GATE_KINDS[spec.kind].ledger_scores(decision)
    diff = _score_diff(row["scores"], new_scores)
    report = {
        "request_id": row["request_id"], "gate": row["gate"], "kind": row["kind"],
        "recorded": {"decision": row["decision"], "scores": row["scores"], "model": row["model"]},
        "replayed": {"decision": decision.summary, "scores": new_scores, "model": base.identity.model},
        "max_score_diff": diff,
        "match": decision.summary == row["decision"] and (diff is None or diff <= tolerance),
    }
    if spec.adapter is not None:
        report["recorded"]["adapter"] = spec.adapter
        report["same_adapter"] = service.adapter_sha256(spec.adapter) == row.get("adapter_sha256")
    return report


def _score_diff(old: Any, new: Any) -> float | None:
    if not old or not new:
        return None
    if isinstance(old, dict):
        if set(old) != set(new):
            return float("inf")
        return max(abs(old[k] - new[k]) for k in old)
    if len(old) != len(new):
        return float("inf")
    return max(abs(a - b) for a, b in zip(old, new, strict=True))
