"""One local Ray cluster (`ray.init(num_cpus=2)`) for every test in this folder; skipped without Ray.

The folder is not called `ray`: a test folder of that name would shadow the `ray` package."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(scope="package")
def ray_cluster() -> Iterator[Any]:
    import ray

    from qwick.ray.cluster import PROXY_CALLBACK, PROXY_CALLBACK_ENV

    os.environ.setdefault(PROXY_CALLBACK_ENV, PROXY_CALLBACK)  # the cluster's Serve proxy inherits it
    os.environ.setdefault("RAY_raylet_start_wait_time_s", "120")  # a loaded CI machine starts the raylet slowly
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
