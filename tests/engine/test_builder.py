"""build_engine is the one composition root: LLM(...) and LLM.from_engine_args(EngineArgs(...)) build the same."""

from __future__ import annotations

import pytest

from qwick import LLM, SamplingParams
from qwick.engine.args import EngineArgs
from qwick.engine.builder import build_engine

GREEDY = SamplingParams(max_tokens=4, temperature=0)


def test_llm_and_from_engine_args_build_the_same_engine(tiny_model_dir) -> None:
    args = EngineArgs(tiny_model_dir, dtype="float32", device="cpu", max_model_len=64, seed=0)
    direct = LLM(tiny_model_dir, dtype="float32", device="cpu", max_model_len=64, seed=0)
    built = LLM.from_engine_args(args)
    assert built.engine_args == args and built.engine_config == direct.engine_config
    assert (built.max_model_len, built.dtype, built.device) == (direct.max_model_len, direct.dtype, direct.device)
    prompt = {"prompt_token_ids": [1, 2, 3]}
    assert built.generate(prompt, GREEDY)[0].outputs[0].token_ids == \
        direct.generate(prompt, GREEDY)[0].outputs[0].token_ids


def test_max_model_len_is_fitted_to_the_kv_budget_or_checked_against_the_model(tiny_model_dir) -> None:
    built = build_engine(EngineArgs(tiny_model_dir, dtype="float32", device="cpu", kv_cache_memory_bytes=2**20))
    assert 1 <= built.max_model_len == built.config.max_model_len <= built.model_config.max_position_embeddings
    with pytest.raises(ValueError, match="max_model_len must be in"):
        build_engine(EngineArgs(tiny_model_dir, dtype="float32", device="cpu", max_model_len=10**9))


def test_a_fitted_context_keeps_the_budget_it_was_fitted_to(tiny_model_dir, monkeypatch) -> None:
    """Free memory is read once: a later, smaller reading (weights loaded, another engine beside) must not leave
    the cache too small for the context fitted to the first one."""
    import torch

    from qwick.engine import config as config_module
    from qwick.engine.builder import engine_config
    from qwick.model.loader import load_config

    model = load_config(tiny_model_dir)
    readings = iter([2**30, 2**24])  # bytes free: at fitting, then when the cache is allocated
    monkeypatch.setattr(config_module, "_available_memory", lambda device: next(readings))
    args = EngineArgs(tiny_model_dir, dtype="float32", device="cpu", max_num_seqs=1)
    config = engine_config(args, model, torch.float32, torch.device("cpu"))
    assert config.kv_cache_memory_bytes is not None
    blocks = config.num_kv_blocks(model, torch.float32, torch.device("cpu"))  # no second reading: no error
    assert blocks * config.block_size >= config.max_model_len
