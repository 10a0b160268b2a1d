"""The offline gates API against references computed with transformers on the tiny model: label
probabilities, reranker P(yes), last-token embeddings; deadlines and their fallbacks."""

from __future__ import annotations

import pytest
import torch
import transformers

from qwick import LLM
from qwick.gates.loader import parse_gates

from reference import hf_label_probs

TEXT = "Where can I buy a cheap laptop charger near the station?"
LABELS = ["question", "purchase", "support", "complaint", "violence"]  # single- and multi-token labels


@pytest.fixture(scope="module")
def hf_tokenizer(tiny_model_dir):
    return transformers.AutoTokenizer.from_pretrained(tiny_model_dir)


def test_classify_probabilities_sum_to_one_and_match_transformers(llm, hf_model, hf_tokenizer):
    decision = llm.classify(TEXT, LABELS)
    assert sum(decision.scores.values()) == pytest.approx(1.0, abs=1e-9)
    system = llm.tasks.service.gates["classify"].system_prompt(tuple(LABELS))
    reference = hf_label_probs(hf_model, hf_tokenizer, system, TEXT, LABELS)
    assert decision.scores == pytest.approx(reference, abs=1e-5)
    assert decision.label == max(reference, key=reference.get)


def test_moderation_applies_the_rule_to_the_exact_probabilities(llm, hf_model, hf_tokenizer):
    assert llm.tasks is llm.gates  # the old name stays
    decision = llm.tasks.moderate("I will find you and hurt you.")
    spec = llm.gates.service.gates["moderate"]
    reference = hf_label_probs(hf_model, hf_tokenizer, spec.system_prompt(), "I will find you and hurt you.",
                                list(spec.labels))
    assert decision.scores == pytest.approx(reference, abs=1e-5)
    assert decision.allow == (reference["safe"] >= spec.threshold)
    unsafe = {k: v for k, v in reference.items() if k != "safe"}
    assert decision.reason == ("none" if decision.allow else max(unsafe, key=unsafe.get))


def test_batched_texts_give_the_same_decisions_as_one_at_a_time(llm):
    texts = ["hello", "I want a refund now", "what is the time in Paris?"]
    together = llm.classify(texts, LABELS)
    alone = [llm.classify(t, LABELS) for t in texts]
    for a, b in zip(together, alone, strict=True):
        assert a.scores == pytest.approx(b.scores, abs=1e-6)


def test_score_equals_p_yes_computed_by_hand_in_the_reranker_format(llm, hf_model, hf_tokenizer):
    query, items = "capital of France", ["Paris is the capital of France.", "Bananas are yellow.", "x"]
    scores = llm.score(query, items)
    instruct = "Given a web search query, retrieve relevant passages that answer the query"
    yes, no = hf_tokenizer.convert_tokens_to_ids("yes"), hf_tokenizer.convert_tokens_to_ids("no")
    for item, score in zip(items, scores, strict=True):
        text = ('<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the '
                'Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
                f"<Instruct>: {instruct}\n<Query>: {query}\n<Document>: {item}"
                "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n")
        ids = hf_tokenizer(text, add_special_tokens=False).input_ids
        with torch.no_grad():
            last = hf_model(torch.tensor([ids])).logits[0, -1].float()
        expected = torch.softmax(torch.stack([last[no], last[yes]]), dim=0)[1].item()
        assert score == pytest.approx(expected, abs=1e-5)
    assert len(set(scores)) == len(items)  # not a constant (engines have shipped random or constant scores here)


def test_embeddings_equal_transformers_last_token_pooling(llm, hf_model, hf_tokenizer):
    texts = ["The capital of China is Beijing.", "Gravity attracts bodies."]
    vectors = llm.embed(texts)
    for text, vector in zip(texts, vectors, strict=True):
        ids = [*hf_tokenizer(text, add_special_tokens=False).input_ids, hf_tokenizer.convert_tokens_to_ids("<|endoftext|>")]
        with torch.no_grad():
            hidden = hf_model.model(torch.tensor([ids])).last_hidden_state[0, -1]
        torch.testing.assert_close(torch.tensor(vector), torch.nn.functional.normalize(hidden, dim=0),
                                   atol=1e-5, rtol=0)
    short = llm.embed(texts, dimensions=16)
    for full, cut in zip(vectors, short, strict=True):
        assert len(cut) == 16 and sum(x * x for x in cut) == pytest.approx(1.0)
        expected = torch.nn.functional.normalize(torch.tensor(full[:16]), dim=0)
        torch.testing.assert_close(torch.tensor(cut), expected, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match=r"dimensions must be in \[1, 64\]"):
        llm.embed("x", dimensions=65)


def test_a_qwen3model_checkpoint_embeds_like_transformers(tmp_path, tiny_model_dir):
    import shutil

    torch.manual_seed(0)
    config = transformers.Qwen3Config.from_pretrained(tiny_model_dir)
    config.architectures = ["Qwen3Model"]
    config.tie_word_embeddings = False  # an untied backbone ships no output projection at all
    backbone = transformers.Qwen3Model(config).eval()
    backbone.save_pretrained(tmp_path)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_model_dir / name, tmp_path / name)
    embedder = LLM(tmp_path, dtype="float32", max_model_len=128)
    vector = embedder.embed("hello world")[0]
    ids = [*embedder.get_tokenizer().encode("hello world"), 151643]
    with torch.no_grad():
        hidden = backbone(torch.tensor([ids])).last_hidden_state[0, -1]
    torch.testing.assert_close(torch.tensor(vector), torch.nn.functional.normalize(hidden, dim=0), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="no lm_head: it can embed, not score"):
        embedder.classify("x", ["a", "b"])


@pytest.mark.parametrize(("policy", "allow", "escalate"), [("allow", True, False), ("deny", False, False),
                                                           ("escalate", False, True)])
def test_a_missed_deadline_answers_by_policy_and_aborts_the_late_work(llm, policy, allow, escalate):
    gates = parse_gates(f"gates:\n  - name: hurry\n    kind: moderate\n    instruction: 'one of {{labels}}'\n"
                        f"    labels: [safe, bad]\n    deadline_ms: 0.001\n    on_timeout: {policy}\n")
    tasks = llm.new_gates(gates)
    decision = tasks.gate("hurry", "a long text " * 50)
    assert decision.timed_out and decision.scores == {}
    assert (decision.allow, decision.escalate, decision.reason) == (allow, escalate, "timeout")
    assert not llm.engine.has_unfinished() and llm.engine.blocks.usage == 0.0


def test_rewrite_through_schema_constrained_generation(llm):
    gates = parse_gates("gates:\n  - name: fixed\n    kind: rewrite\n    instruction: rewrite it\n"
                        "    max_tokens: 64\n    schema:\n      type: object\n      properties:\n"
                        "        rewrite: {enum: [cheap laptop charger]}\n        reason_code: {enum: [clarified]}\n"
                        "      required: [rewrite, reason_code]\n      additionalProperties: false\n")
    tasks = llm.new_gates(gates)
    decision = tasks.gate("fixed", "cheap laptp chrger")
    assert decision.schema_valid is True, decision.output_text
    assert decision.output == {"rewrite": "cheap laptop charger", "reason_code": "clarified"}
