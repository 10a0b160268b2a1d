"""Grammar compilation for structured output, on llguidance (README "Structured output" says why).

`GrammarCompiler` turns `StructuredOutputsParams` into a checked llguidance grammar, caches it, and makes one
matcher per sequence. Errors (invalid JSON, unsupported keyword, unsatisfiable schema, bad regex or grammar)
raise `StructuredOutputError` naming the problem, before any generation.
"""

from __future__ import annotations

import json
import logging
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


class StructuredOutputError(ValueError):
    """A constraint that cannot be compiled: the message names the field and the problem."""


@dataclass(frozen=True)
class CompiledGrammar:
    kind: str  # json, regex, choice, grammar or json_object
    grammar: str  # llguidance's grammar definition, checked against the tokenizer


@dataclass
class CompileStats:
    compiled: int = 0
    cache_hits: int = 0


class GrammarCompiler:
    """Thread-safe (the server validates on its event loop while the engine thread builds matchers)."""

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
        compiled = CompiledGrammar(params.kind, self._check(params.kind, _grammar_text(params)))
        with self._lock:
            self._cache[key] = compiled
            self.stats.compiled += 1
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return compiled

    def matcher(self, compiled: CompiledGrammar) -> llg.LLMatcher:
        matcher = llg.LLMatcher(self.tokenizer, compiled.grammar, log_level=0)
        if matcher.is_error():  # cannot happen for a grammar that passed _check; kept as a clear failure
            raise StructuredOutputError(f"structured_outputs.{compiled.kind}: {matcher.get_error()}")
        return matcher

    def _check(self, kind: str, grammar: str) -> str:
        is_error, messages = llg.LLMatcher.validate_grammar_with_warnings(grammar, self.tokenizer)
        if is_error:
            raise StructuredOutputError(f"structured_outputs.{kind} cannot be used: {_first_line(messages)}")
        for warning in messages:
            logger.warning("structured_outputs.%s: %s", kind, warning)
        return grammar


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


def _first_line(messages: list[str]) -> str:
    text = messages[0] if messages else "unknown error"
    return text.strip()
