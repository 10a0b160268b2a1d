"""int8 / int4 logits against the float32 model: mean KL and greedy-token agreement on a fixed prompt set.

Models: the tiny model trained on a bigram language (tests/quant/trained.py: peaked distributions, the one the
bars are asserted on), the random tiny test models, and random weights at the Qwen3-0.6B shape (std 0.02:
near-uniform logits, so agreement there measures noise; KL is the meaningful number). "bf16 weights" rounds the
float32 weights to bfloat16 and nothing else: the error every bf16 deployment already accepts, for scale.
The quantized models run float32 activations through the same kernels as in serving.

Run: python benchmarks/quant_accuracy.py [--skip-0.6b]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

from qwick.model.loader import build_model, init_dummy_weights, load_config
from qwick.model.qwen3 import Qwen3ForCausalLM
from qwick.passes.quantize import quantize_model
from qwick.quant.accuracy import compare

sys.path[:0] = [str(Path(__file__).parents[1] / "tests"), str(Path(__file__).parents[1] / "tests" / "quant")]
from trained import load_float32, train_tiny_lm  # noqa: E402

from checkpoints import write_tiny_checkpoint  # noqa: E402

VARIANTS = [("bf16 weights", None, None), ("int8", "int8", 128), ("int4", "int4", 32), ("int4", "int4", 64),
            ("int4", "int4", 128)]


def round_to_bf16(model: Qwen3ForCausalLM) -> Qwen3ForCausalLM:
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(param.to(torch.bfloat16))
    return model


def evaluate(name: str, load: callable, prompts: torch.Tensor, steps: int) -> None:
    reference = load()
    for label, method, group in VARIANTS:
        candidate = load()
        if method is None:
            round_to_bf16(candidate)
        else:
            in_features = {m.in_features for n, m in candidate.named_modules() if n.endswith("_proj")}
            if method == "int4" and any(k % group for k in in_features):
                continue
            quantize_model(candidate, method, group)
        result = compare(reference, candidate, prompts, steps)
        group_text = f" g{group}" if method == "int4" else ""
        print(f"| {name} | {label}{group_text} | {result.kl:.2e} | {result.agreement:.2%} | {result.margin:.2f} |",
              flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--skip-0.6b", dest="skip_big", action="store_true", help="tiny models only")
    args = parser.parse_args()
    print("| model | weights | mean KL (nats) | greedy agreement | reference median top-2 margin |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        folder, language = train_tiny_lm(Path(tmp) / "trained")
        prompts = language.sample(32, 8, torch.Generator().manual_seed(1))
        evaluate("tiny trained (bigram LM)", lambda: load_float32(folder), prompts, 32)
        for config in ("tied_gqa2", "gqa4_yarn", "untied_mha_odd"):
            path = write_tiny_checkpoint(Path(tmp) / config, config, vocab_size=1000, with_tokenizer=False)
            prompts = torch.randint(0, 1000, (32, 8), generator=torch.Generator().manual_seed(0))
            evaluate(f"tiny random {config}", lambda p=path: load_float32(p), prompts, 32)
        if not args.skip_big:
            from qwick.bench import dummy_model_folder

            config = load_config(dummy_model_folder(None, Path(tmp)))

            def dummy() -> Qwen3ForCausalLM:
                model = build_model(config, torch.float32, torch.device("cpu"))
                init_dummy_weights(model, seed=0)
                return model

            prompts = torch.randint(0, 150000, (8, 16), generator=torch.Generator().manual_seed(0))
            evaluate("Qwen3-0.6B shape, random", dummy, prompts, 16)
    return 0


if __name__ == "__main__":
    sys.exit(main())
