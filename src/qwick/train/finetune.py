"""`qwick finetune`: LoRA (or QLoRA) supervised fine-tuning on chat, prompt/completion or gate JSONL."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from qwick.device import resolve_device
from qwick.model.hub import resolve_model_path
from qwick.tokenizer import Tokenizer
from qwick.train.data import DEFAULT_GATE_TEMPLATE, Row, load_rows
from qwick.train.extra import require_train_extra
from qwick.train.losses import cross_entropy_sum
from qwick.train.model import (
    LoraSettings,
    add_lora,
    check_out_dir,
    check_qlora,
    choose_precision,
    load_causal_lm,
)
from qwick.train.render import Example, Renderer, truncate
from qwick.train.trainer import TrainResult, TrainSettings, as_items, train

log = logging.getLogger("qwick.train")


@dataclass
class FinetuneConfig:
    model: str
    data: Path
    out: Path
    eval_data: Path | None = None
    lora: LoraSettings = field(default_factory=LoraSettings)
    qlora: bool = False
    max_seq_len: int = 2048
    gate_template: str = DEFAULT_GATE_TEMPLATE
    dtype: str = "auto"
    device: str = "auto"
    train: TrainSettings = field(default_factory=TrainSettings)

    def __post_init__(self) -> None:  # the Python API may pass strings
        self.data, self.out = Path(self.data), Path(self.out)
        self.eval_data = Path(self.eval_data) if self.eval_data else None


def finetune(cfg: FinetuneConfig) -> TrainResult:
    """Validate the data, train a LoRA adapter and save it as a standard peft folder in `cfg.out`."""
    require_train_extra("qwick finetune")
    check_out_dir(cfg.out)
    device = resolve_device(cfg.device)
    if cfg.qlora:
        check_qlora(device)
    rows = load_rows(cfg.data, gate_template=cfg.gate_template)  # every line checked before any model loads
    eval_rows = load_rows(cfg.eval_data, gate_template=cfg.gate_template) if cfg.eval_data else []
    folder = resolve_model_path(cfg.model)
    renderer = Renderer(Tokenizer.from_pretrained(folder))
    train_examples = render_all(rows, renderer, cfg.max_seq_len, str(cfg.data))
    eval_examples = render_all(eval_rows, renderer, cfg.max_seq_len, str(cfg.eval_data))
    precision = choose_precision(cfg.dtype, device, folder, full=False)
    model = load_causal_lm(folder, precision.weights, device, qlora=cfg.qlora)
    model = add_lora(model, cfg.lora, cfg.model, qlora=cfg.qlora)
    result = train(model, as_items(train_examples), as_items(eval_examples) or None, cfg.train,
                   cross_entropy_sum, device)
    model.save_pretrained(cfg.out)
    return result


def render_all(rows: list[Row], renderer: Renderer, max_seq_len: int, source: str) -> list[Example]:
    """Examples cut to max_seq_len; rows left with nothing to learn are dropped, with a warning."""
    if max_seq_len < 2:
        raise ValueError(f"--max-seq-len must be >= 2, got {max_seq_len}")
    examples, cut, dropped = [], 0, []
    for row in rows:
        example = renderer(row)
        kept = truncate(example, max_seq_len)
        cut += kept is not example
        if kept is None:
            dropped.append(row.line)
        else:
            examples.append(kept)
    if cut:
        shown = ", ".join(map(str, dropped[:10])) + (" ..." if len(dropped) > 10 else "")
        log.warning("%s: %d rows are longer than --max-seq-len %d and were cut%s", source, cut, max_seq_len,
                    f"; {len(dropped)} had nothing left to learn and were skipped (lines {shown})" if dropped else "")
    if rows and not examples:
        raise ValueError(f"{source}: no row has a learned token within --max-seq-len {max_seq_len}")
    return examples
