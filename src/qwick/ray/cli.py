"""`qwick batch` (qwick.batch's flags, plus `--ray`: the same job on Ray Data) and `qwick serve --ray` (the
server as a Ray Serve deployment). Registered here, above both qwick.batch and qwick.server."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from typing import Any

from qwick.batch.cli import add_batch_args, job_from_args

logger = logging.getLogger("qwick.ray")
# serve flags that --ray does not carry to the replicas yet
_SERVE_ONLY = {"lora_modules": "--lora-modules", "ledger": "--ledger", "max_queue": "--max-queue",
               "enable_lora_runtime_updates": "--enable-lora-runtime-updates"}


def register_batch_commands(sub: Any) -> None:
    """Add `batch` to the main parser's subparsers, and `--ray` with its options to `serve`."""
    parser = sub.add_parser(
        "batch", help="run a task over a JSONL/Parquet file of rows (one machine, or Ray with --ray)",
        description="Run TASK over every row of IN at full engine occupancy and write one output row per input row "
                    "(with the row's id, or its line number) to OUT. Re-running skips the ids OUT already holds. "
                    "Malformed rows go to the errors file and the run goes on.")
    add_batch_args(parser)
    ray = parser.add_argument_group("Ray Data (pip install qwick[ray])")
    ray.add_argument("--ray", action="store_true", help="run on a Ray cluster: one engine per actor")
    _add_cluster_args(ray)
    ray.add_argument("--cpus-per-replica", type=float, default=1.0, help="CPUs per actor (default 1)")
    ray.add_argument("--gpus-per-replica", type=float, default=0.0, help="GPUs per actor (default 0)")
    ray.add_argument("--batch-size", type=int, default=None, help="rows per actor call (default 2 x --max-num-seqs)")
    parser.add_argument("--replicas", type=int, default=1, help="with --ray: actors, each with its own engine")
    parser.set_defaults(handler=run_batch)
    serve = sub.choices.get("serve")
    if serve is not None:
        _add_serve_ray_args(serve)


def run_batch(args: argparse.Namespace) -> int:
    if not args.ray:
        if args.address is not None or args.replicas != 1:
            raise ValueError("--address and --replicas need --ray")
        return run_local(args)
    from qwick.engine.args import EngineArgs
    from qwick.ray.cluster import require_ray
    from qwick.ray.data import RayOptions, run_ray_job

    require_ray()
    options = RayOptions(args.address, args.replicas, args.cpus_per_replica, args.gpus_per_replica, args.batch_size)
    job = job_from_args(args)
    summary = run_ray_job(job, EngineArgs.from_cli_args(args), options, sys.stderr)
    return 0 if summary.errors == 0 else 1


def run_local(args: argparse.Namespace) -> int:
    """`qwick batch` on this machine: the engine in this process, stepped by the batch runner."""
    from qwick.batch.job import run_job
    from qwick.engine.args import EngineArgs
    from qwick.llm import LLM

    job = job_from_args(args)  # checked before the model loads
    llm = LLM.from_engine_args(EngineArgs.from_cli_args(args))
    summary = run_job(job, llm, sys.stderr)
    return 0 if summary.errors == 0 else 1


def _add_cluster_args(group: Any) -> None:
    group.add_argument("--address", default=None, metavar="ADDR",
                       help="the Ray cluster to join (HOST:PORT, ray://HOST:PORT or auto; default: a local one)")


class _RayServe(argparse.Action):
    """`--ray` on `qwick serve`: run the Ray Serve deployment instead of the one-process server."""

    def __call__(self, parser: Any, namespace: argparse.Namespace, values: Any, option_string: str | None = None) -> None:
        namespace.ray = True
        namespace.handler = run_ray_serve


def _add_serve_ray_args(serve: argparse.ArgumentParser) -> None:
    group = serve.add_argument_group("Ray Serve (--ray; pip install qwick[ray])")
    group.add_argument("--ray", nargs=0, action=_RayServe, default=False,
                       help="serve as a Ray Serve deployment: replicas, each with its own engine, behind one endpoint")
    _add_cluster_args(group)
    group.add_argument("--replicas", type=int, default=None, help="a fixed number of replicas (default 1)")
    group.add_argument("--min-replicas", type=int, default=None, help="autoscale between --min-replicas and ...")
    group.add_argument("--max-replicas", type=int, default=None, help="... --max-replicas on ongoing requests")
    group.add_argument("--max-ongoing-requests", type=int, default=64,
                       help="requests a replica takes at once (default 64); autoscaling targets half of it")
    group.add_argument("--cpus-per-replica", type=float, default=1.0)
    group.add_argument("--gpus-per-replica", type=float, default=0.0)


def run_ray_serve(args: argparse.Namespace) -> int:
    from qwick.engine.args import DEFAULT_MODEL, EngineArgs
    from qwick.gates.loader import load_gates
    from qwick.ray.cluster import connect, require_ray
    from qwick.ray.serve import Scaling, build_app
    from qwick.server.vllm_flags import check_vllm_args

    args.model = args.model or DEFAULT_MODEL
    for name, flag in _SERVE_ONLY.items():
        if getattr(args, name, None):
            raise ValueError(f"{flag} is not supported with --ray yet")
    if args.replicas is not None and args.min_replicas is not None:
        raise ValueError("pass --replicas N or --min-replicas A --max-replicas B, not both")
    replicas = 1 if args.replicas is None else args.replicas
    scaling = Scaling(replicas if args.min_replicas is None else None, args.min_replicas, args.max_replicas,
                      args.max_ongoing_requests, None, args.cpus_per_replica, args.gpus_per_replica,
                      args.shutdown_timeout)
    check_vllm_args(args)
    load_gates(args.gates)  # a bad gates file fails here, not on every replica
    engine_args = EngineArgs.from_cli_args(args)
    require_ray()
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ray = connect(args.address)
    from ray import serve

    serve.start(http_options={"host": args.host, "port": args.port})
    cli_args = argparse.Namespace(chat_template=args.chat_template, generation_config=args.generation_config)
    app = build_app(engine_args, served_model_name=args.served_model_name, api_key=args.api_key, gates=args.gates,
                    scaling=scaling, allowed_origins=tuple(args.allowed_origins), cli_args=cli_args)
    serve.run(app, name="qwick", route_prefix="/")
    logger.info("serving %s on http://%s:%d (Ray Serve, cluster %s)", args.model, args.host, args.port,
                ray.get_runtime_context().gcs_address)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    logger.info("shutting down: replicas finish their requests (up to %.0f s)", args.shutdown_timeout)
    serve.shutdown()
    return 0
