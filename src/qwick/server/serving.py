"""What every endpoint family shares: limits, admission, body parsing, sampling params, engine errors."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from qwick.engine.client import EngineClient, RequestDelta
from qwick.engine.grammar import GrammarCompiler
from qwick.lora.request import LoRARequest
from qwick.sampling_params import SamplingParams
from qwick.server.errors import APIError, bad_request, from_validation_error
from qwick.server.metrics import ServerMetrics
from qwick.server.protocol.base import OpenAIRequest, SamplingFields
from qwick.tokenizer import Tokenizer

logger = logging.getLogger("qwick.server")
Body = TypeVar("Body", bound=BaseModel)
T = TypeVar("T")
PLANNER_NICENESS = 10  # CFS gives a niceness-10 thread about a tenth of a normal one's CPU share


@dataclass(frozen=True)
class ServerLimits:
    """Request limits; defaults are generous for real use and small enough to keep one request harmless."""

    # 4x the text of Qwen3's longest (YaRN, 131k-token) context: a bigger body is a 413 before it is read;
    # parsing one holds the GIL (~0.15 s for 8 MiB of small strings), stalling every stream meanwhile
    max_body_bytes: int = 2 * 1024 * 1024
    max_messages: int = 2048  # chat messages per request
    max_prompts: int = 256  # prompts in one completions request
    max_queue: int | None = None  # sequences allowed to wait beyond max_num_seqs; None = no limit

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_messages", "max_prompts"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_queue is not None and self.max_queue < 0:
            raise ValueError(f"max_queue must be >= 0, got {self.max_queue}")


class Admission:
    """Counts sequences in flight; past max_num_seqs + max_queue, new requests get a 503 at once."""

    def __init__(self, capacity: int | None) -> None:
        self.capacity = capacity
        self.in_flight = 0

    def acquire(self, sequences: int) -> Callable[[], None]:
        """Take `sequences` slots or raise the 503; returns the (idempotent) release."""
        if self.capacity is not None and self.in_flight + sequences > self.capacity:
            raise APIError(503, f"the server is at capacity ({self.in_flight} sequences in flight, limit "
                                f"{self.capacity}): retry later", code="overloaded", headers={"Retry-After": "1"})
        self.in_flight += sequences
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.in_flight -= sequences

        return release


@dataclass
class ServerContext:
    engine: EngineClient
    tokenizer: Tokenizer
    model_name: str
    max_model_len: int
    limits: ServerLimits
    metrics: ServerMetrics
    admission: Admission
    grammars: GrammarCompiler  # checks structured-output constraints before a request reaches the engine
    lora_modules: dict[str, LoRARequest] = field(default_factory=dict)  # served adapters, by model name
    # tokenizing and grammar compiling: off the event loop, at low CPU priority so the engine thread keeps its share
    planner: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(
        2, thread_name_prefix="qwick-plan", initializer=_lower_priority))

    async def off_loop(self, work: Callable[..., T], *args: Any) -> T:
        """Run CPU-heavy request preparation on the planner threads (llguidance and tokenizers drop the GIL)."""
        return await asyncio.get_running_loop().run_in_executor(self.planner, work, *args)

    @cached_property
    def max_token_bytes(self) -> int:
        """The longest token's text in UTF-8 bytes (an upper bound: byte-level tokens spell a byte in 1-2)."""
        tokens = self.tokenizer.convert_ids_to_tokens(range(self.tokenizer.vocab_size))
        return max((len(t.encode()) for t in tokens if t), default=1)

    def encode(self, text: str, param: str) -> list[int]:
        """A prompt's token ids. One too long for the context even at the longest token per byte run is refused
        before tokenizing, which would cost seconds and hundreds of MB for a multi-megabyte text."""
        size = len(text.encode())
        if size > self.max_model_len * self.max_token_bytes:
            raise bad_request(f"This model's maximum context length is {self.max_model_len} tokens. However, your "
                              f"prompt is {size} bytes, more than {self.max_model_len} tokens of at most "
                              f"{self.max_token_bytes} bytes. Please reduce the length of the input.",
                              param=param, code="context_length_exceeded")
        return self.tokenizer.encode(text)

    def check_model(self, name: str | None) -> None:
        """For endpoints that run the base model only: an adapter's name is refused, not silently ignored."""
        if name in self.lora_modules:
            raise bad_request(f"`{name}` is a LoRA adapter; this endpoint runs the base model only: send "
                              f"model `{self.model_name}`", param="model", code="invalid_value")
        self.resolve_model(name)

    def resolve_model(self, name: str | None) -> LoRARequest | None:
        """The adapter a request's `model` names: None for the base model (or no name); 404 if unknown."""
        if name is None or name == self.model_name:
            return None
        lora = self.lora_modules.get(name)
        if lora is None:
            served = ", ".join(f"`{n}`" for n in [self.model_name, *self.lora_modules])
            raise APIError(404, f"The model `{name}` does not exist. This server serves {served}.",
                           param="model", code="model_not_found")
        return lora


