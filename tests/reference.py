"""Reference computations with transformers, shared by the engine tests."""

from __future__ import annotations

import torch
import transformers

TOKENIZER_VOCAB = 151669


class MaskPadding(transformers.LogitsProcessor):
    """transformers does not know that ids >= 151669 are embedding padding; qwick never samples them."""

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        scores[:, TOKENIZER_VOCAB:] = float("-inf")
        return scores


def hf_greedy(model: transformers.Qwen3ForCausalLM, prompt_ids: list[int], max_new_tokens: int) -> list[int]:
    """Reference greedy continuation (EOS ignored), with the padded vocabulary masked."""
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt_ids]), do_sample=False, max_new_tokens=max_new_tokens,
                             min_new_tokens=max_new_tokens, pad_token_id=0,
                             logits_processor=transformers.LogitsProcessorList([MaskPadding()]))
    return out[0, len(prompt_ids):].tolist()
