"""`qwick serve --lora-modules`: adapters listed in /v1/models and picked by a request's `model`."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import httpx
import pytest
from servecli import qwick_serve
from serverkit import MODEL, TIMEOUT, serving, tiny_llm, wait_until

from qwick import LoRARequest, SamplingParams
from qwick.lora.modules import parse_lora_modules
from qwick.server import build_app

IDS = list(range(4000, 4030))
NO_THINK = {"chat_template_kwargs": {"enable_thinking": False}}
MESSAGES = [{"role": "user", "content": "Name three rivers"}]


@pytest.fixture(scope="module")
def server(tiny_model_dir, sql, chat):
    llm = tiny_llm(tiny_model_dir, enable_lora=True, max_loras=2, max_lora_rank=8)
    with serving(build_app(llm, MODEL, lora_modules=[sql, chat]), llm) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    return server.client()


def reference_text(lora_llm, lora: LoRARequest | None, max_tokens: int = 8) -> str:
    params = SamplingParams(max_tokens=max_tokens, temperature=0, ignore_eos=True)
    return lora_llm.generate({"prompt_token_ids": IDS}, params, lora_request=lora)[0].outputs[0].text


def test_models_lists_the_adapters_with_the_base_as_parent(server, adapter_dirs):
    cards = server.get("/v1/models").json()["data"]
    assert [c["id"] for c in cards] == [MODEL, "sql", "chat"]
    assert cards[0]["parent"] is None
    assert [(c["parent"], c["root"]) for c in cards] == [(None, MODEL), (MODEL, "sql"), (MODEL, "chat")]
    assert str(adapter_dirs["sql"]) not in server.get("/v1/models").text  # no server paths


def test_completions_use_the_adapter_the_model_names(client, lora_llm, sql, chat):
    texts = {}
    for model, lora in ((MODEL, None), ("sql", sql), ("chat", chat)):
        out = client.completions.create(model=model, prompt=IDS, max_tokens=8, temperature=0,
                                        extra_body={"ignore_eos": True})
        assert out.model == model
        texts[model] = out.choices[0].text
        assert texts[model] == reference_text(lora_llm, lora)
    assert len(set(texts.values())) == 3


def test_completion_streaming_with_an_adapter_equals_the_whole_answer(client, lora_llm, chat):
    chunks = list(client.completions.create(model="chat", prompt=IDS, max_tokens=8, temperature=0, stream=True,
                                            extra_body={"ignore_eos": True}))
    assert {c.model for c in chunks} == {"chat"}
    assert "".join(c.choices[0].text for c in chunks if c.choices) == reference_text(lora_llm, chat)


def test_chat_with_an_adapter_streaming_and_not(client, lora_llm, sql):
    params = SamplingParams(max_tokens=10, temperature=0, ignore_eos=True)
    want = lora_llm.chat(MESSAGES, params, chat_template_kwargs={"enable_thinking": False}, lora_request=sql)
    want_text = want[0].outputs[0].content
    base = lora_llm.chat(MESSAGES, params, chat_template_kwargs={"enable_thinking": False})[0].outputs[0].content
    assert want_text != base
    whole = client.chat.completions.create(model="sql", messages=MESSAGES, max_tokens=10, temperature=0,
                                           extra_body={"ignore_eos": True, **NO_THINK})
    assert whole.model == "sql" and whole.choices[0].message.content == want_text
    chunks = list(client.chat.completions.create(model="sql", messages=MESSAGES, max_tokens=10, temperature=0,
                                                 stream=True, extra_body={"ignore_eos": True, **NO_THINK}))
    assert {c.model for c in chunks} == {"sql"}
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == want_text


def test_concurrent_requests_for_two_adapters_and_the_base(server, lora_llm, sql, chat):
    async def ask(model: str) -> str:
        async with server.async_client() as client:
            out = await client.completions.create(model=model, prompt=IDS, max_tokens=8, temperature=0,
                                                  extra_body={"ignore_eos": True})
            return out.choices[0].text

    async def all_at_once() -> list[str]:
        return await asyncio.gather(*(ask(m) for m in ("sql", MODEL, "chat", "sql")))

    got = asyncio.run(all_at_once())
    assert got == [reference_text(lora_llm, lora) for lora in (sql, None, chat, sql)]


def test_unknown_model_is_a_404_naming_what_is_served(server):
    response = server.post("/v1/completions", json={"model": "nope", "prompt": "hi"})
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "model_not_found" and error["param"] == "model"
    assert f"`{MODEL}`, `sql`, `chat`" in error["message"]


def test_an_adapter_on_a_base_model_only_endpoint_is_a_400(server):
    response = server.post("/tokenize", json={"model": "sql", "prompt": "hi"})
    assert response.status_code == 400
    assert "is a LoRA adapter" in response.json()["error"]["message"]


def test_echo_with_logprobs_on_an_adapter_scores_the_prompt_under_the_adapter(server, client, tiny_model_dir,
                                                                               adapter_dirs):
    import torch
    import transformers
    from adapters import peft_reference

    prompt = "The quick brown fox jumps"
    ids = server.llm.get_tokenizer().encode(prompt)
    reply = client.completions.create(model="sql", prompt=prompt, max_tokens=1, logprobs=1, echo=True,
                                      temperature=0.0)
    got = reply.choices[0].logprobs.token_logprobs[1 : len(ids)]

    def prompt_logprobs(model) -> list[float]:
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].float()  # [T, V]
        logits[:, server.llm.get_tokenizer().vocab_size :] = float("-inf")
        reference = torch.log_softmax(logits, dim=-1)
        return [reference[i - 1, ids[i]].item() for i in range(1, len(ids))]

    assert got == pytest.approx(prompt_logprobs(peft_reference(tiny_model_dir, adapter_dirs["sql"])), abs=1e-4)
    base = transformers.Qwen3ForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    assert got != pytest.approx(prompt_logprobs(base), abs=1e-3)  # the adapter changed them


def test_metrics_report_lora_requests_info(server, client):
    client.completions.create(model="sql", prompt=IDS, max_tokens=2)
    assert wait_until(lambda: 'qwick:lora_requests_info{max_lora="2"' in server.get("/metrics").text)


@pytest.mark.parametrize(("values", "message"), [
    (["sql"], "expected name=path or a JSON object"),
    (["=/x"], "both the name and the path must be non-empty"),
    (['{"name": "a"}'], 'needs string fields "name" and "path"'),
    (['{"name": "a", "path": "/x", "rank": 4}'], r"unknown fields \['rank'\]"),
    (["{bad"], "invalid JSON"),
])
def test_lora_modules_flag_errors(values, message):
    with pytest.raises(ValueError, match=message):
        parse_lora_modules(values)


def test_lora_modules_flag_forms():
    mods = parse_lora_modules(["a=/p/a", '{"name": "b", "path": "/p/b", "base_model_name": "Qwen/Qwen3-0.6B"}'])
    assert mods == [LoRARequest("a", 1, "/p/a"), LoRARequest("b", 2, "/p/b")]


def test_duplicate_module_names_are_refused(tiny_model_dir, sql, adapter_dirs):
    llm = tiny_llm(tiny_model_dir, enable_lora=True, max_lora_rank=8, max_model_len=64,
                   kv_cache_memory_bytes=2 * 1024**2)
    with pytest.raises(ValueError, match="'sql' is given twice"):
        build_app(llm, MODEL, lora_modules=[sql, LoRARequest("sql", 7, str(adapter_dirs["chat"]))])


def test_qwick_serve_with_lora_modules(tiny_model_dir, adapter_dirs, tmp_path):
    qwick = [sys.executable, "-m", "qwick.cli", "serve", str(tiny_model_dir)]
    bad = subprocess.run([*qwick, "--lora-modules", f"sql={tmp_path / 'missing'}"], capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 2 and "no such folder" in bad.stderr
    spec = json.dumps({"name": "chat", "path": str(adapter_dirs["chat"])})
    with qwick_serve(tiny_model_dir, "--max-model-len", "256", "--log-level", "warning",
                     "--lora-modules", f"sql={adapter_dirs['sql']}", spec, startup_timeout=90) as served:
        cards = httpx.get(f"{served.url}/v1/models", timeout=TIMEOUT).json()["data"]
        assert [(c["id"], c["parent"]) for c in cards] == [("tiny", None), ("sql", "tiny"), ("chat", "tiny")]
        body = {"model": "chat", "prompt": IDS, "max_tokens": 4}
        response = httpx.post(f"{served.url}/v1/completions", json=body, timeout=TIMEOUT)
        assert response.status_code == 200 and response.json()["model"] == "chat"
