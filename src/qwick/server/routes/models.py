"""GET /v1/models: the served model and its LoRA adapters, each under its own name."""

from __future__ import annotations

from qwick.server.openapi import JSONRouter
from qwick.server.protocol.models import ModelCard, ModelList
from qwick.server.serving import ServerContext


def router(ctx: ServerContext) -> JSONRouter:
    routes = JSONRouter()

    @routes.get("/v1/models")
    async def models() -> ModelList:
        # `root` is the served name, never a path: a client has no business knowing the server's file system
        base = ModelCard(id=ctx.model_name, root=ctx.model_name, max_model_len=ctx.max_model_len)
        adapters = [ModelCard(id=name, root=name, parent=ctx.model_name, max_model_len=ctx.max_model_len)
                    for name in ctx.lora_modules]
        return ModelList(data=[base, *adapters])

    return routes
