"""`qwick distill`: teach a student the teacher's behaviour; the teacher runs on qwick's engine and model.

- `logits` (default): the teacher answers prompts that have no answer, then for every learned token the student
  matches the teacher's top-k distribution (KL at temperature --kd-temperature, `losses.topk_kl_sum`).
  Approximate by design: the teacher's mass outside its top-k is dropped (p is renormalised over the k ids).
- `sequence`: the teacher answers every prompt (existing answers are replaced) and the student is fine-tuned on
  those answers with the ordinary loss (Kim & Rush's sequence-level distillation).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from qwick.device import resolve_device
from qwick.model.hub import resolve_model_path
from qwick.model.loader import load_config
from qwick.tokenizer import Tokenizer
from qwick.train.data import DEFAULT_GATE_TEMPLATE, Row, load_rows
from qwick.train.extra import require_train_extra
from qwick.train.finetune import render_all
from qwick.train.losses import cross_entropy_sum, topk_kl_sum
from qwick.train.model import (
    LoraSettings,
    add_lora,
    check_out_dir,
    choose_precision,
    load_causal_lm,
    save_full,
    source_dtype,
)
from qwick.train.render import Renderer
from qwick.train.teacher import (
    GenerationSettings,
    answer_missing,
    check_same_vocabulary,
    teacher_topk,
    without_answer,
)
from qwick.train.trainer import TrainResult, TrainSettings, as_items, train

MODES = ("logits", "sequence")


@dataclass
class DistillConfig:
    teacher: str
    student: str
    data: Path
    out: Path
    eval_data: Path | None = None
    mode: str = "logits"
    top_k: int = 20
    kd_temperature: float = 1.0
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    lora: LoraSettings | None = None  # None: train every student weight
    max_seq_len: int = 2048
    gate_template: str = DEFAULT_GATE_TEMPLATE
    dtype: str = "auto"  # the student's
    teacher_dtype: str = "auto"
    device: str = "auto"
    teacher_kwargs: dict[str, Any] = field(default_factory=dict)  # extra qwick.LLM arguments for the teacher
    train: TrainSettings = field(default_factory=TrainSettings)

    def __post_init__(self) -> None:
        self.data, self.out = Path(self.data), Path(self.out)  # the Python API may pass strings
        self.eval_data = Path(self.eval_data) if self.eval_data else None
        if self.mode not in MODES:
            raise ValueError(f"--mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.top_k < 1 or self.kd_temperature <= 0:
            raise ValueError(f"--top-k must be >= 1 and --kd-temperature > 0, got {self.top_k}, {self.kd_temperature}")


def distill(cfg: DistillConfig) -> TrainResult:
    """Distil `cfg.teacher` into `cfg.student`; save the student (or its LoRA adapter) in `cfg.out`."""
    require_train_extra("qwick distill")
    from qwick import LLM

    check_out_dir(cfg.out)
    rows = load_rows(cfg.data, gate_template=cfg.gate_template, require_answer=False)
    eval_rows = (load_rows(cfg.eval_data, gate_template=cfg.gate_template, require_answer=False)
                 if cfg.eval_data else [])
    student_folder, teacher_folder = resolve_model_path(cfg.student), resolve_model_path(cfg.teacher)
    check_same_vocabulary(teacher_folder, student_folder)
    # The teacher only ever sees one training sequence plus its answer: size its KV cache for that.
    context = min(load_config(teacher_folder).max_position_embeddings, cfg.max_seq_len + cfg.generation.max_new_tokens)
    teacher = LLM(teacher_folder, dtype=cfg.teacher_dtype, device=cfg.device, seed=cfg.generation.seed,
                  **{"max_model_len": context, **cfg.teacher_kwargs})
    renderer = Renderer(Tokenizer.from_pretrained(student_folder))
    train_items = _items(teacher, rows, renderer, cfg, str(cfg.data))
    eval_items = _items(teacher, eval_rows, renderer, cfg, str(cfg.eval_data)) if eval_rows else None
    del teacher  # the student loads after the teacher is done with: one model in memory while training
    device = resolve_device(cfg.device)
    precision = choose_precision(cfg.dtype, device, student_folder, full=cfg.lora is None)
    model = load_causal_lm(student_folder, precision.weights, device)
    if cfg.lora is not None:
        model = add_lora(model, cfg.lora, cfg.student)
    loss = (functools.partial(topk_kl_sum, temperature=cfg.kd_temperature) if cfg.mode == "logits"
            else cross_entropy_sum)
    settings = replace(cfg.train, autocast_bf16=precision.autocast_bf16)
    result = train(model, train_items, eval_items, settings, loss, device)
    if cfg.lora is not None:
        model.save_pretrained(cfg.out)
    else:
        save_full(model, cfg.out, student_folder, source_dtype(student_folder))
    return result


def _items(teacher: Any, rows: list[Row], renderer: Renderer, cfg: DistillConfig, source: str) -> list[dict]:
    """Training items: rows answered by the teacher where needed, plus its top-k logits in logits mode."""
    if cfg.mode == "sequence":
        rows = [without_answer(row) for row in rows]
    examples = render_all(answer_missing(teacher, rows, cfg.generation), renderer, cfg.max_seq_len, source)
    items = as_items(examples)
    if cfg.mode == "logits":
        for item, topk in zip(items, teacher_topk(teacher.model, examples, cfg.top_k), strict=True):
            item.update(topk)
    return items
