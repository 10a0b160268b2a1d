"""The adapters a server offers (`qwick serve --lora-modules`, vLLM's flag): parsing and checking. No torch."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from qwick.lora.request import LoRARequest


def parse_lora_module(value: str, lora_int_id: int) -> LoRARequest:
    """`name=path`, or vLLM's JSON form `{"name": ..., "path": ...}` (its `base_model_name` is accepted and not
    used: adapters always apply to the served model)."""
    value = value.strip()
    if value.startswith("{"):
        try:
            spec = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"--lora-modules {value!r}: invalid JSON ({exc})") from None
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not isinstance(spec.get("path"), str):
            raise ValueError(f"--lora-modules {value!r}: the JSON form needs string fields \"name\" and \"path\"")
        unknown = sorted(set(spec) - {"name", "path", "base_model_name"})
        if unknown:
            raise ValueError(f"--lora-modules {value!r}: unknown fields {unknown} (expected name, path, "
                             "base_model_name)")
        name, path = spec["name"], spec["path"]
    else:
        name, sep, path = value.partition("=")
        if not sep:
            raise ValueError(f"--lora-modules {value!r}: expected name=path or a JSON object")
    if not name.strip() or not path.strip():
        raise ValueError(f"--lora-modules {value!r}: both the name and the path must be non-empty")
    return LoRARequest(name.strip(), lora_int_id, path.strip())


def parse_lora_modules(values: Sequence[str]) -> list[LoRARequest]:
    """Each value one module; ids 1, 2, ... in order, as vLLM numbers them."""
    return [parse_lora_module(value, i) for i, value in enumerate(values, start=1)]


def lora_llm_options(modules: Sequence[LoRARequest], max_loras: int | None = None,
                     max_lora_rank: int | None = None) -> dict[str, Any]:
    """The LLM(...) keywords that serve `modules`: LoRA on, all resident, rank the largest of theirs by default."""
    from qwick.lora.adapter import read_rank

    if not modules:
        return {}
    rank = max_lora_rank or max(read_rank(m.lora_path) for m in modules)
    return {"enable_lora": True, "max_loras": max_loras or len(modules), "max_lora_rank": rank}


def served_lora_modules(modules: Sequence[LoRARequest], base_model_name: str) -> dict[str, LoRARequest]:
    """Adapters by the model name clients send; names and ids must be unique and differ from the base model's."""
    served: dict[str, LoRARequest] = {}
    ids: set[int] = set()
    for lora in modules:
        if lora.lora_name == base_model_name:
            raise ValueError(f"LoRA module name {lora.lora_name!r} is the served model's own name: rename the adapter")
        if lora.lora_name in served:
            raise ValueError(f"LoRA module name {lora.lora_name!r} is given twice: names must be unique")
        if lora.lora_int_id in ids:
            raise ValueError(f"LoRA modules {lora.lora_name!r} and another share lora_int_id {lora.lora_int_id}")
        served[lora.lora_name] = lora
        ids.add(lora.lora_int_id)
    return served
