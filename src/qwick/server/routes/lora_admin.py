"""POST /v1/load_lora_adapter and /v1/unload_lora_adapter (vLLM's runtime LoRA updating), only when the server was
started with them allowed (`qwick serve --enable-lora-runtime-updates`). An adapter is checked when it is loaded
(folder, adapter_config.json, tensors, rank); it takes an engine slot on its first request, like --lora-modules."""

from __future__ import annotations

import asyncio
import itertools
import logging
from pathlib import Path

from pydantic import Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from qwick.lora.adapter import CONFIG_FILE, LoRAAdapterError, load_adapter
from qwick.lora.manager import LoRAManager
from qwick.lora.request import LoRARequest
from qwick.server.errors import APIError, bad_request
from qwick.server.openapi import JSONRouter
from qwick.server.protocol.base import OpenAIRequest
from qwick.server.serving import ServerContext, read_body

logger = logging.getLogger("qwick.server")


class LoadLoRAAdapterRequest(OpenAIRequest):
    lora_name: str = Field(min_length=1)
    lora_path: str = Field(min_length=1)


class UnloadLoRAAdapterRequest(OpenAIRequest):
    lora_name: str = Field(min_length=1)
    lora_int_id: int | None = None  # vLLM's; the name alone identifies the adapter here


def router(ctx: ServerContext, manager: LoRAManager) -> JSONRouter:
    routes = JSONRouter()
    # ids never come back: the engine caches adapters by id, and one id must keep naming one folder
    ids = itertools.count(max((lora.lora_int_id for lora in ctx.lora_modules.values()), default=0) + 1)

    @routes.json_post("/v1/load_lora_adapter", LoadLoRAAdapterRequest, summary="Serve a LoRA adapter under a new name")
    async def load(request: Request) -> Response:
        body = await read_body(request, LoadLoRAAdapterRequest, ctx.limits)
        name = body.lora_name
        if name == ctx.model_name or name in ctx.lora_modules:
            raise bad_request(f"the model name {name!r} is already served: unload it first or pick another name",
                              param="lora_name", code="invalid_value")
        folder = Path(body.lora_path).expanduser()
        if not folder.is_dir() or not (folder / CONFIG_FILE).is_file():
            raise bad_request(f"lora_path {body.lora_path!r} is not a folder holding {CONFIG_FILE} (a PEFT adapter "
                              "folder on the server's file system)", param="lora_path", code="invalid_value")
        lora = LoRARequest(name, next(ids), str(folder.resolve()))
        try:  # reads and checks the files now, off the event loop; the engine loads it on first use
            await asyncio.to_thread(load_adapter, lora, manager.shapes, manager.config.max_lora_rank)
        except LoRAAdapterError as exc:
            raise bad_request(str(exc), param="lora_path", code="invalid_value") from None
        if name in ctx.lora_modules:  # a concurrent load of the same name won the race
            raise bad_request(f"the model name {name!r} is already served", param="lora_name", code="invalid_value")
        ctx.lora_modules[name] = lora
        logger.info("LoRA adapter %r loaded from %s", name, lora.lora_path)
        return JSONResponse({"message": f"Success: LoRA adapter '{name}' added successfully.", "lora_name": name})

    @routes.json_post("/v1/unload_lora_adapter", UnloadLoRAAdapterRequest, summary="Stop serving a LoRA adapter")
    async def unload(request: Request) -> Response:
        body = await read_body(request, UnloadLoRAAdapterRequest, ctx.limits)
        if ctx.lora_modules.pop(body.lora_name, None) is None:
            served = ", ".join(f"`{n}`" for n in ctx.lora_modules) or "none"
            raise APIError(404, f"no LoRA adapter named {body.lora_name!r} is served (served adapters: {served})",
                           param="lora_name", code="lora_not_found")
        logger.info("LoRA adapter %r unloaded", body.lora_name)  # requests running with it finish with it
        return JSONResponse({"message": f"Success: LoRA adapter '{body.lora_name}' removed successfully.",
                             "lora_name": body.lora_name})

    return routes
