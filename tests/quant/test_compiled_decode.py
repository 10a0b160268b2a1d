"""The compiled decode step (passes/compile.py) gives the eager tokens and never recompiles after warm-up."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from trained import BigramLanguage

from qwick import LLM, SamplingParams
from qwick.passes.compile import CompiledDecode

GREEDY = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)


def _prompts(language: BigramLanguage) -> list[dict[str, list[int]]]:
    rows = language.sample(3, 20, torch.Generator().manual_seed(2))
    return [{"prompt_token_ids": rows[i, : 20 - 6 * i].tolist()} for i in range(3)]  # 20, 14 and 8 tokens


def _tokens(llm: LLM, prompts: list[dict[str, list[int]]]) -> list[list[int]]:
    return [out.outputs[0].token_ids for out in llm.generate(prompts, GREEDY)]


@pytest.mark.parametrize("quantization", [None, "int8"])
def test_compiled_decode_matches_eager_without_recompiling(trained_lm: tuple[Path, BigramLanguage],
                                                           quantization: str | None) -> None:
    folder, language = trained_lm
    kwargs = dict(dtype="float32", skip_tokenizer_init=True, max_model_len=128, quantization=quantization)
    eager = LLM(folder, **kwargs)
    compiled = LLM(folder, compile_decode=True, **kwargs)  # warms up the 1-row and many-row graphs
    assert isinstance(compiled.model.model, CompiledDecode)
    prompts = _prompts(language)
    # Dynamo's own patch: monkeypatch's undo deletes config entries that were at their default, after which
    # the next case's recompile check raised "error_on_recompile does not exist".
    with torch._dynamo.config.patch(error_on_recompile=True):  # any new shape would now raise
        assert [_tokens(compiled, [p]) for p in prompts] == [_tokens(eager, [p]) for p in prompts]  # 1 row
        assert _tokens(compiled, prompts) == _tokens(eager, prompts)  # 3 rows of different context lengths
    assert torch._dynamo.config.error_on_recompile is False  # restored for whatever runs next


def test_compile_decode_and_lora_are_exclusive(trained_lm) -> None:
    with pytest.raises(ValueError, match="compile_decode does not support enable_lora"):
        LLM(trained_lm[0], compile_decode=True, enable_lora=True, skip_tokenizer_init=True)
