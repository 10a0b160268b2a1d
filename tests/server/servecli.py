"""Running `qwick serve` as a user does: a real process on a free port, stopped by a signal."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
from serverkit import wait_until

QWICK = [sys.executable, "-m", "qwick.cli"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ServeProcess:
    process: subprocess.Popen[str]
    url: str

    def output(self) -> str:
        """Everything it printed (waits for it to exit)."""
        return self.process.communicate(timeout=60)[0]


@contextlib.contextmanager
def qwick_serve(model_dir: object, *args: str, startup_timeout: float = 240) -> Iterator[ServeProcess]:
    """`qwick serve MODEL --port P ARGS...` (float32, max-model-len 2048 unless ARGS say otherwise), up and
    healthy; killed at the end if the test left it running."""
    port = free_port()
    defaults = ["--dtype", "float32", "--served-model-name", "tiny"]
    if "--max-model-len" not in args:
        defaults += ["--max-model-len", "2048"]
    process = subprocess.Popen([*QWICK, "serve", str(model_dir), "--port", str(port), *defaults, *args],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    running = ServeProcess(process, f"http://127.0.0.1:{port}")
    try:
        def healthy() -> bool:
            assert process.poll() is None, process.communicate()[0]
            try:
                return httpx.get(f"{running.url}/health", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        assert wait_until(healthy, timeout=startup_timeout), "qwick serve did not come up"
        yield running
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(30)
