"""CUDA-graph decode: a pure-decode step replayed from a graph captured once per batch-size bucket.

A decode step of a small model is launch-bound on a GPU: ~30 kernels per layer, each microseconds long. A CUDA
graph replays them all with one launch. Graphs are captured for batch sizes 1, 2, 4, 8, then every 16 up to
max_num_seqs (and max_num_seqs itself), largest first, in one memory pool; every graph reads the same static
input buffers (token ids, positions, slot mapping, block tables, context lengths), so a step copies its inputs
there, pads the batch to the next captured size and replays. Padding rows write their keys to the cache's
scratch slot and attend to one position; their logits are never read. Prefill and mixed steps, steps with
scoring forks, LoRA and batches past the largest size run eagerly. `enforce_eager=True` turns graphs off.

The split-K count of the paged kernel depends on the block-table width only, which is fixed here (the blocks
of max_model_len), so a captured graph stays valid for every context length; each row splits its own length.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from qwick.engine.sequence import Sequence
from qwick.model.attention.flat import FlatMetadata
from qwick.model.kv_cache import PagedKVCache
from qwick.model.qwen3 import Qwen3ForCausalLM


def capture_sizes(max_num_seqs: int) -> list[int]:
    """Batch sizes to capture, ascending: 1, 2, 4, 8, then every 16, up to and including max_num_seqs."""
    sizes = [s for s in (1, 2, 4, 8) if s <= max_num_seqs] + list(range(16, max_num_seqs + 1, 16))
    if sizes[-1] != max_num_seqs:
        sizes.append(max_num_seqs)
    return sizes


def padded_size(batch: int, sizes: list[int]) -> int | None:
    """The smallest captured size that holds `batch` rows; None when none does (the step runs eagerly)."""
    return next((s for s in sizes if s >= batch), None)


@dataclass
class DecodeInputs:
    """The static buffers every graph reads; a step copies its rows to the front and pads the rest."""

    input_ids: torch.Tensor  # [S] int64
    positions: torch.Tensor  # [S] int64
    slot_mapping: torch.Tensor  # [S] int64
    block_tables: torch.Tensor  # [S, W] int64, W = blocks of max_model_len
    context_lens: torch.Tensor  # [S] int64

    @classmethod
    def allocate(cls, size: int, width: int, device: torch.device) -> DecodeInputs:
        def zeros(*shape: int) -> torch.Tensor:
            return torch.zeros(shape, dtype=torch.long, device=device)

        inputs = cls(zeros(size), zeros(size), zeros(size), zeros(size, width), zeros(size))
        inputs.context_lens.fill_(1)  # every row attends to at least one position
        return inputs

    def fill(self, ids: list[int], positions: list[int], tables: list[list[int]], block_size: int, size: int,
             scratch_slot: int) -> None:
        """Rows [0, n) from the step, rows [n, size) padding (scratch slot, one position, block 0). Columns of a
        block table past its own blocks keep stale values: nothing reads past a row's context length."""
        n = len(ids)
        width = max(len(t) for t in tables)
        if width > self.block_tables.shape[1]:
            raise ValueError(f"a block table of {width} blocks exceeds the captured width "
                             f"{self.block_tables.shape[1]} (max_model_len)")
        slots = [t[p // block_size] * block_size + p % block_size for t, p in zip(tables, positions, strict=True)]
        pad = size - n
        # one host tensor, one copy: [4, size] ids, positions, slots, lengths
        rows = torch.tensor([ids + [0] * pad, positions + [0] * pad, slots + [scratch_slot] * pad,
                             [p + 1 for p in positions] + [1] * pad], dtype=torch.long)
        table = torch.tensor([t + [0] * (width - len(t)) for t in tables] + [[0] * width] * pad, dtype=torch.long)
        non_blocking = self.input_ids.device.type == "cuda"
        for buffer, row in zip((self.input_ids, self.positions, self.slot_mapping, self.context_lens), rows,
                               strict=True):
            buffer[:size].copy_(row, non_blocking=non_blocking)
        self.block_tables[:size, :width].copy_(table, non_blocking=non_blocking)

    def metadata(self, size: int) -> FlatMetadata:
        """A flat step of `size` decodes over the buffers' first rows (views: a graph sees later fills)."""
        return FlatMetadata(self.slot_mapping[:size], size, self.block_tables[:size], self.context_lens[:size], [],
                            in_place_prefill=False)


class DecodeGraphs:
    """Decode steps through captured graphs (CUDA), or through the same static buffers eagerly (`capture` not
    called: how the padding and buffer logic is tested on a CPU)."""

    def __init__(self, model: Qwen3ForCausalLM, cache: PagedKVCache, max_num_seqs: int, max_model_len: int,
                 device: torch.device) -> None:
        self.model, self.cache = model, cache
        self.sizes = capture_sizes(max_num_seqs)
        width = -(-max_model_len // cache.block_size)
        self.inputs = DecodeInputs.allocate(self.sizes[-1], width, device)
        self.logits = torch.empty(self.sizes[-1], model.config.vocab_size, device=device)  # [S, V] float32
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}

    def fits(self, batch: int) -> bool:
        return 0 < batch <= self.sizes[-1]

    @torch.inference_mode()
    def capture(self) -> None:
        """Capture every size, largest first, into one memory pool (smaller graphs reuse the largest's memory)."""
        pool = torch.cuda.graph_pool_handle()
        for size in reversed(self.sizes):
            self._forward(size)  # warm-up outside the capture: Triton compiles, cuBLAS picks its kernels
            torch.cuda.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                self._forward(size)
            self.graphs[size] = graph
        torch.cuda.synchronize()

    @torch.inference_mode()
    def run(self, seqs: list[Sequence]) -> torch.Tensor:
        """One decode token for each sequence (its last token at position total_len - 1): logits [n, V] float32,
        valid until the next run."""
        size = padded_size(len(seqs), self.sizes)
        assert size is not None, "check fits() first"
        self.inputs.fill([s.last_token_id for s in seqs], [s.total_len - 1 for s in seqs],
                         [s.block_table for s in seqs], self.cache.block_size, size, self.cache.scratch_slot)
        graph = self.graphs.get(size)
        if graph is not None:
            graph.replay()
        else:
            self._forward(size)
        return self.logits[: len(seqs)]

    def _forward(self, size: int) -> None:
        ids = self.inputs.input_ids[None, :size]  # [1, size]
        positions = self.inputs.positions[None, :size]
        hidden = self.model(ids, positions, self.cache, self.inputs.metadata(size))[0]  # [size, H]
        self.model.compute_logits(hidden, out=self.logits[:size])


def capture_decode_graphs(model: Qwen3ForCausalLM, cache: PagedKVCache, device: torch.device, max_num_seqs: int,
                          max_model_len: int) -> DecodeGraphs | None:
    """The captured decode graphs for this model and cache; None where its backend runs no flat step (the
    grouped SDPA path stays eager)."""
    if not model.attention_backend.supports_flat_step:
        return None
    graphs = DecodeGraphs(model, cache, max_num_seqs, max_model_len, device)
    graphs.capture()
    return graphs
