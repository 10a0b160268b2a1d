"""Runtime LoRA updating (vLLM's POST /v1/load_lora_adapter and /v1/unload_lora_adapter), behind a serve flag."""

from __future__ import annotations

import argparse

import openai
import pytest
from serverkit import MODEL, serving, tiny_llm

from qwick import SamplingParams
from qwick.server import build_app
from qwick.server.cli import _lora_options

IDS = list(range(4000, 4030))
KEY = "sk-lora"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    llm = tiny_llm(tiny_model_dir, enable_lora=True, max_loras=2, max_lora_rank=8)
    with serving(build_app(llm, MODEL, api_key=KEY, lora_runtime_updates=True), llm) as running:
        yield running


def _load(server, name: str, path: object, headers: dict[str, str] = AUTH):
    return server.post("/v1/load_lora_adapter", json={"lora_name": name, "lora_path": str(path)}, headers=headers)


def _unload(server, name: str):
    return server.post("/v1/unload_lora_adapter", json={"lora_name": name}, headers=AUTH)


def _served(server) -> list[str]:
    return [card["id"] for card in server.get("/v1/models", headers=AUTH).json()["data"]]


def test_a_loaded_adapter_serves_like_the_offline_one_until_it_is_unloaded(server, adapter_dirs, lora_llm, sql):
    response = _load(server, "sql-live", adapter_dirs["sql"])
    assert response.status_code == 200, response.text
    assert _served(server) == [MODEL, "sql-live"]
    client = server.client(api_key=KEY)
    out = client.completions.create(model="sql-live", prompt=IDS, max_tokens=8, temperature=0,
                                    extra_body={"ignore_eos": True})
    params = SamplingParams(max_tokens=8, temperature=0, ignore_eos=True)
    want = lora_llm.generate({"prompt_token_ids": IDS}, params, lora_request=sql)[0].outputs[0].text
    base = lora_llm.generate({"prompt_token_ids": IDS}, params)[0].outputs[0].text
    assert out.model == "sql-live" and out.choices[0].text == want != base

    assert _unload(server, "sql-live").status_code == 200
    assert _served(server) == [MODEL]
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="sql-live", prompt=IDS, max_tokens=1)
    again = _unload(server, "sql-live")
    assert again.status_code == 404 and again.json()["error"]["code"] == "lora_not_found"
    assert _load(server, "sql-live", adapter_dirs["sql"]).status_code == 200  # the name is free again
    assert _unload(server, "sql-live").status_code == 200


def test_bad_paths_and_names_are_clear_400s(server, adapter_dirs, tmp_path):
    cases = [("x", tmp_path / "missing", "lora_path"), ("x", tmp_path, "lora_path"),
             (MODEL, adapter_dirs["chat"], "lora_name")]
    (tmp_path / "file").write_text("not a folder")
    cases.append(("x", tmp_path / "file", "lora_path"))
    for name, path, param in cases:
        response = _load(server, name, path)
        assert response.status_code == 400, (path, response.text)
        error = response.json()["error"]
        assert error["param"] == param and error["message"]
    assert "adapter_config.json" in _load(server, "x", tmp_path).json()["error"]["message"]
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "adapter_config.json").write_text("{not json")
    assert "not valid JSON" in _load(server, "x", broken).json()["error"]["message"]
    assert _served(server) == [MODEL]


def test_loading_a_served_name_twice_is_a_400(server, adapter_dirs):
    assert _load(server, "chat-live", adapter_dirs["chat"]).status_code == 200
    twice = _load(server, "chat-live", adapter_dirs["sql"])
    assert twice.status_code == 400 and twice.json()["error"]["param"] == "lora_name"
    assert _unload(server, "chat-live").status_code == 200


def test_the_routes_need_the_api_key(server, adapter_dirs):
    assert _load(server, "y", adapter_dirs["chat"], headers={}).status_code == 401
    assert server.post("/v1/unload_lora_adapter", json={"lora_name": "y"}).status_code == 401


def test_without_the_flag_the_routes_do_not_exist(tiny_model_dir, adapter_dirs):
    llm = tiny_llm(tiny_model_dir, enable_lora=True, max_loras=1, max_lora_rank=8)
    with serving(build_app(llm, MODEL), llm) as running:
        assert _load(running, "y", adapter_dirs["chat"]).status_code == 404
        assert _served(running) == [MODEL]


def test_the_flag_turns_lora_on_with_vllm_default_slots():
    args = argparse.Namespace(lora_modules=[], max_loras=None, max_lora_rank=None,
                              enable_lora_runtime_updates=True)
    assert _lora_options(args) == ([], {"enable_lora": True, "max_loras": 1, "max_lora_rank": 16})
    args.enable_lora_runtime_updates, args.max_loras = False, 2
    with pytest.raises(ValueError, match="--enable-lora-runtime-updates"):
        _lora_options(args)
