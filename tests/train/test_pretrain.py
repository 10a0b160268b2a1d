"""`qwick pretrain`: documents are packed into --max-seq-len blocks and trained on every token."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file
from trainkit import write_jsonl

from qwick import LLM
from qwick.cli import main
from qwick.tokenizer import Tokenizer
from qwick.train.data import DataError
from qwick.train.pretrain import DOCUMENT_END, PretrainConfig, load_documents, pack, pretrain
from qwick.train.render import Example
from qwick.train.trainer import TrainSettings

CORPUS = ("The quick brown fox jumps over the lazy dog.\nIt was not amused.\n\n\n"
          "Qwen3 models share one tokenizer.\n\nPacking joins documents into blocks of equal length.\n")


def test_pack_joins_documents_with_a_separator_and_cuts_blocks():
    blocks = pack([[1, 2, 3], [4, 5], [6]], block=3, separator=0)
    # stream 1 2 3 0 4 5 0 6 0 -> three full blocks; every token is learned
    assert blocks == [Example([1, 2, 3], [1, 2, 3]), Example([0, 4, 5], [0, 4, 5]), Example([0, 6, 0], [0, 6, 0])]
    assert pack([[1, 2, 3, 4]], block=3, separator=0) == [Example([1, 2, 3], [1, 2, 3]), Example([4, 0], [4, 0])]
    assert pack([[1, 2]], block=3, separator=0)[-1].input_ids == [1, 2, 0]  # a short last block is kept


def test_text_corpus_documents_are_separated_by_blank_lines(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(CORPUS, encoding="utf-8")
    assert load_documents(path) == ["The quick brown fox jumps over the lazy dog.\nIt was not amused.",
                                    "Qwen3 models share one tokenizer.",
                                    "Packing joins documents into blocks of equal length."]


def test_jsonl_corpus_is_validated_line_by_line(tmp_path):
    path = write_jsonl(tmp_path / "corpus.jsonl", [{"text": "fine"}, {"text": ""}, {"body": "x"}])
    with pytest.raises(DataError) as info:
        load_documents(path)
    assert [str(issue) for issue in info.value.issues] == [
        f'{path}:2: "text" must be a non-empty string', f'{path}:3: expected {{"text": "<non-empty string>"}}']


def test_full_pretraining_sees_every_packed_token_and_saves_a_loadable_model(tiny_model_dir, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(CORPUS, encoding="utf-8")
    tokenizer = Tokenizer.from_pretrained(tiny_model_dir)
    stream = sum(len(tokenizer.encode(d)) + 1 for d in load_documents(corpus))
    assert tokenizer.token_to_id(DOCUMENT_END) is not None
    cfg = PretrainConfig(str(tiny_model_dir), corpus, tmp_path / "out", max_seq_len=16, dtype="float32",
                         device="cpu", train=TrainSettings(epochs=1, lr=1e-3, batch_size=8, progress=False))
    result = pretrain(cfg)
    assert result.steps == 1
    assert result.tokens == stream  # every block, no padding counted
    llm = LLM(tmp_path / "out", dtype="float32", device="cpu", max_model_len=64)
    weight = "model.layers.0.mlp.down_proj.weight"
    base = load_file(tiny_model_dir / "model.safetensors")[weight]
    assert (llm.model.state_dict()[weight] - base).abs().max() > 0  # the trained weights were saved
    assert json.loads((tmp_path / "out" / "config.json").read_text())["num_hidden_layers"] == 2


def test_lora_pretraining_from_the_cli_lowers_the_loss(tiny_model_dir, tmp_path, capsys):
    corpus = write_jsonl(tmp_path / "corpus.jsonl", [{"text": "abc abc abc abc abc abc abc abc"}] * 4)
    code = main(["pretrain", str(tiny_model_dir), "--data", str(corpus), "--out", str(tmp_path / "adapter"),
                 "--lora", "--lora-r", "8", "--max-seq-len", "16", "--max-steps", "6", "--lr", "3e-2",
                 "--batch-size", "4", "--dtype", "float32", "--device", "cpu", "--no-progress", "--logging-steps", "1"])
    out = capsys.readouterr().out
    assert code == 0
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    first, last = (float(x) for x in out.split("loss ")[1].split(",")[0].split(" -> "))
    assert last < first
