"""`qwick serve`: its options, and running the app under uvicorn."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
from typing import Any

from qwick.server.vllm_flags import add_vllm_args

logger = logging.getLogger("qwick.server")
API_KEY_ENV = "QWICK_API_KEY"
RUNTIME_LORA_ENV = "VLLM_ALLOW_RUNTIME_LORA_UPDATING"


def add_serve_args(parser: argparse.ArgumentParser) -> None:
    """Serving options; the model options (MODEL, --dtype, --max-model-len...) come from the main CLI."""
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--served-model-name", default=None, help="model id clients send (default: MODEL)")
    parser.add_argument("--api-key", default=os.environ.get(API_KEY_ENV),
                        help=f"require 'Authorization: Bearer KEY' on /v1 and /(de)tokenize (default: ${API_KEY_ENV})")
    parser.add_argument("--max-num-seqs", type=int, default=64, help="sequences run together (default 64)")
    parser.add_argument("--max-num-batched-tokens", type=int, default=512,
                        help="tokens per engine step; long prompts are prefilled in chunks of this (default 512)")
    parser.add_argument("--enable-prefix-caching", action=argparse.BooleanOptionalAction, default=True,
                        help="reuse the KV cache of shared prompt prefixes (default on)")
    parser.add_argument("--kv-cache-dtype", default="auto", choices=["auto", "fp8", "fp8_e4m3"],
                        help="KV cache storage: auto (the model's dtype) or fp8 (e4m3: twice the tokens per budget, "
                             "approximate attention)")
    parser.add_argument("--speculative-config", type=_speculative_config, default=None, metavar="JSON",
                        help='n-gram speculative decoding (prompt lookup), vLLM\'s JSON: \'{"method": "ngram", '
                             '"num_speculative_tokens": 4, "prompt_lookup_max": 3}\'')
    parser.add_argument("--jump-forward", action=argparse.BooleanOptionalAction, default=True,
                        help="append tokens a grammar forces without sampling them (default on)")
    parser.add_argument("--allowed-origins", nargs="*", default=[], metavar="ORIGIN",
                        help="CORS origins allowed to call the API (e.g. http://localhost:3000, or *)")
    parser.add_argument("--max-queue", type=int, default=None,
                        help="sequences allowed to wait beyond --max-num-seqs; more get 503 (default: no limit)")
    parser.add_argument("--max-body-bytes", type=int, default=None, help="largest request body (default 2 MiB)")
    parser.add_argument("--max-messages", type=int, default=None, help="most chat messages per request (default 2048)")
    parser.add_argument("--shutdown-timeout", type=float, default=30.0,
                        help="seconds in-flight requests get to finish on Ctrl-C / SIGTERM; then they are aborted (streams "
                             "end with an error event and [DONE]) (default 30)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    lora = parser.add_argument_group("LoRA adapters (served unmerged; a request's model = an adapter name uses it)")
    lora.add_argument("--lora-modules", nargs="+", default=[], metavar="NAME=PATH",
                      help='PEFT adapter folders, as name=path or JSON \'{"name": ..., "path": ...}\' (vLLM\'s flag)')
    lora.add_argument("--max-loras", type=int, default=None,
                      help="adapters resident at once (default: all of --lora-modules); a request for another one "
                           "while all are busy gets a 400")
    lora.add_argument("--max-lora-rank", type=int, default=None,
                      help="largest adapter rank (default: the largest r among --lora-modules, or 16)")
    lora.add_argument("--enable-lora-runtime-updates", action="store_true",
                      default=os.environ.get(RUNTIME_LORA_ENV, "").lower() in ("1", "true"),
                      help="allow POST /v1/load_lora_adapter and /v1/unload_lora_adapter (behind --api-key; "
                           f"default: ${RUNTIME_LORA_ENV}, vLLM's switch). Loaded adapters need rank <= "
                           "--max-lora-rank and share --max-loras slots")
    add_vllm_args(parser)
    gates = parser.add_argument_group("gates and ledger (POST /v1/moderate, /classify, /rewrite, /score, /embeddings, "
                                      "/v1/pipelines/NAME)")
    gates.add_argument("--gates", default=None, metavar="YAML",
                       help="gates file: adds gates or redefines the built-in ones, declares pipelines (checked "
                            "before the model loads)")
    gates.add_argument("--ledger", default=None, metavar="PATH",
                       help="record every gate decision in this SQLite file (WAL; read it with `qwick ledger`)")
    gates.add_argument("--ledger-all", action="store_true", help="with --ledger: also record every completion (with its sampling parameters) "
                       "and embedding call")
    gates.add_argument("--ledger-raw-text", action="store_true",
                       help="with --ledger: also store raw input and output texts (off by default: privacy)")
    gates.add_argument("--mcp-path", default=None, metavar="PATH",
                       help="also serve the gates as MCP tools (streamable HTTP) at this path, e.g. /mcp "
                            "(behind --api-key like /v1; see `qwick mcp`)")
    rag = parser.add_argument_group("retrieval (POST /v1/retrieve, /v1/answer)")
    rag.add_argument("--index", nargs="+", action="extend", default=[], metavar="NAME=PATH",
                     help="serve the index file PATH (`qwick index build`) as NAME; an index built with another "
                          "embedding model than MODEL loads that model too, as a second engine")


def run_serve(args: argparse.Namespace, load_llm: Any) -> int:
    """Load the model with `load_llm(args, **lora_options)`, then serve until interrupted."""
    try:
        import uvicorn

        from qwick.server.app import build_app, start_llm
        from qwick.server.runner import DrainingServer
        from qwick.server.serving import ServerLimits
    except ImportError as exc:
        raise ValueError(f"qwick serve needs the serve extra: pip install 'qwick[serve]' ({exc})") from exc
    from qwick.server.startup import describe
    from qwick.server.vllm_flags import check_vllm_args, configure_llm, quiet_request_log

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    noops = check_vllm_args(args)  # a flag that cannot apply fails before the model loads
    quiet_request_log(args)
    gate_options = _gate_options(args)  # a bad gates file or ledger path fails before the model loads
    lora_modules, lora_options = _lora_options(args)  # likewise a bad --lora-modules entry
    indexes = _indexes(args.index)  # and a bad --index
    _check_pipeline_indexes(gate_options.gates, list(indexes) if indexes else None)  # and a step's missing index
    sizes = {"max_body_bytes": args.max_body_bytes, "max_messages": args.max_messages}
    limits = ServerLimits(max_queue=args.max_queue, **{k: v for k, v in sizes.items() if v is not None})
    served_name = args.served_model_name or args.model
    # load_llm reads the model and engine flags from `args` (EngineArgs.from_cli_args); LoRA's come from here
    llm, client = start_llm(lambda: configure_llm(load_llm(args, **lora_options), args), lora_modules,
                            served_name)
    try:
        rag = _rag_service(args, indexes, llm, client, load_llm) if indexes else None
        app = build_app(llm, served_name, args.api_key, allowed_origins=_origins(args.allowed_origins),
                        limits=limits, gates=gate_options, lora_modules=lora_modules, client=client,
                        lora_runtime_updates=args.enable_lora_runtime_updates, mcp_path=args.mcp_path,
                        rag=rag)
    except BaseException:
        client.stop()  # a failing setup leaves no engine thread behind
        raise
    if noops:
        logger.info("vLLM flags that change nothing here: %s", "; ".join(noops))
    logger.info(describe(llm))
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level=args.uvicorn_log_level or args.log_level,
                            access_log=False)
    server = DrainingServer(config, app.state.abort_running, args.shutdown_timeout)
    with contextlib.suppress(KeyboardInterrupt):  # a second Ctrl-C: uvicorn's forced exit
        server.run()
    if not server.started:
        client.stop()
        raise ValueError(f"the server could not start on {args.host}:{args.port} (see the log above)")
    return 0


def _lora_options(args: argparse.Namespace) -> tuple[list[Any], dict[str, Any]]:
    """The served adapters and the LLM's LoRA settings (none without --lora-modules)."""
    from qwick.lora.modules import lora_llm_options, parse_lora_modules

    modules = parse_lora_modules(args.lora_modules)
    runtime = args.enable_lora_runtime_updates
    if not modules and not runtime and (args.max_loras is not None or args.max_lora_rank is not None):
        raise ValueError("--max-loras and --max-lora-rank need --lora-modules or --enable-lora-runtime-updates")
    if runtime and not modules:  # adapters come later: vLLM's defaults size the slots
        return modules, {"enable_lora": True, "max_loras": args.max_loras or 1,
                         "max_lora_rank": args.max_lora_rank or 16}
    return modules, lora_llm_options(modules, args.max_loras, args.max_lora_rank)


