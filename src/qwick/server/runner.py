"""`qwick serve`'s uvicorn server: a graceful drain with a deadline, and a clean exit status."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import threading
from collections.abc import Callable, Iterator

import uvicorn

logger = logging.getLogger("qwick.server")
ABORT_GRACE = 5.0  # seconds aborted streams get to send their error event before uvicorn cancels them


class DrainingServer(uvicorn.Server):
    """On Ctrl-C / SIGTERM, in-flight requests get `drain_timeout` s to finish. Then `abort_running` ends what is
    left in the engine, so each open stream sends the "server is shutting down" error event and `[DONE]` (and
    `--ledger-all` records what was generated) instead of uvicorn cutting its socket mid-chunk.

    A handled signal is not re-raised after the drain (uvicorn's default, which exits with 128+SIGNUM): a clean
    shutdown exits 0."""

    def __init__(self, config: uvicorn.Config, abort_running: Callable[[], None] | None,
                 drain_timeout: float) -> None:
        config.timeout_graceful_shutdown = drain_timeout + ABORT_GRACE if abort_running else drain_timeout
        super().__init__(config)
        self.abort_running = abort_running
        self.drain_timeout = drain_timeout

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        timer = None
        if self.abort_running is not None:
            timer = asyncio.get_running_loop().call_later(self.drain_timeout, self._expire)
        try:
            await super().shutdown(sockets)
        finally:
            if timer is not None:
                timer.cancel()

    def _expire(self) -> None:
        assert self.abort_running is not None
        logger.warning("requests still running after the %.1f s shutdown timeout: aborting them", self.drain_timeout)
        self.abort_running()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)