def _lower_priority() -> None:
    """Linux: nice this thread (a thread id is a process id to setpriority); elsewhere it keeps its priority."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), PLANNER_NICENESS)


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


async def read_body(request: Request, model: type[Body], limits: ServerLimits) -> Body:
    """Read at most `max_body_bytes` and validate; every failure becomes a 400 (413 if too large)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limits.max_body_bytes:
        raise _too_large(limits)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limits.max_body_bytes:
            raise _too_large(limits)
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        raise bad_request("the request body is empty: send a JSON object", code="invalid_json")
    try:
        body = model.model_validate_json(raw)
    except ValidationError as exc:
        raise from_validation_error(exc) from None
    if isinstance(body, OpenAIRequest) and body.unknown_fields():
        logger.warning("request %s: ignoring unknown fields %s", request.state.request_id, body.unknown_fields())
    return body


def _too_large(limits: ServerLimits) -> APIError:
    return APIError(413, f"the request body exceeds {limits.max_body_bytes} bytes", code="request_too_large")


def sampling_params(body: SamplingFields, *, prompt_len: int, max_model_len: int, max_tokens: int | None,
                    logprobs: int | None, fields: dict[str, str], vocab_size: int, **extra: Any) -> SamplingParams:
    """SamplingParams for one prompt, after the context check; a bad value is a 400 naming its field.

    `fields` maps "prompt", "max_tokens" and "logprobs" to the request's names for them."""
    if body.stream_options is not None and not body.stream:
        raise bad_request("stream_options is only allowed when stream is true", param="stream_options")
    if prompt_len >= max_model_len:
        raise bad_request(f"This model's maximum context length is {max_model_len} tokens. However, your request "
                          f"has {prompt_len} prompt tokens. Please reduce the length of the input.",
                          param=fields["prompt"], code="context_length_exceeded")
    if max_tokens is not None and prompt_len + max_tokens > max_model_len:
        raise bad_request(f"This model's maximum context length is {max_model_len} tokens. However, you requested "
                          f"{prompt_len + max_tokens} tokens ({prompt_len} in the prompt, {max_tokens} for the "
                          f"completion). Please reduce the length of the input or of '{fields['max_tokens']}'.",
                          param=fields["max_tokens"], code="context_length_exceeded")
    try:
        return SamplingParams(
            n=body.n, temperature=body.temperature, top_p=body.top_p, top_k=body.top_k, min_p=body.min_p,
            presence_penalty=body.presence_penalty or 0.0, frequency_penalty=body.frequency_penalty or 0.0,
            repetition_penalty=body.repetition_penalty, seed=body.seed,
            max_tokens=max_model_len - prompt_len if max_tokens is None else max_tokens,
            min_tokens=body.min_tokens, stop=body.stop, stop_token_ids=body.stop_token_ids,
            include_stop_str_in_output=body.include_stop_str_in_output, ignore_eos=body.ignore_eos,
            logprobs=logprobs, skip_special_tokens=body.skip_special_tokens,
            logit_bias=logit_bias_ids(body.logit_bias, vocab_size), **extra)
    except ValueError as exc:
        name = str(exc).split(" ", 1)[0]
        param = fields.get(name, name if name in type(body).model_fields else None)
        raise bad_request(str(exc), param=param, code="invalid_value") from None


def logit_bias_ids(bias: dict[str, float] | None, vocab_size: int) -> dict[int, float] | None:
    """OpenAI's logit_bias keys are token ids written as strings; each must be in the vocabulary."""
    if not bias:
        return None
    out = {}
    for key, value in bias.items():
        if not key.isdecimal() or int(key) >= vocab_size:
            raise bad_request(f"logit_bias keys must be token ids in [0, {vocab_size}) written as strings, "
                              f"got {key!r}", param="logit_bias", code="invalid_value")
        out[int(key)] = value
    return out


def check_output(delta: RequestDelta) -> None:
    """A sample that ended in an error (its grammar failed mid-way) fails the whole request with a 400, so no
    text that breaks the requested structure is ever sent as a normal answer (mid-stream: an error event)."""
    for out in delta.output.outputs if delta.output is not None else []:
        if out.finish_reason == "error":
            raise bad_request(f"{out.stop_reason}. No output satisfying the constraint was produced: simplify it "
                              "(README: Structured output, limits)", code="structured_output_failed")
