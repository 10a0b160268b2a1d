"""Reference computations with transformers, shared by the engine, gate and LoRA tests."""

from __future__ import annotations

import math

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


def hf_sequence_logprob(hf_model: transformers.PreTrainedModel, prompt_ids: list[int],
                        continuation: list[int]) -> float:
    """Total logprob of `continuation` after the prompt (padding ids masked)."""
    with torch.no_grad():
        logits = hf_model(torch.tensor([prompt_ids + continuation])).logits[0].float()
    logits[:, TOKENIZER_VOCAB:] = float("-inf")  # padding ids are never an answer (as in qwick's sampling)
    logprobs = torch.log_softmax(logits, dim=-1)
    return sum(logprobs[len(prompt_ids) - 1 + j, t].item() for j, t in enumerate(continuation))


def hf_label_probs(hf_model: transformers.PreTrainedModel, hf_tokenizer: transformers.PreTrainedTokenizerBase,
                   system: str, text: str, labels: list[str]) -> dict[str, float]:
    """The whole reference with transformers: its chat template (thinking off), its tokenizer, its model."""
    messages = [{"role": "system", "content": system}, {"role": "user", "content": text}]
    prompt = hf_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                              enable_thinking=False)
    ids = hf_tokenizer(prompt, add_special_tokens=False).input_ids
    logprobs = [hf_sequence_logprob(hf_model, ids, hf_tokenizer(x, add_special_tokens=False).input_ids)
                for x in labels]
    total = sum(math.exp(lp) for lp in logprobs)
    return {x: math.exp(lp) / total for x, lp in zip(labels, logprobs, strict=True)}
