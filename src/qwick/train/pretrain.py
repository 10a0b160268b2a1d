"""`qwick pretrain`: continued pretraining on raw text, packed into --max-seq-len blocks (full weights or --lora).

Packing (as Hugging Face's run_clm): every document is tokenized, followed by `<|endoftext|>`, all are
concatenated and cut into blocks; the last, shorter block is kept. Approximate like run_clm: attention is not
reset at document boundaries inside a block, so a document can attend to the end of the previous one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from qwick.device import resolve_device
from qwick.model.hub import resolve_model_path
from qwick.tokenizer import Tokenizer
from qwick.train.data import DataError, DataIssue, RowError, read_jsonl
from qwick.train.extra import require_train_extra
from qwick.train.losses import cross_entropy_sum
from qwick.train.model import (
    LoraSettings,
    add_lora,
    check_out_dir,
    choose_precision,
    load_causal_lm,
    save_full,
    source_dtype,
)
from qwick.train.render import Example
from qwick.train.trainer import TrainResult, TrainSettings, as_items, train

DOCUMENT_END = "<|endoftext|>"


@dataclass
class PretrainConfig:
    model: str
    data: Path
    out: Path
    eval_data: Path | None = None
    lora: LoraSettings | None = None  # None: train every weight
    max_seq_len: int = 2048
    dtype: str = "auto"
    device: str = "auto"
    train: TrainSettings = field(default_factory=TrainSettings)

    def __post_init__(self) -> None:  # the Python API may pass strings
        self.data, self.out = Path(self.data), Path(self.out)
        self.eval_data = Path(self.eval_data) if self.eval_data else None


def load_documents(path: Path) -> list[str]:
    """`.jsonl`: one {"text": str} per line. Other files: plain text, documents separated by blank lines."""
    if path.suffix == ".jsonl":
        return read_jsonl(path, _text_row)
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} does not exist")
    documents = [d.strip("\n") for d in re.split(r"\n\s*\n", path.read_text(encoding="utf-8")) if d.strip()]
    if not documents:
        raise DataError([DataIssue(str(path), None, "the file has no text")])
    return documents


def _text_row(obj: dict, line: int) -> str:
    text = obj.get("text")
    if not isinstance(text, str) or not text.strip():
        raise RowError('expected {"text": "<non-empty string>"}' if text is None else '"text" must be a non-empty string')
    return text


def pack(documents: list[list[int]], block: int, separator: int) -> list[Example]:
    """Concatenate documents (each followed by `separator`) and cut the stream into `block`-token examples."""
    if block < 2:
        raise ValueError(f"--max-seq-len must be >= 2, got {block}")
    stream = [token for doc in documents for token in [*doc, separator]]
    blocks = [stream[i:i + block] for i in range(0, len(stream), block)]
    return [Example(ids, list(ids)) for ids in blocks if len(ids) > 1]


def pretrain(cfg: PretrainConfig) -> TrainResult:
    """Train on packed text; save a full checkpoint (or a LoRA adapter with --lora) in `cfg.out`."""
    require_train_extra("qwick pretrain")
    check_out_dir(cfg.out)
    documents = load_documents(cfg.data)
    eval_documents = load_documents(cfg.eval_data) if cfg.eval_data else []
    folder = resolve_model_path(cfg.model)
    tokenizer = Tokenizer.from_pretrained(folder)
    separator = tokenizer.token_to_id(DOCUMENT_END)
    if separator is None:
        raise ValueError(f"the tokenizer has no {DOCUMENT_END} token to separate packed documents")
    train_blocks = pack([tokenizer.encode(d) for d in documents], cfg.max_seq_len, separator)
    eval_blocks = pack([tokenizer.encode(d) for d in eval_documents], cfg.max_seq_len, separator)
    device = resolve_device(cfg.device)
    precision = choose_precision(cfg.dtype, device, folder, full=cfg.lora is None)
    model = load_causal_lm(folder, precision.weights, device)
    if cfg.lora is not None:
        model = add_lora(model, cfg.lora, cfg.model)
    settings = replace(cfg.train, autocast_bf16=precision.autocast_bf16)
    result = train(model, as_items(train_blocks), as_items(eval_blocks) or None, settings, cross_entropy_sum, device)
    if cfg.lora is not None:
        model.save_pretrained(cfg.out)
    else:
        save_full(model, cfg.out, folder, source_dtype(folder))
    return result
