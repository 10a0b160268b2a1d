"""LoRAManager: the adapter slots of one model. Loads an adapter into a slot once and keeps it there, cached by
`lora_int_id`; a new adapter takes a free slot, else the least recently used slot no live request needs."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from qwick.lora.adapter import LoRAAdapter, load_adapter
from qwick.lora.batch import NO_ADAPTER, LoRABatch, LoRAContext
from qwick.lora.layers import wrap_projections
from qwick.lora.request import LoRARequest

if TYPE_CHECKING:
    from qwick.model.qwen3 import Qwen3ForCausalLM


@dataclass(frozen=True)
class LoRAStats:
    """For vLLM's `lora_requests_info` gauge: adapter names of the running and the waiting sequences."""

    max_lora: int
    running: list[str]
    waiting: list[str]


class LoRASlotsFullError(ValueError):
    """Every slot holds an adapter that a live request still needs; nothing was loaded."""


@dataclass(frozen=True)
class LoRAConfig:
    """vLLM's names: `max_loras` adapters resident at once (so in one batch), each of rank <= `max_lora_rank`."""

    max_loras: int = 1
    max_lora_rank: int = 16

    def __post_init__(self) -> None:
        for name in ("max_loras", "max_lora_rank"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")


class LoRAManager:
    """Applies the LoRA pass to `model` (wraps its projections) and manages what the slots hold.

    Memory: every wrapped projection holds max_loras * max_lora_rank * (in + out) extra values in the model dtype
    (Qwen3-0.6B, 1 slot of rank 16: 10M values, 20 MB in bf16)."""

    def __init__(self, model: Qwen3ForCausalLM, config: LoRAConfig, dtype: torch.dtype,
                 device: torch.device) -> None:
        self.config = config
        self.dtype, self.device = dtype, device
        self.context = LoRAContext()
        self.layers = wrap_projections(model.model.layers, self.context, config.max_loras, config.max_lora_rank,
                                       dtype, device)
        self.shapes = {name: (m.in_features, m.out_features) for name, m in self.layers.items()}
        self._slots: OrderedDict[int, int] = OrderedDict()  # lora_int_id -> slot, least recently used first
        self._names: dict[int, str] = {}
        self._known: dict[int, LoRARequest] = {}  # every id ever seen: one id must keep naming one adapter

    def acquire(self, request: LoRARequest, in_use: Collection[int] = ()) -> None:
        """Make `request`'s adapter resident (loading it if needed). `in_use`: ids live requests still need, which
        may not be evicted. Raises LoRAAdapterError for a bad adapter and LoRASlotsFullError, changing nothing."""
        known = self._known.get(request.lora_int_id)
        if known is not None and Path(known.lora_path).resolve() != Path(request.lora_path).resolve():
            raise ValueError(f"lora_int_id {request.lora_int_id} already names adapter {known.lora_name!r} at "
                             f"{known.lora_path}, not {request.lora_path}: give each adapter its own lora_int_id")
        if request.lora_int_id in self._slots:
            self._slots.move_to_end(request.lora_int_id)
            return
        adapter = load_adapter(request, self.shapes, self.config.max_lora_rank)  # before evicting anything
        slot = self._free_slot(request, in_use)
        self._load(slot, adapter)
        self._slots[request.lora_int_id] = slot
        self._names[request.lora_int_id] = request.lora_name
        self._known.setdefault(request.lora_int_id, request)

    def slot_of(self, lora_int_id: int) -> int:
        return self._slots[lora_int_id] if lora_int_id else NO_ADAPTER

    @property
    def loaded(self) -> list[str]:
        """Names of the resident adapters, least recently used first."""
        return [self._names[i] for i in self._slots]

    @contextmanager
    def active(self, lora_ids: list[int], tokens_per_row: int | list[int]) -> Iterator[None]:
        """Run one forward whose row i belongs to adapter `lora_ids[i]` (0: none); rows of a flat forward are
        segments of the token axis, `tokens_per_row[i]` tokens each."""
        batch = LoRABatch.build([self.slot_of(i) for i in lora_ids], tokens_per_row, self.config.max_lora_rank,
                                self.dtype, self.device)
        with self.context.use(batch):
            yield

    def stats(self, running: Iterable[int], waiting: Iterable[int]) -> LoRAStats:
        """`running` / `waiting`: the lora ids (0: none) of the engine's running and waiting sequences."""

        def names(lora_ids: Iterable[int]) -> list[str]:
            return sorted({self._names[i] for i in lora_ids if i})

        return LoRAStats(self.config.max_loras, names(running), names(waiting))

    def _free_slot(self, request: LoRARequest, in_use: Collection[int]) -> int:
        taken = set(self._slots.values())
        free = [s for s in range(self.config.max_loras) if s not in taken]
        if free:
            return free[0]
        for lora_id, slot in self._slots.items():  # least recently used first
            if lora_id not in in_use:
                del self._slots[lora_id]
                return slot
        raise LoRASlotsFullError(
            f"cannot load LoRA adapter {request.lora_name!r}: all max_loras={self.config.max_loras} slots hold "
            f"adapters of unfinished requests ({', '.join(self.loaded)}); retry when one finishes, or raise max_loras "
            "(LLM(max_loras=...), qwick serve --max-loras)")

    def _load(self, slot: int, adapter: LoRAAdapter) -> None:
        with torch.no_grad():
            for name, layer in self.layers.items():
                pair = adapter.modules.get(name)
                if pair is None:
                    layer.set_slot(slot, None, None)
                else:
                    a, b = pair
                    layer.set_slot(slot, a.to(self.device, self.dtype), b.to(self.device, self.dtype))
