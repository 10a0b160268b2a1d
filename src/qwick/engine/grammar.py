"""Grammar compilation for structured output, on llguidance: it compiled a typical schema in ~1 ms
against ~1 s (xgrammar) and ~3 s (outlines-core), with faster masks (benchmarks/RESULTS.md, structured.py).

`GrammarCompiler` turns `StructuredOutputsParams` into a checked llguidance matcher, caches it, and hands each
sequence a copy. Errors (invalid JSON, unsupported keyword, unsatisfiable schema, bad regex or grammar, a
grammar over the size limits) raise `StructuredOutputError` naming the problem, before any generation.
Compiling can take a while (it drops the GIL): the server calls `compile` on a worker thread, and the engine
thread only copies the compiled matcher.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import llguidance as llg

from qwick.sampling_params import StructuredOutputsParams
from qwick.tokenizer import Tokenizer

logger = logging.getLogger(__name__)

# Compact separators like json.dumps; flexible whitespace lets a weak model emit whitespace forever.
JSON_DEFAULTS: dict[str, Any] = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
MAX_SOURCE_BYTES = 128 * 1024  # a constraint's source (schema, regex, grammar, choices), as given
# Tighter than llguidance's defaults so a hostile grammar fails at compile time (a 400) instead of slowing
# every batch: regex building fuel (default 1M; x{100000} needs more), symbols (default 500k; past 65k it
# panics), lexer fuel per mask (default 200k, ~14 ms). verbose_errors would put parser state in messages.
PARSER_LIMITS = {"initial_lexer_fuel": 200_000, "max_grammar_size": 50_000, "step_lexer_fuel": 50_000,
                 "verbose_errors": False}
_RUST_PATH = re.compile(r"(panicked )?(at )?\S+\.rs:\d+(:\d+)?:?\s*")  # where a Rust panic happened


class StructuredOutputError(ValueError):
    """A constraint that cannot be compiled: the message names the field and the problem."""


@dataclass(frozen=True)
class CompiledGrammar:
    kind: str  # json, regex, choice, grammar or json_object
    grammar: str  # llguidance's grammar definition, checked against the tokenizer
    prototype: llg.LLMatcher  # built and probed once; never advanced, only copied (`GrammarCompiler.matcher`)


@dataclass(eq=False)
class SequenceConstraint:
    """One sample's grammar state (structured output): its matcher, and the kind of constraint for errors."""

    matcher: llg.LLMatcher
    kind: str


@dataclass
class CompileStats:
    compiled: int = 0
    cache_hits: int = 0


class GrammarCompiler:
    """Thread-safe (the server compiles on worker threads while the engine thread copies matchers)."""

    def __init__(self, tokenizer_json: str, vocab_size: int, eos_token_id: int, cache_size: int = 512) -> None:
        self._tokenizer_json = tokenizer_json
        self.vocab_size = vocab_size  # the model's logits width (151,936 for Qwen3), not the tokenizer's length
        self.eos_token_id = eos_token_id
        self._llg_tokenizer: llg.LLTokenizer | None = None
        self._cache: OrderedDict[str, CompiledGrammar] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self.stats = CompileStats()

    @classmethod
    def for_tokenizer(cls, tokenizer: Tokenizer, vocab_size: int, eos_token_id: int) -> GrammarCompiler:
        return cls(tokenizer.to_json(), vocab_size, eos_token_id)

    @property
    def tokenizer(self) -> llg.LLTokenizer:
        """Built on first use: it takes about a second for Qwen3's 151k-token vocabulary."""
        with self._lock:
            if self._llg_tokenizer is None:
                self._llg_tokenizer = llg.LLTokenizer(self._tokenizer_json, n_vocab=self.vocab_size,
                                                      eos_token=self.eos_token_id)
            return self._llg_tokenizer

    def compile(self, params: StructuredOutputsParams) -> CompiledGrammar:
        key = _cache_key(params)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                self.stats.cache_hits += 1
                return hit
        size = len(key.encode())
        if size > MAX_SOURCE_BYTES:
            raise StructuredOutputError(f"structured_outputs.{params.kind} is {size} bytes, over the limit of "
                                        f"{MAX_SOURCE_BYTES}: send a smaller schema, grammar or choice list")
        grammar = _grammar_text(params)
        compiled = CompiledGrammar(params.kind, grammar, self._build(params.kind, grammar))
        with self._lock:
            self._cache[key] = compiled
            self.stats.compiled += 1
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return compiled

    def matcher(self, compiled: CompiledGrammar) -> llg.LLMatcher:
        """A fresh matcher for one sequence: a copy, cheap, so the engine thread never compiles."""
        return compiled.prototype.deep_copy()

    def _build(self, kind: str, grammar: str) -> llg.LLMatcher:
        matcher = llg.LLMatcher(self.tokenizer, grammar, log_level=0, limits=llg.LLParserLimits(**PARSER_LIMITS))
        if matcher.is_error():
            raise StructuredOutputError(f"structured_outputs.{kind} cannot be used: {clean_error(matcher.get_error())}")
        for warning in matcher.get_grammar_warnings():
            logger.warning("structured_outputs.%s: %s", kind, clean_error(warning))
        error = _probe(matcher, self.eos_token_id)
        if error is not None:
            raise StructuredOutputError(f"structured_outputs.{kind} cannot be satisfied within qwick's grammar "
                                        f"limits: {error}")
        return matcher


