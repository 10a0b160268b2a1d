"""`qwick serve` as a user runs it: --help, then a real process that serves and shuts down gracefully."""

from __future__ import annotations

import signal
import subprocess

import httpx
from servecli import QWICK, qwick_serve
from serverkit import TIMEOUT


def test_serve_help():
    out = subprocess.run([*QWICK, "serve", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    for option in ("--host", "--port", "--served-model-name", "--api-key", "--max-model-len", "--max-num-seqs",
                   "--enable-prefix-caching", "--no-enable-prefix-caching", "--allowed-origins", "--max-queue",
                   "--kv-cache-dtype"):
        assert option in out.stdout


def test_serve_answers_then_lets_a_running_stream_finish_on_ctrl_c(tiny_model_dir):
    with qwick_serve(tiny_model_dir, "--max-model-len", "256", "--log-level", "warning",
                     "--kv-cache-dtype", "fp8",  # the flag reaches the engine (an fp8 cache serves)
                     startup_timeout=90) as served:
        url, process = served.url, served.process
        assert httpx.get(f"{url}/v1/models", timeout=TIMEOUT).json()["data"][0]["id"] == "tiny"
        body = {"model": "tiny", "prompt": "Hi", "max_tokens": 150, "ignore_eos": True, "stream": True}
        with httpx.stream("POST", f"{url}/v1/completions", json=body, timeout=TIMEOUT) as response:
            lines = response.iter_lines()
            next(line for line in lines if line.startswith("data: "))
            process.send_signal(signal.SIGINT)  # uvicorn stops accepting but lets this stream finish
            rest = [line for line in lines if line.startswith("data: ")]
        assert rest[-1] == "data: [DONE]" and '"finish_reason":"length"' in rest[-2]
        assert process.wait(timeout=TIMEOUT) == 0
