"""`qwick generate/chat --lora ADAPTER` run the model with a PEFT adapter applied."""

from __future__ import annotations

import subprocess
import sys

import pytest

from qwick import LLM, SamplingParams
from qwick.lora.request import LoRARequest

QWICK = [sys.executable, "-m", "qwick"]
GREEDY = ["--max-tokens", "6", "--temperature", "0", "--dtype", "float32"]


@pytest.fixture(scope="module")
def adapter(tiny_model_dir, tmp_path_factory):
    from lora.adapters import write_adapter

    return write_adapter(tiny_model_dir, tmp_path_factory.mktemp("cli_lora") / "sql", seed=1, r=8, lora_alpha=12)


def test_generate_with_lora_uses_the_adapter(tiny_model_dir, adapter):
    llm = LLM(tiny_model_dir, dtype="float32", enable_lora=True, max_lora_rank=8)
    params = SamplingParams(max_tokens=6, temperature=0.0)
    tuned = llm.generate("Hello", params, lora_request=LoRARequest("sql", 1, str(adapter)))[0].outputs[0].text
    base = llm.generate("Hello", params)[0].outputs[0].text
    assert tuned != base  # else this test could not tell the adapter was applied
    out = subprocess.run([*QWICK, "generate", str(tiny_model_dir), "Hello", "--lora", str(adapter), *GREEDY],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout == tuned + "\n"


def test_chat_with_lora_runs(tiny_model_dir, adapter):
    out = subprocess.run([*QWICK, "chat", str(tiny_model_dir), "--lora", str(adapter), "--no-think", *GREEDY],
                         input="hi\n", capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count(">>> ") == 2


def test_a_missing_adapter_is_a_clear_error(tiny_model_dir, tmp_path):
    out = subprocess.run([*QWICK, "generate", str(tiny_model_dir), "Hello", "--lora", str(tmp_path / "nope")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    assert "--lora" in out.stderr and "is not a folder" in out.stderr and "Traceback" not in out.stderr