def _grammar_text(params: StructuredOutputsParams) -> str:
    kind = params.kind
    try:
        if kind == "json":
            schema = params.json
            if isinstance(schema, str):
                schema = json.loads(schema)
            if not isinstance(schema, dict):
                raise StructuredOutputError(f"structured_outputs.json must be a JSON object (a schema), "
                                            f"got {type(schema).__name__}")
            return llg.LLMatcher.grammar_from_json_schema(schema, defaults=JSON_DEFAULTS)
        if kind == "json_object":
            return llg.LLMatcher.grammar_from_json_schema({"type": "object"}, defaults=JSON_DEFAULTS)
        if kind == "regex":
            return llg.LLMatcher.grammar_from_regex(params.regex or "")
        if kind == "choice":
            return llg.grammar_from("choice", json.dumps(list(params.choice or [])))
        return llg.grammar_from("grammar", params.grammar or "")
    except json.JSONDecodeError as exc:
        raise StructuredOutputError(f"structured_outputs.json is not valid JSON: {exc}") from None
    except (ValueError, TypeError) as exc:
        if isinstance(exc, StructuredOutputError):
            raise
        raise StructuredOutputError(f"structured_outputs.{kind} cannot be used: {exc}") from None


def _cache_key(params: StructuredOutputsParams) -> str:
    kind = params.kind
    value: Any = getattr(params, kind)
    if kind == "json" and isinstance(value, dict):
        value = json.dumps(value, sort_keys=True)
    elif kind == "choice":
        value = json.dumps(list(value))
    return f"{kind}\x00{value}"


def _probe(matcher: llg.LLMatcher, eos: int) -> str | None:
    """One step ahead, the error a grammar hits at once (None: none). An impossible grammar (an empty regex
    class, `root ::= root`, `{"$ref": "#"}`) fails its first mask; one whose forced text never ends (no finite
    string) or that is too costly fails on its first token. The first allowed token stands for the rest."""
    mask = matcher.compute_bitmask()  # one bit per token, little-endian
    if matcher.is_error():
        return clean_error(matcher.get_error())
    token = _first_set_bit(mask, skip=eos)
    if token is None:  # only EOS: the grammar is complete already
        return None
    probe = matcher.deep_copy()
    return None if probe.consume_token(token) else clean_error(probe.get_error())


def _first_set_bit(mask: bytes, skip: int | None) -> int | None:
    offset = 0
    while True:
        rest = mask[offset:].lstrip(b"\x00")
        if not rest:
            return None
        offset = len(mask) - len(rest)
        byte = rest[0]
        bit = (byte & -byte).bit_length() - 1
        token = 8 * offset + bit
        if token != skip:
            return token
        mask = mask[:offset] + bytes([byte & ~(1 << bit)]) + mask[offset + 1:]


def clean_error(message: str) -> str:
    """llguidance's message without Rust panic backtraces or source paths: its first meaningful line."""
    lines = [line.strip() for line in message.splitlines() if line.strip() and not line.startswith("<")]
    first = _RUST_PATH.sub("", lines[0]).strip(" :,").removeprefix("panic: ") if lines else ""
    detail = next((line for line in lines[1:] if line.startswith("error:")), None)  # a regex parser's reason
    if detail is not None:
        first = f"{first}: {detail.removeprefix('error:').strip()}"
    return (first[:297] + "...") if len(first) > 300 else first or "unknown grammar error"
