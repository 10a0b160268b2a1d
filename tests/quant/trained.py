"""A tiny Qwen3 trained for ~200 steps on a synthetic bigram language, for meaningful quantization accuracy bars.

Random tiny models are nearly flat (median top-1/top-2 logit gap ~0.2), so any rounding flips greedy tokens
and agreement measures noise. This one learns a peaked language: every token has 8 possible successors with
Dirichlet(0.1) probabilities, so most next tokens are clear (median top-1 probability ~0.7, median top-2 gap
~1.2 logits) while some contexts are genuine near-ties (~5% of positions have a gap under 0.12), as in a
real LM. Prompts come from the same language.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from qwick.model.config import Qwen3Config
from qwick.model.loader import build_model, checkpoint_files, load_config, load_weights
from qwick.model.qwen3 import Qwen3ForCausalLM

VOCAB, SUCCESSORS = 256, 8
CONFIG = dict(architectures=["Qwen3ForCausalLM"], model_type="qwen3", vocab_size=VOCAB, hidden_size=128,
              intermediate_size=256, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=32,
              rms_norm_eps=1e-6, max_position_embeddings=512, tie_word_embeddings=True, rope_theta=10000.0,
              torch_dtype="float32")


Loader = Callable[[str], Qwen3ForCausalLM]


def load_float32(folder: Path) -> Qwen3ForCausalLM:
    model = build_model(load_config(folder), torch.float32, torch.device("cpu"))
    load_weights(model, checkpoint_files(folder))
    return model


@dataclass
class BigramLanguage:
    table: torch.Tensor  # [V, V] next-token probabilities

    @classmethod
    def make(cls, seed: int = 0) -> BigramLanguage:
        gen = torch.Generator().manual_seed(seed)
        successors = torch.stack([torch.randperm(VOCAB, generator=gen)[:SUCCESSORS] for _ in range(VOCAB)])
        gamma = torch._standard_gamma(torch.full((VOCAB, SUCCESSORS), 0.1), generator=gen)  # Dirichlet(0.1)
        probs = gamma / gamma.sum(-1, keepdim=True)
        return cls(torch.zeros(VOCAB, VOCAB).scatter_(1, successors, probs))

    def sample(self, batch: int, length: int, gen: torch.Generator) -> torch.Tensor:
        ids = [torch.randint(0, VOCAB, (batch,), generator=gen)]
        for _ in range(length - 1):
            ids.append(torch.multinomial(self.table[ids[-1]], 1, generator=gen)[:, 0])
        return torch.stack(ids, dim=1)  # [batch, length]


def train_tiny_lm(dest: Path, steps: int = 200, seed: int = 0) -> tuple[Path, BigramLanguage]:
    """Train on the bigram language and save a float32 Hugging Face-style folder (config.json + safetensors)."""
    torch.manual_seed(seed)
    language = BigramLanguage.make(seed)
    model = Qwen3ForCausalLM(Qwen3Config.from_dict(CONFIG))
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() > 1:
                param.normal_(0.0, 0.05)
    model.model.rotary_emb.reset()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed + 1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small only loses time to thread hand-offs
    try:
        for step in range(steps):
            ids = language.sample(32, 64, gen)
            positions = torch.arange(63).expand(32, 63)
            logits = model.compute_logits(model(ids[:, :-1], positions))  # [32, 63, V]
            loss = F.cross_entropy(logits.reshape(-1, VOCAB), ids[:, 1:].reshape(-1))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            for group in optimizer.param_groups:
                group["lr"] = 3e-3 * (1 - step / steps)
    finally:
        torch.set_num_threads(threads)
    dest.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    save_file(state, str(dest / "model.safetensors"), metadata={"format": "pt"})
    (dest / "config.json").write_text(json.dumps(CONFIG, indent=2))
    return dest, language
