"""POST /tokenize and /detokenize (vLLM's extension endpoints): text or a chat in, token ids out, and back."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from qwick.server.chat_compat import render_chat
from qwick.server.errors import bad_request
from qwick.server.openapi import JSONRouter
from qwick.server.protocol.tokenize import (
    DetokenizeRequest,
    DetokenizeResponse,
    TokenizeRequest,
    TokenizeResponse,
)
from qwick.server.serving import ServerContext, read_body


def router(ctx: ServerContext) -> JSONRouter:
    tokens, routes = TokenizeServing(ctx), JSONRouter()

    @routes.json_post("/tokenize", TokenizeRequest)
    async def tokenize(request: Request) -> Response:
        body = tokens.tokenize(await read_body(request, TokenizeRequest, ctx.limits))
        return JSONResponse(body.model_dump(exclude_none=True))

    @routes.json_post("/detokenize", DetokenizeRequest)
    async def detokenize(request: Request) -> Response:
        return JSONResponse(tokens.detokenize(await read_body(request, DetokenizeRequest, ctx.limits)).model_dump())

    return routes


class TokenizeServing:
    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx

    def tokenize(self, body: TokenizeRequest) -> TokenizeResponse:
        self.ctx.check_model(body.model)
        tokenizer = self.ctx.tokenizer
        if (body.prompt is None) == (body.messages is None):
            raise bad_request("give exactly one of 'prompt' and 'messages'", param="prompt")
        if body.messages is not None:
            if not body.messages:
                raise bad_request("'messages' must contain at least one message", param="messages")
            if len(body.messages) > self.ctx.limits.max_messages:
                raise bad_request(f"'messages' holds more than {self.ctx.limits.max_messages} messages",
                                  param="messages")
            text = render_chat(tokenizer, body.messages, body.tools, body.add_generation_prompt,
                               body.chat_template_kwargs or {})
        else:
            text = body.prompt or ""
        ids = tokenizer.encode(text)  # Qwen3 adds no BOS/EOS, so add_special_tokens changes nothing
        strs = tokenizer.convert_ids_to_tokens(ids) if body.return_token_strs else None
        return TokenizeResponse(count=len(ids), max_model_len=self.ctx.max_model_len, tokens=ids, token_strs=strs)

    def detokenize(self, body: DetokenizeRequest) -> DetokenizeResponse:
        self.ctx.check_model(body.model)
        vocab = self.ctx.tokenizer.vocab_size
        bad = [t for t in body.tokens if not 0 <= t < vocab]
        if bad:
            raise bad_request(f"token ids out of range [0, {vocab}): {bad[:5]}", param="tokens", code="invalid_value")
        return DetokenizeResponse(prompt=self.ctx.tokenizer.decode(body.tokens))
