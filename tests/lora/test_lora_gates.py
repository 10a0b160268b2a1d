"""Gates that run under a LoRA adapter (`adapter:` in a gates file): exact probabilities under the adapter,
start-up checks naming the line, the ledger's adapter columns, replay, and the HTTP endpoints."""

from __future__ import annotations

import hashlib
import json
import sqlite3

import pytest
import transformers
from adapters import peft_reference
from serverkit import MODEL, serving, tiny_llm

from qwick.cli import main
from qwick.gates.ledger import Ledger
from qwick.gates.loader import GateFileError, parse_gates
from qwick.server import build_app
from qwick.server.routes.gates import GateOptions

from reference import hf_label_probs

TEXT = "Where can I buy a cheap laptop charger near the station?"
GATES = """\
gates:
  - name: sql_intent
    kind: classify
    instruction: "Classify the request. Answer with one of: {labels}"
    labels: [question, purchase, complaint, violence]
    adapter: sql
  - name: base_intent
    kind: classify
    instruction: "Classify the request. Answer with one of: {labels}"
    labels: [question, purchase, complaint, violence]
"""


@pytest.fixture(scope="module")
def hf_tokenizer(tiny_model_dir):
    return transformers.AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def expected(tiny_model_dir, adapter_dirs, hf_tokenizer) -> dict[str, dict[str, float]]:
    """Label probabilities of the gate's prompt under the adapter (transformers + peft) and under the base."""
    spec = parse_gates(GATES)["sql_intent"]
    system, labels = spec.system_prompt(), list(spec.labels)
    base = transformers.Qwen3ForCausalLM.from_pretrained(tiny_model_dir).eval()
    tuned = peft_reference(tiny_model_dir, adapter_dirs["sql"])
    pair = ["question", "purchase"]  # ad-hoc labels: the gate's instruction lists them instead
    return {"sql": hf_label_probs(tuned, hf_tokenizer, system, TEXT, labels),
            "base": hf_label_probs(base, hf_tokenizer, system, TEXT, labels),
            "sql_pair": hf_label_probs(tuned, hf_tokenizer, spec.system_prompt(tuple(pair)), TEXT, pair)}


def test_a_gate_decides_with_its_adapters_exact_probabilities(lora_llm, sql, expected):
    tasks = lora_llm.new_gates(parse_gates(GATES), adapters=[sql])
    with_adapter = tasks.gate("sql_intent", TEXT)
    assert with_adapter.scores == pytest.approx(expected["sql"], abs=1e-5)  # "violence": a multi-token label
    assert with_adapter.label == max(expected["sql"], key=expected["sql"].get)
    assert tasks.gate("base_intent", TEXT).scores == pytest.approx(expected["base"], abs=1e-5)
    assert expected["sql"] != pytest.approx(expected["base"], abs=1e-3)  # the adapter changes the decision's inputs
    # ad-hoc labels keep the gate's adapter
    adhoc = tasks.classify(TEXT, ["question", "purchase"], gate="sql_intent")
    assert adhoc.scores == pytest.approx(expected["sql_pair"], abs=1e-5)


def test_a_gate_naming_an_adapter_that_is_not_served_fails_at_start_up_with_its_line(lora_llm, sql, tmp_path,
                                                                                     tiny_model_dir):
    with pytest.raises(GateFileError, match=r"gates.yaml:6: gate 'sql_intent': adapter 'sql' is not a served LoRA "
                                            r"adapter; served: none \(serve them with --lora-modules NAME=PATH\)"):
        lora_llm.new_gates(parse_gates(GATES, "gates.yaml"))
    path = tmp_path / "gates.yaml"
    path.write_text(GATES.replace("adapter: sql", "adapter: sqll"))
    tasks = lora_llm.new_gates(adapters=[sql])
    with pytest.raises(GateFileError, match=r"gates.yaml:6: .*adapter 'sqll' is not a served LoRA adapter; served: sql"):
        tasks.load_gates(path)
    with pytest.raises(GateFileError, match=r"gates.yaml:6: .*adapter 'sqll'"):
        build_app(tiny_llm(tiny_model_dir, enable_lora=True, max_loras=1, max_lora_rank=8), MODEL,
                  gates=GateOptions(gates=parse_gates(path.read_text(), "gates.yaml")), lora_modules=[sql])
    with pytest.raises(GateFileError, match=r"adapter must be the name of a served LoRA adapter"):
        parse_gates(GATES.replace("adapter: sql", "adapter: ''"), "gates.yaml")


