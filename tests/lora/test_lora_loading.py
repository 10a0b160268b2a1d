"""Adapters qwick cannot serve are refused at load time, naming the field or tensor; slots and caching rules."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from adapters import write_adapter
from safetensors.torch import load_file, save_file

from qwick import LLM, LoRARequest, SamplingParams
from qwick.lora.adapter import LoRAAdapterError
from qwick.lora.manager import LoRASlotsFullError

from checkpoints import write_tiny_checkpoint

PROMPT = {"prompt_token_ids": list(range(100, 120))}


def edited(src: Path, dest: Path, config: dict | None = None, tensors=None) -> str:
    """A copy of the adapter folder `src` with config fields overridden and/or its tensors transformed."""
    shutil.copytree(src, dest)
    if config:
        path = dest / "adapter_config.json"
        path.write_text(json.dumps(json.loads(path.read_text()) | config))
    if tensors is not None:
        path = dest / "adapter_model.safetensors"
        save_file(tensors(load_file(path)), path)
    return str(dest)


def load(llm: LLM, path: str, lora_int_id: int = 50) -> None:
    llm.add_lora(LoRARequest(f"adapter-{lora_int_id}", lora_int_id, path))


@pytest.mark.parametrize(("config", "message"), [
    ({"use_dora": True}, r"DoRA .*use_dora=True"),
    ({"modules_to_save": ["lm_head"]}, r"modules_to_save"),
    ({"bias": "all"}, r"bias='all' is not supported"),
    ({"lora_bias": True}, r"LoRA biases \(lora_bias\)"),
    ({"target_modules": ["embed_tokens", "q_proj"]}, r"LoRA on embed_tokens \(target_modules\) is not supported"),
    ({"target_modules": ["mlp.fc1"]}, r"target_modules holds 'mlp.fc1'"),
    ({"rank_pattern": {"q_proj": 4}}, r"per-module ranks \(rank_pattern\)"),
    ({"alpha_pattern": {"q_proj": 4}}, r"per-module alphas \(alpha_pattern\)"),
    ({"peft_type": "IA3"}, r"peft_type is 'IA3'; only 'LORA'"),
    ({"r": 32}, r"rank r=32 exceeds max_lora_rank=8: raise max_lora_rank"),
    ({"r": 4}, r"has rank 8 but the config says r=4"),
    ({"lora_alpha": "16"}, r"'lora_alpha' must be a number"),
])
def test_unsupported_config_fields_are_named(lora_llm, adapter_dirs, tmp_path, config, message):
    with pytest.raises(LoRAAdapterError, match=message):
        load(lora_llm, edited(adapter_dirs["sql"], tmp_path / "a", config))


def test_peft_made_dora_and_embedding_adapters_are_refused(lora_llm, tiny_model_dir, tmp_path):
    dora = write_adapter(tiny_model_dir, tmp_path / "dora", seed=3, r=4, use_dora=True)
    with pytest.raises(LoRAAdapterError, match="DoRA"):
        load(lora_llm, str(dora))
    embedding = write_adapter(tiny_model_dir, tmp_path / "emb", seed=3, r=4, target_modules=["embed_tokens", "q_proj"])
    with pytest.raises(LoRAAdapterError, match="embed_tokens"):
        load(lora_llm, str(embedding))


def test_an_adapter_for_another_model_is_refused_with_both_shapes(lora_llm, tmp_path):
    other = write_tiny_checkpoint(tmp_path / "other", "untied_mha_odd", with_tokenizer=False, num_hidden_layers=2)
    adapter = write_adapter(other, tmp_path / "a", seed=4, r=4)
    with pytest.raises(LoRAAdapterError, match=r"down_proj maps 96 -> 48 features but the base model's projection maps 128 -> 64"):
        load(lora_llm, str(adapter))


def test_an_adapter_with_more_layers_than_the_model_is_refused(lora_llm, tmp_path):
    deeper = write_tiny_checkpoint(tmp_path / "deep", num_hidden_layers=3, with_tokenizer=False)
    adapter = write_adapter(deeper, tmp_path / "a", seed=5, r=4)
    with pytest.raises(LoRAAdapterError, match=r"model.layers.2.* which the base model does not have \(it has 2"):
        load(lora_llm, str(adapter))


def test_broken_folders_say_what_is_missing(lora_llm, adapter_dirs, tmp_path):
    with pytest.raises(LoRAAdapterError, match="no such folder"):
        load(lora_llm, str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(LoRAAdapterError, match=r"adapter_config\.json is missing"):
        load(lora_llm, str(tmp_path / "empty"))
    old = edited(adapter_dirs["sql"], tmp_path / "old")
    (Path(old) / "adapter_model.safetensors").rename(Path(old) / "adapter_model.bin")
    with pytest.raises(LoRAAdapterError, match=r"adapter_model\.safetensors is missing .*adapter_model\.bin"):
        load(lora_llm, old)
    bad_json = edited(adapter_dirs["sql"], tmp_path / "json")
    (Path(bad_json) / "adapter_config.json").write_text("{r: 8")
    with pytest.raises(LoRAAdapterError, match="not valid JSON"):
        load(lora_llm, bad_json)


def test_incomplete_or_foreign_tensors_are_named(lora_llm, adapter_dirs, tmp_path):
    key = "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"
    no_b = edited(adapter_dirs["sql"], tmp_path / "no_b", tensors=lambda t: {k: v for k, v in t.items() if k != key})
    with pytest.raises(LoRAAdapterError, match=r"model.layers.0.self_attn.q_proj has no lora_B.weight"):
        load(lora_llm, no_b)
    extra = edited(adapter_dirs["sql"], tmp_path / "extra",
                   tensors=lambda t: t | {"base_model.model.lm_head.weight": t[key].clone()})
    with pytest.raises(LoRAAdapterError, match=r"unsupported tensor 'base_model\.model\.lm_head\.weight'"):
        load(lora_llm, extra)


def test_a_failed_load_changes_nothing(lora_llm, sql, adapter_dirs, tmp_path):
    lora_llm.add_lora(sql)
    before = lora_llm.lora.loaded
    with pytest.raises(LoRAAdapterError):
        load(lora_llm, edited(adapter_dirs["sql"], tmp_path / "a", {"use_dora": True}))
    assert lora_llm.lora.loaded == before


def test_lora_request_fields_are_checked():
    with pytest.raises(ValueError, match="lora_int_id must be an integer >= 1"):
        LoRARequest("a", 0, "/x")
    with pytest.raises(ValueError, match="lora_name must be a non-empty string"):
        LoRARequest("", 1, "/x")
    with pytest.raises(ValueError, match="lora_path must name the adapter folder"):
        LoRARequest("a", 1, "")
    assert LoRARequest("a", 1, Path("/x")).lora_path == "/x"


def test_lora_needs_enable_lora(tiny_model_dir, sql):
    llm = LLM(tiny_model_dir, dtype="float32", device="cpu", max_model_len=64, kv_cache_memory_bytes=2 * 1024**2)
    with pytest.raises(ValueError, match="enable_lora=True"):
        llm.generate(PROMPT, SamplingParams(max_tokens=2), lora_request=sql)
    assert not llm.engine.has_unfinished()
    with pytest.raises(ValueError, match="max_loras must be a positive integer"):
        LLM(tiny_model_dir, dtype="float32", device="cpu", enable_lora=True, max_loras=0)


def test_one_lora_int_id_names_one_adapter(lora_llm, sql, adapter_dirs):
    lora_llm.add_lora(sql)
    with pytest.raises(ValueError, match=r"lora_int_id 1 already names adapter 'sql'"):
        lora_llm.add_lora(LoRARequest("other", sql.lora_int_id, str(adapter_dirs["chat"])))


def test_slots_are_cached_evicted_lru_and_never_taken_from_running_requests(lora_llm, sql, chat, adapter_dirs):
    third = LoRARequest("third", 3, str(adapter_dirs["sql"]))  # max_loras=2
    engine = lora_llm.engine
    engine.add_request("busy-sql", PROMPT["prompt_token_ids"], SamplingParams(max_tokens=2), lora_request=sql)
    engine.add_request("busy-chat", PROMPT["prompt_token_ids"], SamplingParams(max_tokens=2), lora_request=chat)
    try:
        with pytest.raises(LoRASlotsFullError, match=r"all max_loras=2 slots hold adapters of unfinished requests"):
            engine.add_request("third", PROMPT["prompt_token_ids"], SamplingParams(max_tokens=2), lora_request=third)
        assert "third" not in engine.requests
    finally:
        engine.abort("busy-sql")
        engine.abort("busy-chat")
    lora_llm.add_lora(chat)  # used most recently: `sql` is now the one to evict
    lora_llm.add_lora(third)
    assert lora_llm.lora.loaded == ["chat", "third"]
    out = lora_llm.generate(PROMPT, SamplingParams(max_tokens=4, temperature=0), lora_request=[sql])[0]
    assert len(out.outputs[0].token_ids) == 4 and lora_llm.lora.loaded == ["third", "sql"]


def test_an_adapter_trained_on_the_bare_backbone_loads_the_same(lora_llm, sql, adapter_dirs, tmp_path):
    # peft over Qwen3Model (no lm_head) names tensors base_model.model.layers.N... instead of ...model.layers.N...
    renamed = edited(adapter_dirs["sql"], tmp_path / "bare", tensors=lambda t: {
        k.replace("base_model.model.model.", "base_model.model."): v for k, v in t.items()})
    params = SamplingParams(max_tokens=8, temperature=0, ignore_eos=True)
    want = lora_llm.generate(PROMPT, params, lora_request=sql)[0].outputs[0].token_ids
    got = lora_llm.generate(PROMPT, params, lora_request=LoRARequest("bare", 60, renamed))[0].outputs[0].token_ids
    assert got == want
