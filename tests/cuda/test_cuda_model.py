"""On the device: qwick's Qwen3 computes transformers' logits and greedy tokens (tiny random checkpoint)."""

from __future__ import annotations

import pytest
import torch
import transformers

from qwick import LLM, SamplingParams

from checkpoints import write_tiny_checkpoint
from reference import hf_greedy

PROMPT = [(11 * j) % 9000 + 100 for j in range(40)]
# bounds of tests/model/test_parity.py (bf16 vs the float32 reference, measured on CPU)
BF16_VS_FP32_MEAN, BF16_VS_FP32_MAX = 0.025, 0.5


def qwick_logits(llm: LLM, ids: list[int]) -> torch.Tensor:
    """All-position logits [T, V] of one fresh prompt (no KV cache), float32, on the CPU."""
    with torch.inference_mode():
        hidden = llm.model(torch.tensor([ids], device=llm.device), torch.arange(len(ids), device=llm.device)[None])
        return llm.model.compute_logits(hidden)[0].cpu()


def hf_logits(model_dir, dtype: torch.dtype, device: str, ids: list[int]) -> torch.Tensor:
    model = transformers.Qwen3ForCausalLM.from_pretrained(model_dir, dtype=dtype).to(device).eval()
    with torch.inference_mode():
        return model(torch.tensor([ids], device=device)).logits[0].float().cpu()


def test_float32_logits_equal_transformers_on_the_device(device, tiny_model_dir):
    llm = LLM(tiny_model_dir, dtype="float32", device=device, max_model_len=256)
    assert next(llm.model.parameters()).device.type == torch.device(device).type
    got = qwick_logits(llm, PROMPT)
    torch.testing.assert_close(got, hf_logits(tiny_model_dir, torch.float32, device, PROMPT), atol=1e-4, rtol=1e-4)


def test_bfloat16_logits_stay_within_the_measured_bounds(device, tiny_model_dir):
    reference = hf_logits(tiny_model_dir, torch.float32, "cpu", PROMPT)
    llm = LLM(tiny_model_dir, dtype="bfloat16", device=device, max_model_len=256)
    error = (qwick_logits(llm, PROMPT) - reference).abs()
    hf_error = (hf_logits(tiny_model_dir, torch.bfloat16, device, PROMPT) - reference).abs()
    assert error.mean() < BF16_VS_FP32_MEAN and error.max() < BF16_VS_FP32_MAX
    assert error.mean() <= 1.1 * hf_error.mean() + 1e-3  # no worse than transformers' own bf16 on this device


def test_auto_dtype_on_a_gpu_is_the_checkpoint_dtype(device, tiny_model_dir, tmp_path):
    if torch.device(device).type != "cuda":
        pytest.skip("on the CPU `auto` depends on the CPU's bf16 support (tested in tests/model)")
    bf16_dir = write_tiny_checkpoint(tmp_path / "bf16", dtype="bfloat16", with_tokenizer=False)
    bf16 = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    assert LLM(bf16_dir, device=device, max_model_len=256, skip_tokenizer_init=True).dtype == bf16
    assert LLM(tiny_model_dir, device=device, max_model_len=256).dtype == torch.float32  # saved as float32


def test_greedy_tokens_equal_transformers(device, tiny_model_dir):
    hf = transformers.Qwen3ForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    prompts = [PROMPT, PROMPT[:7], [151644, 872, 198, 9707, 151645, 198]]
    llm = LLM(tiny_model_dir, dtype="float32", device=device, max_model_len=256)
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts],
                        SamplingParams(max_tokens=24, temperature=0.0, ignore_eos=True))
    assert [o.outputs[0].token_ids for o in outs] == [hf_greedy(hf, p, 24) for p in prompts]
