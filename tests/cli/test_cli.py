"""The `qwick` command: --help everywhere, generate streaming to stdout, chat in a real terminal."""

from __future__ import annotations

import subprocess
import sys

import pexpect
import pytest

QWICK = [sys.executable, "-m", "qwick.cli"]


@pytest.mark.parametrize("command", [[], ["generate"], ["chat"], ["bench"]])
def test_every_command_has_help(command):
    out = subprocess.run([*QWICK, *command, "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    assert "usage: qwick" in out.stdout


def test_generate_streams_the_completion(tiny_model_dir):
    from qwick import LLM, SamplingParams

    expected = LLM(tiny_model_dir, dtype="float32").generate(
        "Hello", SamplingParams(max_tokens=6, temperature=0.0))[0].outputs[0].text
    out = subprocess.run([*QWICK, "generate", str(tiny_model_dir), "Hello", "--max-tokens", "6", "--temperature", "0",
                          "--dtype", "float32"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout == expected + "\n"


def test_generate_reports_a_missing_model_clearly(tmp_path):
    out = subprocess.run([*QWICK, "generate", str(tmp_path / "nope"), "hi"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2
    assert "does not exist" in out.stderr and "Traceback" not in out.stderr


def test_generate_reports_bad_sampling_values_clearly(tiny_model_dir):
    out = subprocess.run([*QWICK, "generate", str(tiny_model_dir), "hi", "--top-p", "3"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2
    assert "top_p must be in [0, 1]" in out.stderr


def test_chat_in_a_terminal(tiny_model_dir):
    child = pexpect.spawn(QWICK[0], [*QWICK[1:], "chat", str(tiny_model_dir), "--max-tokens", "5", "--dtype",
                                     "float32", "--seed", "1"], encoding="utf-8", timeout=120,
                          dimensions=(40, 200))
    try:
        child.expect("thinking on")
        child.expect(">>> ")
        child.sendline("Hello there")
        child.expect(">>> ")
        # a random model never writes <think>: its text is the answer, not dimmed thinking
        assert "\x1b[2m" not in child.before
        child.sendline("/no_think")
        child.expect(r"\[thinking off\]")
        child.expect(">>> ")
        child.sendline("And now?")
        child.expect(">>> ")
        child.sendline("/reset")
        child.expect(r"\[history cleared\]")
        child.sendline("/bogus")
        child.expect(r"\[unknown command /bogus\]")
        child.sendline("/exit")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0


def test_chat_exits_on_end_of_input(tiny_model_dir):
    out = subprocess.run([*QWICK, "chat", str(tiny_model_dir), "--max-tokens", "3", "--no-think"], input="hi\n",
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count(">>> ") == 2
    assert "\x1b[" not in out.stdout  # no colour codes when stdout is not a terminal
