"""qwick with a LoRA adapter computes what peft + transformers compute (float32, unmerged adapter)."""

from __future__ import annotations

import pytest
import torch
from adapters import peft_reference

from qwick import SamplingParams

from reference import TOKENIZER_VOCAB, hf_greedy

PROMPT = list(range(1000, 1037))  # 37 tokens: more than two KV blocks


def qwick_logits(llm, lora_request, ids: list[int]) -> torch.Tensor:
    """All-position logits [T, V] of one fresh prompt through the LoRA-wrapped model (no KV cache)."""
    llm.add_lora(lora_request)
    with torch.inference_mode(), llm.lora.active([lora_request.lora_int_id], len(ids)):
        hidden = llm.model(torch.tensor([ids]), torch.arange(len(ids))[None])
    return llm.model.compute_logits(hidden)[0]


@pytest.mark.parametrize("name", ["sql", "chat"])
def test_prefill_logits_equal_peft(lora_llm, adapter_dirs, tiny_model_dir, request, name):
    lora_request = request.getfixturevalue(name)
    reference = peft_reference(tiny_model_dir, adapter_dirs[name])
    with torch.no_grad():
        want = reference(torch.tensor([PROMPT])).logits[0]
        with reference.disable_adapter():
            base = reference(torch.tensor([PROMPT])).logits[0]
    got = qwick_logits(lora_llm, lora_request, PROMPT)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    assert (want - base).abs().max() > 1.0  # the adapter is far from a no-op, so the match means something


@pytest.mark.parametrize("name", ["sql", "chat"])
def test_greedy_decoding_equals_peft_tokens_and_logprobs(lora_llm, adapter_dirs, tiny_model_dir, request, name):
    lora_request = request.getfixturevalue(name)
    reference = peft_reference(tiny_model_dir, adapter_dirs[name])
    params = SamplingParams(max_tokens=16, temperature=0, ignore_eos=True, logprobs=20)
    out = lora_llm.generate({"prompt_token_ids": PROMPT}, params, lora_request=lora_request)[0].outputs[0]
    assert out.token_ids == hf_greedy(reference, PROMPT, 16)
    # every step's distribution, from one teacher-forced reference forward over prompt + output
    with torch.no_grad():
        logits = reference(torch.tensor([PROMPT + out.token_ids])).logits[0, len(PROMPT) - 1 : -1]
    want = torch.log_softmax(logits[:, :TOKENIZER_VOCAB].float(), -1)  # [16, vocab]
    for step, entries in enumerate(out.logprobs):
        for token, logprob in entries.items():
            assert logprob.logprob == pytest.approx(float(want[step, token]), abs=1e-4), (step, token)


def test_the_adapter_changes_the_output(lora_llm, sql):
    params = SamplingParams(max_tokens=16, temperature=0, ignore_eos=True)
    base = lora_llm.generate({"prompt_token_ids": PROMPT}, params)[0].outputs[0].token_ids
    adapted = lora_llm.generate({"prompt_token_ids": PROMPT}, params, lora_request=sql)[0].outputs[0].token_ids
    assert adapted != base
