"""Running real servers in tests: uvicorn on 127.0.0.1 (a free port) in a background thread."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import uvicorn

from qwick import LLM

MODEL = "tiny-qwen3"
TIMEOUT = 30.0  # seconds: every request in these tests is bounded
MAX_MODEL_LEN = 1024


@dataclass
class RunningServer:
    app: Any
    port: int
    llm: LLM | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, api_key: str = "unused", **kwargs: Any) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=api_key, max_retries=0, timeout=TIMEOUT, **kwargs)

    def async_client(self, api_key: str = "unused") -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=f"{self.url}/v1", api_key=api_key, max_retries=0, timeout=TIMEOUT)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.post(f"{self.url}{path}", timeout=TIMEOUT, **kwargs)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", timeout=TIMEOUT, **kwargs)

    def metric(self, name: str, **labels: str) -> float:
        """One sample of /metrics (0 if absent), e.g. metric("qwick:request_success_total", finished_reason="abort")."""
        for line in self.get("/metrics").text.splitlines():
            if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
        return 0.0


@contextlib.contextmanager
def serving(app: Any, llm: LLM | None = None) -> Iterator[RunningServer]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="test-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + TIMEOUT
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the test server did not start"
        time.sleep(0.01)
    try:
        yield RunningServer(app, sock.getsockname()[1], llm)
    finally:
        server.should_exit = True
        thread.join(TIMEOUT)
        sock.close()


def tiny_llm(model_dir: Any, **kwargs: Any) -> LLM:
    return LLM(model_dir, dtype="float32", device="cpu", seed=0, **{"max_model_len": MAX_MODEL_LEN, **kwargs})


def wait_until(condition: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True
