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


def replay(gates: OfflineGates, row: dict[str, Any], tolerance: float = 1e-3,
           spec: GateSpec | None = None) -> dict[str, Any]:
    """Re-run the ledger row's request over `gates`' model (under the recorded gate's adapter, one of the
    adapters `gates` knows) with the recorded gate definition, or `spec`; the deadline is lifted (replay may
    run on other hardware).

    Matches when the decision word is equal and every score is within `tolerance`."""
    if row["kind"] not in GATE_KINDS:
        raise ValueError(f"{row['kind']} rows are recorded, not replayed: replay works on gate decisions")
    spec = replace(spec or GateSpec.from_dict(row["gate_config"]), deadline_ms=None)
    if spec.kind != row["kind"]:
        raise ValueError(f"gate {spec.name!r} is now a {spec.kind} gate; the recorded one was {row['kind']}")
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


def replay_trace(gates: OfflineGates, rows: list[dict[str, Any]], tolerance: float = 1e-3,
                 definitions: Gates | None = None) -> dict[str, Any]:
    """Re-run each recorded gate step of one pipeline run on its recorded input (each step alone: what a
    change does to that step, whatever the steps before it said now). `definitions`: a gates file whose gate of
    the same name replaces the recorded definition (a pipeline's inline gates and format steps keep theirs).
    Retrieve and answer steps are listed, not re-run: that needs their index service."""
    steps = []
    for row in rows:
        if row["kind"] not in GATE_KINDS:
            steps.append({"step": row["step"], "kind": row["kind"], "recorded": {"decision": row["decision"]},
                          "replayed": None, "match": None, "note": f"{row['kind']} steps are not replayed (they "
                                                                   "need the index service)"})
            continue
        spec = definitions.get(row["gate"]) if definitions is not None and row["gate"] in definitions else None
        steps.append({"step": row["step"], **replay(gates, row, tolerance, spec)})
    changed = [s["step"] for s in steps if s["match"] is False]
    return {"trace_id": rows[0]["trace_id"], "pipeline": rows[0]["pipeline"], "steps": steps, "changed": changed,
            "match": not changed, "same_weights": gates.service.identity.weights_sha256 == rows[0]["weights_sha256"]}


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
