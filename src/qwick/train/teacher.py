"""The distillation teacher, run by qwick: it writes missing answers (`llm.generate`) and gives its top-k logits
on the student's training tokens (teacher forcing through `llm.model`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import tokenizers
import torch

from qwick.model.loader import load_config
from qwick.tokenizer import parse_reasoning
from qwick.train.data import CONTROL_TOKENS, Row, TextRow
from qwick.train.render import IGNORE, Example

log = logging.getLogger("qwick.train")


@dataclass
class GenerationSettings:
    max_new_tokens: int = 256
    temperature: float = 0.0  # greedy: sequence-level KD learns the teacher's mode
    enable_thinking: bool = True
    seed: int = 0


def without_answer(row: Row) -> Row:
    """The row's prompt alone (its final assistant turn or completion removed)."""
    if isinstance(row, TextRow):
        return replace(row, completion=None)
    if row.messages[-1]["role"] == "assistant":
        return replace(row, messages=row.messages[:-1])
    return row


def needs_answer(row: Row) -> bool:
    return row.completion is None if isinstance(row, TextRow) else row.messages[-1]["role"] != "assistant"


def answer_missing(llm: Any, rows: list[Row], settings: GenerationSettings) -> list[Row]:
    """Rows without an answer get the teacher's, in one batch; a cut-off answer has `complete=False`."""
    from qwick import SamplingParams

    todo = [i for i, row in enumerate(rows) if needs_answer(row)]
    if not todo:
        return rows
    kwargs = {"enable_thinking": settings.enable_thinking}
    prompts = [_prompt(llm, rows[i], kwargs) for i in todo]
    params = SamplingParams(max_tokens=settings.max_new_tokens, temperature=settings.temperature, seed=settings.seed)
    outputs = llm.generate([{"prompt": p} for p in prompts], params)
    answered: list[Row | None] = list(rows)
    for i, output in zip(todo, outputs, strict=True):
        answered[i] = _with_answer(rows[i], output.outputs[0], settings.enable_thinking)
    if None in answered:
        log.warning("the teacher's answer to %d prompts was empty or held a control token; they are skipped", answered.count(None))
    return [row for row in answered if row is not None]


def _prompt(llm: Any, row: Row, chat_kwargs: dict[str, Any]) -> str:
    return row.prompt if isinstance(row, TextRow) else llm.render_chat(row.messages, row.tools, chat_kwargs)


def _with_answer(row: Row, completion: Any, thinking: bool) -> Row | None:
    """The row with the teacher's answer; None for an empty one or one holding a turn-control token."""
    complete = completion.finish_reason != "length"
    if any(token in completion.text for token in CONTROL_TOKENS):
        return None
    if isinstance(row, TextRow):
        return replace(row, completion=completion.text, complete=complete) if completion.text.strip() else None
    reasoning, content = parse_reasoning(completion.text, thinking)
    if not (reasoning or "").strip() and not (content or "").strip():
        return None
    message = {"role": "assistant", "content": content or ""}
    if (reasoning or "").strip():
        message["reasoning_content"] = reasoning
    return replace(row, messages=[*row.messages, message], complete=complete)


def check_same_vocabulary(teacher_folder: Path, student_folder: Path) -> None:
    """Distillation compares distributions id by id: same tokenizer and same logits width, or a clear error.
    Checked from the files, before either model is loaded."""
    teacher_width, student_width = (load_config(f).vocab_size for f in (teacher_folder, student_folder))
    if teacher_width != student_width:
        raise ValueError(f"teacher and student must share the vocabulary: the teacher has {teacher_width} logits, "
                         f"the student {student_width}")
    teacher_vocab, student_vocab = (_vocab(f) for f in (teacher_folder, student_folder))
    if teacher_vocab != student_vocab:
        differing = sorted(set(teacher_vocab.items()) ^ set(student_vocab.items()), key=lambda kv: kv[1])
        shown = ", ".join(f"{token!r}={i}" for token, i in differing[:3])
        raise ValueError(f"teacher and student must share the vocabulary: their tokenizers differ in "
                         f"{len(differing)} token/id pairs (e.g. {shown})")


def _vocab(folder: Path) -> dict[str, int]:
    path = folder / "tokenizer.json"
    if not path.is_file():
        raise FileNotFoundError(f"{folder} has no tokenizer.json: distillation compares both models' tokenizers")
    return tokenizers.Tokenizer.from_file(str(path)).get_vocab(with_added_tokens=True)


def teacher_topk(model: Any, examples: list[Example], k: int, batch_size: int = 8) -> list[dict[str, torch.Tensor]]:
    """Per example, the teacher's k largest logits where the student learns: indices int32 [n, k], values bf16."""
    device = model.lm_head.weight.device
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].input_ids))  # less padding
    found: dict[int, dict[str, torch.Tensor]] = {}
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            chunk = [examples[i] for i in order[start:start + batch_size]]
            width = max(len(e.input_ids) for e in chunk)
            ids = torch.zeros(len(chunk), width, dtype=torch.long)
            labels = torch.full((len(chunk), width), IGNORE, dtype=torch.long)
            for row, example in enumerate(chunk):
                ids[row, :len(example.input_ids)] = torch.tensor(example.input_ids)
                labels[row, :len(example.labels)] = torch.tensor(example.labels)
            positions = torch.arange(width).expand(len(chunk), width)  # [B, T]
            # Causal attention: right padding never reaches the real tokens, so no mask is needed.
            hidden = model(ids.to(device), positions.to(device))  # [B, T, hidden]
            keep = labels[:, 1:] != IGNORE  # [B, T-1]
            values, indices = model.compute_logits(hidden[:, :-1][keep.to(device)]).topk(k, dim=-1)  # [N, k]
            counts = keep.sum(1).tolist()
            for i, v, j in zip(order[start:start + batch_size], values.split(counts), indices.split(counts),
                               strict=True):
                found[i] = {"teacher_values": v.to("cpu", torch.bfloat16), "teacher_indices": j.to("cpu", torch.int32)}
    return [found[i] for i in range(len(examples))]
