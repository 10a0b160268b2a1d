"""Structured output in the engine: every constrained sample parses and validates, whatever the seed.

A random-weight model sampling at temperature 1 is the adversary: without the grammar its text is noise, so an
output that validates for every seed can only come from the masks.
"""

from __future__ import annotations

import json
import re

import jsonschema
import pytest

from qwick import LLM, SamplingParams, StructuredOutputsParams
from qwick.engine.grammar import StructuredOutputError
from qwick.tokenizer import parse_reasoning

SEEDS = range(12)

PERSON_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "kind": {"enum": ["cat", "dog", "bird"]},
        "age": {"type": "integer", "minimum": 0, "maximum": 30},
        "weight": {"type": "number", "minimum": 0.5, "maximum": 99.5, "multipleOf": 0.25},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 6}, "maxItems": 3},
        "owner": {
            "type": "object",
            "properties": {"id": {"type": "integer", "minimum": 1, "maximum": 99999}, "vip": {"type": "boolean"}},
            "required": ["id", "vip"],
            "additionalProperties": False,
        },
    },
    "required": ["name", "kind", "age", "weight", "tags", "owner"],
    "additionalProperties": False,
}
PHONE_REGEX = r"\+1 [0-9]{3}-[0-9]{4}( ext [0-9]{1,3})?"
# GBNF-style EBNF: a sum of small integers, e.g. "12+7+300"
SUM_GRAMMAR = 'root ::= num ("+" num)*\nnum ::= [1-9] [0-9]? [0-9]?'
SUM_LANGUAGE = re.compile(r"[1-9][0-9]{0,2}(\+[1-9][0-9]{0,2})*")
CHOICES = ["positive", "negative", "neutral"]


def _params(seed: int, structure: StructuredOutputsParams | None, **kw) -> SamplingParams:
    return SamplingParams(temperature=1.0, top_p=1.0, top_k=0, seed=seed, max_tokens=kw.pop("max_tokens", 120),
                          structured_outputs=structure, **kw)


def _assert_valid(kind: str, text: str) -> None:
    if kind == "json":
        jsonschema.validate(json.loads(text), PERSON_SCHEMA)
    elif kind == "regex":
        assert re.fullmatch(PHONE_REGEX, text), text
    elif kind == "grammar":
        assert SUM_LANGUAGE.fullmatch(text), text
    elif kind == "choice":
        assert text in CHOICES, text
    else:
        assert isinstance(json.loads(text), dict), text


STRUCTURES = {
    "json": StructuredOutputsParams(json=PERSON_SCHEMA),
    "regex": StructuredOutputsParams(regex=PHONE_REGEX),
    "grammar": StructuredOutputsParams(grammar=SUM_GRAMMAR),
    "choice": StructuredOutputsParams(choice=CHOICES),
    "json_object": StructuredOutputsParams(json_object=True),
}


@pytest.mark.parametrize("kind", list(STRUCTURES))
def test_every_seed_validates(llm: LLM, kind: str) -> None:
    max_tokens = 40 if kind == "json_object" else 120
    outs = llm.generate(["Answer:"] * len(SEEDS), [_params(s, STRUCTURES[kind], max_tokens=max_tokens)
                                                    for s in SEEDS])
    finished = 0
    for out in outs:
        completion = out.outputs[0]
        if kind == "json_object" and completion.finish_reason == "length":
            # `{"type": "object"}` allows endless strings, which a random model writes; the cut is honest
            assert completion.text.startswith("{")
            continue
        assert completion.finish_reason == "stop", completion
        _assert_valid(kind, completion.text)
        finished += 1
    assert finished >= (1 if kind == "json_object" else len(SEEDS))


def test_unconstrained_output_is_noise(llm: LLM) -> None:
    """The control: the same prompts and seeds without a schema do not produce valid JSON."""
    outs = llm.generate(["Answer:"] * 4, [_params(s, None, max_tokens=30) for s in range(4)])
    for out in outs:
        with pytest.raises(ValueError):
            json.loads(out.outputs[0].text)


def test_streaming_text_validates(llm: LLM) -> None:
    for seed in range(4):
        text = "".join(d.text for d in llm.stream("Answer:", _params(seed, STRUCTURES["json"])))
        _assert_valid("json", text)


def test_mixed_batch_leaves_unconstrained_requests_alone(llm: LLM) -> None:
    greedy = SamplingParams(temperature=0.0, max_tokens=24)
    prompts = ["The capital of France is", "1, 2, 3,"]
    alone = [o.outputs[0].token_ids for o in llm.generate(prompts, greedy)]
    kinds = ["json", "regex", "choice", "grammar"]
    mixed = llm.generate(prompts + ["Answer:"] * len(kinds),
                         [greedy, greedy] + [_params(i, STRUCTURES[k]) for i, k in enumerate(kinds)])
    assert [o.outputs[0].token_ids for o in mixed[:2]] == alone
    for kind, out in zip(kinds, mixed[2:], strict=True):
        _assert_valid(kind, out.outputs[0].text)


