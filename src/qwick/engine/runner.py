"""Runs the model for a scheduled step.

Where the model's attention backend supports it (CPU with AVX-512: model/attention/cpu_paged.py; CUDA with
triton: triton_paged.py), the whole step is one flat forward: every prefill chunk, decode and scoring fork on one
token axis, no padding (model/attention/flat.py), so the weights are read once a step; on CUDA a pure decode
step replays a captured graph (engine/cuda_graphs.py). Elsewhere (SDPA: compiled decode, no op) prefill
chunks run in padded groups of similar length and all decodes in one more forward.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from qwick.engine.readout_reader import read_readouts
from qwick.engine.scheduler import PrefillChunk
from qwick.engine.sequence import Sequence
from qwick.model.attention.backend import AttentionBackend
from qwick.model.attention.flat import FlatMetadata, Segment
from qwick.model.attention.metadata import AttentionMetadata, length_groups
from qwick.model.attention.select import select_backend
from qwick.model.kv_cache import PagedKVCache
from qwick.model.qwen3 import Qwen3ForCausalLM

if TYPE_CHECKING:
    from qwick.engine.cuda_graphs import DecodeGraphs
    from qwick.lora.manager import LoRAManager


# Padding a group's chunks with up to this many tokens in all is cheaper than a second forward: a forward of a
# few tokens costs one read of the weights whatever its width (e.g. a scoring request's 1- and 2-token forks).
CHUNK_PADDING_SLACK = 32


def group_chunks(chunks: list[PrefillChunk]) -> list[list[PrefillChunk]]:
    """Group chunks of similar length so one forward serves many prompts (weights are read once per group)."""
    ordered = sorted(chunks, key=lambda c: -c.num_tokens)
    return [ordered[rows] for rows in length_groups([c.num_tokens for c in ordered], CHUNK_PADDING_SLACK)]


class ModelRunner:
    def __init__(self, model: Qwen3ForCausalLM, cache: PagedKVCache, device: torch.device,
                 lora: LoRAManager | None = None) -> None:
        self.model = model
        self.cache = cache
        self.device = device
        self.lora = lora  # set when the model carries the LoRA pass
        # chosen once, for this model and cache; a later pass may swap it (compile_decode: SDPA)
        model.set_attention_backend(select_backend(device, cache.compute_dtype, cache.dtype, model.config.head_dim))
        self._logits = torch.empty(0, device=device)  # [rows, V] float32, reused by every step (see `logits`)
        self.graphs: DecodeGraphs | None = None  # CUDA-graph decode (engine/cuda_graphs.py), set by the builder

    @property
    def backend(self) -> AttentionBackend:
        """The model's attention backend: which step shapes run (`supports_flat_step`), which chunks read in place."""
        return self.model.attention_backend

    @torch.inference_mode()
    def prefill(self, chunks: list[PrefillChunk]) -> list[torch.Tensor | None]:
        """Compute the chunks in one padded forward; per chunk, logits [V] float32 if it completes its prompt."""
        width = max(c.num_tokens for c in chunks)
        ids, positions = [], []
        for chunk in chunks:
            seq, start, n = chunk.seq, chunk.seq.num_cached, chunk.num_tokens
            pad = width - n
            ids.append(seq.input_ids(start, n) + [0] * pad)
            positions.append(list(range(start, start + n)) + [start + n - 1] * pad)
        input_ids = torch.tensor(ids, dtype=torch.long, device=self.device)  # [B, T]
        pos = torch.tensor(positions, device=self.device)
        meta = AttentionMetadata.build(pos, [c.seq.block_table for c in chunks], self.cache.block_size,
                                       [c.num_tokens for c in chunks], self.cache.scratch_slot,
                                       paged=self.backend.reads_in_place(width))
        hidden = self._forward(input_ids, pos, meta, [c.seq for c in chunks], width)  # [B, T, H]
        # scoring / pooling rows: read here, never sampled
        read_readouts(self.logits, chunks, hidden.view(-1, hidden.shape[-1]), [i * width for i in range(len(chunks))])
        wants = [c.completes and c.seq.readout is None for c in chunks]
        # a chunk's last row, or its last 1 + drafts rows ([1 + k, V]) when it verifies drafts
        picks = [(i, j) for i, c in enumerate(chunks) if wants[i]
                 for j in range(c.num_tokens - c.seq.num_reads, c.num_tokens)]
        logits = self.model.compute_logits(hidden[[i for i, _ in picks], [j for _, j in picks]]) if picks else None
        results: list[torch.Tensor | None] = []
        start = 0
        for i, c in enumerate(chunks):
            reads = c.seq.num_reads if wants[i] else 0
            results.append(None if not reads or logits is None else
                           logits[start] if reads == 1 else logits[start : start + reads])
            start += reads
        for chunk in chunks:
            chunk.seq.num_cached += chunk.num_tokens
        return results

    @torch.inference_mode()
    def decode(self, seqs: list[Sequence]) -> torch.Tensor:
        """Feed each sequence's last token; logits [B, V] float32."""
        input_ids = torch.tensor([[s.last_token_id] for s in seqs], dtype=torch.long, device=self.device)  # [B, 1]
        positions = torch.tensor([[s.total_len - 1] for s in seqs], device=self.device)
        meta = AttentionMetadata.build(positions, [s.block_table for s in seqs], self.cache.block_size,
                                       paged=self.backend.reads_in_place(1))
        hidden = self._forward(input_ids, positions, meta, seqs, 1)  # [B, 1, H]
        for s in seqs:
            s.num_cached = s.total_len
        return self.logits(hidden[:, -1])

    @torch.inference_mode()
    def flat_step(self, chunks: list[PrefillChunk], decodes: list[Sequence],
               mirrors: list[tuple[Sequence, int, int]] | None = None) -> tuple[list[Sequence], torch.Tensor | None]:
        """Everything the step computes in one flat forward (needs `backend.supports_flat_step`). mirrors: (sequence,
        position, extra slot) for keys/values that also go to a second slot (a scoring fork's partial block).
        Returns the sequences that sample now (completed chunks not readouts, then decodes) and their logits [R, V]:
        one row each, 1 + k rows for a sequence with k drafts (`Sequence.num_reads`)."""
        if self.graphs is not None and not chunks and not mirrors and self.graphs.fits(len(decodes)):
            logits = self.graphs.run(decodes)  # a pure decode step: replayed from a captured graph
            for seq in decodes:
                seq.num_cached += 1
            return list(decodes), logits
        work = [(c.seq, c.num_tokens) for c in chunks] + [(s, 1) for s in decodes]
        if not work:  # nothing was scheduled this step
            return [], None
        in_place = self.backend.reads_in_place
        order = sorted(range(len(work)), key=lambda i: not in_place(work[i][1]))  # paged segments first
        offsets = [0] * len(work)
        ids: list[int] = []
        paged, long = [], []
        for i in order:
            seq, n = work[i]
            offsets[i] = len(ids)
            ids += seq.input_ids(seq.num_cached, n)
            (paged if in_place(n) else long).append(Segment(seq.block_table, seq.num_cached, n))
        where = {id(seq): offsets[i] - seq.num_cached for i, (seq, _) in enumerate(work)}  # position -> token
        extra = [(where[id(seq)] + position, slot) for seq, position, slot in mirrors or []]
        meta, positions = FlatMetadata.build(paged, long, self.cache.block_size, self.device, extra,
                                             self.backend.in_place_prefill)
        input_ids = torch.tensor([ids], dtype=torch.long, device=self.device)  # [1, N]
        hidden = self._forward(input_ids, positions, meta, [work[i][0] for i in order],
                               [work[i][1] for i in order])[0]  # [N, H]
        read_readouts(self.logits, chunks, hidden, offsets[: len(chunks)])  # before the step's own logits
        sampling = [i for i, c in enumerate(chunks) if c.completes and c.seq.readout is None]
        # a chunk's last row; a chunk verifying k drafts yields its last 1 + k rows, in order
        rows = [offsets[i] + chunks[i].num_tokens - r for i in sampling
                for r in range(chunks[i].seq.num_reads, 0, -1)] + offsets[len(chunks):]
        for seq, n in work:
            seq.num_cached += n
        seqs = [chunks[i].seq for i in sampling] + decodes
        return seqs, (self.logits(hidden[rows]) if rows else None)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden [R, H] -> logits [R, V] float32 in the runner's workspace, valid until the next call (the step
        samples them before that). A fresh [32, V] float32 tensor every step cost 4-27 ms on CPU in page faults;
        the copy into warm memory takes 0.5 ms."""
        rows, vocab = hidden.shape[0], self.model.config.vocab_size
        if self._logits.shape[0] < rows:
            self._logits = torch.empty(rows, vocab, device=self.device)
        return self.model.compute_logits(hidden, out=self._logits[:rows])

    def _forward(self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata | FlatMetadata,
                 seqs: list[Sequence], tokens_per_row: int | list[int]) -> torch.Tensor:
        """Hidden states [B, T, H]; row i adds the deltas of `seqs[i]`'s LoRA adapter, if it has one."""
        if self.lora is None:
            return self.model(input_ids, positions, self.cache, meta)
        with self.lora.active([s.lora_id for s in seqs], tokens_per_row):
            return self.model(input_ids, positions, self.cache, meta)
