"""A program whose coroutine fails mid-stream, never shutting the AsyncLLMEngine down, still exits cleanly."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import asyncio, sys, threading
from qwick import LLM, SamplingParams
from qwick.llm import start_async_engine

llm, engine = start_async_engine(lambda: LLM(sys.argv[1], dtype="float32"))
ids = llm.get_tokenizer().encode("Hello")
streaming = threading.Event()

async def consume():  # another client's long request: the engine is stepping when the program ends
    async for _ in engine.generate(ids, SamplingParams(max_tokens=1500, ignore_eos=True), "other"):
        streaming.set()

threading.Thread(target=asyncio.run, args=(consume(),), daemon=True).start()
streaming.wait()

async def main():
    async for delta in engine.generate(ids, SamplingParams(max_tokens=8), "r1"):
        print(delta.text)  # AttributeError: a RequestDelta's texts are in delta.deltas

asyncio.run(main())
"""


def test_a_failed_caller_leaves_no_engine_thread_to_abort_the_process(tiny_model_dir):
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(tiny_model_dir)], capture_output=True, text=True,
                         timeout=300)
    assert "AttributeError" in out.stderr
    assert "terminate called" not in out.stderr
    assert out.returncode == 1  # the exception's status, not SIGABRT's 134
