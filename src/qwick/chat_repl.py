"""`qwick chat`: the interactive loop (line editing, commands, thinking shown dimmed, Ctrl-C)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from typing import Any, TextIO

DIM, RESET = "\x1b[2m", "\x1b[0m"
PROMPT = ">>> "
THINK_START = "<think>"
CHAT_HELP = "commands: /think  /no_think  /reset  /exit   (Ctrl-D also exits)"


def run_chat(llm: Any, params: Any, out: TextIO, inp: TextIO, *, model: str, thinking: bool,
             system: str | None = None, lora: Any = None) -> int:
    """The REPL; 0 on /exit or end of input, 130 on Ctrl-C at the prompt (Ctrl-C while generating stops the turn)."""
    dim, reset = (DIM, RESET) if out.isatty() else ("", "")
    read = _line_reader(out, inp)
    head = [{"role": "system", "content": system}] if system else []
    history: list[dict[str, str]] = []
    out.write(f"qwick chat: {model} (thinking {'on' if thinking else 'off'}). {CHAT_HELP}\n")
    while True:
        try:
            line = read()
        except KeyboardInterrupt:
            out.write("\n")
            return 130
        if line is None:
            out.write("\n")
            return 0
        text = line.strip()
        if not text:
            continue
        if text in ("/exit", "/quit", "/bye"):
            return 0
        if text in ("/think", "/no_think"):
            thinking = text == "/think"
            out.write(f"[thinking {'on' if thinking else 'off'}]\n")
            continue
        if text == "/reset":
            history.clear()
            out.write("[history cleared]\n")
            continue
        if text.startswith("/") and " " not in text:
            out.write(f"[unknown command {text}] {CHAT_HELP}\n")
            continue
        history.append({"role": "user", "content": text})
        reasoning, content = stream_turn(llm, head + history, params, thinking, out, dim, reset, lora)
        history.append({"role": "assistant", "content": content, "reasoning_content": reasoning})


def _line_reader(out: TextIO, inp: TextIO) -> Callable[[], str | None]:
    """A line of input, None at its end. In a terminal, input() with readline: arrow keys, editing, history."""
    if inp is sys.stdin and out is sys.stdout and inp.isatty() and out.isatty():
        # importing readline is what gives input() line editing; it is missing on some platforms (Windows)
        with contextlib.suppress(ImportError):
            import readline  # noqa: F401

        def read_terminal() -> str | None:
            try:
                return input(PROMPT)
            except EOFError:
                return None

        return read_terminal

    def read_stream() -> str | None:
        out.write(PROMPT)
        out.flush()
        return inp.readline() or None

    return read_stream


def stream_turn(llm: Any, messages: list[dict[str, str]], params: Any, thinking: bool, out: TextIO, dim: str,
                reset: str, lora: Any = None) -> tuple[str, str]:
    """Stream one assistant turn: thinking dimmed (in [think] brackets off a terminal), then the answer.

    Text is thinking only where the model opened `<think>` (or the prompt did): an output that never opens it
    is the answer, shown plainly, even with thinking on."""
    kwargs = {"enable_thinking": thinking}
    prompt_opened = llm.render_chat(messages, None, kwargs).rstrip().endswith(THINK_START)
    opened: bool | None = None  # decided at the first text
    reasoning, content = "", ""
    in_thought = False
    try:
        for delta in llm.stream_chat(messages, params, chat_template_kwargs=kwargs, lora_request=lora):
            if opened is None and delta.text:
                opened = prompt_opened or delta.text.startswith(THINK_START)
            thought, answer = (delta.reasoning_content, delta.content) if opened else (
                "", delta.reasoning_content + delta.content)
            if thought:
                if not in_thought:
                    out.write(dim + ("" if dim else "[think] "))
                    in_thought = True
                out.write(thought)
                reasoning += thought
            if answer:
                if in_thought:
                    out.write(reset + ("" if reset else " [/think]") + "\n")
                    in_thought = False
                out.write(answer)
                content += answer
            out.flush()
    except KeyboardInterrupt:
        out.write(" [interrupted]")
    if in_thought:
        out.write(reset)
    out.write("\n")
    return reasoning, content
