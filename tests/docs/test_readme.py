"""Every README code block runs as written (python) or at least parses (bash), on tiny checkpoints.

The only change made to a snippet is one narrow substitution, so the README keeps naming the real model:
- python blocks that build an `LLM`: the string `"Qwen/Qwen3-0.6B"` -> a tiny random Qwen3 folder, and
  `"/adapters/sql"` -> a PEFT adapter of it;
- client blocks (those with `base_url=`): port 8000 -> the port of a `qwick serve` started from the README's own
  serve command, in which `./Qwen3-0.6B` -> the tiny folder and 8000 -> a free port. The served name, and so
  the client's `model=`, stays as written.
A block that cannot run here carries `<!-- no-test: reason -->` on the line before its fence; it is reported as
skipped with that reason, and `test_no_test_markers_are_counted` pins how many there are.
"""

from __future__ import annotations

import contextlib
import io
import re
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

README = Path(__file__).parents[2] / "README.md"
MODEL_ID, ADAPTER, PORT = '"Qwen/Qwen3-0.6B"', '"/adapters/sql"', "8000"
SERVE_FOLDER = "./Qwen3-0.6B"
NO_TEST = re.compile(r"<!--\s*no-test:\s*(.+?)\s*-->")
FENCE = re.compile(r"^(\s*)```(\w*)\s*$")
EXPECTED_NO_TEST = 1  # the quantization block: torch.compile's warm-up takes minutes on CI's CPUs


@dataclass
class Block:
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    no_test: str | None  # the reason, when marked

    @property
    def id(self) -> str:
        return f"{self.lang}-L{self.line}"


def readme_blocks() -> list[Block]:
    lines = README.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening or not opening.group(2):
            i += 1
            continue
        indent, lang, start = opening.group(1), opening.group(2), i
        i += 1
        body = []
        while lines[i].strip() != "```":
            body.append(lines[i])
            i += 1
        previous = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        marker = NO_TEST.search(previous)
        blocks.append(Block(start + 1, lang, textwrap.dedent("\n".join(body)) if indent else "\n".join(body),
                            marker.group(1) if marker else None))
        i += 1
    return blocks


BLOCKS = readme_blocks()
PYTHON = [b for b in BLOCKS if b.lang == "python"]
BASH = [b for b in BLOCKS if b.lang == "bash"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir, tmp_path_factory) -> Path:
    from lora.adapters import write_adapter

    return write_adapter(tiny_model_dir, tmp_path_factory.mktemp("readme") / "sql", seed=1, r=8, lora_alpha=12)


@pytest.fixture(scope="module")
def served(tiny_model_dir) -> Iterator[int]:
    """`qwick serve` started from the README's serve command (substituted); yields its port."""
    (command,) = [b.code for b in BASH if "qwick serve" in b.code and "--served-model-name" in b.code]
    port = _free_port()
    command = command.replace(SERVE_FOLDER, str(tiny_model_dir)).replace(PORT, str(port))
    args = command.split()
    assert args[0] == "qwick"
    proc = subprocess.Popen([sys.executable, "-m", "qwick", *args[1:], "--dtype", "float32", "--max-model-len",
                             "1024"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while True:
            assert proc.poll() is None, f"qwick serve exited: {proc.stderr.read() if proc.stderr else ''}"
            assert time.monotonic() < deadline, "qwick serve did not start within 300 s"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200:
                    break
            time.sleep(0.5)
        yield port
    finally:
        proc.terminate()
        proc.wait(60)


def _run(code: str) -> str:
    """exec the snippet as a script in a fresh namespace; its printed output is returned."""
    import torch

    threads = torch.get_num_threads()  # a snippet may set threads=, which is process-wide
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(code, str(README), "exec"), {"__name__": "__readme__"})
    finally:
        torch.set_num_threads(threads)
    return out.getvalue()


@pytest.mark.parametrize("block", PYTHON, ids=[b.id for b in PYTHON])
def test_python_snippet_runs(block: Block, request):
    if block.no_test:
        pytest.skip(f"README line {block.line}: no-test: {block.no_test}")
    code = block.code
    if "base_url=" in code:
        port = request.getfixturevalue("served")
        code = re.sub(rf":{PORT}\b", f":{port}", code)  # Anthropic's base URL has no /v1 after the port
    else:
        code = code.replace(MODEL_ID, repr(str(request.getfixturevalue("tiny_model_dir"))))
        if ADAPTER in code:
            code = code.replace(ADAPTER, repr(str(request.getfixturevalue("adapter_dir"))))
    assert "Qwen3-0.6B" not in code.replace('model="Qwen/Qwen3-0.6B"', ""), "a real model id was left in"
    _run(code)


@pytest.mark.parametrize("block", BASH, ids=[b.id for b in BASH])
def test_bash_snippet_parses(block: Block):
    out = subprocess.run(["bash", "-n"], input=block.code, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr


def test_no_test_markers_are_counted():
    """Every skipped block names its reason; adding one is a visible change to this number."""
    marked = [b for b in BLOCKS if b.no_test]
    assert all(b.lang == "python" for b in marked)
    assert len(marked) == EXPECTED_NO_TEST, [(b.id, b.no_test) for b in marked]
    assert len(PYTHON) - len(marked) >= 5  # the API, async, client, structured and LoRA blocks run

