"""LoRA fine-tuning speed on CPU: qwick's training path vs a plain transformers + peft loop, in one run.

Both sides train the same LoRA (r=16, alpha=32, all seven projections) on the same random Qwen3-0.6B-shaped
weights (`qwick.bench.dummy_model_folder`'s config) and the same chat-like token data: sequences of 128-384
tokens whose last quarter is the assistant's answer (the only learned tokens). The dummy folder has no
tokenizer, so the data is token ids; qwick's side is what `qwick finetune` runs after rendering
(`add_lora` + `trainer.train` + `losses.cross_entropy_sum`), the peer is the loop people write by hand:
`model(input_ids, attention_mask, labels).loss.backward()` + `torch.optim.AdamW`, batches in file order.

Where a difference comes from: qwick projects to the 151,936-wide vocabulary only at learned positions
(transformers computes logits and cross-entropy at every position), and groups batches by length (less padding).
Measure: non-padding tokens per second over the timed steps, after one warm-up step on each side.

Run on an idle machine (timings are meaningless under load): python benchmarks/finetune.py [--steps 4]
Smoke test: python benchmarks/finetune.py --tiny
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from qwick.bench import dummy_model_folder
from qwick.device import resolve_dtype
from qwick.train.losses import cross_entropy_sum
from qwick.train.model import LoraSettings, add_lora
from qwick.train.render import IGNORE
from qwick.train.trainer import TrainSettings, collate, train

TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            head_dim=32, vocab_size=151936)


def build_model(args: argparse.Namespace, dtype: torch.dtype) -> Any:
    import transformers

    with tempfile.TemporaryDirectory() as tmp:
        config = transformers.AutoConfig.from_pretrained(dummy_model_folder(None, Path(tmp)))
    for key, value in (TINY if args.tiny else {}).items():
        setattr(config, key, value)
    torch.manual_seed(0)
    return transformers.Qwen3ForCausalLM(config).to(dtype).train()


def chat_like_data(n: int, lengths: tuple[int, int], vocab: int, seed: int = 0) -> list[dict[str, list[int]]]:
    """n sequences of random ids; the last quarter of each is learned (a chat's answer after its prompt)."""
    rng = random.Random(seed)
    items = []
    for _ in range(n):
        ids = [rng.randrange(vocab) for _ in range(rng.randint(*lengths))]
        answer = len(ids) // 4
        items.append({"input_ids": ids, "labels": [IGNORE] * (len(ids) - answer) + ids[-answer:]})
    return items


def run_qwick(model: Any, items: list[dict], args: argparse.Namespace) -> tuple[int, float]:
    lora = add_lora(model, LoraSettings(r=16, alpha=32), "dummy")
    settings = TrainSettings(lr=1e-4, batch_size=args.batch_size, logging_steps=10**6, progress=False)
    device = torch.device("cpu")
    train(lora, items[:args.batch_size], None, replace(settings, max_steps=1), cross_entropy_sum, device)  # warm-up
    result = train(lora, items, None, replace(settings, max_steps=args.steps), cross_entropy_sum, device)
    return result.tokens, result.seconds


def run_peer(model: Any, items: list[dict], args: argparse.Namespace) -> tuple[int, float]:
    import peft

    config = peft.LoraConfig(r=16, lora_alpha=32, target_modules=list(LoraSettings().target_modules),
                             task_type="CAUSAL_LM")
    lora = peft.get_peft_model(model, config)
    optimizer = torch.optim.AdamW([p for p in lora.parameters() if p.requires_grad], lr=1e-4)
    batches = [collate(items[i:i + args.batch_size]) for i in range(0, len(items), args.batch_size)]
    tokens, start = 0, 0.0
    for step, batch in enumerate([batches[0], *batches]):  # step 0 warms up
        if step == 1:
            start = time.perf_counter()
        loss = lora(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(lora.parameters(), 1.0)  # as Trainer does
        optimizer.step()
        optimizer.zero_grad()
        tokens += int(batch["attention_mask"].sum()) if step else 0
    return tokens, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="a tiny model and short sequences (smoke test)")
    parser.add_argument("--steps", type=int, default=4, help="timed optimizer steps per side (default 4)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--dtype", default="auto", help="base weights dtype (default: qwick's CPU auto)")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args()
    dtype = resolve_dtype(args.dtype, torch.device("cpu"), None)
    base = build_model(args, dtype)
    lengths = (16, 48) if args.tiny else (128, 384)
    items = chat_like_data(args.steps * args.batch_size, lengths, base.config.vocab_size)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {dtype}, "
          f"{'tiny' if args.tiny else 'Qwen3-0.6B'} shape, {args.steps} steps x {args.batch_size} sequences "
          f"of {lengths[0]}-{lengths[1]} tokens (last quarter learned)", flush=True)
    results = {}
    for name, run in (("qwick", run_qwick), ("transformers+peft", run_peer)):
        tokens, seconds = run(copy.deepcopy(base), items, args)
        results[name] = {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds}
        print(f"{name:>18}: {tokens / seconds:8.1f} training tok/s ({tokens} tokens in {seconds:.2f} s)", flush=True)
    ratio = results["qwick"]["tokens_per_s"] / results["transformers+peft"]["tokens_per_s"]
    print(f"ratio qwick / transformers+peft: {ratio:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({**results, "ratio": ratio}, indent=2))


if __name__ == "__main__":
    main()
