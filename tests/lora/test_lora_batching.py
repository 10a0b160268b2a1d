"""Many adapters in one batch: each request gets exactly its one-at-a-time result; every offline entry point."""

from __future__ import annotations

import pytest
import torch
from adapters import peft_reference

from qwick import LLM, SamplingParams
from qwick.lora.batch import NO_ADAPTER, LoRABatch, LoRAContext
from qwick.lora.layers import LoRALinear
from qwick.passes.cpu_packing import cpu_packing_supported
from qwick.quant.int4 import Int4Linear
from qwick.quant.int8 import Int8Linear

GREEDY = SamplingParams(max_tokens=12, temperature=0, ignore_eos=True)
PROMPTS = [list(range(500, 530)), list(range(2000, 2011)), list(range(7000, 7045)), list(range(900, 921))]


def record_batches(llm: LLM, monkeypatch) -> list:
    """The LoRABatch of every forward the engine runs from now on."""
    seen, use = [], llm.lora.context.use

    def recording(batch):
        seen.append(batch)
        return use(batch)

    monkeypatch.setattr(llm.lora.context, "use", recording)
    return seen


def tokens(outputs) -> list[list[int]]:
    return [o.outputs[0].token_ids for o in outputs]


def test_two_adapters_and_the_base_in_one_batch_equal_one_at_a_time(lora_llm, sql, chat, monkeypatch):
    loras = [sql, chat, None, sql]
    alone = [tokens(lora_llm.generate({"prompt_token_ids": p}, GREEDY, lora_request=lora))[0]
             for p, lora in zip(PROMPTS, loras, strict=True)]
    batches = record_batches(lora_llm, monkeypatch)
    together = tokens(lora_llm.generate([{"prompt_token_ids": p} for p in PROMPTS], GREEDY, lora_request=loras))
    assert together == alone
    assert any(b is not None and b.mask is not None for b in batches)  # rows of different adapters shared a forward
    assert len({tuple(t) for t in together[:3]}) == 3


def test_a_base_only_batch_skips_the_lora_path(lora_llm, monkeypatch):
    batches = record_batches(lora_llm, monkeypatch)
    lora_llm.generate([{"prompt_token_ids": p} for p in PROMPTS], GREEDY)
    assert batches and all(b is None for b in batches)


def test_one_adapter_for_all_prompts(lora_llm, sql):
    together = tokens(lora_llm.generate([{"prompt_token_ids": p} for p in PROMPTS[:2]], GREEDY, lora_request=sql))
    assert together == tokens(lora_llm.generate([{"prompt_token_ids": p} for p in PROMPTS[:2]], GREEDY,
                                                lora_request=[sql, sql]))


def test_lora_request_list_must_match_the_prompts(lora_llm, sql):
    with pytest.raises(ValueError, match="2 lora_requests for 3 prompts"):
        lora_llm.generate([{"prompt_token_ids": p} for p in PROMPTS[:3]], GREEDY, lora_request=[sql, None])
    with pytest.raises(TypeError, match="lora_request must be a LoRARequest"):
        lora_llm.generate({"prompt_token_ids": PROMPTS[0]}, GREEDY, lora_request=["sql"])
    assert not lora_llm.engine.has_unfinished()


def test_stream_and_chat_and_stream_chat_use_the_adapter(lora_llm, chat):
    prompt = "Write a haiku about the sea"
    whole = lora_llm.generate(prompt, GREEDY, lora_request=chat)[0].outputs[0]
    streamed = list(lora_llm.stream(prompt, GREEDY, lora_request=chat))
    assert "".join(d.text for d in streamed) == whole.text
    assert [t for d in streamed for t in d.token_ids] == whole.token_ids
    messages = [{"role": "user", "content": prompt}]
    kwargs = {"enable_thinking": False}
    rendered = lora_llm.render_chat(messages, chat_template_kwargs=kwargs)
    want = lora_llm.generate({"prompt": rendered}, GREEDY, lora_request=chat)[0].outputs[0]
    base = lora_llm.generate({"prompt": rendered}, GREEDY)[0].outputs[0]
    assert want.token_ids != base.token_ids
    got = lora_llm.chat(messages, GREEDY, chat_template_kwargs=kwargs, lora_request=chat)[0].outputs[0]
    assert got.token_ids == want.token_ids and got.content == want.text
    deltas = list(lora_llm.stream_chat(messages, GREEDY, chat_template_kwargs=kwargs, lora_request=chat))
    assert "".join(d.content for d in deltas) == want.text


def test_n_samples_all_use_the_adapter(lora_llm, sql):
    params = SamplingParams(n=2, max_tokens=8, temperature=0, ignore_eos=True)
    out = lora_llm.generate({"prompt_token_ids": PROMPTS[0]}, params, lora_request=sql)[0]
    single = tokens(lora_llm.generate({"prompt_token_ids": PROMPTS[0]}, GREEDY, lora_request=sql))[0]
    assert [o.token_ids for o in out.outputs] == [single[:8], single[:8]]


@pytest.mark.skipif(not cpu_packing_supported(torch.bfloat16, torch.device("cpu")),
                    reason="this CPU has no native bf16 (qwick packs bf16 Linears only then)")