def _gate_options(args: argparse.Namespace) -> Any:
    from qwick.gates.ledger import Ledger
    from qwick.gates.loader import load_gates
    from qwick.pipelines.loader import parse_pipelines
    from qwick.server.routes.gates import GateOptions

    if (args.ledger_all or args.ledger_raw_text) and not args.ledger:
        raise ValueError("--ledger-all and --ledger-raw-text need --ledger PATH")
    gates = load_gates(args.gates)
    parse_pipelines(gates)  # its pipelines too: a bad one fails before the model loads
    ledger = Ledger(args.ledger, raw_text=args.ledger_raw_text) if args.ledger else None
    return GateOptions(gates=gates, ledger=ledger, ledger_all=args.ledger_all)


def _check_pipeline_indexes(gates: Any, index_names: list[str] | None) -> None:
    from qwick.pipelines.loader import parse_pipelines

    parse_pipelines(gates).check_retrieval(index_names)


def _indexes(values: list[str]) -> dict[str, Any]:
    """--index NAME=PATH ...: name -> the index's recorded info (read now, so a bad file fails before loading)."""
    from qwick.rag.store import IndexStore

    indexes: dict[str, Any] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--index {value!r}: give NAME=PATH (e.g. docs=docs.sqlite)")
        if name in indexes:
            raise ValueError(f"--index: the name {name!r} is given twice")
        store = IndexStore.open(path)
        try:
            indexes[name] = (path, store.info)
        finally:
            store.close()
    return indexes


