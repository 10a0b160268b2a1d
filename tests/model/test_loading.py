"""Finding and loading checkpoints, and the actionable errors when something is wrong with them."""

from __future__ import annotations

import json
import re
import shutil
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from qwick.model.hub import ModelNotFoundError, resolve_model_path
from qwick.model.loader import CheckpointError, build_model, checkpoint_files, load_config, load_weights
from qwick.model.qwen3 import Qwen3ForCausalLM

from checkpoints import TINY_CONFIGS, write_tiny_checkpoint

IDS = torch.tensor([[5, 17, 999, 0, 256, 42]])
POSITIONS = torch.arange(6)[None]


def load(folder: Path, dtype: torch.dtype = torch.float32) -> Qwen3ForCausalLM:
    model = build_model(load_config(folder), dtype, torch.device("cpu"))
    load_weights(model, checkpoint_files(folder))
    return model


def logits(model: Qwen3ForCausalLM) -> torch.Tensor:
    with torch.no_grad():
        return model.compute_logits(model(IDS, POSITIONS))


def rewritten(source: Path, dest: Path, edit: Callable[[dict[str, torch.Tensor]], None]) -> Path:
    """A copy of `source` (config + single safetensors file) whose tensors went through `edit`."""
    dest.mkdir()
    shutil.copy(source / "config.json", dest / "config.json")
    tensors = load_file(source / "model.safetensors")
    edit(tensors)
    save_file(tensors, dest / "model.safetensors", metadata={"format": "pt"})
    return dest


@pytest.fixture(scope="module")
def tied(tiny_checkpoint) -> Path:
    return tiny_checkpoint("tied_gqa2")


@pytest.fixture(scope="module")
def sharded(tied, tmp_path_factory) -> Path:
    import transformers

    dest = tmp_path_factory.mktemp("sharded")
    transformers.Qwen3ForCausalLM.from_pretrained(tied).save_pretrained(dest, max_shard_size="100KB")
    return dest


def test_sharded_checkpoint_loads_the_same_weights(tied, sharded):
    assert (sharded / "model.safetensors.index.json").is_file()
    shards = checkpoint_files(sharded)
    assert len(shards) > 1
    assert torch.equal(logits(load(sharded)), logits(load(tied)))


def test_index_naming_a_missing_shard_names_it(sharded, tmp_path):
    folder = tmp_path / "ckpt"
    shutil.copytree(sharded, folder)
    missing = checkpoint_files(folder)[-1]
    missing.unlink()
    with pytest.raises(CheckpointError, match=rf"shards listed in model.safetensors.index.json are missing: {re.escape(missing.name)}"):
        checkpoint_files(folder)


def test_invalid_index_is_named(sharded, tmp_path):
    folder = tmp_path / "ckpt"
    shutil.copytree(sharded, folder)
    (folder / "model.safetensors.index.json").write_text('{"metadata": {}}')
    with pytest.raises(CheckpointError, match=r"model.safetensors.index.json is not a valid safetensors index"):
        checkpoint_files(folder)


def test_folder_without_safetensors_says_so(tied, tmp_path):
    shutil.copy(tied / "config.json", tmp_path / "config.json")
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(tmp_path))} has no \*.safetensors weight files$"):
        checkpoint_files(tmp_path)


