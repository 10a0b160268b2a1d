"""Run `transformers.Trainer` on qwick's Examples with one of qwick's losses; no trainer of our own.

Trainer brings the loop, optimizer, schedule, gradient accumulation, progress bar and periodic eval. qwick adds a
padding collator, a length-grouped sampler (less padding) and a loss that skips the prompt's logits
(`losses.py`). Single device: the loss calls the unwrapped model, so DDP/FSDP wrappers are not supported.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from qwick.train.render import IGNORE, Example

LossFn = Callable[[Any, dict[str, torch.Tensor]], tuple[torch.Tensor, int]]


@dataclass
class TrainSettings:
    epochs: float = 1.0
    lr: float = 2e-4
    batch_size: int = 4
    grad_accum: int = 1
    max_steps: int = -1  # > 0 overrides epochs
    warmup_steps: float = 0.0  # steps, or a fraction of all steps when < 1
    logging_steps: int = 10
    eval_steps: int | None = None  # None: about 10 evaluations per run
    seed: int = 0
    progress: bool = True
    autocast_bf16: bool = False  # bf16 compute over float32 weights (full-weight training)

    def __post_init__(self) -> None:
        for name in ("lr", "epochs"):
            if not getattr(self, name) > 0:
                raise ValueError(f"--{name} must be > 0, got {getattr(self, name)}")
        for name in ("batch_size", "grad_accum", "logging_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.eval_steps is not None and self.eval_steps < 1:
            raise ValueError(f"--eval-steps must be >= 1, got {self.eval_steps}")


@dataclass
class TrainResult:
    losses: list[float] = field(default_factory=list)  # training loss at each logging step
    eval_losses: list[float] = field(default_factory=list)  # periodic, then final
    steps: int = 0
    tokens: int = 0  # non-padding tokens seen (prompt and learned)
    seconds: float = 0.0  # the whole run, periodic evaluations included (Trainer's train_runtime)

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


def collate(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Right-pad to the longest item: input_ids [B, T] (pad 0), attention_mask [B, T], labels [B, T] (IGNORE).

    Extra per-item tensors of learned positions (teacher_indices/values [n_i, k]) are concatenated in batch order,
    which is the order `labels[:, 1:] != IGNORE` selects them in.
    """
    width = max(len(item["input_ids"]) for item in items)
    ids = torch.zeros(len(items), width, dtype=torch.long)
    mask = torch.zeros(len(items), width, dtype=torch.long)
    labels = torch.full((len(items), width), IGNORE, dtype=torch.long)
    for row, item in enumerate(items):
        n = len(item["input_ids"])
        ids[row, :n] = torch.tensor(item["input_ids"])
        labels[row, :n] = torch.tensor(item["labels"])
        mask[row, :n] = 1
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    if "teacher_indices" in items[0]:  # stored compactly (int32, bf16); gather needs int64
        batch["teacher_indices"] = torch.cat([item["teacher_indices"] for item in items]).long()
        batch["teacher_values"] = torch.cat([item["teacher_values"] for item in items]).float()
    return batch


def as_items(examples: list[Example]) -> list[dict[str, Any]]:
    return [{"input_ids": e.input_ids, "labels": e.labels} for e in examples]


def train(model: Any, train_items: list[dict[str, Any]], eval_items: list[dict[str, Any]] | None,
          settings: TrainSettings, loss_fn: LossFn, device: torch.device) -> TrainResult:
    """Train `model` in place; returns the loss history and throughput."""
    import transformers

    steps_per_epoch = math.ceil(len(train_items) / (settings.batch_size * settings.grad_accum))
    total = settings.max_steps if settings.max_steps > 0 else math.ceil(steps_per_epoch * settings.epochs)
    eval_steps = settings.eval_steps or max(1, total // 10)
    with tempfile.TemporaryDirectory(prefix="qwick-train-") as scratch:  # Trainer wants a folder; we save ourselves
        args = transformers.TrainingArguments(
            output_dir=scratch, num_train_epochs=settings.epochs, max_steps=settings.max_steps,
            learning_rate=settings.lr, per_device_train_batch_size=settings.batch_size,
            per_device_eval_batch_size=settings.batch_size, gradient_accumulation_steps=settings.grad_accum,
            warmup_steps=settings.warmup_steps, logging_steps=settings.logging_steps, logging_first_step=True,
            eval_strategy="steps" if eval_items else "no",
            eval_steps=eval_steps, save_strategy="no", report_to="none",
            use_cpu=device.type == "cpu", bf16=settings.autocast_bf16, seed=settings.seed,
            data_seed=settings.seed, remove_unused_columns=False, prediction_loss_only=True,
            disable_tqdm=not settings.progress, train_sampling_strategy="group_by_length",
            include_num_input_tokens_seen="non_padding", dataloader_pin_memory=False,
            optim=_optimizer(model, device),
        )
        trainer = _trainer_class(transformers.Trainer)(model=model, args=args, train_dataset=train_items,
                                                       eval_dataset=eval_items or None, data_collator=collate)
        trainer.loss_fn = loss_fn
        if not settings.progress:
            trainer.remove_callback(transformers.PrinterCallback)
        output = trainer.train()
        history = trainer.state.log_history
        result = TrainResult(losses=[h["loss"] for h in history if "loss" in h],
                             eval_losses=[h["eval_loss"] for h in history if "eval_loss" in h],
                             steps=trainer.state.global_step, tokens=int(trainer.state.num_input_tokens_seen),
                             seconds=float(output.metrics["train_runtime"]))
        if eval_items and result.steps % eval_steps:  # the last step was not an eval step: evaluate the result
            result.eval_losses.append(float(trainer.evaluate()["eval_loss"]))
    return result


def _trainer_class(base: type) -> type:
    class QwickTrainer(base):  # type: ignore[valid-type, misc]
        """Trainer whose loss is a qwick LossFn (a sum and a count) instead of the model's own."""

        loss_fn: LossFn

        def compute_loss(self, model: Any, inputs: dict[str, torch.Tensor], return_outputs: bool = False,
                         num_items_in_batch: torch.Tensor | int | None = None) -> Any:
            total, count = self.loss_fn(self.accelerator.unwrap_model(model), inputs)
            # Trainer counts the learned tokens of all accumulated micro-batches: dividing by that count makes
            # gradient accumulation exact (it then skips its own division by the accumulation steps).
            loss = total / (num_items_in_batch if num_items_in_batch is not None else max(count, 1))
            return (loss, {}) if return_outputs else loss

    return QwickTrainer


def _optimizer(model: Any, device: torch.device) -> str:
    """Trainer's default fused AdamW costs ~3 ms per tensor per step on CPU (measured: 56 LoRA tensors of a tiny
    model, 164 ms vs 3.4 ms for the plain loop); LoRA has hundreds of small tensors. Large tensors favour fused."""
    return "adamw_torch" if device.type == "cpu" and hasattr(model, "peft_config") else "adamw_torch_fused"
