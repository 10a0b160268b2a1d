"""Starting the CLI: the parser loads nothing heavy, `python -m qwick` is `qwick`, a forgotten prompt is named."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("torch", "transformers", "fastapi", "tokenizers", "qwick.llm", "mcp", "ray", "gguf", "openai", "triton")


def test_building_the_parser_imports_nothing_heavy():
    # `qwick --help` used to import torch (via qwick.bench / qwick.quant) just to build the parser: ~2 s
    code = ("import sys, qwick.cli; qwick.cli.build_parser().parse_args(['generate', 'm', 'p']); "
            f"print([m for m in {HEAVY!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_help_does_not_import_torch():
    code = ("import sys, qwick.cli\ntry:\n    qwick.cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip().endswith("False"), out.stdout + out.stderr


def test_python_dash_m_qwick_is_the_qwick_command(tmp_path):
    out = subprocess.run([sys.executable, "-m", "qwick", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "usage: qwick" in out.stdout
    out = subprocess.run([sys.executable, "-m", "qwick", "generate", str(tmp_path / "nope"), "hi"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "does not exist" in out.stderr


def test_python_dash_m_qwick_generates(tiny_model_dir):
    args = ["generate", str(tiny_model_dir), "Hello", "--max-tokens", "4", "--temperature", "0", "--dtype", "float32"]
    via_m = subprocess.run([sys.executable, "-m", "qwick", *args], capture_output=True, text=True, timeout=120)
    via_cli = subprocess.run([sys.executable, "-m", "qwick.cli", *args], capture_output=True, text=True, timeout=120)
    assert via_m.returncode == 0, via_m.stderr
    assert via_m.stdout == via_cli.stdout and via_m.stdout.strip()


@pytest.mark.parametrize("given", ["folder", "Qwen/Qwen3-1.7B"])
def test_generate_with_a_model_in_the_prompts_place_says_so(tiny_model_dir, given):
    prompt = str(tiny_model_dir) if given == "folder" else given
    out = subprocess.run([sys.executable, "-m", "qwick", "generate", prompt], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 2
    assert "looks like a model" in out.stderr and "no prompt was given" in out.stderr
    assert "Qwen/Qwen3-0.6B" not in out.stderr and "Traceback" not in out.stderr


def test_generate_with_model_and_prompt_is_not_second_guessed(tiny_model_dir):
    # naming the model makes any prompt text a prompt, even one that looks like a model id
    out = subprocess.run([sys.executable, "-m", "qwick", "generate", str(tiny_model_dir), "Qwen/Qwen3-1.7B",
                          "--max-tokens", "2", "--dtype", "float32"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("prompt", ["yes/no", "what is 1/2?", "Hello", "1/2"])
def test_ordinary_prompts_without_a_model_are_prompts(prompt):
    from qwick.cli import _check_generate_args, build_parser

    args = build_parser().parse_args(["generate", prompt])
    assert args.model is None and args.prompt == prompt
    _check_generate_args(args)  # no error: the default model will be used
