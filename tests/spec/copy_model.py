"""A tiny Qwen3 trained in seconds to copy: its text repeats a random span with a period of SPAN + 1 tokens
(the span, a separator, the span again, ...), so once a prompt holds one span and a separator the model
continues by copying it, as a rewrite or extraction pass copies its input. Prompt lookup drafts exactly those
tokens, so speculative decoding on it shows real acceptance (a random model accepts almost nothing).
Token ids only (vocab 256, no tokenizer): build LLMs on it with skip_tokenizer_init=True.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from qwick.model.config import Qwen3Config
from qwick.model.qwen3 import Qwen3ForCausalLM

VOCAB, SPAN, SEPARATOR = 256, 15, 1
CONFIG = dict(architectures=["Qwen3ForCausalLM"], model_type="qwen3", vocab_size=VOCAB, hidden_size=64,
              intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
              rms_norm_eps=1e-6, max_position_embeddings=512, tie_word_embeddings=True, rope_theta=10000.0,
              torch_dtype="float32", eos_token_id=0, bos_token_id=0)


def copy_text(batch: int, periods: int, gen: torch.Generator) -> torch.Tensor:
    """[batch, periods * (SPAN + 1)] token ids: a random span (ids 2..255) and the separator, repeated."""
    spans = torch.randint(2, VOCAB, (batch, SPAN), generator=gen)
    period = torch.cat([spans, torch.full((batch, 1), SEPARATOR)], dim=1)
    return period.repeat(1, periods)


def copy_prompt(seed: int, extra: int = 3) -> list[int]:
    """One span, the separator and the span's first `extra` tokens: the model should go on copying."""
    text = copy_text(1, 2, torch.Generator().manual_seed(seed))[0].tolist()
    return text[: SPAN + 1 + extra]


def train_copy_model(dest: Path, steps: int = 150, seed: int = 0) -> Path:
    """Train and save a float32 Hugging Face-style folder (config.json + safetensors)."""
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(Qwen3Config.from_dict(CONFIG))
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() > 1:
                param.normal_(0.0, 0.05)
    model.model.rotary_emb.reset()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed + 1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small only loses time to thread hand-offs
    try:
        for step in range(steps):
            ids = copy_text(32, 4, gen)
            positions = torch.arange(ids.shape[1] - 1).expand(ids.shape[0], -1)
            logits = model.compute_logits(model(ids[:, :-1], positions))  # [B, T, V]
            # only the copied periods are learnable: the first span is random
            loss = F.cross_entropy(logits[:, SPAN:].reshape(-1, VOCAB), ids[:, SPAN + 1 :].reshape(-1))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            for group in optimizer.param_groups:
                group["lr"] = 1e-2 * (1 - step / steps)
    finally:
        torch.set_num_threads(threads)
    dest.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    save_file(state, str(dest / "model.safetensors"), metadata={"format": "pt"})
    (dest / "config.json").write_text(json.dumps(CONFIG, indent=2))
    return dest