def test_n_samples_each_follow_the_grammar(llm: LLM) -> None:
    out = llm.generate("Answer:", SamplingParams(n=4, temperature=1.0, seed=5, max_tokens=120,
                                                 structured_outputs=STRUCTURES["json"]))[0]
    assert len({c.text for c in out.outputs}) > 1
    for completion in out.outputs:
        _assert_valid("json", completion.text)


def test_thinking_stays_free_and_the_answer_is_constrained(llm: LLM) -> None:
    """Chat with thinking on: <think> may open, the budget closes it, the answer after </think> validates."""
    opened = 0
    for seed in range(6):
        params = _params(seed, STRUCTURES["json"], max_thinking_tokens=6, max_tokens=160)
        text = llm.chat([{"role": "user", "content": "Describe a pet."}], params)[0].outputs[0].text
        # the grammar never writes <think>: an output without it is all answer
        reasoning, content = parse_reasoning(text, thinking_enabled=text.startswith("<think>"))
        opened += reasoning is not None
        _assert_valid("json", (content or "").strip())
    assert opened > 0  # the random model does open a block for some seeds


def test_thinking_disabled_constrains_from_the_first_token(llm: LLM) -> None:
    params = _params(0, STRUCTURES["choice"])
    out = llm.chat([{"role": "user", "content": "Sentiment?"}], params,
                   chat_template_kwargs={"enable_thinking": False})[0].outputs[0]
    assert out.text in CHOICES and out.finish_reason == "stop"


def test_choice_finishes_as_soon_as_the_grammar_is_complete(llm: LLM) -> None:
    out = llm.generate("Answer:", _params(1, StructuredOutputsParams(choice=["yes"])))[0].outputs[0]
    assert out.text == "yes" and out.finish_reason == "stop"
    assert len(out.token_ids) == len(llm.get_tokenizer().encode("yes"))


def test_length_cut_reports_length(llm: LLM) -> None:
    out = llm.generate("Answer:", _params(0, STRUCTURES["json"], max_tokens=5))[0].outputs[0]
    assert out.finish_reason == "length" and out.text.startswith("{")


def test_schema_given_as_json_text(llm: LLM) -> None:
    structure = StructuredOutputsParams(json=json.dumps(PERSON_SCHEMA))
    _assert_valid("json", llm.generate("Answer:", _params(3, structure))[0].outputs[0].text)


def test_compiled_grammars_are_cached(llm: LLM) -> None:
    grammars = llm.engine.grammars
    assert grammars is not None
    schema = {"type": "object", "properties": {"cache_probe": {"type": "integer"}}, "required": ["cache_probe"]}
    before = grammars.stats.compiled
    for seed in range(3):
        llm.generate("Answer:", _params(seed, StructuredOutputsParams(json=schema), max_tokens=20))
    assert grammars.stats.compiled == before + 1


@pytest.mark.parametrize(("structure", "message"), [
    (StructuredOutputsParams(json={"type": "array", "uniqueItems": True}), "uniqueItems"),
    (StructuredOutputsParams(json={"type": "integer", "minimum": 5, "maximum": 3}), "Unsatisfiable"),
    (StructuredOutputsParams(json={"type": "frobnicate"}), "frobnicate"),
    (StructuredOutputsParams(json="{not json"), "not valid JSON"),
    (StructuredOutputsParams(json="[1, 2]"), "must be a JSON object"),
    (StructuredOutputsParams(regex="[a-z"), "unclosed character class"),
    (StructuredOutputsParams(grammar="start: undefined_rule"), "undefined_rule"),
])
def test_bad_constraints_fail_before_generation(llm: LLM, structure: StructuredOutputsParams, message: str) -> None:
    before = llm.engine.stats().prompt_tokens
    with pytest.raises(StructuredOutputError, match=re.escape(message)):
        llm.generate("Answer:", _params(0, structure))
    assert llm.engine.stats().prompt_tokens == before
    assert not llm.engine.has_unfinished()


@pytest.mark.parametrize("fields", [{}, {"json": {}, "regex": "a"}, {"choice": []}, {"choice": ["a", ""]},
                                    {"regex": ""}, {"json": 3}, {"json_object": "yes"}])
def test_params_validation(fields: dict) -> None:
    with pytest.raises(ValueError, match="structured_outputs"):
        StructuredOutputsParams(**fields)


def test_needs_a_tokenizer(tiny_model_dir) -> None:
    llm = LLM(tiny_model_dir, dtype="float32", device="cpu", max_model_len=64, skip_tokenizer_init=True)
    with pytest.raises(ValueError, match="skip_tokenizer_init"):
        llm.generate({"prompt_token_ids": [1, 2, 3]}, _params(0, STRUCTURES["choice"]))