def _rag_service(args: argparse.Namespace, indexes: dict[str, Any], llm: Any, client: Any, load_llm: Any) -> Any:
    """The served model answers (and embeds the indexes built with it); each other embedding model an index
    records is loaded as its own engine (its folder as recorded, this server's dtype and device)."""
    from qwick.rag.models import EngineModel
    from qwick.rag.service import RagService
    from qwick.server.app import start_llm

    served = EngineModel.of(llm, client)
    embedders, owned = [served], []
    try:
        for _, info in indexes.values():
            if all(m.weights_sha256 != info.weights_sha256 for m in embedders):
                logger.info("loading embedding model %s for an index", info.model)
                other, other_client = start_llm(lambda info=info: load_llm(args, model=info.model,
                                                                           load_format=info.load_format))
                owned.append(other_client)
                embedders.append(EngineModel.of(other, other_client))
        service = RagService({name: path for name, (path, _) in indexes.items()}, embedders, served)
    except BaseException:
        for other_client in owned:
            other_client.stop()
        raise
    service.owned = owned
    return service


def _origins(values: list[str]) -> list[str]:
    """Accept `--allowed-origins a b`, `a,b` and vLLM's JSON-ish `["a", "b"]`."""
    origins = []
    for value in values:
        for part in value.strip("[]").split(","):
            part = part.strip().strip("\"'")
            if part:
                origins.append(part)
    return origins


def _speculative_config(value: str) -> dict[str, Any]:
    """--speculative-config's JSON, checked at parse time (a bad one fails before the model loads)."""
    from qwick.engine.spec_decode.config import SpeculativeConfig

    try:
        SpeculativeConfig.parse(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return json.loads(value)
