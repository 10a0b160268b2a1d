"""`qwick bench`: each engine measured in its own process on one checkpoint written once (qwick/bench.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import torch
from safetensors.torch import load_file

from qwick.bench import dummy_model_folder, write_dummy_checkpoint

TINY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
        "num_key_value_heads": 1, "head_dim": 32}


def _tiny_config(tmp_path):
    folder = tmp_path / "config"
    folder.mkdir()
    config = json.loads(dummy_model_folder(None, tmp_path).joinpath("config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **TINY}))
    return folder


def test_the_checkpoint_loads_in_both_engines_with_the_same_weights(tmp_path):
    import transformers

    folder = dummy_model_folder(str(_tiny_config(tmp_path)), tmp_path)
    write_dummy_checkpoint(folder)
    saved = load_file(folder / "model.safetensors")
    assert "lm_head.weight" not in saved  # tied: stored once, as the embedding
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16)
    for name, tensor in saved.items():
        assert torch.equal(model.state_dict()[name], tensor), name
    assert model.model.rotary_emb.inv_freq.dtype == torch.float32  # as users load it, not cast to bfloat16


def test_bench_reports_both_engines(tmp_path):
    out = tmp_path / "rows.json"
    done = subprocess.run([sys.executable, "-m", "qwick.cli", "bench", "--config", str(_tiny_config(tmp_path)),
                           "--dtypes", "float32", "--rounds", "1", "--repeats", "1", "--decode-tokens", "2",
                           "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(out.read_text())
    assert [(r["engine"], r["dtype"]) for r in rows] == [("qwick", "float32"), ("transformers", "float32")]
    assert all(r[k] > 0 for r in rows for k in ("prefill_128_tok_s", "prefill_512_tok_s", "decode_tok_s"))
    assert "ratio qwick/transformers float32" in done.stdout


def test_a_failing_engine_process_is_reported(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text("{}")  # no architecture: the worker cannot load it
    done = subprocess.run([sys.executable, "-m", "qwick.cli", "bench", "--config", str(bad), "--dtypes", "float32",
                           "--rounds", "1", "--repeats", "1", "--no-transformers"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "qwick runs Qwen3 dense models only" in done.stderr and "Traceback" not in done.stderr


def test_counts_below_one_are_refused_before_anything_runs():
    for flag in ("--rounds", "--repeats", "--decode-tokens"):
        done = subprocess.run([sys.executable, "-m", "qwick.cli", "bench", flag, "0"], capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 2 and f"{flag}: must be at least 1, got 0" in done.stderr
