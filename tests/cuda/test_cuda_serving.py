"""On the device: `qwick serve`'s app driven by the official openai client, and LoRA adapters against peft."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from qwick import LLM, SamplingParams
from qwick.lora.request import LoRARequest

from reference import hf_greedy

sys.path.insert(0, str(Path(__file__).parents[1] / "server"))  # serverkit
sys.path.insert(0, str(Path(__file__).parents[1] / "lora"))  # adapters (writes adapters with peft itself)


def text(message) -> str:
    """Reasoning then answer: the extra field is there only when the server sent it."""
    return (getattr(message, "reasoning_content", None) or "") + (message.content or "")


def test_server_chat_streaming_and_gates_on_the_device(tiny_model_dir, device):
    from serverkit import MODEL, serving

    from qwick.server import build_app
    from qwick.server.app import start_llm

    llm, engine = start_llm(lambda: LLM(tiny_model_dir, dtype="float32", device=device, max_model_len=1024))
    with serving(build_app(llm, MODEL, client=engine), llm) as server:
        client = server.client()
        messages = [{"role": "user", "content": "Hi /no_think"}]
        reply = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=8, temperature=0)
        assert reply.usage.completion_tokens == 8 and reply.choices[0].finish_reason == "length"
        chunks = list(client.chat.completions.create(model=MODEL, messages=messages, max_tokens=8, temperature=0,
                                                     stream=True, stream_options={"include_usage": True}))
        streamed = "".join(text(c.choices[0].delta) for c in chunks if c.choices)
        assert streamed == text(reply.choices[0].message)
        assert chunks[-1].usage.completion_tokens == 8
        moderation = server.post("/v1/moderate", json={"text": "I like trains."})
        assert moderation.status_code == 200
        assert sum(moderation.json()["scores"].values()) == pytest.approx(1.0, abs=1e-6)
        assert server.get("/metrics").status_code == 200


def test_lora_greedy_tokens_equal_peft_on_the_device(tiny_model_dir, device, tmp_path):
    from adapters import peft_reference, write_adapter

    adapter = write_adapter(tiny_model_dir, tmp_path / "sql", seed=1, r=8, lora_alpha=12)
    llm = LLM(tiny_model_dir, dtype="float32", device=device, max_model_len=256, enable_lora=True, max_loras=2,
              max_lora_rank=8)
    prompts = [list(range(1000, 1037)), list(range(2000, 2009))]
    params = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)
    lora = LoRARequest("sql", 1, str(adapter))
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, lora_request=lora)
    reference = peft_reference(tiny_model_dir, adapter)
    want = [hf_greedy(reference, p, 12) for p in prompts]
    assert [o.outputs[0].token_ids for o in outs] == want
    with reference.disable_adapter():
        assert want != [hf_greedy(reference, p, 12) for p in prompts]  # the adapter changes the tokens
    base = llm.generate([{"prompt_token_ids": p} for p in prompts], params)  # the base model beside it
    with torch.no_grad(), reference.disable_adapter():
        assert [o.outputs[0].token_ids for o in base] == [hf_greedy(reference, p, 12) for p in prompts]
