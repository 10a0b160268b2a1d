"""`qwick distill`: a teacher run by qwick answers prompts and gives top-k logits; the student moves towards it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from trainkit import chat, write_jsonl

from qwick import LLM, SamplingParams
from qwick.cli import main
from qwick.train.data import ChatRow, TextRow
from qwick.train.distill import DistillConfig, distill
from qwick.train.teacher import GenerationSettings, answer_missing, teacher_topk, without_answer
from qwick.train.trainer import TrainSettings

from checkpoints import write_tiny_checkpoint

transformers = pytest.importorskip("transformers")
PROMPTS = [{"messages": [{"role": "user", "content": f"Tell me about topic {i}."}]} for i in range(5)]
NO_THINK = GenerationSettings(max_new_tokens=6, enable_thinking=False)


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory) -> Path:
    """Another architecture (MHA, untied, 3 layers) with the same vocabulary as the teacher."""
    return write_tiny_checkpoint(tmp_path_factory.mktemp("student") / "s", "untied_mha_odd", seed=1)


@pytest.fixture(scope="module")
def teacher(tiny_model_dir: Path) -> LLM:
    return LLM(tiny_model_dir, dtype="float32", device="cpu", max_model_len=128)


def test_teacher_answers_only_the_prompts_without_an_answer(teacher):
    rows = [ChatRow(PROMPTS[0]["messages"]), ChatRow(chat("Hi", "Hello!")["messages"]), TextRow("Once upon", None)]
    answered = answer_missing(teacher, rows, NO_THINK)
    params = SamplingParams(max_tokens=6, temperature=0)
    expected = teacher.chat(PROMPTS[0]["messages"], params, chat_template_kwargs={"enable_thinking": False})[0]
    assert answered[0].messages[-1] == {"role": "assistant", "content": expected.outputs[0].content}
    assert answered[0].complete == (expected.outputs[0].finish_reason != "length")
    assert answered[1] == rows[1]
    assert answered[2].completion == teacher.generate("Once upon", params)[0].outputs[0].text


def test_sequence_mode_drops_existing_answers_first():
    assert without_answer(ChatRow(chat("Hi", "Hello!")["messages"])).messages == [{"role": "user", "content": "Hi"}]
    assert without_answer(TextRow("Q", "A")).completion is None


def test_teacher_topk_equals_transformers_logits_at_the_learned_positions(teacher, tiny_model_dir, renderer):
    example = renderer(ChatRow(chat("Name a colour.", "Blue, like the sky.")["messages"]))
    (topk,) = teacher_topk(teacher.model, [example], k=5)
    hf = transformers.AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    with torch.no_grad():
        logits = hf(torch.tensor([example.input_ids])).logits[0, :-1]  # [T-1, vocab]
    learned = torch.tensor(example.labels[1:]) != -100
    values, indices = logits[learned].topk(5, dim=-1)
    assert topk["teacher_indices"].shape == (example.num_trained, 5)
    assert torch.equal(topk["teacher_indices"].long(), indices)
    torch.testing.assert_close(topk["teacher_values"].float(), values, atol=0.05, rtol=0.01)  # stored as bf16


def test_logit_distillation_lowers_the_kl(tiny_model_dir, student_dir, tmp_path):
    data = write_jsonl(tmp_path / "prompts.jsonl", [*PROMPTS, chat("Hi", "Hello there!")])
    cfg = DistillConfig(str(tiny_model_dir), str(student_dir), data, tmp_path / "student", top_k=8,
                        kd_temperature=1.0, generation=NO_THINK, max_seq_len=48, dtype="float32", device="cpu",
                        teacher_kwargs={"max_model_len": 128},
                        train=TrainSettings(max_steps=4, lr=3e-2, batch_size=8, logging_steps=1, progress=False))
    result = distill(cfg)
    assert len(result.losses) == 4  # one batch holds every row: each loss is the KL on the same data
    assert result.losses[-1] < 0.7 * result.losses[0]
    student = LLM(tmp_path / "student", dtype="float32", device="cpu", max_model_len=64)
    assert student.model.config.num_hidden_layers == 3  # the student's own shape was saved


def test_sequence_distillation_from_the_cli(tiny_model_dir, student_dir, tmp_path, capsys):
    data = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "Once upon a time"}, {"text": "cheap pills"}])
    code = main(["distill", "--teacher", str(tiny_model_dir), "--student", str(student_dir), "--data", str(data),
                 "--out", str(tmp_path / "adapter"), "--mode", "sequence", "--lora", "--lora-r", "4",
                 "--max-new-tokens", "4", "--max-seq-len", "64", "--max-steps", "2", "--dtype", "float32",
                 "--device", "cpu", "--no-progress"])
    assert code == 0
    assert "saved the student adapter" in capsys.readouterr().out
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["r"] == 4


def test_students_with_another_vocabulary_are_refused_before_any_model_loads(tiny_model_dir, tmp_path, capsys):
    data = write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    args = ["--data", str(data), "--out", str(tmp_path / "out"), "--device", "cpu", "--no-progress"]
    wider = shutil.copytree(tiny_model_dir, tmp_path / "wider")
    config = json.loads((wider / "config.json").read_text())
    (wider / "config.json").write_text(json.dumps({**config, "vocab_size": 151940}))
    assert main(["distill", "--teacher", str(tiny_model_dir), "--student", str(wider), *args]) == 2
    assert "teacher has 151936 logits, the student 151940" in capsys.readouterr().err

    other = shutil.copytree(tiny_model_dir, tmp_path / "other")
    tokenizer = json.loads((other / "tokenizer.json").read_text())
    vocab = tokenizer["model"]["vocab"]
    vocab["hello"], vocab["world"] = vocab["world"], vocab["hello"]  # same tokens, two ids swapped
    (other / "tokenizer.json").write_text(json.dumps(tokenizer))
    assert main(["distill", "--teacher", str(tiny_model_dir), "--student", str(other), *args]) == 2
    assert "their tokenizers differ in 4 token/id pairs" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
