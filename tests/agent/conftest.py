"""Fixtures: a tiny random Qwen3 offline, and the calendar MCP server over streamable HTTP (one per package)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from agentkit import SERVER, free_port


@pytest.fixture(scope="package")
def llm(tiny_model_dir):
    from qwick import LLM

    return LLM(tiny_model_dir, dtype="float32", device="cpu", seed=0, max_model_len=2048)


@pytest.fixture(scope="package")
def http_server(tmp_path_factory) -> Iterator[tuple[str, Path]]:
    """The calendar server over streamable HTTP on 127.0.0.1: (its URL, its call log)."""
    log = tmp_path_factory.mktemp("http") / "calls.jsonl"
    port = free_port()
    process = subprocess.Popen([sys.executable, str(SERVER), "--http", str(port)], env={
        **os.environ, "CALENDAR_LOG": str(log)}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/mcp"
    deadline = time.monotonic() + 60
    while True:
        assert process.poll() is None, "the HTTP MCP server exited"
        try:
            httpx.get(url, timeout=1)
            break
        except httpx.TransportError:
            assert time.monotonic() < deadline, "the HTTP MCP server did not come up"
            time.sleep(0.1)
    yield url, log
    process.kill()
    process.wait(30)
