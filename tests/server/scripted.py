"""A scripted EngineClient for server tests: a tiny random model never calls a tool or thinks sensibly, so tests of
parsing and event shapes replay given model output, token by token (or character by character) exactly as the
engine streams it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from serverkit import MODEL, RunningServer, serving

from qwick import SamplingParams
from qwick.engine.client import RequestDelta
from qwick.outputs import CompletionOutput, RequestOutput, StreamDelta
from qwick.server import build_app
from qwick.tokenizer import Tokenizer


class ScriptedEngine:
    """An EngineClient whose "model" writes scripts[key] for a prompt containing `key` (the first key found);
    a key starting with "truncated" ends as if max_tokens cut it, one starting with "stopped" at a stop string
    (its output's stop_reason is the first of the request's stop strings), one starting with "failing" fails
    (raises) half-way through. It records prompts and params."""

    def __init__(self, tokenizer: Tokenizer, by_char: bool, scripts: dict[str, str]) -> None:
        self.tokenizer = tokenizer
        self.by_char = by_char
        self.scripts = scripts
        self.prompts: list[str] = []
        self.params: list[SamplingParams] = []

    async def generate(self, prompt_ids: list[int], params: SamplingParams, request_id: str,
                       prompt: str | None = None) -> AsyncIterator[RequestDelta]:
        assert prompt is not None
        self.prompts.append(prompt)
        self.params.append(params)
        key = next(key for key in self.scripts if key in prompt)
        text, finish = self.scripts[key], "length" if key.startswith("truncated") else "stop"
        stop_reason = params.stop_strings[0] if key.startswith("stopped") else None
        ids = self.tokenizer.encode(text)
        pieces = list(text) if self.by_char else self._token_pieces(ids)
        for i, piece in enumerate(pieces):
            last = i == len(pieces) - 1
            await asyncio.sleep(0)
            if key.startswith("failing") and i == len(pieces) // 2:
                raise RuntimeError("the scripted engine fails here")
            output = None
            if last:
                output = RequestOutput(request_id, prompt, prompt_ids,
                                       [CompletionOutput(0, text, ids, None, None, finish, stop_reason)])
            yield RequestDelta(request_id, [StreamDelta(0, piece, [ids[min(i, len(ids) - 1)]], finish if last else None)],
                               last, output)

    def _token_pieces(self, ids: list[int]) -> list[str]:
        """Text per token as the engine's detokenizer emits it: nothing while a UTF-8 character is incomplete."""
        pieces, sent = [], ""
        for i in range(len(ids)):
            text = self.tokenizer.decode(ids[:i + 1])
            if text.endswith("\ufffd") and i < len(ids) - 1:
                pieces.append("")
                continue
            pieces.append(text[len(sent):])
            sent = text
        return pieces

    async def abort(self, request_id: str) -> None:
        return None

    def stats(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None

    is_running = True
    errored = False


@contextlib.contextmanager
def scripted_server(tokenizer_dir: Path, scripts: dict[str, str], by_char: bool,
                    **app_kwargs: Any) -> Iterator[RunningServer]:
    """A server over a ScriptedEngine (as `running.engine`), with the real Qwen3 tokenizer and a 4096 context."""
    tokenizer = Tokenizer.from_pretrained(tokenizer_dir)
    engine = ScriptedEngine(tokenizer, by_char=by_char, scripts=scripts)
    with serving(build_app(engine, MODEL, tokenizer=tokenizer, max_model_len=4096, **app_kwargs)) as running:
        running.engine = engine  # type: ignore[attr-defined]
        yield running
