"""`qwick finetune`: a LoRA run learns a small task and saves an adapter that peft itself loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from trainkit import chat, magic_word_rows, write_jsonl

from qwick.cli import main
from qwick.train.data import ChatRow, load_rows
from qwick.train.finetune import FinetuneConfig, finetune
from qwick.train.losses import cross_entropy_sum
from qwick.train.model import QWEN3_LINEARS, LoraSettings, add_lora, load_causal_lm
from qwick.train.trainer import TrainResult, TrainSettings, as_items, collate, train

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def run(tiny_model_dir: Path, tmp_path_factory) -> tuple[TrainResult, Path, Path]:
    folder = tmp_path_factory.mktemp("finetune")
    data = write_jsonl(folder / "train.jsonl", magic_word_rows(16))
    eval_data = write_jsonl(folder / "eval.jsonl", magic_word_rows(4))
    cfg = FinetuneConfig(str(tiny_model_dir), data, folder / "adapter", eval_data=eval_data,
                         lora=LoraSettings(r=8, alpha=16), dtype="float32", device="cpu",
                         train=TrainSettings(max_steps=8, lr=3e-2, batch_size=8, logging_steps=1, eval_steps=4,
                                             progress=False))
    return finetune(cfg), folder / "adapter", data


def test_lora_run_lowers_the_training_loss(run):
    result, _, _ = run
    assert result.steps == 8
    assert len(result.losses) == 8
    assert result.losses[-1] < 0.5 * result.losses[0]
    assert result.tokens > 0 and result.tokens_per_second > 0


def test_eval_loss_is_reported_periodically_and_falls(run):
    result, _, _ = run
    assert len(result.eval_losses) == 2  # steps 4 and 8 (the last: no second evaluation of the same weights)
    assert result.eval_losses[-1] < result.eval_losses[0]


def test_adapter_folder_is_a_standard_peft_adapter(run, tiny_model_dir):
    _, adapter, _ = run
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in adapter.iterdir()}
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["task_type"] == "CAUSAL_LM"
    assert (config["r"], config["lora_alpha"]) == (8, 16)
    assert set(config["target_modules"]) == set(QWEN3_LINEARS)
    assert config["base_model_name_or_path"] == str(tiny_model_dir)


def test_peft_loads_the_adapter_and_it_carries_what_was_learned(run, tiny_model_dir, renderer):
    _, adapter, data = run
    batch = collate(as_items([renderer(row) for row in load_rows(data)]))
    base = transformers.AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        base_loss, count = cross_entropy_sum(base, batch)
        tuned = peft.PeftModel.from_pretrained(base, adapter).eval()
        tuned_loss, _ = cross_entropy_sum(tuned, batch)
        hf_loss = tuned(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                        labels=batch["labels"]).loss  # transformers' own loss agrees with qwick's
    assert len(tuned.peft_config) == 1
    assert tuned_loss / count < 0.5 * base_loss / count
    assert torch.allclose(hf_loss, tuned_loss / count, atol=1e-4)


def test_cli_finetune_on_gate_rows(tiny_model_dir, tmp_path, capsys):
    rows = [{"text": f"message {i}", "label": "spam" if i % 2 else "ham"} for i in range(4)]
    data = write_jsonl(tmp_path / "gate.jsonl", rows)
    code = main(["finetune", str(tiny_model_dir), "--data", str(data), "--out", str(tmp_path / "adapter"),
                 "--gate-template", "Spam or ham? {text}", "--max-steps", "2", "--lora-r", "4",
                 "--target-modules", "q_proj,v_proj", "--dtype", "float32", "--device", "cpu", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0
    assert f"saved the LoRA adapter to {tmp_path / 'adapter'}: 2 steps" in out
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert (config["r"], set(config["target_modules"])) == (4, {"q_proj", "v_proj"})


def test_unknown_target_module_is_refused():
    with pytest.raises(ValueError, match=r"unknown module.*qproj"):
        LoraSettings(target_modules=("qproj",))



def test_gradient_accumulation_equals_one_larger_batch(tiny_model_dir, renderer):
    items = as_items([renderer(ChatRow(chat("q" * i, "answer " * (i + 1))["messages"])) for i in range(1, 5)])
    trained = []
    for batch_size, grad_accum in ((4, 1), (2, 2)):  # sequences of different lengths: token counts differ per batch
        torch.manual_seed(0)
        model = add_lora(load_causal_lm(tiny_model_dir, torch.float32, torch.device("cpu")), LoraSettings(r=4), "x")
        for name, param in model.named_parameters():
            if "lora_B" in name:  # non-zero B, so lora_A gets a gradient too
                torch.nn.init.normal_(param, std=0.1)
        settings = TrainSettings(max_steps=1, lr=1e-2, batch_size=batch_size, grad_accum=grad_accum, progress=False)
        train(model, items, None, settings, cross_entropy_sum, torch.device("cpu"))
        trained.append({n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad})
    for name, param in trained[0].items():
        torch.testing.assert_close(trained[1][name], param, atol=1e-6, rtol=1e-5)