def test_bf16_packed_base_keeps_its_packed_path_and_matches_peft(tiny_model_dir, adapter_dirs, sql):
    llm = LLM(tiny_model_dir, dtype="bfloat16", device="cpu", max_model_len=256, enable_lora=True, max_lora_rank=8)
    wrapped = [m for m in llm.model.modules() if isinstance(m, LoRALinear)]
    assert len(wrapped) == 7 * llm.model.config.num_hidden_layers
    assert all(m.base.weight.is_mkldnn or m.base.vnni for m in wrapped)  # the packed base still runs
    llm.add_lora(sql)
    ids = PROMPTS[2]
    with torch.inference_mode(), llm.lora.active([sql.lora_int_id], len(ids)):
        got = llm.model.compute_logits(llm.model(torch.tensor([ids]), torch.arange(len(ids))[None]))[0]
    reference = peft_reference(tiny_model_dir, adapter_dirs["sql"])
    with torch.no_grad():
        want = reference(torch.tensor([ids])).logits[0]
        with reference.disable_adapter():
            base = reference(torch.tensor([ids])).logits[0]
    error = (got - want).abs().mean()
    assert error < 0.1 * (want - base).abs().mean()  # bf16 rounding, far below what the adapter changes
    assert (got.argmax(-1) == want.argmax(-1)).float().mean() > 0.9


def test_int8_quantized_base_with_lora(tiny_model_dir, sql, chat):
    llm = LLM(tiny_model_dir, dtype="float32", device="cpu", max_model_len=256, quantization="int8",
              enable_lora=True, max_loras=2, max_lora_rank=8, kv_cache_memory_bytes=4 * 1024**2)
    assert all(isinstance(m.base, Int8Linear) for m in llm.model.modules() if isinstance(m, LoRALinear))
    loras = [sql, chat, None]
    alone = [tokens(llm.generate({"prompt_token_ids": p}, GREEDY, lora_request=lora))[0]
             for p, lora in zip(PROMPTS, loras, strict=False)]
    together = tokens(llm.generate([{"prompt_token_ids": p} for p in PROMPTS[:3]], GREEDY, lora_request=loras))
    assert together == alone
    assert alone[0] != tokens(llm.generate({"prompt_token_ids": PROMPTS[0]}, GREEDY))[0]


@pytest.mark.parametrize("kind", ["float", "int8", "int4"])
def test_lora_linear_adds_each_rows_own_delta_to_any_base(kind):
    torch.manual_seed(0)
    dense = torch.nn.Linear(128, 96, bias=False)
    base = {"float": dense, "int8": Int8Linear.from_linear(dense), "int4": Int4Linear.from_linear(dense, 32)}[kind]
    context = LoRAContext()
    layer = LoRALinear(base, context, max_loras=3, max_rank=4, dtype=torch.float32, device=torch.device("cpu"))
    a = [torch.randn(r, 128) for r in (4, 2, 3)]
    b = [torch.randn(96, r) for r in (4, 2, 3)]
    for slot in range(3):
        layer.set_slot(slot, a[slot], b[slot])
    x = torch.randn(2, 3, 128)  # [rows, tokens, in]
    with torch.inference_mode():
        want = base(x)
        for row, slot in enumerate([2, NO_ADAPTER]):
            if slot != NO_ADAPTER:
                want[row] += (x[row] @ a[slot].T) @ b[slot].T
        with context.use(LoRABatch.build([2, NO_ADAPTER], 3, 4, torch.float32, torch.device("cpu"))):
            got = layer(x)
        plain = layer(x)  # outside a batch: the base alone
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(plain, base(x))


def test_preemption_and_chunked_prefill_keep_each_requests_adapter(tiny_model_dir, lora_llm, sql, chat, step_path):
    # 16 blocks of 16 tokens for 6 growing sequences: they take turns (preemption, recompute under their adapter);
    # 24-token steps split every prompt into chunks, so chunks of different adapters share forwards
    prompts = [[(7 * i + j) % 5000 + 100 for j in range(n)] for i, n in enumerate([40, 17, 90, 55, 28, 64])]
    loras = [sql, chat, None, chat, sql, None]
    params = SamplingParams(max_tokens=40, temperature=0, ignore_eos=True)
    alone = [tokens(lora_llm.generate({"prompt_token_ids": p}, params, lora_request=lora))[0]
             for p, lora in zip(prompts, loras, strict=True)]
    per_token = 2 * 2 * 2 * 32 * 4  # layers * (k, v) * kv_heads * head_dim * fp32 bytes
    llm = LLM(tiny_model_dir, dtype="float32", max_model_len=256, kv_cache_memory_bytes=256 * per_token,
              max_num_batched_tokens=24, enable_lora=True, max_loras=2, max_lora_rank=8)
    assert llm.engine.runner.backend.supports_flat_step == (step_path == "flat")
    together = tokens(llm.generate([{"prompt_token_ids": p} for p in prompts], params, lora_request=loras))
    assert together == alone
    assert llm.engine.stats().num_preemptions > 0
