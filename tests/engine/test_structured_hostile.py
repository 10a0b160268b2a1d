"""Hostile constraints in the engine (issue 17): refused at compile time with a clean message, or, when a grammar
fails only mid-way, the sample ends with finish_reason "error" and never with text claiming to satisfy it."""

from __future__ import annotations

import re
import time

import pytest

from qwick import LLM, SamplingParams, StructuredOutputsParams
from qwick.engine.grammar import MAX_SOURCE_BYTES, StructuredOutputError, clean_error

RECURSIVE = {"type": "object", "properties": {"a": {"$ref": "#"}}, "required": ["a"]}
FAILS_MID_WAY = 'start: /[!-~]{1,3}/ c\nc: "x" c'  # compiles; every path then forces "x" forever
HOSTILE = {
    "empty_class": StructuredOutputsParams(regex="[^\\x00-\\x{10FFFF}]"),
    "self_ref": StructuredOutputsParams(json={"$ref": "#"}),
    "root_root": StructuredOutputsParams(grammar="root ::= root"),
    "required_recursion": StructuredOutputsParams(json=RECURSIVE),
    "no_finite_string": StructuredOutputsParams(grammar='start: a\na: "x" a'),
    "ff_limit": StructuredOutputsParams(regex="(x{1000}){1000}"),
    "long_repeat": StructuredOutputsParams(regex="x{100000}"),
    "wide_row": StructuredOutputsParams(grammar="start: " + " | ".join(f'"w{i}"' for i in range(3000))),
    "huge_choice": StructuredOutputsParams(choice=[f"choice_{i}" for i in range(70_000)]),
}


def _params(seed: int, structure: StructuredOutputsParams, **kw) -> SamplingParams:
    return SamplingParams(temperature=1.0, top_p=1.0, top_k=0, seed=seed, max_tokens=20,
                          structured_outputs=structure, **kw)


@pytest.mark.parametrize("name", list(HOSTILE))
def test_a_hostile_constraint_fails_before_generation_with_a_clean_message(llm: LLM, name: str) -> None:
    start = time.monotonic()
    with pytest.raises(StructuredOutputError) as caught:
        llm.generate("Answer:", _params(0, HOSTILE[name]))
    assert time.monotonic() - start < 5.0
    message = str(caught.value)
    assert message.startswith("structured_outputs.") and len(message) < 400, message
    assert "backtrace" not in message and ".rs:" not in message and "\n" not in message
    assert not llm.engine.has_unfinished()


def test_the_size_limit_names_the_limit(llm: LLM) -> None:
    with pytest.raises(StructuredOutputError, match=f"over the limit of {MAX_SOURCE_BYTES}"):
        llm.generate("Answer:", _params(0, HOSTILE["huge_choice"]))


@pytest.mark.parametrize("seed", range(4))
def test_a_grammar_failing_mid_way_ends_with_an_error(llm: LLM, seed: int) -> None:
    out = llm.generate("Answer:", _params(seed, StructuredOutputsParams(grammar=FAILS_MID_WAY)))[0].outputs[0]
    assert out.finish_reason == "error"
    assert isinstance(out.stop_reason, str) and "failed during generation" in out.stop_reason
    assert re.fullmatch(r"[!-~]{0,3}x*", out.text), out.text  # only what the grammar accepted
    assert len(out.token_ids) < 20


def test_a_failed_sample_streams_no_token_it_did_not_keep(llm: LLM) -> None:
    engine = llm.engine
    engine.add_request("fail-stream", llm.get_tokenizer().encode("Answer:"),
                       _params(1, StructuredOutputsParams(grammar=FAILS_MID_WAY)))
    streamed: list[int] = []
    final = None
    while engine.has_unfinished():
        for step in engine.step():
            streamed += [t for d in step.deltas for t in d.token_ids]
            final = step.finished_request or final
    assert final is not None and final.outputs[0].finish_reason == "error"
    assert streamed == final.outputs[0].token_ids


@pytest.mark.parametrize(("raw", "clean"), [
    ("panic: assertion failed: grammar.symbols.len() < u16::MAX as usize - 10\n<backtrace>\n   0: <unknown>\n"
     "  at /home/runner/.cargo/registry/src/parser.rs:123:5", "assertion failed: grammar.symbols.len() < u16::MAX "
     "as usize - 10"),
    ("at 1(8): invalid regex \"[a-z\" (in regex): regex parse error:\n    [a-z\n    ^\nerror: unclosed character "
     "class\n", "at 1(8): invalid regex \"[a-z\" (in regex): regex parse error: unclosed character class"),
    ("panicked at /root/src/earley/grammar.rs:120:9: index out of bounds", "index out of bounds"),
    ("", "unknown grammar error"),
])
def test_llguidance_messages_are_cleaned(raw: str, clean: str) -> None:
    assert clean_error(raw) == clean