def test_the_ledger_records_the_adapter_and_replay_reruns_under_it(lora_llm, sql, adapter_dirs, tmp_path, capsys):
    path = tmp_path / "l.db"
    ledger = Ledger(path, raw_text=True)
    tasks = lora_llm.new_gates(parse_gates(GATES), ledger, adapters=[sql])
    decision = tasks.gate("sql_intent", TEXT)
    base = tasks.gate("base_intent", TEXT)
    ledger.close()
    rows = dict(sqlite3.connect(path).execute("SELECT request_id, adapter || ' ' || adapter_sha256 FROM decisions"))
    digest = hashlib.sha256((adapter_dirs["sql"] / "adapter_model.safetensors").read_bytes()).hexdigest()
    assert rows == {decision.request_id: f"sql {digest}", base.request_id: None}
    capsys.readouterr()
    common = ["--ledger", str(path), "--model", str(lora_llm.model_path), "--dtype", "float32"]
    assert main(["ledger", "replay", decision.request_id, *common, "--lora-modules", f"sql={adapter_dirs['sql']}"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["match"] and report["same_adapter"] and report["max_score_diff"] < 1e-6
    assert report["recorded"]["adapter"] == "sql"
    assert main(["ledger", "replay", decision.request_id, *common]) == 2
    assert "ran under LoRA adapter 'sql': pass it to replay (`--lora-modules sql=PATH`)" in capsys.readouterr().err


def test_http_gates_run_under_their_adapter(tiny_model_dir, sql, chat, expected):
    llm = tiny_llm(tiny_model_dir, enable_lora=True, max_loras=2, max_lora_rank=8)
    app = build_app(llm, MODEL, gates=GateOptions(gates=parse_gates(GATES)), lora_modules=[sql, chat])
    with serving(app, llm) as server:
        for gate in ("sql_intent", "base_intent"):
            reply = server.post("/v1/classify", json={"text": TEXT, "gate": gate})
            assert reply.status_code == 200, reply.text
            want = expected["sql" if gate == "sql_intent" else "base"]
            assert reply.json()["scores"] == pytest.approx(want, abs=1e-5)


def _peft_embedding(tiny_model_dir, adapter_dir, hf_tokenizer, text: str):
    import torch

    ids = [*hf_tokenizer(text, add_special_tokens=False).input_ids, hf_tokenizer.convert_tokens_to_ids("<|endoftext|>")]
    model = peft_reference(tiny_model_dir, adapter_dir)
    with torch.no_grad():  # the decoder stack with the adapter's layers active, final norm included
        hidden = model.base_model.model.model(torch.tensor([ids])).last_hidden_state[0, -1]
    return torch.nn.functional.normalize(hidden, dim=0)


def test_embeddings_under_an_adapter_equal_peft_last_token_pooling(lora_llm, sql, tiny_model_dir, adapter_dirs,
                                                                    hf_tokenizer):
    import torch

    text = "The capital of China is Beijing."
    tuned = lora_llm.embed(text, lora_request=sql)[0]
    expected = _peft_embedding(tiny_model_dir, adapter_dirs["sql"], hf_tokenizer, text)
    torch.testing.assert_close(torch.tensor(tuned), expected, atol=1e-5, rtol=0)
    assert not torch.allclose(torch.tensor(lora_llm.embed(text)[0]), expected, atol=1e-3)  # the base differs
    with pytest.raises(TypeError, match="lora_request must be a LoRARequest"):
        lora_llm.embed(text, lora_request="sql")


def test_http_embeddings_pool_under_the_adapter_the_model_names(tiny_model_dir, sql, adapter_dirs, hf_tokenizer):
    import torch

    llm = tiny_llm(tiny_model_dir, enable_lora=True, max_loras=1, max_lora_rank=8)
    text = "Gravity attracts bodies."
    with serving(build_app(llm, MODEL, lora_modules=[sql]), llm) as server:
        reply = server.post("/v1/embeddings", json={"model": "sql", "input": text})
        assert reply.status_code == 200, reply.text
        assert reply.json()["model"] == "sql"
        torch.testing.assert_close(torch.tensor(reply.json()["data"][0]["embedding"]),
                                   _peft_embedding(tiny_model_dir, adapter_dirs["sql"], hf_tokenizer, text),
                                   atol=1e-5, rtol=0)
        missing = server.post("/v1/embeddings", json={"model": "nope", "input": text})
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"


SCORE_AND_REWRITE = """\
gates:
  - name: sql_score
    kind: score
    instruction: "Given a web search query, retrieve relevant passages that answer the query"
    adapter: sql
  - name: sql_rewrite
    kind: rewrite
    instruction: "Rewrite the query."
    max_tokens: 24
    adapter: sql
    schema:
      type: object
      properties: {rewrite: {type: string}, reason_code: {enum: [clarified, unchanged]}}
      required: [rewrite, reason_code]
"""


def test_score_and_rewrite_gates_run_under_their_adapter(lora_llm, sql, tiny_model_dir, adapter_dirs, hf_tokenizer):
    import torch

    from qwick import SamplingParams, StructuredOutputsParams
    from qwick.gates.prompts import render_gate

    tasks = lora_llm.new_gates(parse_gates(SCORE_AND_REWRITE), adapters=[sql])
    query, items = "capital of France", ["Paris is the capital of France.", "Bananas are yellow."]
    scores = tasks.score(query, items, gate="sql_score")
    tuned = peft_reference(tiny_model_dir, adapter_dirs["sql"])
    yes, no = hf_tokenizer.convert_tokens_to_ids("yes"), hf_tokenizer.convert_tokens_to_ids("no")
    instruct = parse_gates(SCORE_AND_REWRITE)["sql_score"].instruction
    for item, score in zip(items, scores, strict=True):  # Qwen3-Reranker's format, P(yes) by hand under peft
        text = ('<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the '
                'Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
                f"<Instruct>: {instruct}\n<Query>: {query}\n<Document>: {item}"
                "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n")
        with torch.no_grad():
            last = tuned(torch.tensor([hf_tokenizer(text, add_special_tokens=False).input_ids])).logits[0, -1].float()
        assert score == pytest.approx(torch.softmax(torch.stack([last[no], last[yes]]), dim=0)[1].item(), abs=1e-5)
    spec = tasks.service.gates["sql_rewrite"]
    decision = tasks.gate("sql_rewrite", "cheap laptp chrger")
    params = SamplingParams(temperature=0.0, max_tokens=spec.max_tokens,
                            structured_outputs=StructuredOutputsParams(json=spec.schema))
    rendered = render_gate(lora_llm.get_tokenizer(), spec, "cheap laptp chrger")
    expected = lora_llm.generate({"prompt_token_ids": rendered.ids}, params, lora_request=sql)[0].outputs[0].text
    assert decision.output_text == expected  # the same constrained greedy text as a generate under the adapter
    base = lora_llm.generate({"prompt_token_ids": rendered.ids}, params)[0].outputs[0].text
    assert base != expected  # so the comparison above tells the adapter was applied
