"""qwick's OpenAI-compatible app as a Ray Serve deployment: plain Serve with a FastAPI ingress (ray.serve.llm
hosts vLLM/SGLang engines only). Each replica builds its own engine once, on the engine's loop thread as
`qwick serve` does (`start_llm`), then serves the same endpoints; Serve routes requests, autoscales on ongoing
requests, restarts a replica that dies, and drains replicas on shutdown."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from qwick.engine.args import EngineArgs
from qwick.llm import LLM
from qwick.ray.cluster import require_ray
from qwick.server.app import build_app as build_server_app
from qwick.server.app import start_llm
from qwick.server.routes.gates import GateOptions


@dataclass(frozen=True)
class ReplicaConfig:
    """What a replica builds its app from (shipped to each replica)."""

    engine_args: EngineArgs
    served_model_name: str
    api_key: str | None = None
    gates_file: str | None = None
    allowed_origins: tuple[str, ...] = ()
    cli_args: Any = None  # `qwick serve --ray`'s parsed flags: --chat-template / --generation-config apply


@dataclass(frozen=True)
class Scaling:
    """Replicas: a fixed count, or autoscaling between min and max on ongoing requests per replica."""

    replicas: int | None = 1
    min_replicas: int | None = None
    max_replicas: int | None = None
    max_ongoing_requests: int = 64  # per replica; more wait in the proxy
    target_ongoing_requests: float | None = None  # autoscaling target (default: half of max_ongoing_requests)
    cpus_per_replica: float = 1.0
    gpus_per_replica: float = 0.0
    shutdown_timeout_s: float = 30.0  # in-flight requests get this long on shutdown or scale-down

    def __post_init__(self) -> None:
        autoscale = self.min_replicas is not None or self.max_replicas is not None
        if autoscale:
            if self.min_replicas is None or self.max_replicas is None:
                raise ValueError("--min-replicas and --max-replicas go together")
            if not 0 <= self.min_replicas <= self.max_replicas or self.max_replicas < 1:
                raise ValueError(f"need 0 <= --min-replicas <= --max-replicas and --max-replicas >= 1, got "
                                 f"{self.min_replicas} and {self.max_replicas}")
        elif self.replicas is None or self.replicas < 1:
            raise ValueError(f"--replicas must be >= 1, got {self.replicas}")
        if self.max_ongoing_requests < 1:
            raise ValueError(f"--max-ongoing-requests must be >= 1, got {self.max_ongoing_requests}")

    def deployment_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {
            "max_ongoing_requests": self.max_ongoing_requests,
            "graceful_shutdown_timeout_s": self.shutdown_timeout_s,
            "ray_actor_options": {"num_cpus": self.cpus_per_replica, "num_gpus": self.gpus_per_replica},
        }
        if self.min_replicas is not None:
            target = self.target_ongoing_requests or max(1.0, self.max_ongoing_requests / 2)
            options["autoscaling_config"] = {"min_replicas": self.min_replicas, "max_replicas": self.max_replicas,
                                             "target_ongoing_requests": target}
        else:
            options["num_replicas"] = self.replicas
        return options


def build_app(model: str | Path | EngineArgs, *, served_model_name: str | None = None, api_key: str | None = None,
              gates: str | Path | None = None, scaling: Scaling | None = None, name: str = "qwick",
              allowed_origins: tuple[str, ...] = (), cli_args: Any = None, **engine_kwargs: Any) -> Any:
    """A Serve application (`serve.run(build_app(...), route_prefix="/")`) serving `model` (a folder / id, or
    EngineArgs; `engine_kwargs`: EngineArgs fields) on `scaling`'s replicas."""
    serve = require_ray("qwick.ray.build_app").serve
    args = replace(model, **engine_kwargs) if isinstance(model, EngineArgs) else EngineArgs(model=model, **engine_kwargs)
    scaling = scaling or Scaling()
    if args.threads is None:  # a replica's engine uses the CPUs it reserved, not every core of the node
        args = replace(args, threads=max(1, int(scaling.cpus_per_replica)))
    config = ReplicaConfig(args, served_model_name or str(args.model), api_key, str(gates) if gates else None,
                           tuple(allowed_origins), cli_args)

    @serve.ingress()
    class QwickReplica:
        def __init__(self, config: ReplicaConfig) -> None:
            self.config = config

        def __serve_build_asgi_app__(self) -> Any:
            return replica_app(self.config)

    deployment = serve.deployment(QwickReplica, name=name, **scaling.deployment_options())
    return deployment.bind(config)


def replica_app(config: ReplicaConfig) -> Any:
    """One replica's FastAPI app: its engine built on the engine's loop thread (the fast way on CPU)."""
    from qwick.gates.loader import load_gates
    from qwick.server.vllm_flags import configure_llm

    gates = GateOptions(gates=load_gates(config.gates_file))
    def make_llm() -> LLM:
        llm = LLM.from_engine_args(config.engine_args)
        return configure_llm(llm, config.cli_args) if config.cli_args is not None else llm

    llm, client = start_llm(make_llm)
    try:
        return build_server_app(llm, config.served_model_name, config.api_key, gates=gates, client=client,
                                allowed_origins=config.allowed_origins)
    except BaseException:
        client.stop()
        raise
