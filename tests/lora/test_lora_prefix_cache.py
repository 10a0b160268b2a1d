"""Prefix caching keeps each adapter's KV apart: the adapter id salts the block hash chain."""

from __future__ import annotations

from qwick import LLM, SamplingParams
from qwick.engine.block_manager import BlockManager

GREEDY = SamplingParams(max_tokens=10, temperature=0, ignore_eos=True)
PROMPT = list(range(3000, 3050))  # 50 tokens: 3 full blocks of 16 can be shared


def test_equal_tokens_under_another_salt_are_not_a_prefix_hit():
    blocks = BlockManager(num_blocks=16, block_size=4)
    tokens = list(range(10))
    table, cached = blocks.allocate(tokens, salt=1)
    blocks.commit_full_blocks(table, tokens, len(tokens), salt=1)
    assert cached == 0
    assert blocks.allocate(tokens, salt=2)[1] == 0
    assert blocks.allocate(tokens)[1] == 0  # salt 0: the base model
    assert blocks.allocate(tokens, salt=1)[1] == 8  # the same adapter shares both full blocks


def test_the_same_prompt_under_adapters_a_then_b_gets_each_its_own_tokens(tiny_model_dir, lora_llm, sql, chat):
    fresh = LLM(tiny_model_dir, dtype="float32", device="cpu", max_model_len=256, enable_lora=True, max_loras=2,
                max_lora_rank=8, enable_prefix_caching=False)
    want = {lora: fresh.generate({"prompt_token_ids": PROMPT}, GREEDY, lora_request=lora)[0].outputs[0].token_ids
            for lora in (sql, chat, None)}
    assert len({tuple(t) for t in want.values()}) == 3
    stats = lora_llm.engine.blocks.stats
    reused = []
    for lora in (sql, chat, None, sql):
        hits = stats.hits
        got = lora_llm.generate({"prompt_token_ids": PROMPT}, GREEDY, lora_request=lora)[0].outputs[0].token_ids
        assert got == want[lora], lora
        reused.append(stats.hits - hits)
    # only the second `sql` request reuses: its own 3 blocks, and the first token of its own computed tail
    # (the 50th token, the last, is always computed)
    assert reused == [0, 0, 0, 49]
