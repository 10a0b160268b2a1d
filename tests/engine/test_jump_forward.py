"""Jump-forward decoding: tokens the grammar or the thinking budget forces are appended without sampling.

The outputs must be exactly those of step-by-step decoding (greedy, and seeded sampling too), with fewer
forward passes than output tokens where something is forced.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from qwick import LLM, SamplingParams, StructuredOutputsParams
from qwick.engine.args import EngineArgs
from qwick.engine.builder import engine_config
from qwick.model.loader import load_config
from qwick.tokenizer.tool_grammar import tool_calls_lark

RECORD_SCHEMA = {
    "type": "object",
    "properties": {"customer_billing_address": {"type": "string", "maxLength": 8},
                   "customer_account_number": {"type": "integer", "minimum": 0, "maximum": 999},
                   "is_active_customer": {"type": "boolean"}},
    "required": ["customer_billing_address", "customer_account_number", "is_active_customer"],
    "additionalProperties": False,
}
WEATHER = {"name": "get_current_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string", "maxLength": 8}, "unit": {"enum": ["c", "f"]}},
    "required": ["city", "unit"], "additionalProperties": False}}
STRUCTURES = {
    "json": StructuredOutputsParams(json=RECORD_SCHEMA),
    "regex": StructuredOutputsParams(regex=r"ORDER-[0-9]{3}: (shipped|delivered) to [a-z]{1,6}\."),
    "choice": StructuredOutputsParams(choice=["approved by the reviewer", "rejected by the reviewer"]),
    "grammar": StructuredOutputsParams(grammar='root ::= "total = " [1-9] [0-9]? " units"'),
    "tool_call": StructuredOutputsParams(grammar=tool_calls_lark([WEATHER], parallel=False)),
}
PROMPTS = ["Fill in the record:", "Status of my order?"]


@pytest.fixture(scope="module")
def engines(llm) -> dict[bool, tuple[LLM, bool]]:
    """The package's tiny LLM, with requests that jump (True) or decode step by step (False)."""
    return {jf: (llm, jf) for jf in (False, True)}


def _run(engine: tuple[LLM, bool], params: SamplingParams, prompts=PROMPTS) -> tuple[list[list[int]], int, int]:
    """Token ids per prompt, forward passes and generated tokens the call took."""
    llm, jump = engine
    params = replace(params, jump_forward=jump)
    before = llm.engine.stats()
    outs = llm.generate(prompts, params)
    after = llm.engine.stats()
    return ([o.outputs[0].token_ids for o in outs], after.forward_passes - before.forward_passes,
            after.generation_tokens - before.generation_tokens)


@pytest.mark.parametrize("kind", sorted(STRUCTURES))
def test_greedy_outputs_identical_with_fewer_forwards(engines, kind):
    params = SamplingParams(temperature=0, max_tokens=40, structured_outputs=STRUCTURES[kind])
    step_by_step, plain_forwards, plain_tokens = _run(engines[False], params)
    jumped, forwards, tokens = _run(engines[True], params)
    assert jumped == step_by_step
    assert tokens == plain_tokens and plain_forwards >= max(len(ids) for ids in step_by_step)
    assert forwards < tokens and forwards < plain_forwards


def test_engine_option_turns_it_off(tiny_model_dir):
    args = EngineArgs(tiny_model_dir, jump_forward=False)
    assert engine_config(args, load_config(tiny_model_dir), torch.float32, torch.device("cpu")).jump_forward is False
    with pytest.raises(ValueError, match="jump_forward must be a boolean"):
        EngineArgs(tiny_model_dir, jump_forward=1)


def test_seeded_sampling_identical(engines):
    llm = engines[True][0]
    runs = {jump: [o.outputs[0].token_ids for o in llm.generate(PROMPTS, [
        SamplingParams(temperature=1.0, top_k=0, top_p=1.0, seed=s, max_tokens=40, jump_forward=jump,
                       structured_outputs=STRUCTURES[k]) for s, k in enumerate(["json", "tool_call"])])]
        for jump in (False, True)}
    assert runs[True] == runs[False]


def test_thinking_budget_closer_is_appended_at_once(engines):
    tok = engines[True][0].get_tokenizer()
    prompt = {"prompt_token_ids": tok.encode("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n")}
    params = SamplingParams(max_tokens=20, temperature=0.0, ignore_eos=True, max_thinking_tokens=5)
    plain, plain_forwards, _ = _run(engines[False], params, [prompt])
    jumped, forwards, _ = _run(engines[True], params, [prompt])
    closing = tok.encode("\n</think>\n\n")
    assert jumped == plain and jumped[0][5 : 5 + len(closing)] == closing
    assert forwards == plain_forwards - len(closing)  # step by step, each forced token took a forward


def test_logprobs_requests_decode_step_by_step(engines):
    params = SamplingParams(temperature=0, max_tokens=40, logprobs=1, structured_outputs=STRUCTURES["json"])
    llm = engines[True][0]
    before = llm.engine.stats().jump_forward_tokens
    out = llm.generate(PROMPTS[0], params)[0].outputs[0]
    assert llm.engine.stats().jump_forward_tokens == before
    assert len(out.logprobs) == len(out.token_ids)


def test_streamed_deltas_carry_every_forced_token(engines):
    params = SamplingParams(temperature=0, max_tokens=40, structured_outputs=STRUCTURES["json"])
    llm = engines[True][0]
    deltas = list(llm.stream(PROMPTS[0], params))
    final = llm.generate(PROMPTS[0], params)[0].outputs[0]
    assert [t for d in deltas for t in d.token_ids] == final.token_ids
    assert "".join(d.text for d in deltas) == final.text


def test_fast_forward_tokens_are_the_only_tokens_the_mask_allows(engines):
    """What makes jump-forward exact: at each position of llguidance's ff tokens its mask allows that token
    alone, so sampling (greedy or not) could not have picked another."""
    grammars = engines[True][0].engine.grammars
    for structure in STRUCTURES.values():
        matcher = grammars.matcher(grammars.compile(structure))
        checked = 0
        for _ in range(40):
            for token in matcher.compute_ff_tokens():
                allowed = _allowed(matcher.compute_bitmask())
                assert allowed == [token], (structure.kind, token, allowed[:5])
                assert matcher.consume_token(token)
                checked += 1
            if matcher.is_stopped():
                break
            mask = matcher.compute_bitmask()  # then a free token: the last allowed one (not EOS)
            free = [t for t in _allowed(mask) if t != grammars.eos_token_id]
            if not free:
                break
            assert matcher.consume_token(free[-1])
        assert checked > 0, structure.kind


def _allowed(mask: bytes) -> list[int]:
    return [8 * i + b for i, byte in enumerate(mask) if byte for b in range(8) if byte >> b & 1]


def test_jump_forward_must_be_a_boolean():
    with pytest.raises(ValueError, match="jump_forward must be a boolean"):
        SamplingParams(jump_forward="no")

