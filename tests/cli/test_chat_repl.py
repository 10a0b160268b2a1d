"""`qwick chat` at a terminal: readline editing and history, Ctrl-C at the prompt, thinking dimmed only when
the model opened <think>."""

from __future__ import annotations

import io
import signal
import sys

import pexpect
import pytest

from qwick.chat_repl import DIM, RESET, stream_turn
from qwick.outputs import StreamDelta
from qwick.tokenizer import ReasoningStreamParser

QWICK = [sys.executable, "-m", "qwick"]
LEFT, UP = "\x1b[D", "\x1b[A"


@pytest.fixture
def chat(tiny_model_dir):
    # SIGINT back to its default in the child: a test run started as a background job (`cmd &` in a script, as
    # some CI runners do) inherits SIGINT ignored, and Python then never raises KeyboardInterrupt
    child = pexpect.spawn(QWICK[0], [*QWICK[1:], "chat", str(tiny_model_dir), "--max-tokens", "3", "--dtype",
                                     "float32"], encoding="utf-8", timeout=120, dimensions=(40, 200),
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    child.expect(">>> ")
    yield child
    child.close(force=True)


def test_arrow_keys_edit_the_line_and_recall_history(chat):
    chat.send(f"/ab{LEFT}X\r")  # without readline the escape sequence would land in the line
    chat.expect(r"\[unknown command /aXb\]")
    chat.expect(">>> ")
    chat.send(f"{UP}\r")  # the previous line again
    chat.expect(r"\[unknown command /aXb\]")
    chat.expect(">>> ")
    chat.sendline("/exit")
    chat.expect(pexpect.EOF)


def test_ctrl_c_at_the_prompt_exits_130_without_a_traceback(chat):
    chat.sendintr()
    chat.expect(pexpect.EOF)
    chat.close()
    assert chat.exitstatus == 130
    assert chat.before.endswith("\r\n")  # the shell prompt starts on a fresh line
    assert "Traceback" not in chat.before and "KeyboardInterrupt" not in chat.before


class ScriptedLLM:
    """Streams a fixed output split into reasoning/content as LLM.stream_chat does (thinking on)."""

    def __init__(self, pieces: list[str], prompt: str = "<|im_start|>assistant\n") -> None:
        self.pieces, self.prompt = pieces, prompt

    def render_chat(self, messages, tools=None, kwargs=None) -> str:
        return self.prompt

    def stream_chat(self, messages, params, chat_template_kwargs=None, lora_request=None):
        parser = ReasoningStreamParser(True, prompt_opened_think=self.prompt.endswith("<think>"))
        for i, text in enumerate(self.pieces):
            last = i == len(self.pieces) - 1
            parts = [parser.feed(text), *([parser.finish()] if last else [])]
            yield StreamDelta(0, text, finish_reason="stop" if last else None,
                              reasoning_content="".join(p.reasoning for p in parts),
                              content="".join(p.content for p in parts))


def _turn(llm: ScriptedLLM) -> tuple[str, str, str]:
    out = io.StringIO()
    reasoning, content = stream_turn(llm, [{"role": "user", "content": "hi"}], None, True, out, DIM, RESET)
    return out.getvalue(), reasoning, content


def test_an_opened_think_block_is_dimmed_then_the_answer_plain():
    shown, reasoning, content = _turn(ScriptedLLM(["<think>", "\nhmm", "\n</think>", "\n\nHello!"]))
    assert shown == f"{DIM}hmm{RESET}\nHello!\n"
    assert (reasoning, content) == ("hmm", "Hello!")


def test_text_without_think_is_the_answer_even_with_thinking_on():
    shown, reasoning, content = _turn(ScriptedLLM(["Hello", " there"]))
    assert DIM not in shown and shown == "Hello there\n"
    assert (reasoning, content) == ("", "Hello there")


def test_a_prompt_that_opened_think_makes_the_output_thinking():
    shown, reasoning, _ = _turn(ScriptedLLM(["hmm", "\n</think>\n\nok"], prompt="<|im_start|>assistant\n<think>\n"))
    assert shown.startswith(DIM + "hmm") and reasoning == "hmm"
