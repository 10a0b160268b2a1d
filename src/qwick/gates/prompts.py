"""Prompts of the gates: the model's own chat template (thinking off unless the gate says otherwise), the
Qwen3-Reranker format for relevance, and Qwen3-Embedding's input convention."""

from __future__ import annotations

from dataclasses import dataclass

from qwick.gates.spec import GateSpec
from qwick.tokenizer import Tokenizer

# Qwen3-Reranker's prompt (QwenLM/Qwen3-Embedding; the same strings in vLLM's and OpenVINO's examples)
RERANK_PREFIX = ("<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the "
                 'Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n')
RERANK_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
EMBED_EOS = "<|endoftext|>"  # Qwen3-Embedding's tokenizer appends it; the embedding is read there
_SPLIT = "\x00qwick-split\x00"


@dataclass(frozen=True)
class Rendered:
    text: str
    ids: list[int]
    prefix_ids: list[int]  # tokens of the part shared by every request of this gate (cache warm-up)


def render_gate(tokenizer: Tokenizer, spec: GateSpec, text: str, labels: tuple[str, ...] | None = None) -> Rendered:
    """System = the instruction, user = the template with the text; the answer starts after the assistant
    header (and, with thinking off, after the empty <think></think> block)."""
    def render(user: str) -> str:
        messages = [{"role": "system", "content": spec.system_prompt(labels)},
                    {"role": "user", "content": spec.template.replace("{text}", user)}]
        out = tokenizer.apply_chat_template(messages, add_generation_prompt=True, enable_thinking=spec.thinking)
        assert isinstance(out, str)
        return out

    full = render(text)
    prefix = render(_SPLIT).split(_SPLIT, 1)[0]
    return Rendered(full, tokenizer.encode(full), tokenizer.encode(prefix))


def render_rerank(tokenizer: Tokenizer, instruction: str, query: str, document: str) -> Rendered:
    head = f"{RERANK_PREFIX}<Instruct>: {instruction}\n<Query>: {query}\n"
    text = f"{head}<Document>: {document}{RERANK_SUFFIX}"
    return Rendered(text, tokenizer.encode(text), tokenizer.encode(head))


def embedding_ids(tokenizer: Tokenizer, text: str) -> list[int]:
    """Qwen3-Embedding's tokenization: the text, then <|endoftext|> (whose final hidden state is the embedding)."""
    eos = tokenizer.token_to_id(EMBED_EOS)
    ids = tokenizer.encode(text)
    return [*ids, eos] if eos is not None else ids
