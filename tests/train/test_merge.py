"""`qwick merge`: the merged checkpoint computes what peft + transformers compute with the adapter."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from qwick import LLM
from qwick.cli import main
from qwick.train.merge import merge

from checkpoints import write_tiny_checkpoint

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

IDS = torch.tensor([[9707, 11, 1879, 0, 3555, 374, 279, 6722, 315, 9625, 30]])  # [1, T]


@pytest.fixture(scope="module")
def adapter(tiny_model_dir: Path, tmp_path_factory) -> Path:
    """A LoRA whose B is random too (peft's init_lora_weights=False), so merging visibly changes every output."""
    base = transformers.AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    torch.manual_seed(0)
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "o_proj", "down_proj"],
                             init_lora_weights=False, task_type="CAUSAL_LM")
    folder = tmp_path_factory.mktemp("adapter")
    peft.get_peft_model(base, config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def reference_logits(tiny_model_dir: Path, adapter: Path) -> torch.Tensor:
    base = transformers.AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    with torch.no_grad():
        base_logits = base(IDS).logits[0]
        logits = peft.PeftModel.from_pretrained(base, adapter).eval()(IDS).logits[0]  # [T, vocab]
    assert (logits - base_logits).abs().max() > 0.1  # the adapter matters
    return logits


@pytest.fixture(scope="module")
def merged(tiny_model_dir: Path, adapter: Path, tmp_path_factory) -> Path:
    return merge(str(tiny_model_dir), adapter, tmp_path_factory.mktemp("merged") / "out")


def test_merged_folder_is_a_complete_checkpoint(merged, tiny_model_dir):
    names = {p.name for p in merged.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "generation_config.json"} <= names
    assert (merged / "tokenizer.json").read_bytes() == (tiny_model_dir / "tokenizer.json").read_bytes()


def test_merged_checkpoint_in_qwick_equals_peft_with_the_adapter(merged, reference_logits):
    llm = LLM(merged, dtype="float32", device="cpu", max_model_len=64)
    with torch.no_grad():
        hidden = llm.model(IDS, torch.arange(IDS.shape[1])[None])  # [1, T, hidden]
        logits = llm.model.compute_logits(hidden)[0]  # [T, vocab]
    torch.testing.assert_close(logits, reference_logits, atol=1e-4, rtol=1e-4)


def test_merged_checkpoint_in_transformers_equals_peft_with_the_adapter(merged, reference_logits):
    model = transformers.AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(IDS).logits[0]
    torch.testing.assert_close(logits, reference_logits, atol=1e-4, rtol=1e-4)


def test_merge_cli_refuses_a_folder_that_is_not_an_adapter(tiny_model_dir, tmp_path, capsys):
    code = main(["merge", str(tiny_model_dir), str(tmp_path), str(tmp_path / "out")])
    assert code == 2
    assert "is not a peft adapter folder: it has no adapter_config.json" in capsys.readouterr().err


def test_merge_cli_refuses_an_adapter_for_another_shape(adapter, tmp_path, capsys):
    other = write_tiny_checkpoint(tmp_path / "other", "untied_mha_odd")
    code = main(["merge", str(other), str(adapter), str(tmp_path / "out")])
    assert code == 2
    err = capsys.readouterr().err
    assert f"adapter {adapter} does not fit the model {other}" in err
    assert "Traceback" not in err
