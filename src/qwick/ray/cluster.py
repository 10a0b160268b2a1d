"""Joining a Ray cluster: Ray imported only here and when asked for (`pip install qwick[ray]`), and an address
that cannot be reached reported in seconds instead of Ray's long connection retries."""

from __future__ import annotations

import socket
from typing import Any

REACH_TIMEOUT_S = 3.0
DEFAULT_GCS_PORT = 6379
# the proxy's error middleware (qwick.ray.proxy_errors): read by Serve's HTTP proxy from its environment
PROXY_CALLBACK_ENV = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
PROXY_CALLBACK = "qwick.ray.proxy_errors.middlewares"


def require_ray(what: str = "--ray") -> Any:
    try:
        import ray
    except ImportError:
        raise ValueError(f"{what} needs Ray: pip install qwick[ray]") from None
    return ray


def connect(address: str | None = None, num_cpus: int | None = None) -> Any:
    """The `ray` module, joined to the cluster at `address` (host:port or ray://host:port), or to the one this
    process already joined, or to a new local one."""
    import os

    ray = require_ray()
    if ray.is_initialized():
        return ray
    if address is not None and address != "auto":
        check_reachable(address)
    # a cluster started here gets the proxy's error middleware (its processes inherit this environment)
    os.environ.setdefault(PROXY_CALLBACK_ENV, PROXY_CALLBACK)
    try:
        ray.init(address=address, num_cpus=num_cpus if address is None else None, log_to_driver=False,
                 ignore_reinit_error=True)
    except ConnectionError as exc:
        raise ValueError(f"--address {address}: cannot join the Ray cluster there ({exc})") from None
    return ray


def check_reachable(address: str) -> None:
    """A TCP connection to the cluster's head within a few seconds, or a ValueError saying what to fix."""
    host_port = address.removeprefix("ray://").rstrip("/")
    host, _, port_text = host_port.rpartition(":")
    if not host:
        host, port_text = host_port, str(DEFAULT_GCS_PORT)
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"--address {address!r}: expected HOST:PORT (e.g. 10.0.0.5:6379 or ray://head:10001)") from None
    try:
        with socket.create_connection((host, port), timeout=REACH_TIMEOUT_S):
            pass
    except OSError as exc:
        reason = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        raise ValueError(f"--address {address}: cannot reach a Ray cluster there ({reason}); start one with "
                         "`ray start --head` or fix the address") from None
