"""qwick on Ray (`pip install qwick[ray]`): `QwickPredictor` for Ray Data pipelines (one engine per actor) and
`build_app` for Ray Serve (qwick's FastAPI app on replicas). Loaded on first use, so the `qwick` command (which
registers `batch --ray` and `serve --ray` from `cli.py`) imports neither torch nor Ray to start."""

from __future__ import annotations

from typing import Any

__all__ = ["QwickPredictor", "ReplicaConfig", "Scaling", "build_app"]


def __getattr__(name: str) -> Any:
    if name == "QwickPredictor":
        from qwick.ray.predictor import QwickPredictor

        return QwickPredictor
    if name in ("ReplicaConfig", "Scaling", "build_app"):
        from qwick.ray import serve

        return getattr(serve, name)
    raise AttributeError(f"module 'qwick.ray' has no attribute {name!r}")
