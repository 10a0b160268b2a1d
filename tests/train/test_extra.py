"""The training libraries are an optional extra: never imported by `import qwick`, named when missing."""

from __future__ import annotations

import subprocess
import sys

import pytest
from trainkit import magic_word_rows, write_jsonl

from qwick.cli import main

COMMANDS = {
    "finetune": ["finetune", "m", "--data", "d.jsonl", "--out", "o"],
    "pretrain": ["pretrain", "m", "--data", "d.txt", "--out", "o"],
    "distill": ["distill", "--teacher", "t", "--student", "s", "--data", "d.jsonl", "--out", "o"],
    "merge": ["merge", "m", "adapter", "out"],
}


@pytest.mark.parametrize("command", COMMANDS)
def test_missing_extra_names_the_package_and_the_install_command(command, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "peft", None)  # makes `import peft` fail as if it were not installed
    assert main(COMMANDS[command]) == 2
    err = capsys.readouterr().err
    assert f"qwick: error: qwick {command} needs the optional training packages (peft not installed)" in err
    assert "pip install qwick[train]" in err
    assert "Traceback" not in err


def test_importing_qwick_and_its_training_cli_loads_no_training_library():
    code = ("import argparse, sys, qwick, qwick.train, qwick.train.cli, qwick.train.data, qwick.train.render\n"
            "qwick.train.cli.register_train_commands(argparse.ArgumentParser().add_subparsers())\n"
            "print([m for m in ('transformers', 'peft', 'trl', 'accelerate', 'datasets') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_qlora_on_cpu_is_refused_with_a_clear_message(tmp_path, capsys):
    data = write_jsonl(tmp_path / "train.jsonl", magic_word_rows(2))
    assert main(["finetune", "m", "--data", str(data), "--out", str(tmp_path / "o"), "--qlora", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "--qlora needs a CUDA GPU" in err and "Drop --qlora to train a plain LoRA" in err