def test_pytorch_bin_checkpoint_gets_a_conversion_hint(tied, tmp_path):
    shutil.copy(tied / "config.json", tmp_path / "config.json")
    (tmp_path / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(CheckpointError, match=r"found pytorch_model.bin: convert to safetensors first"):
        checkpoint_files(tmp_path)


@pytest.mark.parametrize(
    "corrupt",
    [lambda data: data[: len(data) // 2], lambda data: data[:-8], lambda data: b"\x07" * 64, lambda data: data[:4]],
    ids=["truncated-half", "truncated-tail", "garbage", "shorter-than-header"],
)
def test_corrupt_safetensors_file_is_named_as_corrupt(corrupt, tied, tmp_path):
    shutil.copy(tied / "config.json", tmp_path / "config.json")
    (tmp_path / "model.safetensors").write_bytes(corrupt((tied / "model.safetensors").read_bytes()))
    with pytest.raises(CheckpointError, match=r"could not read .*model.safetensors: .*corrupt or truncated"):
        load(tmp_path)


def test_tensor_with_wrong_shape_names_tensor_and_both_shapes(tied, tmp_path):
    def widen(tensors):
        tensors["model.layers.1.mlp.up_proj.weight"] = torch.zeros(129, 64)

    folder = rewritten(tied, tmp_path / "ckpt", widen)
    with pytest.raises(CheckpointError, match=r"'model.layers.1.mlp.up_proj.weight' has shape \(129, 64\), "
                                              r"the config implies \(128, 64\)"):
        load(folder)


def test_missing_tensor_is_named(tied, tmp_path):
    folder = rewritten(tied, tmp_path / "ckpt", lambda tensors: tensors.pop("model.layers.0.self_attn.k_norm.weight"))
    with pytest.raises(CheckpointError, match=r"missing 1 tensor\(s\): model.layers.0.self_attn.k_norm.weight"):
        load(folder)


def test_tensor_the_model_does_not_have_is_named(tied, tmp_path):
    def add_layer(tensors):
        tensors["model.layers.2.input_layernorm.weight"] = torch.ones(64)

    folder = rewritten(tied, tmp_path / "ckpt", add_layer)
    with pytest.raises(CheckpointError, match=r"unexpected tensor 'model.layers.2.input_layernorm.weight'"):
        load(folder)


def test_tied_checkpoint_that_also_stores_lm_head_uses_the_embedding(tied, tmp_path):
    # the published 0.6B file very likely stores lm_head.weight too (SPEC.md §2.6); the config's tie wins
    def add_lm_head(tensors):
        tensors["lm_head.weight"] = torch.zeros_like(tensors["model.embed_tokens.weight"])
        tensors["model.rotary_emb.inv_freq"] = torch.ones(16)  # older checkpoints store this buffer

    model = load(rewritten(tied, tmp_path / "ckpt", add_lm_head))
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert torch.equal(logits(model), logits(load(tied)))


def test_bfloat16_checkpoint_loads_into_a_float32_model(tmp_path):
    folder = write_tiny_checkpoint(tmp_path / "bf16", "tied_gqa2", dtype="bfloat16", vocab_size=1000,
                                   with_tokenizer=False)
    stored = load_file(folder / "model.safetensors")["model.layers.0.self_attn.q_proj.weight"]
    model = load(folder)
    assert stored.dtype == torch.bfloat16
    assert torch.equal(model.model.layers[0].self_attn.q_proj.weight, stored.float())


@pytest.fixture(scope="module")
def backbone(tmp_path_factory) -> Path:
    """A Qwen3Model checkpoint (embedding/reranker style): names without `model.`, no lm_head."""
    import transformers

    torch.manual_seed(0)
    config = transformers.Qwen3Config(vocab_size=1000, **TINY_CONFIGS["untied_mha_odd"])
    dest = tmp_path_factory.mktemp("backbone")
    transformers.Qwen3Model(config).eval().save_pretrained(dest)
    return dest


def test_backbone_checkpoint_loads_without_lm_head(backbone):
    import transformers

    assert not any(name.startswith("model.") for name in load_file(backbone / "model.safetensors"))
    model = load(backbone)
    assert model.has_lm_head is False
    reference = transformers.Qwen3Model.from_pretrained(backbone).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(IDS, POSITIONS), reference(IDS).last_hidden_state, atol=1e-5, rtol=0)


def test_backbone_refuses_to_compute_logits(backbone):
    model = load(backbone)
    with pytest.raises(ValueError, match=r"no lm_head: it cannot generate text"):
        model.compute_logits(torch.zeros(1, model.config.hidden_size))


def test_missing_model_folder_is_named(tmp_path):
    with pytest.raises(ModelNotFoundError, match=rf"model folder '{re.escape(str(tmp_path / 'nope'))}' does not exist"):
        resolve_model_path(tmp_path / "nope")


def test_file_instead_of_folder_asks_for_the_folder(tied):
    with pytest.raises(ModelNotFoundError, match=r"is a file; pass the model folder"):
        resolve_model_path(tied / "config.json")


def test_folder_without_config_json_is_not_a_model_folder(tmp_path):
    with pytest.raises(ModelNotFoundError, match=rf"{re.escape(str(tmp_path))} has no config.json"):
        resolve_model_path(tmp_path)


def test_local_folder_resolves_to_itself(tied):
    assert resolve_model_path(str(tied)) == tied


def test_uncached_hub_id_offline_names_the_model_and_the_local_folder_fix(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # read once at import: the env var alone is too late
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))  # an empty cache

    def no_network(*args, **kwargs):
        raise OSError("network access is disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", no_network)  # cannot hang even if offline mode were ignored
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.chdir(tmp_path)  # so "qwick-test/not-cached" cannot be a local folder
    with pytest.raises(ModelNotFoundError) as caught:
        resolve_model_path("qwick-test/not-cached")
    message = str(caught.value)
    assert "'qwick-test/not-cached'" in message
    assert "not in the Hugging Face cache" in message
    assert "`hf download qwick-test/not-cached --local-dir DIR`" in message
    assert "pass the folder instead" in message


def test_index_weight_map_is_the_only_source_of_shards(sharded, tmp_path):
    # a stray file next to a sharded checkpoint (an old consolidated copy, say) is not loaded twice
    folder = tmp_path / "ckpt"
    shutil.copytree(sharded, folder)
    (folder / "stray.safetensors").write_bytes(b"")
    names = sorted(set(json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"].values()))
    assert [f.name for f in checkpoint_files(folder)] == names
